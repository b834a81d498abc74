//! The daemon's lifetime: open (and migrate) the store, build the [`App`], bind the
//! socket, tell systemd it is ready, serve until shutdown, drain, close. Reloads swap
//! the App (see [`reload`]); the background jobs run beside the server (see [`jobs`]).
//! `main` hands in the listener systemd passed (if any) and the shutdown future, so
//! signals, socket activation and tests drive the same code.

mod app;
mod jobs;
mod reload;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::mpsc;

pub use app::App;
use jobs::Workers;
use reload::Running;

use crate::config::{Config, ConfigError, ProviderConfig};
use crate::otp::KeyError;
use crate::sender::SendError;
use crate::socket::{self, SocketError};
use crate::store::{Store, StoreError};
use crate::{server, systemd, telemetry};

/// Why the daemon could not start (or a reloaded configuration could not be applied).
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sender(#[from] SendError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Only on reload: at start-up main reports a bad file before `run`.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads the configuration again, by the same path as at start-up (file, env, credentials).
pub type LoadConfig = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// SIGHUP's side of [`run`]: one message on `requests` per reload asked for.
pub struct Reloads {
    pub requests: mpsc::UnboundedReceiver<()>,
    pub load: LoadConfig,
}

/// Runs the daemon until `shutdown` resolves, then drains and closes. It serves on
/// `passed` (socket activation) or binds `server.socket_path`, only once the store is
/// migrated: a caller that can connect is served at once, never told "not ready".
pub async fn run(
    config: &Config,
    passed: Option<std::os::unix::net::UnixListener>,
    shutdown: impl Future<Output = ()>,
    reloads: Option<Reloads>,
) -> Result<(), StartError> {
    let metrics = telemetry::install();
    // Codes made before this instant are an earlier run's (see `jobs::recover_codes`).
    let started = config.clock.now();
    let store = Store::open(&config.store).await?;
    let limiter = Arc::new(crate::limiter::Limiter::new(&config.limits));
    let app = App::build(config, &store, &limiter, metrics)?;
    store.check_key(app.otp.key_check_value()).await?;
    // Listed in /status/ from the moment it serves (then every 30 s, jobs.rs).
    if let Err(e) = app.reports.heartbeat(started).await {
        log::warn!("instance heartbeat: {e}");
    }
    let server_config = &config.server;
    let socket = socket::listen(
        passed,
        &server_config.socket_path,
        server_config.socket_mode,
        server_config.socket_uid,
        server_config.socket_gid,
    )?;
    announce(config);
    let apis = Arc::new(ArcSwap::new(app.api.clone()));
    let app = Arc::new(app);
    let apps = Arc::new(ArcSwap::new(app.clone()));
    let mut running = Running {
        apps: apps.clone(),
        apis: apis.clone(),
        config: config.clone(),
        started: config.clone(),
        workers: Workers::start(&app),
    };

    let housekeeping = tokio::spawn(jobs::housekeeping(apps.clone()));
    let recovery = tokio::spawn(jobs::recover_codes(apps.clone(), started));
    let watchdog =
        systemd::watchdog_interval().map(|every| tokio::spawn(jobs::watchdog(apps.clone(), every)));

    systemd::notify(&[systemd::State::Ready]);
    log::info!("listening on {}", server_config.socket_path.display());
    let options = server::ServeOptions {
        max_connections: server_config.max_connections,
        header_timeout: server_config.request_timeout,
        drain_timeout: server_config.shutdown_timeout,
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
                        Some(()) => running.reload(&reloads.load).await,
                        None => break (&mut shutdown).await,
                    },
                }
            },
            None => shutdown.await,
        }
        systemd::notify(&[systemd::State::Stopping]);
    };
    server::serve(socket.listener(), apis, options, control).await;

    // Sends already handed to Twilio get to finish and be recorded; a send still
    // running after the drain timeout is left `sending` and is checked at next start.
    if !running
        .workers
        .stop(running.config.server.shutdown_timeout)
        .await
    {
        log::warn!(
            "outbox sends still running at shutdown; the next start asks the provider whether they arrived"
        );
    }
    housekeeping.abort();
    recovery.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
    log::info!("stopped");
    // `socket` drops here and removes the socket file (unless systemd passed it).
    drop(socket);
    Ok(())
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
    if let Some(file) = config.clock.offset_file() {
        log::warn!(
            "DEVELOPMENT MODE: the clock is moved by the seconds written in {} ({})",
            file.display(),
            crate::clock::DEV_CLOCK_FILE
        );
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
