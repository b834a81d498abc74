//! Prometheus metrics: the names in one place, the recorder installed once at start,
//! and the text rendered for `GET /metrics`. Other modules record through the
//! `metrics` crate's macros with these names and never see the exporter. (Named
//! `telemetry` so that it does not shadow the `metrics` crate.)

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "otpd_http_requests_total";
pub const HTTP_DURATION: &str = "otpd_http_request_duration_seconds";
pub const OTP_EVENTS: &str = "otpd_otp_events_total";
/// Codes sent and verified by `country` (ISO region; `001` non-geographic): their ratio
/// by country is the conversion rate whose fall is the signature of SMS pumping.
pub const OTP_BY_COUNTRY: &str = "otpd_otp_country_total";
/// How long the oldest outbox message (or check) that is due has waited; 0 when none.
pub const OUTBOX_OLDEST_DUE: &str = "otpd_outbox_oldest_due_seconds";
pub const PROVIDER_REQUESTS: &str = "otpd_provider_requests_total";
pub const PROVIDER_DURATION: &str = "otpd_provider_request_duration_seconds";
pub const PROVIDER_RETRIES: &str = "otpd_provider_retries_total";
/// Asking the provider which messages it holds (after an answer was lost), by `outcome`.
pub const PROVIDER_LOOKUPS: &str = "otpd_provider_lookups_total";
pub const PROVIDER_CIRCUIT_OPEN: &str = "otpd_provider_circuit_open";
pub const RATE_LIMITED: &str = "otpd_rate_limited_total";
/// Requests refused because a keyed limiter held `limits.max_keys` keys, by `limit`.
pub const LIMITER_FULL: &str = "otpd_limiter_full_total";
pub const STORE_DURATION: &str = "otpd_store_operation_duration_seconds";
pub const OPEN_CONNECTIONS: &str = "otpd_open_connections";
/// The cost guard's refusals, by `rule` and `outcome` (`blocked` or `would_block`).
pub const GUARD_BLOCKED: &str = "otpd_guard_blocked_total";

/// From 0.5 ms (a verify) to 30 s (a Twilio timeout).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder; a second call (tests in one process) gets a
/// private recorder's handle instead of failing. Call it before any part makes its
/// metric handles: a handle made earlier records nowhere.
pub fn install() -> PrometheusHandle {
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
    };
    match builder().install_recorder() {
        Ok(handle) => handle,
        Err(_) => builder().build_recorder().handle(),
    }
}

/// One counter per country for an event, made on the country's first use: the labels
/// are bounded by the world's regions, and after the first code the path only reads.
pub struct CountryCounter {
    event: &'static str,
    made: RwLock<HashMap<String, Counter>>,
}

impl CountryCounter {
    pub fn new(event: &'static str) -> Self {
        CountryCounter {
            event,
            made: RwLock::new(HashMap::new()),
        }
    }

    pub fn increment(&self, country: &str) {
        let made = self.made.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = made.get(country) {
            counter.increment(1);
            return;
        }
        drop(made);
        let counter = metrics::counter!(OTP_BY_COUNTRY, "event" => self.event, "country" => country.to_owned());
        counter.increment(1);
        self.made
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(country.to_owned(), counter);
    }
}
