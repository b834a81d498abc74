//! What time it is: the one place otpd reads the wall clock. The api edge, the daemon's
//! jobs, the outbox workers and the providers ask a [`Clock`]; everything below them
//! takes `now` as an argument. Waiting (tokio timers, `Instant`) is not telling the
//! time and stays as it is.
//!
//! In development mode only, [`DEV_CLOCK_FILE`] may name a file holding a number of
//! seconds added to the system clock, read at each use: the integration tests move the
//! real binary's time forward instead of sleeping. Config builds that clock only in
//! development mode, which never delivers to a phone, so it cannot be on in production.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The environment variable naming the offset file (development mode only).
pub const DEV_CLOCK_FILE: &str = "OTPD_DEV_CLOCK_FILE";

/// The wall clock, or (development mode) the wall clock moved by an offset file.
/// Cheap to clone: each part that tells the time holds one.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_file: Option<Arc<Path>>,
}

impl Clock {
    /// The system's clock, unmoved.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system's clock plus the seconds written in `path`. Only config calls this,
    /// and only in development mode.
    pub(crate) fn offset_by(path: PathBuf) -> Clock {
        Clock {
            offset_file: Some(path.into()),
        }
    }

    /// The file moving this clock, if any (said loudly at start).
    pub fn offset_file(&self) -> Option<&Path> {
        self.offset_file.as_deref()
    }

    pub fn now(&self) -> SystemTime {
        #[allow(
            clippy::disallowed_methods,
            reason = "the one reading of the wall clock; everything else asks a Clock"
        )]
        let system = SystemTime::now();
        match &self.offset_file {
            None => system,
            Some(path) => shift(system, offset(path)),
        }
    }
}

/// The offset in `path`: a missing file is no offset (the test has not moved time yet);
/// anything else that is not a number of seconds is said and ignored. A blocking read
/// of a few bytes, in development mode only.
fn offset(path: &Path) -> f64 {
    match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() => seconds,
            _ => {
                log::warn!(
                    "{DEV_CLOCK_FILE}: {} does not hold a number of seconds; the clock is not moved",
                    path.display()
                );
                0.0
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0.0,
        Err(e) => {
            log::warn!("{DEV_CLOCK_FILE}: cannot read {}: {e}", path.display());
            0.0
        }
    }
}

fn shift(t: SystemTime, seconds: f64) -> SystemTime {
    let by = Duration::try_from_secs_f64(seconds.abs()).unwrap_or(Duration::ZERO);
    let shifted = if seconds < 0.0 {
        t.checked_sub(by)
    } else {
        t.checked_add(by)
    };
    shifted.unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(a: SystemTime, b: SystemTime) -> f64 {
        match a.duration_since(b) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    #[test]
    fn the_offset_file_moves_the_clock_at_each_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        let moved = Clock::offset_by(path.clone());
        let system = Clock::system();
        // No file yet: the system's time.
        assert!(gap(moved.now(), system.now()).abs() < 1.0);
        std::fs::write(&path, "3600\n").unwrap();
        assert!((gap(moved.now(), system.now()) - 3600.0).abs() < 1.0);
        std::fs::write(&path, "-90.5").unwrap();
        assert!((gap(moved.now(), system.now()) + 90.5).abs() < 1.0);
        // Not a number: said, and no offset rather than a panic or a stale one.
        std::fs::write(&path, "tomorrow").unwrap();
        assert!(gap(moved.now(), system.now()).abs() < 1.0);
        assert_eq!(moved.offset_file(), Some(path.as_path()));
        assert_eq!(system.offset_file(), None);
    }

    #[test]
    fn an_offset_beyond_what_time_can_hold_leaves_the_time_alone() {
        let t = SystemTime::UNIX_EPOCH;
        // A Duration, but past what a SystemTime can reach; and not even a Duration.
        assert_eq!(shift(t, 1.5e19), t);
        assert_eq!(shift(t, f64::MAX), t);
        assert_eq!(shift(t, 2.0), t + Duration::from_secs(2));
    }
}
