//! The store: the narrow set of operations the services need ("insert code", "count
//! attempt and fetch", "record delivery", "enqueue", "claim due"...), in domain types
//! (`types.rs`), and the errors with the fault classes a caller can act on. Which
//! database answers is a backend's business: `sqlite/` (the default, one file per
//! host) owns every SQLite statement, its writer thread and migrations; `postgres/`
//! the same operations on one PostgreSQL schema that several hosts share. What both
//! write the same way is `shared.rs`. Nothing above this module knows SQL or a
//! database crate's types.
//!
//! `Store` is an enum of backends with one dispatching method per operation (no trait
//! objects: the operations are async, and a `match` keeps them monomorphic and cheap).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::config::{Backend, StoreConfig};
use crate::types::{Caller, Channel};

pub mod postgres;
mod shared;
pub mod sqlite;
pub(crate) mod types;

pub use postgres::{PG_SCHEMA_VERSION, PgStore};
pub use sqlite::{SCHEMA_VERSION, SqliteStore, create_at_version};
pub use types::{
    AfterReport, Attempt, AuditRow, Billed, Checked, Claimed, CodeGroup, CodeResend, Counts,
    Cutoffs, Delivery, Enqueued, Fallback, GuardEvent, InstanceRow, LimitCheck, MessageDetail,
    MessageRow, NewCode, NewOutgoing, Outcome, PendingCode, Purged, ReportRows, StatusEvent,
    Unconfirmed,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {0} is read-only: otpd needs to write to it and to its directory (check their owner, mode and file system)"
    )]
    ReadOnly(PathBuf),
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection pool: {0}")]
    PgPool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL did not answer within {0:?}")]
    PgTimeout(Duration),
    #[error("PostgreSQL TLS or pool setup: {0}")]
    PgTls(String),
    #[error(
        "the PostgreSQL schema is at version {found}, newer than this otpd knows ({known}): \
         upgrade this host's otpd, or roll the others back"
    )]
    PgSchemaTooNew { found: i32, known: i32 },
    #[error(
        "otp.hmac_key differs from the one the other instances sharing this PostgreSQL \
         schema use: every code sent through one host would verify as wrong on another. \
         Give every host the same key"
    )]
    KeyMismatch,
}

/// What a failed store operation means for a caller. Each fault gets its own answer so
/// an operator can tell a held lock from a full disk from a read-only file at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A lock was held for longer than `store.busy_timeout`.
    Busy,
    /// The disk, or `store.max_size`, is full.
    Full,
    /// The file (or its file system) cannot be written.
    ReadOnly,
    /// The shared database cannot be reached (down, failing over, out of connections,
    /// or too slow): worth a retry in a moment.
    Unavailable,
    /// Anything else: corruption, I/O errors, a closed store.
    Other,
}

impl StoreError {
    /// The one place an error is classified: each backend's codes to a `Fault`.
    pub fn fault(&self) -> Fault {
        postgres::fault(self).unwrap_or_else(|| sqlite::fault(self))
    }

    /// An error that no restart can clear without an operator (exit 78, EX_CONFIG).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            StoreError::PgSchemaTooNew { .. } | StoreError::KeyMismatch
        )
    }
}

/// One backend's store; clones are cheap handles on the same connections.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs the same expression on whichever backend `$store` is.
macro_rules! dispatch {
    ($store:expr, $s:ident => $e:expr) => {
        match $store {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// One dispatching method per operation, with the signature the backends share.
macro_rules! operations {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    dispatch!(self, s => s.$name($($arg),*).await)
                }
            )*
        }
    };
}

