//! The SQLite store: every SQL statement otpd runs, and the threads they run on. It
//! offers the narrow operations the services need ("insert code", "count attempt and
//! fetch", "record delivery", "enqueue") so that another database could offer the same
//! ones later. It must not know HTTP, HMAC keys or codes (it sees only keyed hashes),
//! or how a provider is called; `messages.rs` still ranks Twilio's statuses.
//!
//! This file owns the handle: opening the file (private mode, the read-only check,
//! pragmas, limits), the `read` and `write` runners every statement goes through, and
//! the errors with their fault classes. The statements live by subject in `codes.rs`,
//! `outbox.rs`, `unconfirmed.rs`, `messages.rs`, `callbacks.rs` and `audit.rs`; the schema in `schema.rs`; the writer
//! thread in `writer.rs`.
//!
//! Threads: SQLite has one writer, so every write goes to one dedicated writer thread
//! through a channel (it outruns one `spawn_blocking` write per request, with no busy
//! waits); reads use an r2d2 pool through `spawn_blocking`. Either way, no SQLite call
//! ever runs on an async executor thread.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::Histogram;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use super::types::{from_millis, millis};
use super::{Fault, StoreError};
use crate::config::StoreConfig;
use crate::telemetry;
use writer::Command;

mod audit;
mod callbacks;
mod codes;
mod messages;
mod outbox;
mod report;
mod schema;
mod unconfirmed;
mod writer;
pub use schema::{SCHEMA_VERSION, create_at_version};

/// SQLite's own error codes say precisely what a failure means for a caller.
pub(super) fn fault(error: &StoreError) -> Fault {
    let code = match error {
        StoreError::Sqlite(e) | StoreError::Database { source: e, .. } => e.sqlite_error_code(),
        StoreError::Migration(rusqlite_migration::Error::RusqliteError { err, .. }) => {
            err.sqlite_error_code()
        }
        StoreError::ReadOnly(_) => return Fault::ReadOnly,
        _ => None,
    };
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Fault::Busy,
        Some(ErrorCode::DiskFull) => Fault::Full,
        Some(ErrorCode::ReadOnly) => Fault::ReadOnly,
        _ => Fault::Other,
    }
}

/// WAL lets readers run beside the writer; NORMAL syncs at checkpoints, so a crash of
/// the process loses nothing and a power loss can lose only the last commits.
/// (`busy_timeout` comes from `store.busy_timeout`, see [`apply_limits`]; foreign keys
/// are enforced from the end of [`schema::migrate`].)
const PRAGMAS: &str = "PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;";

/// Opens the writer's connection, checks that it can write, and applies the pragmas
/// and limits. Its errors stop the start, so they name the file.
fn open_writer(config: &StoreConfig) -> Result<Connection, StoreError> {
    let path = &config.path;
    let at = |source| StoreError::Database {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(path).map_err(at)?;
    // SQLite quietly falls back to read-only when the file is not writable; every
    // later write would fail, so refuse to start instead.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(at)? {
        return Err(StoreError::ReadOnly(path.clone()));
    }
    apply_limits(&conn, config).map_err(at)?;
    // Switching to WAL creates the -wal and -shm files beside the database: this is
    // where a directory otpd cannot write shows up.
    conn.execute_batch(PRAGMAS)
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(path.clone()),
            _ => at(e),
        })?;
    Ok(conn)
}

/// Applies `store.busy_timeout` and `store.max_size` to a connection. The size cap is
/// SQLite's `max_page_count`: past it, writes fail with SQLITE_FULL exactly as on a
/// full disk, while reads and purges (which free pages for reuse) keep working.
fn apply_limits(conn: &Connection, config: &StoreConfig) -> rusqlite::Result<()> {
    conn.busy_timeout(config.busy_timeout)?;
    if let Some(max) = config.max_size {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max / u64::try_from(page_size).unwrap_or(4096).max(1)).max(1);
        // The pragma answers with the limit in force, which is never below the current
        // size: a database already past the cap takes new rows only in freed pages.
        let in_force: i64 =
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })?;
        if u64::try_from(in_force).unwrap_or(0) > pages {
            log::warn!(
                "store.max_size ({max} bytes) is below the database's size; sends answer \
                 store_full until the retention job or a purge frees rows"
            );
        }
    }
    Ok(())
}

