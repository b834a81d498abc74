//! Unix signals turned into intents: SIGTERM and SIGINT ask for a graceful shutdown,
//! SIGHUP for a reload. One signal stream for the whole process.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Shutdown,
    Reload,
}

pub struct Intents {
    signals: Signals,
}

impl Intents {
    /// Installs the handlers; call before the daemon says it is ready.
    pub fn install() -> std::io::Result<Self> {
        Ok(Intents {
            signals: Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        })
    }

    /// The next intent; `None` once the signal stream is closed.
    pub async fn next(&mut self) -> Option<Intent> {
        loop {
            match self.signals.next().await? {
                SIGTERM | SIGINT => return Some(Intent::Shutdown),
                SIGHUP => return Some(Intent::Reload),
                _ => continue,
            }
        }
    }
}
