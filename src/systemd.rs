//! What otpd tells systemd: READY, RELOADING, STOPPING and the watchdog's pings, through
//! `NOTIFY_SOCKET`. Every call is a no-op when systemd did not start us.

use std::time::Duration;

pub use sd_notify::NotifyState as State;

/// Tells systemd our state.
pub fn notify(states: &[State<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("sd_notify failed: {e}");
    }
}

/// RELOADING=1 with the monotonic time, which `Type=notify-reload` matches to its SIGHUP.
pub fn reloading() {
    let mut states = vec![State::Reloading];
    if let Ok(now) = State::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Half of systemd's `WatchdogSec`, when it is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2)
}
