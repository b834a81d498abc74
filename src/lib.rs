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
//! [`config`] is parsed and validated once, before any of this starts, and again on
//! SIGHUP: a reload builds a new [`api::Api`] over the same store and limiter and swaps
//! it in (see [`run`]); [`signals`] turns SIGTERM/SIGINT/SIGHUP into intents; [`logging`] picks journald or stderr;
//! [`telemetry`] names the Prometheus metrics; [`phonelib`] keeps the phone-number
//! library's regexes small and compiled once. [`client`] is the other side of the
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
pub mod memory;
pub mod messaging;
pub mod otp;
pub mod phonelib;
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

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::config::{Config, ConfigError, ProviderConfig};
use crate::guard::Guard;
use crate::limiter::Limiter;
use crate::messaging::MessagingService;
use crate::otp::{KeyError, OtpService};
use crate::sender::{SendError, Sender};
use crate::store::{Store, StoreError};

/// Why the daemon could not start (or a reloaded configuration could not be applied).
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sender(#[from] SendError),
    /// Only on reload: at start-up main reports a bad file before `run`.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// How often limiter keys that have fully refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often histogram samples are folded into the exporter's buckets. Until then each
/// is kept raw (8 bytes): at 50,000 requests/s and three samples each, 1 s holds ~1 MiB
/// where 5 s held ~6 MiB (BENCHMARKS.md); folding costs the same per sample either way.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Reads the configuration again, by the same path as at start-up (file, env, credentials).
pub type LoadConfig = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// SIGHUP's side of [`run`]: one message on `requests` per reload asked for.
pub struct Reloads {
    pub requests: mpsc::UnboundedReceiver<()>,
    pub load: LoadConfig,
}

/// Runs the daemon on `listener` until `shutdown` resolves, then drains and closes.
/// The listener and the shutdown future are parameters so that main (signals, systemd)
/// and tests drive the same code; `reloads`, when given, swap in a new configuration.
pub async fn run(
    config: &Config,
    listener: &UnixListener,
    shutdown: impl Future<Output = ()>,
    reloads: Option<Reloads>,
) -> Result<(), StartError> {
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
        .await
        .map_err(|_| StoreError::Closed)??;
    let limiter = Arc::new(Limiter::new(&config.limits));
    let (api, messaging) = build(config, &store, &limiter, telemetry::install())?;
    announce(config);
    let apis = Arc::new(ArcSwap::new(api));
    let mut live = Live {
        apis: apis.clone(),
        store,
        limiter,
        config: config.clone(),
        started: config.clone(),
        workers: Workers::start(messaging),
    };

    let housekeeping = tokio::spawn(housekeeping(apis.clone()));
    let watchdog = watchdog_interval().map(|every| tokio::spawn(watchdog(apis.clone(), every)));

    notify(&[sd_notify::NotifyState::Ready]);
    log::info!("listening on {}", config.server.socket_path.display());
    let options = server::ServeOptions {
        max_connections: config.server.max_connections,
        header_timeout: config.server.request_timeout,
        drain_timeout: config.server.shutdown_timeout,
    };
    // Reloads run inside the future the accept loop polls for shutdown, so they never
    // race the drain that follows it.
    let control = async {
        tokio::pin!(shutdown);
        match reloads {
            Some(mut reloads) => loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    request = reloads.requests.recv() => match request {
                        Some(()) => live.reload(&reloads.load).await,
                        None => break (&mut shutdown).await,
                    },
                }
            },
            None => shutdown.await,
        }
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    server::serve(listener, apis.clone(), options, control).await;

    // Sends already handed to Twilio get to finish and be recorded; a send still
    // running after the drain timeout is left `sending` and becomes `unknown` at start.
    if !live.workers.stop(live.config.server.shutdown_timeout).await {
        log::warn!("outbox sends still running at shutdown; they will show as unknown");
    }
    housekeeping.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let api_for_close = apis.load_full();
    let _ = tokio::task::spawn_blocking(move || api_for_close.service().store().close()).await;
    log::info!("stopped");
    Ok(())
}

/// The services of one configuration over the long-lived store, limiter and metrics.
fn build(
    config: &Config,
    store: &Store,
    limiter: &Arc<Limiter>,
    metrics: PrometheusHandle,
) -> Result<(Arc<Api>, Arc<MessagingService>), StartError> {
    let sender = Arc::new(Sender::new(&config.provider)?);
    // One guard for both paths: codes and plain messages count against one daily cap.
    // Built per configuration: a reload restarts its in-memory (per-country/prefix)
    // counters; the daily cap is counted in the store and carries over.
    let guard = Arc::new(Guard::new(&config.guard));
    let messaging = Arc::new(MessagingService::new(
        config,
        store.clone(),
        sender.clone(),
        limiter.clone(),
        guard.clone(),
    ));
    let service = OtpService::new(config, store.clone(), sender, limiter.clone(), guard)?;
    let api = Api::new(service, messaging.clone(), &config.server, metrics);
    Ok((Arc::new(api), messaging))
}

