//! A lock file that serializes tool installs (Prism's npm ci, the Python venv) across
//! concurrent test processes.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A lock file created exclusively, holding the owner's pid; removed on drop. One left by
/// a process that is gone (or older than the wait limit) is taken over.
pub struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    /// Waits (at most `timeout`) for the lock at `path`; a test failure after that.
    #[allow(
        clippy::panic,
        reason = "an install lock that is never released is a test failure"
    )]
    pub fn acquire_within(timeout: Duration, path: &Path) -> InstallLock {
        let started = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    return InstallLock {
                        path: path.to_owned(),
                    };
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if Self::is_stale(path, timeout) {
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if started.elapsed() > timeout {
                        panic!(
                            "waited {timeout:?} for {} (another test process installing \
                             a tool); remove it if no such process is running",
                            path.display()
                        );
                    }
                    thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    fn is_stale(path: &Path, timeout: Duration) -> bool {
        let owner = fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            return true;
        }
        let age = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        // An empty file is one being written right now, unless it is old.
        age.is_some_and(|age| age > timeout)
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
