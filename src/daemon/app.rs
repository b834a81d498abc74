//! The one place the parts are wired together: an [`App`] is the services of one
//! configuration over the long-lived store, limiter and metrics recorder. The daemon
//! owns it and swaps it whole on reload; nothing below reaches another part through it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::StartError;
use crate::api::Api;
use crate::clock::Clock;
use crate::config::Config;
use crate::guard::Guard;
use crate::limiter::Limiter;
use crate::messaging::MessagingService;
use crate::otp::OtpService;
use crate::reports::Reports;
use crate::sender::Sender;
use crate::store::Store;

pub struct App {
    pub store: Store,
    pub limiter: Arc<Limiter>,
    pub guard: Arc<Guard>,
    pub messaging: Arc<MessagingService>,
    pub otp: Arc<OtpService>,
    pub reports: Arc<Reports>,
    pub api: Arc<Api>,
    pub metrics: PrometheusHandle,
    /// What time the daemon's jobs think it is (the api and workers hold the same).
    pub clock: Clock,
}

impl App {
    pub fn build(
        config: &Config,
        store: &Store,
        limiter: &Arc<Limiter>,
        metrics: PrometheusHandle,
    ) -> Result<App, StartError> {
        let sender = Arc::new(Sender::new(&config.provider, &config.clock)?);
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
        let reports = Arc::new(Reports::new(
            config,
            store.clone(),
            limiter.clone(),
            sender.clone(),
        ));
        let otp = Arc::new(OtpService::new(
            config,
            store.clone(),
            sender,
            limiter.clone(),
            guard.clone(),
        )?);
        let api = Arc::new(Api::new(
            otp.clone(),
            messaging.clone(),
            reports.clone(),
            config,
            metrics.clone(),
        ));
        Ok(App {
            store: store.clone(),
            limiter: limiter.clone(),
            guard,
            messaging,
            otp,
            reports,
            api,
            metrics,
            clock: config.clock.clone(),
        })
    }
}