impl Store {
    /// Opens the configured backend and migrates it (SQLite's file work runs off the
    /// async threads).
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        match &config.backend {
            Backend::Sqlite => {
                let config = config.clone();
                tokio::task::spawn_blocking(move || SqliteStore::open(&config))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map(Store::Sqlite)
            }
            Backend::Postgres(pg) => Ok(Store::Postgres(
                PgStore::open(pg, config.busy_timeout).await?,
            )),
        }
    }

    /// Takes a cell from each shared limit, in order; `Some((i, wait))`: the `i`th
    /// refused (the others were given back). A per-host store shares nothing: the
    /// in-process limiter is authoritative there.
    pub async fn take_limits(
        &self,
        checks: Vec<LimitCheck>,
    ) -> Result<Option<(usize, Duration)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.take_limits(checks).await,
        }
    }

    /// Forgets refilled shared limits (the in-process ones prune themselves).
    pub async fn prune_limits(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.prune_limits().await,
        }
    }

    /// Records this instance's heartbeat (a per-host store has no other instances).
    pub async fn heartbeat(&self, settings: String, now: SystemTime) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.heartbeat(settings, now).await,
        }
    }

    /// The instances sharing the store seen since `since`; none for SQLite.
    pub async fn instances(&self, since: SystemTime) -> Result<Vec<InstanceRow>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.instances(since).await,
        }
    }

    /// Checks that every instance sharing the store holds the same HMAC key, by the
    /// key's check value (never the key). A per-host store has nothing to compare.
    pub async fn check_key(&self, check_value: String) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.check_key(check_value).await,
        }
    }

    /// Stops the backend after the writes already queued.
    /// What the watchdog asks: that this process's own store machinery answers. The
    /// SQLite writer thread and reader pool are this process's, so they are pinged; a
    /// shared PostgreSQL is not: its outage must not make systemd restart every host's
    /// otpd at once (requests answer 503 meanwhile, and the pool reconnects by itself).
    pub async fn alive(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(_) => Ok(()),
        }
    }

    pub fn close(&self) {
        dispatch!(self, s => s.close())
    }

    /// Verify: counts the attempt on the newest live code of (phone, purpose) before
    /// `matches` compares, then consumes the code on a match. `matches` runs at most
    /// once per committed attempt.
    pub async fn check_attempt<M>(
        &self,
        phone: String,
        purpose: String,
        now: SystemTime,
        caller: Caller,
        matches: M,
    ) -> Result<Attempt, StoreError>
    where
        M: FnMut(&[u8], Option<&str>) -> bool + Send + 'static,
    {
        dispatch!(self, s => s.check_attempt(phone, purpose, now, caller, matches).await)
    }
}

operations! {
    /// The store answers: used by `/healthz`.
    fn ping(&self) -> ();
    // Codes.
    fn insert_code(&self, code: NewCode) -> i64;
    fn record_delivery(&self, otp_id: i64, to: String, channel: Channel, delivery: Delivery, now: SystemTime, caller: Caller) -> ();
    fn record_fallback(&self, otp_id: i64, to: String, channel: Channel, delivery: Delivery, now: SystemTime, caller: Caller) -> ();
    fn replace_code(&self, otp_id: i64, code_hash: Vec<u8>, reason: String, now: SystemTime, caller: Caller) -> bool;
    // Messages and their history.
    fn record_message(&self, to: String, delivery: Delivery, now: SystemTime) -> ();
    fn messages_since(&self, since: SystemTime, limit: u32) -> Vec<MessageRow>;
    fn message(&self, id: i64) -> Option<MessageDetail>;
    fn apply_status(&self, sid: String, status: String, error_code: Option<i64>, now: SystemTime) -> Option<(i64, AfterReport)>;
    // The outbox.
    fn enqueue(&self, m: NewOutgoing) -> Enqueued;
    fn find_idempotent(&self, key: String, since: SystemTime) -> Option<(i64, String, String)>;
    fn claim_due(&self, now: SystemTime, limit: u32) -> Vec<Claimed>;
    fn next_due(&self) -> Option<SystemTime>;
    fn finish(&self, id: i64, outcome: Outcome, now: SystemTime) -> ();
    // Sends that may have reached the provider.
    fn recover_interrupted(&self, now: SystemTime, settle: Duration) -> Vec<i64>;
    fn claim_checks(&self, now: SystemTime, limit: u32, lease: Duration) -> Vec<Unconfirmed>;
    fn resolve_check(&self, id: i64, checked: Checked, now: SystemTime) -> bool;
    fn pending_codes(&self, before: SystemTime, now: SystemTime) -> Vec<PendingCode>;
    fn known_sids(&self, sids: Vec<String>) -> Vec<String>;
    // The audit trail, the guard's counts, reports, retention.
    fn record_guard_event(&self, e: GuardEvent) -> ();
    fn audit_other(&self, event: &'static str, detail: String, caller: Caller, now: SystemTime) -> ();
    fn audit_since(&self, since: SystemTime, phone: Option<String>, limit: u32) -> Vec<AuditRow>;
    fn count_messages_since(&self, since: SystemTime) -> u64;
    fn count_unverified(&self, country: String, since: SystemTime) -> (u64, Option<SystemTime>);
    fn counts(&self) -> Counts;
    fn purge(&self, cutoffs: Cutoffs) -> Purged;
    /// Everything the report counts, from `since` on.
    fn report_rows(&self, since: SystemTime) -> ReportRows;
}
