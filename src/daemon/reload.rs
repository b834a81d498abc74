//! SIGHUP: read the configuration again, build a new [`App`] over the same store and
//! limiter, and swap it in; a file that fails to load or build changes nothing. Settings
//! bound at start-up (the socket, the store file) are named in a warning instead.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::app::App;
use super::jobs::Workers;
use super::{LoadConfig, StartError, announce};
use crate::api::Api;
use crate::config::{Backend, Config};
use crate::store::StoreError;
use crate::systemd;

/// What outlives a reload: the store is never reopened, the limiter keeps the state of
/// unchanged limits, the outbox workers are replaced one set for another.
pub struct Running {
    pub apps: Arc<ArcSwap<App>>,
    pub apis: Arc<ArcSwap<Api>>,
    pub config: Config,
    /// The start-up configuration: what settings that need a restart are still bound to.
    pub started: Config,
    pub workers: Workers,
}

impl Running {
    pub async fn reload(&mut self, load: &LoadConfig) {
        systemd::reloading();
        log::info!("SIGHUP: reloading the configuration");
        match self.apply(load.clone()).await {
            Ok(()) => log::info!("configuration reloaded"),
            Err(e) => log::error!("reload rejected, still serving the previous configuration: {e}"),
        }
        systemd::notify(&[systemd::State::Ready]);
    }

    async fn apply(&mut self, load: LoadConfig) -> Result<(), StartError> {
        // Everything that can fail comes before anything is swapped. The file, the
        // environment, the credentials and the HMAC key are read off the async threads.
        let current = self.apps.load_full();
        let (new, app) = tokio::task::spawn_blocking(move || {
            let new = load()?;
            let app = App::build(
                &new,
                &current.store,
                &current.limiter,
                current.metrics.clone(),
            )?;
            Ok::<_, StartError>((new, app))
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        warn_needs_restart(&self.started, &new);
        app.limiter.reconfigure(&new.limits);
        // Requests already running finish on the Api they started with.
        self.apis.store(app.api.clone());
        let app = Arc::new(app);
        self.apps.store(app.clone());
        // The old workers finish their sends before the new ones start: the new set
        // recovers interrupted `sending` rows at start, which must not be the old set's.
        if !self.workers.stop(new.server.shutdown_timeout).await {
            log::warn!(
                "outbox sends of the previous configuration still running after the drain timeout; they will show as unknown"
            );
        }
        self.workers = Workers::start(&app);
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
        (
            "store.backend or store.postgres",
            !same_backend(&old.store.backend, &new.store.backend),
        ),
    ];
    for (key, changed) in fixed {
        if changed {
            log::warn!("{key} changed: needs restart (systemctl restart otpd) to take effect");
        }
    }
}

/// Whether the store would be opened the same way (the password is compared too: a
/// new one is used from the next start).
fn same_backend(old: &Backend, new: &Backend) -> bool {
    match (old, new) {
        (Backend::Sqlite, Backend::Sqlite) => true,
        (Backend::Postgres(o), Backend::Postgres(n)) => {
            o.url == n.url
                && o.password.as_ref().map(|p| p.expose())
                    == n.password.as_ref().map(|p| p.expose())
                && o.sslmode == n.sslmode
                && o.ca_certs == n.ca_certs
                && o.schema == n.schema
                && o.pool_size == n.pool_size
                && o.connect_timeout == n.connect_timeout
                && o.statement_timeout == n.statement_timeout
                && o.instance == n.instance
        }
        _ => false,
    }
}
