//! otpd: SMS one-time passwords for a web backend, as a local daemon.
//!
//! A request in one sentence: [`server`] accepts a connection on the Unix socket and
//! reads the caller's credentials → [`api`] parses the JSON into [`types`] → [`otp`]
//! (the service) asks the [`limiter`] and then the cost [`guard`] (destination country,
//! per-country and per-prefix limits, daily cap, unverified budget), writes through the
//! [`store`] and sends through the [`sender`] ([`twilio`] or the development outbox) →
//! its `Result` returns to [`api`], which alone picks the HTTP status and error code.
//!
//! ```text
//! caller ──HTTP/1.1 JSON over Unix socket──▶ server ─▶ api
//!                                                      │
//!                                                      ▼
//!                                                     otp
//!                                 ╱          ╱         │          ╲
//!                          limiter      guard        store          sender ─▶ twilio
//!                         (governor)  (cost guard)  (SQLite)      (or dev outbox)
//! ```
//!
//! Plain SMS take a second path through the same parts: [`api`] → [`messaging`] asks the
//! [`guard`] (country lists, daily cap), commits the message to the [`store`]'s outbox
//! and answers 202; its workers send through the
//! [`sender`] and record each step; Twilio's status callbacks, checked by [`callback`],
//! extend that history. [`segments`] says what a body costs.
//!
//! [`twilio`] retries Twilio's faults within a deadline behind a circuit [`breaker`].
//! [`config`] is parsed and validated once, before any of this starts; [`signals`]
//! turns SIGTERM/SIGINT/SIGHUP into intents; [`logging`] picks journald or stderr;
//! [`telemetry`] names the Prometheus metrics. [`client`] is the other side of the
//! socket: the CLI's `otpd status`, `otpd send-otp`, ...
//! Nothing in store, limiter, guard, sender or twilio imports api or otp; the guard
//! reads its counts through the store's operations.

pub mod api;
pub mod breaker;
pub mod callback;
pub mod client;
pub mod config;
pub mod guard;
pub mod limiter;
pub mod logging;
pub mod messaging;
pub mod otp;
#[cfg(test)]
mod properties;
pub mod segments;
pub mod sender;
pub mod server;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod twilio;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixListener;

use crate::api::Api;
use crate::config::{Config, ProviderConfig};
use crate::guard::Guard;
use crate::limiter::Limiter;
use crate::messaging::MessagingService;
use crate::otp::{KeyError, OtpService};
use crate::sender::{SendError, Sender};
use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sender(#[from] SendError),
}

/// How often limiter keys that have fully refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often histogram samples are folded into the exporter (bounds their memory).
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the daemon on `listener` until `shutdown` resolves, then drains and closes.
/// The listener and the shutdown future are parameters so that main (signals, systemd)
/// and tests drive the same code.
pub async fn run(
    config: &Config,
    listener: &UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
        .await
        .map_err(|_| StoreError::Closed)??;
    let sender = Arc::new(Sender::new(&config.provider)?);
    let limiter = Arc::new(Limiter::new(&config.limits));
    // One guard for both paths: codes and plain messages count against one daily cap.
    let guard = Arc::new(Guard::new(&config.guard));
    let messaging = Arc::new(MessagingService::new(
        config,
        store.clone(),
        sender.clone(),
        limiter.clone(),
        guard.clone(),
    ));
    let service = OtpService::new(config, store, sender, limiter, guard)?;
    announce(config);
    let api = Arc::new(Api::new(
        service,
        messaging.clone(),
        &config.server,
        telemetry::install(),
    ));

    let housekeeping = tokio::spawn(housekeeping(api.clone()));
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(messaging.run_workers(workers_stop));

    notify(sd_notify::NotifyState::Ready);
    log::info!("listening on {}", config.server.socket_path.display());
    let options = server::ServeOptions {
        max_connections: config.server.max_connections,
        header_timeout: config.server.request_timeout,
        drain_timeout: config.server.shutdown_timeout,
    };
    let shutdown = async {
        shutdown.await;
        notify(sd_notify::NotifyState::Stopping);
    };
    server::serve(listener, api.clone(), options, shutdown).await;

    // Sends already handed to Twilio get to finish and be recorded; a send still
    // running after the drain timeout is left `sending` and becomes `unknown` at start.
    let _ = stop_workers.send(true);
    if tokio::time::timeout(config.server.shutdown_timeout, workers)
        .await
        .is_err()
    {
        log::warn!("outbox sends still running at shutdown; they will show as unknown");
    }
    housekeeping.abort();
    let api_for_close = api.clone();
    let _ = tokio::task::spawn_blocking(move || api_for_close.service().store().close()).await;
    log::info!("stopped");
    Ok(())
}

/// The periodic jobs: limiter pruning, metrics upkeep and the retention job.
async fn housekeeping(api: Arc<Api>) {
    let service = api.service();
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut upkeep = tokio::time::interval(METRICS_UPKEEP_EVERY);
    let mut retention = tokio::time::interval(service.retention_interval());
    loop {
        tokio::select! {
            _ = prune.tick() => {
                service.limiter().prune();
                service.guard().prune();
            }
            _ = upkeep.tick() => api.metrics().run_upkeep(),
            _ = retention.tick() => {
                if let Err(e) = service.purge(std::time::SystemTime::now()).await {
                    log::error!("retention job: {e}");
                }
            }
        }
    }
}

/// Says loudly, once, when messages will not reach a real phone.
fn announce(config: &Config) {
    match &config.provider {
        ProviderConfig::Twilio(t) => log::info!("sending through Twilio at {}", t.api_base),
        ProviderConfig::DevOutbox(path) => log::warn!(
            "DEVELOPMENT MODE: nothing is delivered; messages are written to {}",
            path.display()
        ),
        ProviderConfig::None => log::warn!(
            "no Twilio credentials configured: send-otp answers 503 provider_not_configured"
        ),
    }
    for t in &config.otp.test_numbers {
        log::warn!(
            "test number {}{} gets a fixed code and no SMS until {}",
            t.pattern,
            if t.is_prefix { "*" } else { "" },
            humantime::format_rfc3339_seconds(t.until)
        );
    }
}

/// Tells systemd our state; a no-op when not started by systemd (no NOTIFY_SOCKET).
fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        log::warn!("sd_notify failed: {e}");
    }
}
