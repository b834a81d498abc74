//! The SQLite store: schema and migrations, every SQL statement, and the threads they
//! run on. It offers the narrow operations the OTP service needs ("insert code",
//! "count attempt and fetch", "consume", "record delivery") so that a PostgreSQL store
//! could offer the same ones later. It knows nothing of HTTP, HMAC or Twilio.
//!
//! Threads: SQLite has one writer, so every write goes to one dedicated writer thread
//! through a channel (measured ~3x the throughput of one `spawn_blocking` write per
//! request, with no busy waits); reads use an r2d2 pool through `spawn_blocking`.
//! Either way, no SQLite call ever runs on an async executor thread.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::Histogram;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::StoreConfig;
use crate::telemetry::{self, Kept};
use crate::types::{Caller, Channel};
use writer::Command;

mod outbox;
mod writer;
pub use outbox::{Claimed, Enqueued, MessageDetail, NewOutgoing, Outcome, StatusEvent};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {0} is read-only: otpd needs to write to it and to its directory (check their owner, mode and file system)"
    )]
    ReadOnly(PathBuf),
}

/// What a failed store operation means for a caller. SQLite's own error codes say it
/// precisely; each fault gets its own answer so an operator can tell a held lock from
/// a full disk from a read-only file at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Another connection held the write lock for longer than `store.busy_timeout`.
    Busy,
    /// The disk, or `store.max_size`, is full.
    Full,
    /// The file (or its file system) cannot be written.
    ReadOnly,
    /// Anything else: corruption, I/O errors, a closed store.
    Other,
}

impl StoreError {
    pub fn fault(&self) -> Fault {
        let code = match self {
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
}

/// Versioned schema; append only. `user_version` records how far a file has come.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE otps (
        id            INTEGER PRIMARY KEY,
        phone         TEXT    NOT NULL,
        purpose       TEXT    NOT NULL,
        user_id       TEXT,
        code_hash     BLOB    NOT NULL,
        state         TEXT    NOT NULL CHECK (state IN
                      ('pending', 'sent', 'failed', 'verified', 'superseded', 'expired')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        max_attempts  INTEGER NOT NULL,
        test_number   INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        verified_at   INTEGER
    );
    CREATE INDEX otps_by_phone_purpose ON otps (phone, purpose, id);

    CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        otp_id        INTEGER REFERENCES otps (id),
        created_at    INTEGER NOT NULL,
        to_number     TEXT    NOT NULL,
        provider      TEXT    NOT NULL,
        sid           TEXT,
        status        TEXT    NOT NULL,
        error_code    INTEGER,
        error_message TEXT
    );
    CREATE INDEX messages_by_otp ON messages (otp_id);

