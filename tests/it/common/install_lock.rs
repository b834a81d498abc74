//! A lock that serializes tool installs (Prism's npm ci, the Python venv) across
//! concurrent test processes: an exclusive `flock` on a file. The kernel drops it when
//! its holder exits, however it exits, so no stale lock needs detecting or removing.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Held while alive; the lock goes with the file handle on drop (the file stays, empty).
pub struct InstallLock {
    _file: File,
}

impl InstallLock {
    /// Waits (at most `timeout`) for the lock at `path`; a test failure after that.
    pub fn acquire_within(timeout: Duration, path: &Path) -> InstallLock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return InstallLock { _file: file },
                Err(TryLockError::WouldBlock) if started.elapsed() <= timeout => {
                    thread::sleep(Duration::from_millis(250));
                }
                Err(TryLockError::WouldBlock) => panic!(
                    "waited {timeout:?} for {} (another test process installing a tool)",
                    path.display()
                ),
                Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
            }
        }
    }
}

#[test]
fn a_second_holder_waits_until_the_first_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tool.lock");
    let first = InstallLock::acquire_within(Duration::from_secs(1), &path);
    let waiter = {
        let path = path.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let _second = InstallLock::acquire_within(Duration::from_secs(10), &path);
            started.elapsed()
        })
    };
    thread::sleep(Duration::from_millis(500));
    drop(first);
    let waited = waiter.join().unwrap();
    assert!(
        waited >= Duration::from_millis(400),
        "took the lock after {waited:?}"
    );
}
