//! The writer thread and the checkpointer beside it. It owns when things become
//! durable, and nothing of what the writes mean: every job is a closure from `store.rs`.
//!
//! Group commit: the writer takes every job queued on its channel (up to
//! [`MAX_GROUP`]), runs them all in one `BEGIN IMMEDIATE` transaction, commits once,
//! and only then answers each job. A reply is never sent before the commit it depends
//! on succeeded, so an acknowledged write survives a crash of the process
//! (tests/crash.rs). Measured: one commit per job spent most of the writer's time in
//! WAL frame writes and locks.
//!
//! One job's error must not cost the others their work, yet a SAVEPOINT per job (its
//! statements and the copy of every page the job touches) was a fifth of the writer's
//! work per verify. So a group first runs without savepoints; if a job fails, the whole
//! transaction is rolled back and the group runs again, each job in its own savepoint,
//! so that only the failing job's work is undone. Jobs are therefore `FnMut` closures
//! that only touch the database, and may run twice. A failed BEGIN or COMMIT fails
//! every job of the group.
//!
//! Checkpoints: SQLite's automatic checkpoint runs inside the committing connection,
//! with fsyncs, so every ~1000 WAL frames a write (and everything queued behind it)
//! waited several milliseconds. The writer turns it off and a checkpointer thread with
//! its own connection runs `wal_checkpoint(PASSIVE)` instead, which never blocks the
//! writer. Under sustained load a PASSIVE checkpoint never quite catches up, so the WAL
//! would never restart and would grow without bound: past [`RESTART_FRAMES`] the writer
//! runs a RESTART itself between two groups (most frames are already copied by then;
//! it waits at most [`RESTART_WAIT`] for readers, else tries again 16,000 frames later),
//! and `journal_size_limit` shrinks the file back when the log restarts.

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, ffi};
use tokio::sync::oneshot;

use super::StoreError;

/// At most this many jobs share one transaction: bounds what one failed commit takes
/// down and how long the first job of a group waits for the last.
pub(super) const MAX_GROUP: usize = 64;
/// The checkpointer is woken each time the WAL has grown by this many frames (4 KiB
/// pages): SQLite's own default for its automatic checkpoint.
const CHECKPOINT_FRAMES: i32 = 1000;
/// Past this many frames (~64 MiB) the writer checkpoints and restarts the log itself.
const RESTART_FRAMES: i32 = 16_000;
/// How long the writer's RESTART waits for readers before giving up until the log has
/// grown by another RESTART_FRAMES.
const RESTART_WAIT: Duration = Duration::from_millis(100);
/// The WAL file is truncated back to this size when the log restarts.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Idle: a last checkpoint this long after the last commit, so a quiet daemon's WAL is
/// folded back and restarts.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// One write: runs inside the group's transaction, then is answered with the group's fate.
pub(super) trait WriteJob: Send {
    /// Runs the job; on failure returns a copy of its error. May be called again, in a
    /// new transaction, after a rollback: each run replaces the last one's result.
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> Option<rusqlite::Error>;
    /// Answers the caller: its own result if the group committed (or its own error),
    /// else the error that lost the group.
    fn answer(self: Box<Self>, group: Result<(), &rusqlite::Error>);
}

pub(super) enum Command {
    Run(Box<dyn WriteJob>),
    Stop,
}