/// What outlives a reload: the store is never reopened, the limiter keeps the state of
/// unchanged limits, the outbox workers are replaced one set for another.
struct Live {
    apis: Arc<ArcSwap<Api>>,
    store: Store,
    limiter: Arc<Limiter>,
    config: Config,
    /// The start-up configuration: what settings that need a restart are still bound to.
    started: Config,
    workers: Workers,
}

impl Live {
    async fn reload(&mut self, load: &LoadConfig) {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        // MONOTONIC_USEC lets `Type=notify-reload` match this reload to its SIGHUP.
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        log::info!("SIGHUP: reloading the configuration");
        match self.apply(load.clone()).await {
            Ok(()) => log::info!("configuration reloaded"),
            Err(e) => log::error!("reload rejected, still serving the previous configuration: {e}"),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    async fn apply(&mut self, load: LoadConfig) -> Result<(), StartError> {
        // Everything that can fail comes before anything is swapped. The file, the
        // environment, the credentials and the HMAC key are read off the async threads.
        let (store, limiter) = (self.store.clone(), self.limiter.clone());
        let metrics = self.apis.load().metrics().clone();
        let (new, api, messaging) = tokio::task::spawn_blocking(move || {
            let new = load()?;
            let (api, messaging) = build(&new, &store, &limiter, metrics)?;
            Ok::<_, StartError>((new, api, messaging))
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        warn_needs_restart(&self.started, &new);
        self.limiter.reconfigure(&new.limits);
        // Requests already running finish on the Api they started with.
        self.apis.store(api);
        // The old workers finish their sends before the new ones start: the new set
        // recovers interrupted `sending` rows at start, which must not be the old set's.
        if !self.workers.stop(new.server.shutdown_timeout).await {
            log::warn!(
                "outbox sends of the previous configuration still running after the drain timeout; they will show as unknown"
            );
        }
        self.workers = Workers::start(messaging);
        announce(&new);
        self.config = new;
        Ok(())
    }
}

/// Settings bound at start-up: a reload logs that they wait for a restart.
fn warn_needs_restart(old: &Config, new: &Config) {
    let (o, n) = (&old.server, &new.server);
    let fixed = [
        ("server.socket_path", o.socket_path != n.socket_path),
        ("server.socket_mode", o.socket_mode != n.socket_mode),
        ("server.socket_owner", o.socket_uid != n.socket_uid),
        ("server.socket_group", o.socket_gid != n.socket_gid),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.request_timeout",
            o.request_timeout != n.request_timeout,
        ),
        ("server.log_level", o.log_level != n.log_level),
        ("store.path", old.store.path != new.store.path),
        (
            "store.busy_timeout",
            old.store.busy_timeout != new.store.busy_timeout,
        ),
        ("store.max_size", old.store.max_size != new.store.max_size),
    ];
    for (key, changed) in fixed {
        if changed {
            log::warn!("{key} changed: needs restart (systemctl restart otpd) to take effect");
        }
    }
}

/// One set of outbox workers and the switch that stops them.
struct Workers {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Workers {
    fn start(messaging: Arc<MessagingService>) -> Self {
        let (stop, stopped) = watch::channel(false);
        Workers {
            stop,
            task: Some(tokio::spawn(messaging.run_workers(stopped))),
        }
    }

    /// Stops them and waits up to `timeout` for their sends; false if they were still
    /// running then (they are left to finish on their own).
    async fn stop(&mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }
}

/// The periodic jobs: limiter pruning and handing freed memory back, metrics upkeep and
/// the retention job, each on the services current at its tick.
async fn housekeeping(apis: Arc<ArcSwap<Api>>) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut upkeep = tokio::time::interval(METRICS_UPKEEP_EVERY);
    let mut retention = tokio::time::interval(apis.load().service().retention_interval());
    loop {
        tokio::select! {
            _ = prune.tick() => {
                let api = apis.load_full();
                api.service().limiter().prune();
                api.service().guard().prune();
                // After what the prunes (and, the first time, start-up) freed.
                memory::release();
            }
            _ = upkeep.tick() => apis.load().metrics().run_upkeep(),
            _ = retention.tick() => {
                let api = apis.load_full();
                if let Err(e) = api.service().purge(std::time::SystemTime::now()).await {
                    log::error!("retention job: {e}");
                }
            }
        }
    }
}

/// Half of systemd's `WatchdogSec`, when it is set for us.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2)
}

/// Pings systemd's watchdog while the store answers; a wedged daemon stops pinging
/// and systemd restarts it.
async fn watchdog(apis: Arc<ArcSwap<Api>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let api = apis.load_full();
        match tokio::time::timeout(every, api.service().store().ping()).await {
            Ok(Ok(())) => notify(&[sd_notify::NotifyState::Watchdog]),
            Ok(Err(e)) => log::error!("watchdog: the store does not answer: {e}"),
            Err(_) => log::error!("watchdog: the store did not answer within {every:?}"),
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
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("sd_notify failed: {e}");
    }
}