    -- Never holds a code, a hash of one, or a secret.
    CREATE TABLE audit (
        id            INTEGER PRIMARY KEY,
        at            INTEGER NOT NULL,
        otp_id        INTEGER,
        event         TEXT    NOT NULL,
        phone         TEXT,
        purpose       TEXT,
        user_id       TEXT,
        detail        TEXT
    );
    CREATE INDEX audit_by_otp ON audit (otp_id);",
    ),
    // Retention and the read endpoints look rows up by time (and the audit by phone).
    M::up(
        "CREATE INDEX otps_by_expiry ON otps (expires_at);
    CREATE INDEX messages_by_time ON messages (created_at);
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_phone ON audit (phone, at);",
    ),
    // Who asked: the caller's SO_PEERCRED credentials, per audit event.
    M::up(
        "ALTER TABLE audit ADD COLUMN peer_uid INTEGER;
    ALTER TABLE audit ADD COLUMN peer_gid INTEGER;
    ALTER TABLE audit ADD COLUMN peer_pid INTEGER;",
    ),
    // The cost guard: each code's destination region, and a partial index holding only
    // the codes that cost an SMS and were not (yet) verified, so counting a country's
    // unverified codes in a window reads about as many index entries as its budget.
    M::up(
        "ALTER TABLE otps ADD COLUMN country TEXT;
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE state NOT IN ('verified', 'failed') AND test_number = 0;",
    ),
    // General messaging: the durable outbox lives in `messages` beside OTP deliveries,
    // and every status a message passes through (including Twilio's callbacks) is kept.
    M::up(
        "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'otp';
    ALTER TABLE messages ADD COLUMN channel TEXT NOT NULL DEFAULT 'sms';
    ALTER TABLE messages ADD COLUMN body TEXT;
    ALTER TABLE messages ADD COLUMN user_id TEXT;
    ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
    ALTER TABLE messages ADD COLUMN request_hash TEXT;
    ALTER TABLE messages ADD COLUMN send_at INTEGER;
    ALTER TABLE messages ADD COLUMN segments INTEGER;
    ALTER TABLE messages ADD COLUMN send_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN updated_at INTEGER;
    CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX messages_due ON messages (send_at) WHERE status = 'queued';
    CREATE INDEX messages_by_sid ON messages (sid) WHERE sid IS NOT NULL;
    CREATE TABLE message_events (
        id            INTEGER PRIMARY KEY,
        message_id    INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        at            INTEGER NOT NULL,
        status        TEXT    NOT NULL,
        error_code    INTEGER,
        detail        TEXT
    );
    CREATE INDEX message_events_by_message ON message_events (message_id, id);",
    ),
    // How many requests each message took (retries); NULL on rows from before.
    M::up("ALTER TABLE messages ADD COLUMN attempts INTEGER;"),
    // Channels still to try, comma-separated, when Twilio refuses the current one.
    M::up("ALTER TABLE messages ADD COLUMN fallback TEXT;"),
    // Cheaper writes on the hot path (BENCHMARKS.md, "Leaner writes"):
    // - `state IN (six values)` made SQLite build a temporary b-tree for every write of
    //   `state`; the same rule as comparisons costs nothing. SQLite cannot alter a CHECK,
    //   so `otps` is rebuilt by its documented procedure (foreign keys are off while
    //   migrating; `foreign_key_check` proves `messages` still points at real codes).
    // - No query reads the audit through `audit_by_otp` or `audit_by_phone`, yet every
    //   audit row paid for both (the phone index on a random page per event).
    M::up(
        "CREATE TABLE otps_new (
        id            INTEGER PRIMARY KEY,
        phone         TEXT    NOT NULL,
        purpose       TEXT    NOT NULL,
        user_id       TEXT,
        code_hash     BLOB    NOT NULL,
        state         TEXT    NOT NULL CHECK (state = 'pending' OR state = 'sent'
                      OR state = 'failed' OR state = 'verified' OR state = 'superseded'
                      OR state = 'expired'),
        attempts      INTEGER NOT NULL DEFAULT 0,
        max_attempts  INTEGER NOT NULL,
        test_number   INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        verified_at   INTEGER,
        country       TEXT
    );
    INSERT INTO otps_new (id, phone, purpose, user_id, code_hash, state, attempts,
                          max_attempts, test_number, created_at, expires_at, verified_at,
                          country)
        SELECT id, phone, purpose, user_id, code_hash, state, attempts, max_attempts,
               test_number, created_at, expires_at, verified_at, country FROM otps;
    DROP TABLE otps;
    ALTER TABLE otps_new RENAME TO otps;
    CREATE INDEX otps_by_phone_purpose ON otps (phone, purpose, id);
    CREATE INDEX otps_by_expiry ON otps (expires_at);
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE state NOT IN ('verified', 'failed') AND test_number = 0;
    DROP INDEX audit_by_otp;
    DROP INDEX audit_by_phone;",
    )
    .foreign_key_check(),
    // Indexes that every send or verify maintained for rows no query reads through them:
    // - The unverified budget counts codes by destination country, which otpd stores
    //   only while the cost guard is on; codes without one were in its index anyway (a
    //   page per send and per verify).
    // - The outbox's due index held code deliveries too, as Twilio's status "queued" is
    //   also the outbox's; the outbox reads only `kind = 'sms'`.
    M::up(
        "DROP INDEX otps_unverified_by_country;
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE country IS NOT NULL AND state NOT IN ('verified', 'failed')
          AND test_number = 0;
    DROP INDEX messages_due;
    CREATE INDEX messages_due ON messages (send_at) WHERE status = 'queued' AND kind = 'sms';",
    ),
];

/// WAL lets readers run beside the writer; NORMAL syncs at checkpoints, so a crash of
/// the process loses nothing and a power loss can lose only the last commits.
/// (`busy_timeout` comes from `store.busy_timeout`, see [`apply_limits`]; foreign keys
/// are enforced from the end of [`migrate`].)
const PRAGMAS: &str = "PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;";