/// A job built by `Store::write`: the closure, then its result until the commit.
pub(super) struct Pending<T, F> {
    pub(super) f: F,
    pub(super) result: Option<Result<T, rusqlite::Error>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: FnMut(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error> + Send,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> Option<rusqlite::Error> {
        let result = (self.f)(tx);
        let error = result.as_ref().err().map(duplicate);
        self.result = Some(result);
        error
    }

    fn answer(self: Box<Self>, group: Result<(), &rusqlite::Error>) {
        let result = match (self.result, group) {
            (Some(Err(own)), _) => Err(own.into()),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(duplicate(e).into()),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(result);
    }
}

/// rusqlite's error is not `Clone`; a group's error goes to each of its jobs with the
/// SQLite codes intact, which is what [`StoreError::fault`] classifies.
fn duplicate(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

thread_local! {
    /// Frames in the WAL after this thread's last commit, from SQLite's WAL hook (a
    /// plain `fn`, so it reports through the writer thread's own slot).
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

fn record_wal_frames(
    _wal: &rusqlite::hooks::Wal,
    frames: std::os::raw::c_int,
) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// Turns the automatic checkpoint off on the writer's connection and reports the WAL's
/// size through [`WAL_FRAMES`] instead.
pub(super) fn prepare_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
    ))?;
    // After the pragma: setting wal_autocheckpoint replaces any WAL hook.
    conn.wal_hook(Some(record_wal_frames));
    // Every statement of the store runs here; rusqlite's default cache of 16 would
    // re-prepare some of them as soon as sends, verifies and the outbox mix.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The writer thread's body: groups, commits, answers; wakes the checkpointer.
pub(super) fn run(
    mut conn: Connection,
    jobs: mpsc::Receiver<Command>,
    path: PathBuf,
    busy_timeout: Duration,
) {
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let dirty = Arc::new(AtomicBool::new(false));
    // One checkpoint at a time: SQLite answers BUSY at once (no busy handler) to a
    // checkpoint that meets another, and a RESTART lost that way would wait for
    // another RESTART_FRAMES of growth.
    let checkpointing = Arc::new(Mutex::new(()));
    let checkpointer = {
        let dirty = dirty.clone();
        let checkpointing = checkpointing.clone();
        std::thread::Builder::new()
            .name("otpd-store-ckpt".into())
            .spawn(move || checkpoint_loop(&path, &woken, &dirty, &checkpointing))
    };
    if let Err(e) = &checkpointer {
        log::warn!("cannot start the checkpointer, checkpoints run in the writer: {e}");
        let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;");
    }
    let mut group: VecDeque<Box<dyn WriteJob>> = VecDeque::with_capacity(MAX_GROUP);
    let mut signalled = 0;
    let mut restart_at = RESTART_FRAMES;
    let mut stopping = false;
    while !stopping {
        match jobs.recv() {
            Ok(Command::Run(job)) => group.push_back(job),
            Ok(Command::Stop) | Err(_) => break,
        }
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(Command::Run(job)) => group.push_back(job),
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        run_group(&mut conn, &mut group);
        dirty.store(true, Ordering::Relaxed);
        let frames = WAL_FRAMES.with(Cell::get);
        if frames < signalled {
            // The log restarted.
            signalled = 0;
            restart_at = RESTART_FRAMES;
        }
        if frames >= signalled + CHECKPOINT_FRAMES {
            signalled = frames;
            let _ = wake.try_send(());
        }
        if frames >= restart_at {
            // Once per RESTART_FRAMES of growth, with a short wait: a reader holding an
            // old snapshot makes RESTART wait for it, and writes wait meanwhile.
            restart_at = frames.saturating_add(RESTART_FRAMES);
            let _turn = checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = conn.busy_timeout(RESTART_WAIT);
            match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
                Ok(0) => {}
                Ok(_) => log::debug!("WAL restart postponed: a reader still uses it"),
                Err(e) => log::warn!("restarting the WAL: {e}"),
            }
            let _ = conn.busy_timeout(busy_timeout);
        }
    }
    drop(wake);
    if let Ok(handle) = checkpointer {
        let _ = handle.join();
    }
    // Fold the WAL back so the file on disk is complete on its own.
    if let Err(e) = conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);") {
        log::warn!("closing the store: {e}");
    }
}

/// Runs the queued jobs in as few transactions as possible and answers every one.
fn run_group(conn: &mut Connection, queued: &mut VecDeque<Box<dyn WriteJob>>) {
    if !run_whole(conn, queued) {
        run_in_savepoints(conn, queued);
    }
}

/// A transaction whose rollback failed would make every later BEGIN fail.
fn end_stray_transaction(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// The usual case: every job in one transaction, without savepoints. Answers every job
/// and returns true, unless a job of several failed: then nothing of the group is kept,
/// nobody is answered, and it returns false for the group to run again in savepoints.
fn run_whole(conn: &mut Connection, queued: &mut VecDeque<Box<dyn WriteJob>>) -> bool {
    end_stray_transaction(conn);
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            for job in queued.drain(..) {
                job.answer(Err(&e));
            }
            return true;
        }
    };
    for job in queued.iter_mut() {
        if let Some(e) = job.run(&tx) {
            drop(tx);
            if queued.len() > 1 {
                return false;
            }
            // Alone, the job lost only its own work: it gets its own error.
            for job in queued.drain(..) {
                job.answer(Err(&e));
            }
            return true;
        }
    }
    let outcome = tx.commit();
    for job in queued.drain(..) {
        job.answer(outcome.as_ref().map(|_| ()));
    }
    true
}

