//! A datagram socket standing in for systemd's NOTIFY_SOCKET: what otpd tells systemd
//! (READY=1, RELOADING=1, WATCHDOG=1, ...), read by the test.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A datagram socket the test owns, handed to otpd as NOTIFY_SOCKET.
pub struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl NotifySocket {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        // A bound on a wait that should end in milliseconds, not an assertion on time.
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        NotifySocket {
            socket,
            _dir: dir,
            path,
        }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next datagram otpd sent.
    pub fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("no sd_notify message from otpd within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads datagrams until one has `state` as a line; returns the one that did.
    pub fn wait_for(&self, state: &str) -> String {
        loop {
            let message = self.next();
            if message.lines().any(|l| l == state) {
                return message;
            }
        }
    }
}

impl NotifySocket {
    /// How many datagrams with `state` as a line arrive within `window` from now.
    pub fn count_within(&self, state: &str, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut buf = [0u8; 4096];
        let mut seen = 0;
        while let Some(left) = end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]);
                    seen += usize::from(message.lines().any(|l| l == state));
                }
                Err(_) => break,
            }
        }
        self.socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        seen
    }
}
