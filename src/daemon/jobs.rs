//! The daemon's background work: the outbox workers of the current configuration, the
//! periodic jobs (limiter and guard pruning, handing freed memory back, metrics upkeep,
//! the outbox backlog's age, retention), the codes an earlier run left pending, and the watchdog's pings. Each tick uses the [`App`] current at that tick.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::app::App;
use crate::{memory, systemd};

/// How often limiter keys that have fully refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often histogram samples are folded into the exporter's buckets: until then each
/// sample is kept raw, so a short interval bounds that memory under load.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the outbox backlog's age is measured (a read of one index entry).
const BACKLOG_EVERY: Duration = Duration::from_secs(15);
/// Between passes over the codes whose provider could not be asked yet.
const RECOVERY_FIRST_WAIT: Duration = Duration::from_millis(500);
const RECOVERY_MAX_WAIT: Duration = Duration::from_secs(60);

/// One set of outbox workers and the switch that stops them.
pub struct Workers {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Workers {
    pub fn start(app: &App) -> Self {
        let (stop, stopped) = watch::channel(false);
        Workers {
            stop,
            task: Some(tokio::spawn(app.messaging.clone().run_workers(stopped))),
        }
    }

    /// Stops them and waits up to `timeout` for their sends; false if they were still
    /// running then (they are left to finish on their own).
    pub async fn stop(&mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }
}

/// The periodic jobs, until aborted.
pub async fn housekeeping(apps: Arc<ArcSwap<App>>) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut upkeep = tokio::time::interval(METRICS_UPKEEP_EVERY);
    let mut backlog = tokio::time::interval(BACKLOG_EVERY);
    let mut heartbeat = tokio::time::interval(crate::reports::HEARTBEAT_EVERY);
    let mut retention = tokio::time::interval(apps.load().reports.retention_interval());
    loop {
        tokio::select! {
            _ = prune.tick() => {
                let app = apps.load_full();
                app.limiter.prune();
                app.guard.prune();
                // Shared limits: each host prunes; SKIP LOCKED keeps them apart.
                if let Err(e) = app.store.prune_limits().await {
                    log::warn!("pruning the shared rate limits: {e}");
                }
                // After what the prunes (and, the first time, start-up) freed.
                memory::release();
            }
            _ = upkeep.tick() => apps.load().metrics.run_upkeep(),
            _ = heartbeat.tick() => {
                let app = apps.load_full();
                if let Err(e) = app.reports.heartbeat(app.clock.now()).await {
                    log::warn!("instance heartbeat: {e}");
                }
            }
            _ = backlog.tick() => apps.load_full().messaging.measure_backlog().await,
            _ = retention.tick() => {
                let app = apps.load_full();
                if let Err(e) = app.reports.purge(app.clock.now()).await {
                    log::error!("retention job: {e}");
                }
            }
        }
    }
}

/// The codes an earlier run (before `started`) left pending, asked about until each
/// is decided: at once, then with a doubling wait (the provider may be down).
pub async fn recover_codes(apps: Arc<ArcSwap<App>>, started: SystemTime) {
    let app = apps.load_full();
    let first = app.otp.interrupted_codes(started, app.clock.now()).await;
    let mut pending = match first {
        Ok(codes) => codes,
        Err(e) => {
            log::error!("code recovery: {e}");
            return;
        }
    };
    if !pending.is_empty() {
        log::warn!(
            "{} code(s) were being sent when otpd stopped; asking the provider whether their messages left",
            pending.len()
        );
    }
    let mut wait = RECOVERY_FIRST_WAIT;
    while !pending.is_empty() {
        let app = apps.load_full();
        let mut left = Vec::new();
        for code in pending {
            match app.otp.recover_code(&code, app.clock.now()).await {
                Ok(true) => {}
                Ok(false) => left.push(code),
                Err(e) => {
                    log::error!("code recovery: otp {}: {e}", code.id);
                    left.push(code);
                }
            }
        }
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECOVERY_MAX_WAIT);
        }
    }
}

/// Pings systemd's watchdog while this process's store answers (a wedged writer
/// thread stops the pings and systemd restarts otpd; a shared database being away
/// does not, see `Store::alive`).
pub async fn watchdog(apps: Arc<ArcSwap<App>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let app = apps.load_full();
        match tokio::time::timeout(every, app.reports.alive()).await {
            Ok(Ok(())) => systemd::notify(&[systemd::State::Watchdog]),
            Ok(Err(e)) => log::error!("watchdog: the store does not answer: {e}"),
            Err(_) => log::error!("watchdog: the store did not answer within {every:?}"),
        }
    }
}