/// After a job failed: each job in its own SAVEPOINT, so a failure undoes only its own
/// work, and the rest commits.
fn run_in_savepoints(conn: &mut Connection, queued: &mut VecDeque<Box<dyn WriteJob>>) {
    end_stray_transaction(conn);
    let mut done: Vec<Box<dyn WriteJob>> = Vec::with_capacity(queued.len());
    while !queued.is_empty() {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for job in queued.drain(..) {
                    job.answer(Err(&e));
                }
                return;
            }
        };
        // Jobs after one that lost the whole transaction go into a new one.
        let mut lost = None;
        while let Some(mut job) = queued.pop_front() {
            // Cached statements: two per job, on the hottest path of the writer.
            if let Err(e) = tx
                .prepare_cached("SAVEPOINT job")
                .and_then(|mut s| s.execute([]))
            {
                job.answer(Err(&e));
                lost = Some(e);
                break;
            }
            let failed = job.run(&tx);
            let ended = match failed {
                None => tx
                    .prepare_cached("RELEASE job")
                    .and_then(|mut s| s.execute([]))
                    .map(drop),
                Some(_) => tx.execute_batch("ROLLBACK TO job; RELEASE job"),
            };
            // SQLite rolls the whole transaction back on some errors (a full disk, an
            // I/O error): the jobs before this one lost their work too.
            let aborted = tx.is_autocommit();
            if aborted || ended.is_err() {
                let e = ended
                    .err()
                    .or(failed)
                    .unwrap_or_else(|| duplicate(&rusqlite::Error::InvalidQuery));
                job.answer(Err(&e));
                lost = Some(e);
                break;
            }
            done.push(job);
        }
        let outcome = match lost {
            Some(e) => {
                drop(tx);
                Err(e)
            }
            None => tx.commit(),
        };
        for job in done.drain(..) {
            job.answer(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Checkpoints on its own connection when the writer says the WAL has grown, and once
/// after the writer goes quiet. Ends when the writer drops its end of `woken`.
fn checkpoint_loop(
    path: &std::path::Path,
    woken: &mpsc::Receiver<()>,
    dirty: &AtomicBool,
    checkpointing: &Mutex<()>,
) {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(e) => {
            log::warn!("checkpointer: cannot open the database: {e}");
            return;
        }
    };
    let mut failing = false;
    loop {
        match woken.recv_timeout(IDLE_CHECKPOINT) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !dirty.swap(false, Ordering::Relaxed) {
                    continue;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // PASSIVE waits for nobody: frames a reader still needs stay for the next one.
        let turn = checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        drop(turn);
        match result {
            Ok(()) if failing => {
                failing = false;
                log::info!("checkpoints succeed again");
            }
            Ok(()) => {}
            // Logged once per failing stretch (a full disk fails every checkpoint).
            Err(e) if !failing => {
                failing = true;
                log::warn!("checkpoint failed, the WAL grows until one succeeds: {e}");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<T: Send + 'static>(
        f: impl FnMut(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            f,
            result: None,
            reply,
        };
        (Box::new(pending), answer)
    }

    fn insert(x: i64) -> impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        move |tx| tx.execute("INSERT INTO t VALUES (?1)", [x]).map(drop)
    }

    /// `insert(x)` that counts its runs in `runs`.
    fn counted(
        x: i64,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + use<> {
        let runs = runs.clone();
        move |tx| {
            runs.fetch_add(1, Ordering::Relaxed);
            tx.execute("INSERT INTO t VALUES (?1)", [x]).map(drop)
        }
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn jobs_run_once_unless_another_job_of_their_group_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER UNIQUE);")
            .unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, mut a_answer) = job(counted(1, &runs));
        let (b, mut b_answer) = job(counted(2, &runs));
        let mut queued: VecDeque<_> = [a, b].into();
        run_group(&mut conn, &mut queued);
        assert!(a_answer.try_recv().unwrap().is_ok());
        assert!(b_answer.try_recv().unwrap().is_ok());
        assert_eq!(runs.load(Ordering::Relaxed), 2);

        // A failing job alone is answered with its own error, and not run again.
        let (c, mut c_answer) = job(counted(1, &runs));
        let mut queued: VecDeque<_> = [c].into();
        run_group(&mut conn, &mut queued);
        assert!(c_answer.try_recv().unwrap().is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 3);

        // Beside others, it makes them run again (in savepoints) and they commit.
        let (d, mut d_answer) = job(counted(3, &runs));
        let (e, mut e_answer) = job(counted(2, &runs));
        let (f, mut f_answer) = job(counted(4, &runs));
        let mut queued: VecDeque<_> = [d, e, f].into();
        run_group(&mut conn, &mut queued);
        assert!(d_answer.try_recv().unwrap().is_ok());
        assert!(e_answer.try_recv().unwrap().is_err());
        assert!(f_answer.try_recv().unwrap().is_ok());
        // d and e ran, e failed; then d, e and f in savepoints.
        assert_eq!(runs.load(Ordering::Relaxed), 3 + 2 + 3);
        assert_eq!(rows(&conn), [1, 2, 3, 4]);
    }

    #[test]
    fn a_failing_job_rolls_back_only_its_own_work_and_the_group_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER UNIQUE);")
            .unwrap();
        let (a, mut a_answer) = job(insert(1));
        // Inserts a row, then fails on a duplicate: both statements must vanish.
        let (b, mut b_answer) = job(|tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            tx.execute("INSERT INTO t VALUES (1)", []).map(drop)
        });
        let (c, mut c_answer) = job(insert(3));
        let mut queued: VecDeque<_> = [a, b, c].into();
        // Nobody is answered before the group ran.
        assert!(a_answer.try_recv().is_err());
        run_group(&mut conn, &mut queued);
        assert!(a_answer.try_recv().unwrap().is_ok());
        assert!(b_answer.try_recv().unwrap().is_err());
        assert!(c_answer.try_recv().unwrap().is_ok());
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [1, 3]);
    }

    #[test]
    fn a_failed_begin_fails_every_job_of_the_group_with_its_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        conn.busy_timeout(Duration::ZERO).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (a, mut a_answer) = job(insert(1));
        let (b, mut b_answer) = job(insert(2));
        let mut queued: VecDeque<_> = [a, b].into();
        run_group(&mut conn, &mut queued);
        for answer in [&mut a_answer, &mut b_answer] {
            let e = answer.try_recv().unwrap().unwrap_err();
            assert_eq!(e.fault(), super::super::Fault::Busy);
        }
        other.execute_batch("ROLLBACK").unwrap();
        // The condition cleared: the next group commits.
        let (c, mut c_answer) = job(insert(3));
        let mut queued: VecDeque<_> = [c].into();
        run_group(&mut conn, &mut queued);
        assert!(c_answer.try_recv().unwrap().is_ok());
    }

    #[test]
    fn the_wal_restarts_instead_of_growing_with_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        // Small pages: 60,000 WAL frames in a few MB of writes.
        conn.execute_batch(
            "PRAGMA page_size = 512; PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB);",
        )
        .unwrap();
        prepare_writer(&conn).unwrap();
        let (sender, jobs) = mpsc::channel();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || run(conn, jobs, path, Duration::from_secs(5)))
        };
        // One job per group, each about 1000 pages.
        for _ in 0..60 {
            let (j, answer) = job(|tx| {
                let mut insert = tx.prepare_cached("INSERT INTO t VALUES (zeroblob(400))")?;
                for _ in 0..1000 {
                    insert.execute([])?;
                }
                Ok(())
            });
            sender.send(Command::Run(j)).unwrap();
            answer.blocking_recv().unwrap().unwrap();
        }
        // The file keeps the size of the longest log it held.
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        let frame = 512 + 24;
        assert!(
            wal < 40_000 * frame,
            "the WAL reached {} frames",
            wal / frame
        );
        sender.send(Command::Stop).unwrap();
        writer.join().unwrap();
    }
}
