//! The read and admin side the api and the daemon's jobs use: the `/status/` summary,
//! message and audit listings, the business report (`summary.rs`), the store's health,
//! and the retention job. Knows nothing of HTTP; the api shapes these into JSON.

mod summary;

pub use summary::{Cost, Group, Report};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ReportsConfig, RetentionConfig};
use crate::limiter::Limiter;
use crate::sender::Sender;
use crate::store::{AuditRow, Counts, Cutoffs, InstanceRow, MessageRow, Purged, Store, StoreError};
use crate::types::PhoneNumber;

/// What `/status/` reports.
pub struct Status {
    pub provider: Option<&'static str>,
    pub dev_mode: bool,
    pub test_phone_configured: bool,
    pub purposes: Vec<String>,
    pub otp_length: usize,
    pub otp_ttl: Duration,
    pub limiter_keys: usize,
    /// Whether the provider answered its last request; `None` before the first.
    pub provider_reachable: Option<bool>,
    /// The provider's circuit breaker (`closed`, `open`, `half_open`); `None` without one.
    pub provider_circuit: Option<&'static str>,
    /// Whether the provider accepts the credentials (`accepted`, `rejected`, `unknown`);
    /// `None` without credentials (development outbox, no provider).
    pub provider_credentials: Option<&'static str>,
    pub counts: Counts,
    /// The instances sharing the store (PostgreSQL), seen in the last 90 s; empty on
    /// SQLite. `settings` fingerprints what must match across hosts.
    pub instances: Vec<InstanceRow>,
}

/// How often each instance writes its heartbeat, and how long one counts as running.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
const SEEN_WITHIN: Duration = Duration::from_secs(90);

/// A fingerprint of the settings every host sharing a store must agree on: limits,
/// purposes, code length, TTL and attempts, test numbers. Never the key.
fn settings_fingerprint(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let o = &config.otp;
    let tests: Vec<(&str, bool, &str)> = o
        .test_numbers
        .iter()
        .map(|t| (t.pattern.as_str(), t.is_prefix, t.code.as_str()))
        .collect();
    let text = format!(
        "{:?}|{:?}|{}|{:?}|{}|{:?}",
        config.limits, o.purposes, o.length, o.ttl, o.max_attempts, tests
    );
    let digest = Sha256::digest(text.as_bytes());
    digest.get(..8).map(hex::encode).unwrap_or_default()
}

pub struct Reports {
    store: Store,
    limiter: Arc<Limiter>,
    sender: Arc<Sender>,
    retention: RetentionConfig,
    test_phone_configured: bool,
    purposes: Vec<String>,
    otp_length: usize,
    otp_ttl: Duration,
    prices: ReportsConfig,
    settings: String,
}

impl Reports {
    pub fn new(config: &Config, store: Store, limiter: Arc<Limiter>, sender: Arc<Sender>) -> Self {
        Reports {
            store,
            limiter,
            sender,
            retention: config.retention,
            test_phone_configured: config.test_phone_number.is_some(),
            purposes: config.otp.purposes.clone(),
            otp_length: config.otp.length,
            otp_ttl: config.otp.ttl,
            prices: config.reports.clone(),
            settings: settings_fingerprint(config),
        }
    }

    /// `now` dates the provider's credentials check, which is cached briefly.
    pub async fn status(&self, now: SystemTime) -> Result<Status, StoreError> {
        let provider = self.sender.provider();
        Ok(Status {
            provider,
            dev_mode: provider == Some("dev_outbox"),
            test_phone_configured: self.test_phone_configured,
            purposes: self.purposes.clone(),
            otp_length: self.otp_length,
            otp_ttl: self.otp_ttl,
            limiter_keys: self.limiter.key_count(),
            provider_reachable: self.sender.reachable(),
            provider_circuit: self.sender.circuit(),
            provider_credentials: self.sender.credentials(now).await,
            counts: self.store.counts().await?,
            instances: self
                .store
                .instances(now.checked_sub(SEEN_WITHIN).unwrap_or(UNIX_EPOCH))
                .await?,
        })
    }

    /// This instance's heartbeat in a shared store (nothing on SQLite).
    pub async fn heartbeat(&self, now: SystemTime) -> Result<(), StoreError> {
        self.store.heartbeat(self.settings.clone(), now).await
    }

    /// Sends, verifications and what they cost, from `since` to now.
    pub async fn report(&self, since: SystemTime, now: SystemTime) -> Result<Report, StoreError> {
        let rows = self.store.report_rows(since).await?;
        Ok(Report::new(rows, &self.prices, since, now))
    }

    /// Whether the store answers (`/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Whether this process's own store machinery answers (the watchdog).
    pub async fn alive(&self) -> Result<(), StoreError> {
        self.store.alive().await
    }

    /// The retention job: deletes what has outlived `[retention]`.
    pub async fn purge(&self, now: SystemTime) -> Result<Purged, StoreError> {
        let r = &self.retention;
        let before = |keep: Duration| now.checked_sub(keep).unwrap_or(UNIX_EPOCH);
        let purged = self
            .store
            .purge(Cutoffs {
                codes_before: before(r.codes),
                messages_before: before(r.messages),
                audit_before: before(r.audit),
            })
            .await?;
        log::info!(
            "retention: deleted {} codes, {} messages, {} audit events",
            purged.otps,
            purged.messages,
            purged.audit
        );
        Ok(purged)
    }

    pub fn retention_interval(&self) -> Duration {
        self.retention.interval
    }

    pub async fn messages_since(
        &self,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<MessageRow>, StoreError> {
        self.store.messages_since(since, limit).await
    }

    pub async fn audit_since(
        &self,
        since: SystemTime,
        phone: Option<&PhoneNumber>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let phone = phone.map(|p| p.as_str().to_owned());
        self.store.audit_since(since, phone, limit).await
    }
}