/// Brings the schema up to date, with foreign keys off while it runs: rebuilding a
/// table (SQLite's way to change a constraint) drops the old one while other tables
/// still refer to it. A migration that rebuilds checks the keys before it commits.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    let (started, before) = (Instant::now(), version(conn)?);
    migrate_to(conn, SCHEMA_VERSION)?;
    let after = version(conn)?;
    // A rebuild takes seconds on a large database: say why this start was slow.
    if before > 0 && after != before {
        log::info!(
            "database schema upgraded from version {before} to {after} in {:.1?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// The migrations up to `version`, foreign keys off while they run (see [`migrate`]).
fn migrate_to(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Migrations::from_slice(MIGRATIONS).to_version(conn, version)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the database at `path` with the schema of `version`, as the otpd of that
/// version left it: for upgrade tests, which start today's binary on such a file.
#[doc(hidden)]
pub fn create_at_version(path: &Path, version: usize) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(PRAGMAS)?;
    migrate_to(&mut conn, version)
}

/// The schema version this otpd brings every database to.
#[doc(hidden)]
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

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

/// The duration of a store operation; the three of every send and verify through kept
/// handles (see `Kept`).
fn record_duration(op: &'static str, elapsed: std::time::Duration) {
    static CHECK_ATTEMPT: Kept<Histogram> = Kept::new();
    static INSERT_CODE: Kept<Histogram> = Kept::new();
    static RECORD_DELIVERY: Kept<Histogram> = Kept::new();
    let kept = match op {
        "check_attempt" => &CHECK_ATTEMPT,
        "insert_code" => &INSERT_CODE,
        "record_delivery" => &RECORD_DELIVERY,
        _ => {
            metrics::histogram!(telemetry::STORE_DURATION, "op" => op).record(elapsed);
            return;
        }
    };
    kept.with(
        || metrics::histogram!(telemetry::STORE_DURATION, "op" => op),
        |h| h.record(elapsed),
    );
}

/// A cheap handle: clones share the one writer thread and the reader pool.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Command>,
    writer_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

/// A code to insert; `code_hash` is already keyed, the store never sees a code.
pub struct NewCode {
    pub caller: Caller,
    pub phone: String,
    pub purpose: String,
    pub user_id: Option<String>,
    pub code_hash: Vec<u8>,
    pub max_attempts: u32,
    pub test_number: bool,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// Destination region ("ES", "001"), for the cost guard's unverified budget.
    pub country: Option<String>,
}

/// A send the cost guard refused (or, in record mode, would have refused).
pub struct GuardEvent {
    pub at: SystemTime,
    /// `guard_blocked` or `guard_would_block`.
    pub event: &'static str,
    pub phone: String,
    pub purpose: Option<String>,
    pub user_id: Option<String>,
    /// The rule's name.
    pub detail: &'static str,
    pub caller: Option<Caller>,
}

/// How a message left (or did not leave) otpd; `attempts` counts provider requests.
pub enum Delivery {
    Sent {
        provider: &'static str,
        sid: String,
        status: String,
        attempts: u32,
    },
    Failed {
        provider: &'static str,
        error_code: Option<i64>,
        error_message: String,
        attempts: u32,
    },
    /// Not attempted: the provider's circuit breaker is open.
    CircuitOpen {
        provider: &'static str,
        error_message: String,
    },
    /// A configured test number: no message, the code is usable at once.
    Skipped,
}

/// How one verify attempt for (phone, purpose) ended.
#[derive(Debug)]
pub enum Attempt {
    /// The attempt was counted, the code matched and is now used.
    Verified {
        id: i64,
    },
    /// The attempt was counted and the code (or the user) did not match.
    Wrong {
        id: i64,
        attempts_remaining: u32,
    },
    /// No code was ever sent for this phone and purpose (or its SMS failed).
    NoCode,
    Used {
        id: i64,
    },
    Expired {
        id: i64,
    },
    /// Every attempt is spent; the code is dead until it expires or is superseded.
    Exhausted {
        id: i64,
        expires_at: SystemTime,
    },
}

/// Rows older than these are deleted by [`Store::purge`].
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub codes_before: SystemTime,
    pub messages_before: SystemTime,
    pub audit_before: SystemTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub otps: u64,
    pub messages: u64,
    pub audit: u64,
}

#[derive(Debug)]
pub struct MessageRow {
    pub id: i64,
    pub otp_id: Option<i64>,
    pub created_at: SystemTime,
    pub to: String,
    pub channel: String,
    pub provider: String,
    pub sid: Option<String>,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// Provider requests it took; `None` on rows from before migration 4.
    pub attempts: Option<u32>,
}

#[derive(Debug)]
pub struct AuditRow {
    pub id: i64,
    pub at: SystemTime,
    pub otp_id: Option<i64>,
    pub event: String,
    pub phone: Option<String>,
    pub purpose: Option<String>,
    pub user_id: Option<String>,
    pub detail: Option<String>,
    /// Who made the request (absent on rows from before migration 3).
    pub caller: Option<Caller>,
}

#[derive(Debug)]
pub struct Counts {
    pub codes: Vec<(String, i64)>,
    pub messages: Vec<(String, i64)>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn audit(
    tx: &rusqlite::Transaction<'_>,
    at: SystemTime,
    otp_id: i64,
    event: &str,
    detail: Option<&str>,
    caller: Caller,
) -> rusqlite::Result<()> {
    // Copies the code's context so the trail reads on its own after retention.
    tx.prepare_cached(
        "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                            peer_uid, peer_gid, peer_pid)
         SELECT ?1, id, ?3, phone, purpose, user_id, ?4, ?5, ?6, ?7 FROM otps WHERE id = ?2",
    )?
    .execute(params![
        millis(at),
        otp_id,
        event,
        detail,
        caller.uid,
        caller.gid,
        caller.pid
    ])?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database, migrates it, and starts the writer.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
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
        migrate(&mut conn)?;

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
        let db = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("otpd-store-writer".into())
            .spawn(move || writer::run(conn, jobs, db, busy_timeout))
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Store {
            writer,
            writer_thread: Arc::new(Mutex::new(Some(thread))),
            readers,
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
        record_duration(op, started.elapsed());
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
        record_duration(op, started.elapsed());
        result
    }

    /// The store answers: used by `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |c| {
            c.query_row("SELECT count(*) FROM otps WHERE 0", [], |_| Ok(()))
        })
        .await
    }

    /// The live codes for (phone, purpose). Found, then updated by id: `UPDATE …
    /// RETURNING` would buffer its rows in a temporary b-tree on every send, though
    /// most sends supersede nothing.
    const LIVE_CODES: &str = "SELECT id FROM otps
         WHERE phone = ?1 AND purpose = ?2 AND state IN ('pending', 'sent')";
    const SUPERSEDE: &str = "UPDATE otps SET state = 'superseded' WHERE id = ?1";
    const INSERT_CODE: &str =
        "INSERT INTO otps (phone, purpose, user_id, code_hash, state, max_attempts,
                           test_number, created_at, expires_at, country)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9)";

    /// Supersedes any live code for (phone, purpose) and inserts the new one as pending.
    pub async fn insert_code(&self, code: NewCode) -> Result<i64, StoreError> {
        self.write("insert_code", move |tx| {
            let superseded: Vec<i64> = tx
                .prepare_cached(Self::LIVE_CODES)?
                .query_map(params![code.phone, code.purpose], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for old in superseded {
                tx.prepare_cached(Self::SUPERSEDE)?.execute([old])?;
                audit(tx, code.created_at, old, "superseded", None, code.caller)?;
            }
            tx.prepare_cached(Self::INSERT_CODE)?.execute(params![
                code.phone,
                code.purpose,
                code.user_id,
                code.code_hash,
                code.max_attempts,
                code.test_number,
                millis(code.created_at),
                millis(code.expires_at),
                code.country,
            ])?;
            let id = tx.last_insert_rowid();
            audit(tx, code.created_at, id, "generated", None, code.caller)?;
            Ok(id)
        })
        .await
    }

    /// A concurrent re-send may have superseded the code meanwhile; that is kept.
    const MARK_DELIVERED: &str = "UPDATE otps SET state = ?2 WHERE id = ?1 AND state = 'pending'";

    /// Records how the code's message went. Only a sent (or test-number) code can ever
    /// be verified; a failed one is marked failed for good.
    pub async fn record_delivery(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        self.write("record_delivery", move |tx| {
            let (state, event, detail) = match &delivery {
                Delivery::Sent { sid, attempts, .. } => (
                    "sent",
                    "sent",
                    Some(match attempts {
                        0 | 1 => sid.clone(),
                        n => format!("{sid} (after {n} requests)"),
                    }),
                ),
                Delivery::Skipped => ("sent", "sent", Some("test number: no SMS".to_owned())),
                Delivery::Failed {
                    error_code,
                    error_message,
                    ..
                } => (
                    "failed",
                    "send_failed",
                    Some(match error_code {
                        Some(code) => format!("{code}: {error_message}"),
                        None => error_message.clone(),
                    }),
                ),
                Delivery::CircuitOpen { error_message, .. } => {
                    ("failed", "circuit_open", Some(error_message.clone()))
                }
            };
            tx.prepare_cached(Self::MARK_DELIVERED)?
                .execute(params![otp_id, state])?;
            Self::insert_message(tx, Some(otp_id), &to, channel, &delivery, now)?;
            audit(tx, now, otp_id, event, detail.as_deref(), caller)
        })
        .await
    }

    /// Records a channel that refused the code's message when another is tried next:
    /// the message row shows the refusal, the code stays pending for the next channel.
    pub async fn record_fallback(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        self.write("record_fallback", move |tx| {
            let detail = match &delivery {
                Delivery::Failed {
                    error_code: Some(code),
                    error_message,
                    ..
                } => format!("{channel} refused, {code}: {error_message}"),
                Delivery::Failed { error_message, .. } => {
                    format!("{channel} refused: {error_message}")
                }
                _ => format!("{channel} refused"),
            };
            Self::insert_message(tx, Some(otp_id), &to, channel, &delivery, now)?;
            audit(tx, now, otp_id, "channel_fallback", Some(&detail), caller)
        })
        .await
    }

    /// Records a message that belongs to no code (the test-twilio endpoint).
    pub async fn record_message(
        &self,
        to: String,
        delivery: Delivery,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write("record_message", move |tx| {
            Self::insert_message(tx, None, &to, Channel::Sms, &delivery, now)
        })
        .await
    }

    const INSERT_DELIVERY: &str =
        "INSERT INTO messages (otp_id, created_at, to_number, provider, sid, status,
                               error_code, error_message, attempts, channel)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

    fn insert_message(
        tx: &rusqlite::Transaction<'_>,
        otp_id: Option<i64>,
        to: &str,
        channel: Channel,
        delivery: &Delivery,
        now: SystemTime,
    ) -> rusqlite::Result<()> {
        let (provider, sid, status, code, message, attempts) = match delivery {
            Delivery::Sent {
                provider,
                sid,
                status,
                attempts,
            } => (
                *provider,
                Some(sid.as_str()),
                status.as_str(),
                None,
                None,
                *attempts,
            ),
            Delivery::Failed {
                provider,
                error_code,
                error_message,
                attempts,
            } => (
                *provider,
                None,
                "failed",
                *error_code,
                Some(error_message.as_str()),
                *attempts,
            ),
            Delivery::CircuitOpen {
                provider,
                error_message,
            } => (
                *provider,
                None,
                "circuit_open",
                None,
                Some(error_message.as_str()),
                0,
            ),
            Delivery::Skipped => return Ok(()),
        };
        tx.prepare_cached(Self::INSERT_DELIVERY)?.execute(params![
            otp_id,
            millis(now),
            to,
            provider,
            sid,
            status,
            code,
            message,
            attempts,
            channel.as_str()
        ])?;
        // OTP messages get the same status history as the outbox's.
        outbox::event(tx, tx.last_insert_rowid(), now, status, code, message)?;
        Ok(())
    }

    const EXPIRE: &str = "UPDATE otps SET state = 'expired' WHERE id = ?1";
    /// A wrong guess: the attempt is counted, the code stays.
    const COUNT_ATTEMPT: &str = "UPDATE otps SET attempts = attempts + 1 WHERE id = ?1";
    /// A match: the attempt is counted and the code consumed in one statement.
    const CONSUME: &str = "UPDATE otps SET attempts = attempts + 1, state = 'verified',
                                          verified_at = ?2
         WHERE id = ?1";

    /// One verify attempt in one transaction: finds the latest code for (phone,
    /// purpose) and, if it can still be verified, counts this attempt against it
    /// before anything is compared (parallel guesses are serialized on the writer and
    /// can never exceed the cap); then asks `matches` (the service's constant-time
    /// comparison and user binding: the store never sees a key or a code) and either
    /// consumes the code or audits the wrong guess. One writer round trip per verify.
    pub async fn check_attempt<M>(
        &self,
        phone: String,
        purpose: String,
        now: SystemTime,
        caller: Caller,
        mut matches: M,
    ) -> Result<Attempt, StoreError>
    where
        M: FnMut(&[u8], Option<&str>) -> bool + Send + 'static,
    {
        self.write("check_attempt", move |tx| {
            let latest = tx
                .prepare_cached(
                    "SELECT id, state, code_hash, user_id, attempts, max_attempts, expires_at
                     FROM otps WHERE phone = ?1 AND purpose = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![phone, purpose], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })
                .optional()?;
            let Some((id, state, code_hash, user_id, attempts, max_attempts, expires_at)) = latest
            else {
                return Ok(Attempt::NoCode);
            };
            match state.as_str() {
                "verified" => return Ok(Attempt::Used { id }),
                "expired" => return Ok(Attempt::Expired { id }),
                "sent" => {}
                // Pending (its SMS not sent yet), failed or superseded: unverifiable.
                _ => return Ok(Attempt::NoCode),
            }
            if expires_at <= millis(now) {
                tx.prepare_cached(Self::EXPIRE)?.execute([id])?;
                audit(tx, now, id, "expired", None, caller)?;
                return Ok(Attempt::Expired { id });
            }
            if attempts >= max_attempts {
                return Ok(Attempt::Exhausted {
                    id,
                    expires_at: from_millis(expires_at),
                });
            }
            // Whatever the comparison says, this attempt is spent: both branches count
            // it, in the transaction that read the count.
            if matches(&code_hash, user_id.as_deref()) {
                tx.prepare_cached(Self::CONSUME)?
                    .execute(params![id, millis(now)])?;
                audit(tx, now, id, "verified", None, caller)?;
                return Ok(Attempt::Verified { id });
            }
            tx.prepare_cached(Self::COUNT_ATTEMPT)?.execute([id])?;
            let attempts_remaining = max_attempts.saturating_sub(attempts + 1);
            let detail = format!("{attempts_remaining} attempts remaining");
            audit(tx, now, id, "failed_attempt", Some(&detail), caller)?;
            Ok(Attempt::Wrong {
                id,
                attempts_remaining,
            })
        })
        .await
    }

    /// Deletes, in batches so verifies never wait long behind it: messages and audit
    /// rows older than their cutoffs, then codes that expired before `codes_before`
    /// and that no remaining message refers to.
    pub async fn purge(&self, cutoffs: Cutoffs) -> Result<Purged, StoreError> {
        const BATCH: i64 = 5000;
        let statements = [
            // Never a message still waiting to be sent, however old.
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ?1
             AND status NOT IN ('queued', 'sending') LIMIT ?2)",
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 LIMIT ?2)",
            "DELETE FROM otps WHERE id IN (SELECT id FROM otps WHERE expires_at < ?1
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.otp_id = otps.id) LIMIT ?2)",
        ];
        let before = [
            cutoffs.messages_before,
            cutoffs.audit_before,
            cutoffs.codes_before,
        ];
        let mut deleted = [0u64; 3];
        for ((sql, before), count) in statements.into_iter().zip(before).zip(&mut deleted) {
            let before = millis(before);
            loop {
                let n = self
                    .write("purge", move |tx| {
                        tx.prepare_cached(sql)?.execute(params![before, BATCH])
                    })
                    .await?;
                *count += n as u64;
                if (n as i64) < BATCH {
                    break;
                }
            }
        }
        let [messages, audit, otps] = deleted;
        Ok(Purged {
            otps,
            messages,
            audit,
        })
    }

    /// Messages created at or after `since`, newest first.
    pub async fn messages_since(
        &self,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<MessageRow>, StoreError> {
        self.read("messages_since", move |c| {
            c.prepare_cached(
                "SELECT id, otp_id, created_at, to_number, provider, sid, status, error_code,
                        error_message, attempts, channel
                 FROM messages WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![millis(since), limit], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    otp_id: r.get(1)?,
                    created_at: from_millis(r.get(2)?),
                    to: r.get(3)?,
                    provider: r.get(4)?,
                    sid: r.get(5)?,
                    status: r.get(6)?,
                    error_code: r.get(7)?,
                    error_message: r.get(8)?,
                    attempts: r.get(9)?,
                    channel: r.get(10)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// Walks `audit_by_time` newest first, so a read costs the `since` window.
    const AUDIT_SINCE: &str =
        "SELECT id, at, otp_id, event, phone, purpose, user_id, detail, peer_uid, peer_gid,
                peer_pid FROM audit
         WHERE at >= ?1 AND (?2 IS NULL OR phone = ?2)
         ORDER BY at DESC, id DESC LIMIT ?3";

    /// Audit events at or after `since`, optionally for one phone, newest first.
    pub async fn audit_since(
        &self,
        since: SystemTime,
        phone: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.read("audit_since", move |c| {
            c.prepare_cached(Self::AUDIT_SINCE)?
                .query_map(params![millis(since), phone, limit], |r| {
                    Ok(AuditRow {
                        id: r.get(0)?,
                        at: from_millis(r.get(1)?),
                        otp_id: r.get(2)?,
                        event: r.get(3)?,
                        phone: r.get(4)?,
                        purpose: r.get(5)?,
                        user_id: r.get(6)?,
                        detail: r.get(7)?,
                        caller: match (r.get(8)?, r.get(9)?) {
                            (Some(uid), Some(gid)) => Some(Caller {
                                uid,
                                gid,
                                pid: r.get(10)?,
                            }),
                            _ => None,
                        },
                    })
                })?
                .collect()
        })
        .await
    }

    /// Messages (sent or failed, any provider) created at or after `since`: what the
    /// cost guard's daily cap starts from after a restart.
    pub async fn count_messages_since(&self, since: SystemTime) -> Result<u64, StoreError> {
        self.read("count_messages_since", move |c| {
            c.prepare_cached("SELECT count(*) FROM messages WHERE created_at >= ?1")?
                .query_row([millis(since)], |r| {
                    Ok(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0))
                })
        })
        .await
    }

    /// The WHERE repeats the partial index's own terms so SQLite can use it.
    const COUNT_UNVERIFIED: &str = "SELECT count(*), min(created_at) FROM otps
         WHERE country = ?1 AND created_at >= ?2
           AND state NOT IN ('verified', 'failed') AND test_number = 0";

    /// Codes to `country` created at or after `since` that cost an SMS and were not
    /// verified (pending, sent, expired or superseded), and when the oldest was created.
    pub async fn count_unverified(
        &self,
        country: String,
        since: SystemTime,
    ) -> Result<(u64, Option<SystemTime>), StoreError> {
        self.read("count_unverified", move |c| {
            c.prepare_cached(Self::COUNT_UNVERIFIED)?.query_row(
                params![country, millis(since)],
                |r| {
                    let count = u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
                    Ok((count, r.get::<_, Option<i64>>(1)?.map(from_millis)))
                },
            )
        })
        .await
    }

    /// Audits a send the cost guard refused; it belongs to no code.
    pub async fn record_guard_event(&self, e: GuardEvent) -> Result<(), StoreError> {
        self.write("record_guard_event", move |tx| {
            tx.prepare_cached(
                "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                                    peer_uid, peer_gid, peer_pid)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                millis(e.at),
                e.event,
                e.phone,
                e.purpose,
                e.user_id,
                e.detail,
                e.caller.map(|c| c.uid),
                e.caller.map(|c| c.gid),
                e.caller.and_then(|c| c.pid),
            ])?;
            Ok(())
        })
        .await
    }

    /// Codes by state and messages by status, for `/status/`.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.read("counts", |c| {
            let group = |sql: &str| -> rusqlite::Result<Vec<(String, i64)>> {
                c.prepare_cached(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            };
            Ok(Counts {
                codes: group("SELECT state, count(*) FROM otps GROUP BY state ORDER BY state")?,
                messages: group(
                    "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status",
                )?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    /// The steps of SQLite's plan for `sql`.
    fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The opcodes SQLite compiles `sql` to (its parameters left unbound).
    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut ops = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            ops.push(row.get(1).unwrap());
        }
        ops
    }

    #[test]
    fn the_writes_of_a_send_and_a_verify_build_no_temporary_btree() {
        let conn = migrated();
        for sql in [
            Store::LIVE_CODES,
            Store::SUPERSEDE,
            Store::INSERT_CODE,
            Store::MARK_DELIVERED,
            Store::CONSUME,
            Store::COUNT_ATTEMPT,
            Store::EXPIRE,
        ] {
            let ops = opcodes(&conn, sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {ops:?}"
            );
        }
        // The CHECK still holds as comparisons.
        let e = conn
            .execute(
                "INSERT INTO otps (phone, purpose, code_hash, state, max_attempts, created_at,
                                   expires_at) VALUES ('+1', 'login', x'00', 'bogus', 5, 0, 0)",
                [],
            )
            .unwrap_err();
        assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
    }

    #[test]
    fn rebuilding_otps_keeps_every_row_index_and_reference() {
        let mut conn = Connection::open_in_memory().unwrap();
        // Version 7: the schema before migration 8 rebuilt `otps`.
        migrate_to(&mut conn, 7).unwrap();
        conn.execute_batch(
            "INSERT INTO otps (id, phone, purpose, user_id, code_hash, state, attempts,
                               max_attempts, test_number, created_at, expires_at,
                               verified_at, country)
             VALUES (7, '+34600000001', 'login', 'u1', x'0102', 'verified', 2, 5, 0, 10, 20,
                     15, 'ES'),
                    (9, '+34600000002', 'signup', NULL, x'0304', 'sent', 0, 5, 1, 11, 21,
                     NULL, NULL);
             INSERT INTO messages (otp_id, created_at, to_number, provider, status)
             VALUES (7, 10, '+34600000001', 'twilio', 'sent');
             INSERT INTO audit (at, otp_id, event, phone) VALUES (10, 7, 'generated', '+34');",
        )
        .unwrap();
        let rows = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT quote(id) || quote(phone) || quote(purpose) || quote(user_id) ||
                              quote(code_hash) || quote(state) || quote(attempts) ||
                              quote(max_attempts) || quote(test_number) || quote(created_at) ||
                              quote(expires_at) || quote(verified_at) || quote(country)
                       FROM otps ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = rows(&conn);

        migrate(&mut conn).unwrap();

        assert_eq!(rows(&conn), before);
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN
                      ('otps', 'audit') AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "audit_by_time",
                "otps_by_expiry",
                "otps_by_phone_purpose",
                "otps_unverified_by_country"
            ]
        );
        // `messages` still refers to `otps`, and the reference is enforced again.
        let e = conn
            .execute("DELETE FROM otps WHERE id = 7", [])
            .unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        conn.execute("DELETE FROM otps WHERE id = 9", []).unwrap();
    }

    /// WAL frames (pages) that `write` commits on a file holding `codes` codes, each
    /// without a destination country (the cost guard off) and with a delivery that
    /// Twilio accepted ("queued"), at schema `version`.
    fn pages_written(version: usize, codes: i64, write: impl FnOnce(&Connection)) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.db");
        create_at_version(&path, version).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for n in 0..codes {
            conn.prepare_cached(Store::INSERT_CODE)
                .unwrap()
                .execute(params![
                    format!("+346{n:08}"),
                    "login",
                    None::<String>,
                    [7u8; 32],
                    5,
                    false,
                    n,
                    n + 600_000,
                    None::<String>
                ])
                .unwrap();
            deliver(&conn, conn.last_insert_rowid());
        }
        conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        write(&conn);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    /// The row `record_delivery` writes for a code that Twilio accepted.
    fn deliver(conn: &Connection, otp_id: i64) {
        conn.prepare_cached(Store::INSERT_DELIVERY)
            .unwrap()
            .execute(params![
                otp_id,
                otp_id,
                "+34600000000",
                "twilio",
                format!("SM{otp_id:032x}"),
                "queued",
                None::<i64>,
                None::<String>,
                1,
                "sms"
            ])
            .unwrap();
    }

    #[test]
    fn a_verify_with_the_guard_off_writes_only_the_codes_page() {
        // Before migration 9 every code was in the unverified-budget index, country or
        // not, so a verify also rewrote a page of it.
        let verify = |c: &Connection| {
            c.execute(Store::CONSUME, params![2_500, 1]).unwrap();
        };
        assert_eq!(pages_written(8, 5_000, verify), 2);
        assert_eq!(pages_written(SCHEMA_VERSION, 5_000, verify), 1);
    }

    #[test]
    fn a_code_delivery_stays_out_of_the_outbox_index() {
        // Before migration 9 Twilio's "queued" put every code delivery in the outbox's
        // due index too.
        let one_more = |c: &Connection| deliver(c, 2_500);
        let before = pages_written(8, 5_000, one_more);
        let after = pages_written(SCHEMA_VERSION, 5_000, one_more);
        assert_eq!(after, before - 1, "{before} pages before, {after} after");
    }

    #[test]
    fn the_outbox_finds_due_messages_through_its_index() {
        let conn = migrated();
        let plans = [
            query_plan(&conn, outbox::CLAIM_DUE, params![0, 10]),
            query_plan(&conn, outbox::NEXT_DUE, []),
        ];
        for plan in plans {
            assert!(
                plan.iter().any(|p| p.contains("INDEX messages_due")),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn reading_the_audit_since_a_time_uses_its_time_index() {
        let conn = migrated();
        let plan = query_plan(&conn, Store::AUDIT_SINCE, params![0, "+34600000001", 10]);
        assert!(
            plan.iter()
                .any(|p| p.contains("INDEX audit_by_time (at>?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[test]
    fn sqlite_is_built_as_cargo_config_says() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for on in ["DEFAULT_MEMSTATUS=0", "DQS=0", "OMIT_LOAD_EXTENSION"] {
            assert!(options.iter().any(|o| o == on), "{on} missing: {options:?}");
        }
        for off in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_DBSTAT_VTAB",
        ] {
            assert!(
                !options.iter().any(|o| o == off),
                "{off} built in: {options:?}"
            );
        }
    }

    #[test]
    fn counting_unverified_codes_uses_the_partial_index() {
        let conn = migrated();
        let plan = query_plan(&conn, Store::COUNT_UNVERIFIED, params!["ES", 0]);
        assert!(
            plan.iter().any(
                |p| p.contains("INDEX otps_unverified_by_country (country=? AND created_at>?)")
            ),
            "{plan:?}"
        );
    }

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