/// `otpd_store_operation_duration_seconds` by op: the handles of the operations every
/// send and verify makes are made once, at open; the others are looked up when used.
struct Timers([(&'static str, Histogram); 3]);

impl Timers {
    fn new() -> Self {
        Timers(
            ["check_attempt", "insert_code", "record_delivery"].map(|op| {
                (
                    op,
                    metrics::histogram!(telemetry::STORE_DURATION, "op" => op),
                )
            }),
        )
    }

    fn record(&self, op: &'static str, elapsed: Duration) {
        match self.0.iter().find(|(name, _)| *name == op) {
            Some((_, histogram)) => histogram.record(elapsed),
            None => metrics::histogram!(telemetry::STORE_DURATION, "op" => op).record(elapsed),
        }
    }
}

/// A cheap handle: clones share the one writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Command>,
    writer_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    timers: Arc<Timers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates it, and starts the writer.
    pub fn open(config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        let path = config.path.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        }
        // Phone numbers live here: create the file private (SQLite gives its -wal and
        // -shm files the same mode).
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let mut conn = open_writer(config)?;
        schema::migrate(&mut conn)?;

        let busy_timeout = config.busy_timeout;
        let manager = SqliteConnectionManager::file(path).with_init(move |c| {
            c.busy_timeout(busy_timeout)?;
            c.execute_batch("PRAGMA query_only = ON;")
        });
        let readers = r2d2::Pool::builder()
            .max_size(4)
            .min_idle(Some(1))
            .build(manager)?;

        writer::prepare_writer(&conn).map_err(|source| StoreError::Database {
            path: path.to_owned(),
            source,
        })?;
        let (writer, jobs) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("otpd-store-writer".into())
            .spawn(move || writer::run(conn, jobs))
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(SqliteStore {
            writer,
            writer_thread: Arc::new(Mutex::new(Some(thread))),
            readers,
            timers: Arc::new(Timers::new()),
        })
    }

    /// Stops the writer after the jobs already queued, checkpoints and closes the file.
    pub fn close(&self) {
        let _ = self.writer.send(Command::Stop);
        // std Mutex: held only to take the handle, never across an await.
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Runs `f` on the writer thread inside an IMMEDIATE transaction (it takes the write
    /// lock up front, so a read-then-write can never fail halfway with SQLITE_BUSY),
    /// possibly shared with other jobs (group commit, see `writer.rs`). The answer
    /// comes only after that transaction committed. `f` may run twice (after another
    /// job of its group failed and the group was rolled back), so it only touches the
    /// database.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job = writer::Pending {
            f,
            result: None,
            reply,
        };
        self.writer
            .send(Command::Run(Box::new(job)))
            .map_err(|_| StoreError::Closed)?;
        let result = answer.await.map_err(|_| StoreError::Closed)?;
        self.timers.record(op, started.elapsed());
        result
    }

    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let started = Instant::now();
        let pool = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            Ok(f(&conn)?)
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        self.timers.record(op, started.elapsed());
        result
    }

    /// The store answers: used by `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |c| {
            c.query_row("SELECT count(*) FROM otps WHERE 0", [], |_| Ok(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_are_classified_by_what_a_caller_can_do_about_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let rw = Connection::open(&path).unwrap();
        rw.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB);")
            .unwrap();
        let fault = |e: rusqlite::Error| StoreError::from(e).fault();

        let ro =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let e = ro.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(fault(e), Fault::ReadOnly);

        rw.execute_batch("BEGIN IMMEDIATE").unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let e = other.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert_eq!(fault(e), Fault::Busy);
        rw.execute_batch("ROLLBACK").unwrap();

        let config = StoreConfig {
            path: path.clone(),
            busy_timeout: Duration::from_secs(1),
            max_size: Some(64 * 1024),
            backend: crate::config::Backend::Sqlite,
        };
        apply_limits(&rw, &config).unwrap();
        let e = (0..100)
            .find_map(|_| {
                rw.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                    .err()
            })
            .unwrap();
        assert_eq!(fault(e), Fault::Full);
        assert_eq!(StoreError::Closed.fault(), Fault::Other);
    }
}
