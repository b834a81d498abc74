//! The writer thread. It owns when writes become durable, and nothing of what they
//! mean: every job is a closure from one of the store's statement files.
//!
//! Group commit: the writer takes every job queued on its channel (up to
//! [`MAX_GROUP`]), runs them all in one `BEGIN IMMEDIATE` transaction, commits once,
//! and only then answers each job. A reply is never sent before the commit it depends
//! on succeeded, so an acknowledged write survives a crash of the process
//! (tests/crash.rs). Measured: one commit per job spent most of the writer's time in
//! WAL frame writes and locks.
//!
//! One job's error must not cost the others their work, yet a SAVEPOINT per job (its
//! statements and the copy of every page the job touches) is a large share of the
//! writer's work per verify. So a group first runs without savepoints; if a job fails,
//! the whole transaction is rolled back and the group runs again, each job in its own
//! savepoint, so that only the failing job's work is undone. Jobs are therefore `FnMut`
//! closures that only touch the database, and may run twice. A failed BEGIN or COMMIT
//! fails every job of the group.
//!
//! Checkpoints are SQLite's own: the automatic checkpoint runs on this connection after
//! a commit that leaves 1000 pages in the WAL, and closing folds the log back with a
//! TRUNCATE. No checkpointer thread: the short stall a checkpoint adds to the writes
//! queued behind it shows in benchmark ratios, and no product latency target needs it.

use std::collections::VecDeque;
use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior, ffi};
use tokio::sync::oneshot;

use super::StoreError;

/// At most this many jobs share one transaction: bounds what one failed commit takes
/// down and how long the first job of a group waits for the last.
pub(super) const MAX_GROUP: usize = 64;
/// After a burst, the WAL file is truncated back to this size when the log restarts.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

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

/// A job built by `SqliteStore::write`: the closure, then its result until the commit.
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

/// Bounds the WAL file a burst leaves behind and sizes the statement cache.
pub(super) fn prepare_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"))?;
    // Every statement of the store runs here; rusqlite's default cache of 16 would
    // re-prepare some of them as soon as sends, verifies and the outbox mix.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The writer thread's body: takes what is queued, runs it as one group, answers.
pub(super) fn run(mut conn: Connection, jobs: mpsc::Receiver<Command>) {
    let mut group: VecDeque<Box<dyn WriteJob>> = VecDeque::with_capacity(MAX_GROUP);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
        runs: &Arc<AtomicUsize>,
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
        let runs = Arc::new(AtomicUsize::new(0));
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
        assert_eq!(rows(&conn), [1, 3]);
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
        let writer = std::thread::spawn(move || run(conn, jobs));
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
