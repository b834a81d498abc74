//! The plain sections, each from its raw table to the validated struct the daemon
//! uses: `[server]`, `[store]`, `[limits]`, `[retention]`, `[guard]` and
//! `[messaging]`. Each builder reads only its own table; checks that span sections
//! (channels against the Twilio senders) are the composition's, in `mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::postgres::{self, PostgresConfig};
use super::raw::{
    RawGuard, RawLimits, RawMessaging, RawReports, RawRetention, RawServer, RawStore,
};
use super::sources::Sources;
use super::values::{GuardRegion, Rate, byte_size, duration, group_id, parse_region, user_id};
use super::{ConfigError, invalid};
use crate::types::{Channel, Channels};

/// The longest `server.socket_path` otpd can bind: 107 bytes, less one for the hidden
/// name it binds first.
pub const MAX_SOCKET_PATH: usize = 106;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub socket_path: PathBuf,
    pub socket_mode: u32,
    /// chown the socket to these ids (resolved from names at load); `None` keeps ours.
    pub socket_uid: Option<u32>,
    pub socket_gid: Option<u32>,
    /// When either list is non-empty, only callers with an allowed uid or (primary) gid
    /// may use the API; others get 403.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Bound on reading a request's headers and body.
    pub request_timeout: Duration,
    /// Bound on draining in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    pub log_level: String,
}

pub(super) fn server(s: &RawServer) -> Result<ServerConfig, ConfigError> {
    let socket_mode = u32::from_str_radix(s.socket_mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(
                "server.socket_mode",
                format!("{:?} is not an octal mode such as \"0660\"", s.socket_mode),
            )
        })?;
    if s.max_body_bytes == 0 || s.max_connections == 0 {
        return Err(invalid(
            "server",
            "max_body_bytes and max_connections must be above 0",
        ));
    }
    // Linux keeps a socket's path in 108 bytes with its NUL, and otpd first binds a
    // hidden name one byte longer than the path (`server::bind`).
    let path_len = s.socket_path.as_os_str().len();
    if s.socket_path.file_name().is_none() || path_len > MAX_SOCKET_PATH {
        return Err(invalid(
            "server.socket_path",
            format!("must name a file, in at most {MAX_SOCKET_PATH} bytes (this is {path_len})"),
        ));
    }
    Ok(ServerConfig {
        socket_path: s.socket_path.clone(),
        socket_mode,
        socket_uid: user_id("server.socket_user", &s.socket_user)?,
        socket_gid: group_id("server.socket_group", &s.socket_group)?,
        allowed_uids: s.allowed_uids.clone(),
        allowed_gids: s.allowed_gids.clone(),
        max_body_bytes: s.max_body_bytes,
        max_connections: s.max_connections,
        request_timeout: duration("server.request_timeout", &s.request_timeout)?,
        shutdown_timeout: duration("server.shutdown_timeout", &s.shutdown_timeout)?,
        log_level: s.log_level.clone(),
    })
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// How long a write waits for a lock another process holds before `store_busy`.
    pub busy_timeout: Duration,
    /// Cap on the database file (rounded down to whole pages); `None`: the disk's size.
    pub max_size: Option<u64>,
    pub backend: Backend,
}

/// Which database holds the state. `path`, `busy_timeout` and `max_size` are SQLite's.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(Box<PostgresConfig>),
}

pub(super) fn store(s: &RawStore, sources: &Sources) -> Result<StoreConfig, ConfigError> {
    let backend = match s.backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres(Box::new(postgres::postgres(&s.postgres, sources)?)),
        other => {
            return Err(invalid(
                "store.backend",
                format!("{other:?} is neither \"sqlite\" nor \"postgres\""),
            ));
        }
    };
    if s.path.as_os_str().is_empty() {
        return Err(invalid("store.path", "must not be empty"));
    }
    Ok(StoreConfig {
        path: s.path.clone(),
        backend,
        busy_timeout: duration("store.busy_timeout", &s.busy_timeout)?,
        max_size: match byte_size("store.max_size", &s.max_size)? {
            0 => None,
            n if n < 64 * 1024 => {
                return Err(invalid(
                    "store.max_size",
                    "must be 0 (no limit) or at least 64KiB: the schema alone needs that",
                ));
            }
            n => Some(n),
        },
    })
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub send_per_phone: Rate,
    pub send_per_user: Rate,
    pub verify_per_phone: Rate,
    pub send_global: Rate,
    /// Most keys each keyed limit holds; see `limiter.rs` for what happens when full.
    pub max_keys: usize,
}

pub(super) fn limits(l: &RawLimits) -> Result<LimitsConfig, ConfigError> {
    Ok(LimitsConfig {
        send_per_phone: Rate::parse("limits.send_per_phone", &l.send_per_phone)?,
        send_per_user: Rate::parse("limits.send_per_user", &l.send_per_user)?,
        verify_per_phone: Rate::parse("limits.verify_per_phone", &l.verify_per_phone)?,
        send_global: Rate::parse("limits.send_global", &l.send_global)?,
        max_keys: match usize::try_from(l.max_keys) {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(invalid(
                    "limits.max_keys",
                    "must be a positive number of keys",
                ));
            }
        },
    })
}

/// How long rows are kept; the retention job runs every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Kept this long after they expire.
    pub codes: Duration,
    pub messages: Duration,
    pub audit: Duration,
    pub interval: Duration,
}

pub(super) fn retention(r: &RawRetention) -> Result<RetentionConfig, ConfigError> {
    let retention = RetentionConfig {
        codes: duration("retention.codes", &r.codes)?,
        messages: duration("retention.messages", &r.messages)?,
        audit: duration("retention.audit", &r.audit)?,
        interval: duration("retention.interval", &r.interval)?,
    };
    if retention.interval < Duration::from_secs(1) {
        return Err(invalid("retention.interval", "must be at least 1s"));
    }
    Ok(retention)
}

/// What the report's cost estimate charges per SMS segment, by destination prefix.
#[derive(Debug, Clone, Default)]
pub struct ReportsConfig {
    pub currency: String,
    /// (digits after the `+`, price of one segment), longest prefix first.
    pub prices: Vec<(String, f64)>,
}

pub(super) fn reports(r: &RawReports) -> Result<ReportsConfig, ConfigError> {
    let currency = r.currency.trim();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "reports.currency",
            "must be a three-letter code such as USD",
        ));
    }
    let mut prices = Vec::with_capacity(r.prices.len());
    for (prefix, price) in &r.prices {
        let digits = prefix.strip_prefix('+').unwrap_or_default();
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "reports.prices",
                format!("{prefix:?} is not a prefix of + and 1 to 5 digits"),
            ));
        }
        if !price.is_finite() || *price < 0.0 {
            return Err(invalid(
                "reports.prices",
                format!("{prefix:?}: the price must be a number of at least 0"),
            ));
        }
        prices.push((digits.to_owned(), *price));
    }
    prices.sort_by_key(|(digits, _)| std::cmp::Reverse(digits.len()));
    Ok(ReportsConfig {
        currency: currency.to_owned(),
        prices,
    })
}

/// The cost guard against SMS pumping (see `guard.rs`); every rule is off by default.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub mode: GuardMode,
    /// Empty: every country is allowed (unless denied).
    pub allow_countries: Vec<GuardRegion>,
    pub deny_countries: Vec<GuardRegion>,
    pub per_country: Option<Rate>,
    pub per_prefix: Option<Rate>,
    /// National digits after the country code that make up a number's prefix.
    pub prefix_digits: usize,
    pub daily_message_cap: Option<u64>,
    pub unverified_per_country: Option<u64>,
    pub unverified_window: Duration,
}

impl GuardConfig {
    /// Whether any rule is configured; with none, the guard costs nothing.
    pub fn any_rule(&self) -> bool {
        !self.allow_countries.is_empty()
            || !self.deny_countries.is_empty()
            || self.per_country.is_some()
            || self.per_prefix.is_some()
            || self.daily_message_cap.is_some()
            || self.unverified_per_country.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Refuse what a rule blocks.
    Enforce,
    /// Let everything through and audit what would have been refused.
    Record,
}

pub(super) fn guard(g: &RawGuard) -> Result<GuardConfig, ConfigError> {
    let mode = match g.mode.as_str() {
        "enforce" => GuardMode::Enforce,
        "record" => GuardMode::Record,
        other => {
            return Err(invalid(
                "guard.mode",
                format!("{other:?} is neither \"enforce\" nor \"record\""),
            ));
        }
    };
    let regions = |key: &str, list: &[String]| {
        list.iter()
            .map(|code| {
                parse_region(code).ok_or_else(|| {
                    invalid(
                        key,
                        format!("{code:?} is not an ISO 3166 region code such as \"ES\""),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    // Shorter prefixes lump unrelated operators together; longer ones are single
    // numbers, which send_per_phone already covers.
    if !(1..=12).contains(&g.prefix_digits) {
        return Err(invalid("guard.prefix_digits", "must be between 1 and 12"));
    }
    let unverified_window = duration("guard.unverified_window", &g.unverified_window)?;
    if unverified_window < Duration::from_secs(1) {
        return Err(invalid("guard.unverified_window", "must be at least 1s"));
    }
    Ok(GuardConfig {
        mode,
        allow_countries: regions("guard.allow_countries", &g.allow_countries)?,
        deny_countries: regions("guard.deny_countries", &g.deny_countries)?,
        per_country: Rate::optional("guard.per_country", &g.per_country)?,
        per_prefix: Rate::optional("guard.per_prefix", &g.per_prefix)?,
        prefix_digits: g.prefix_digits,
        daily_message_cap: Some(g.daily_message_cap).filter(|n| *n > 0),
        unverified_per_country: Some(g.unverified_per_country).filter(|n| *n > 0),
        unverified_window,
    })
}

/// The outbox workers behind `send-sms`, and the channels every send may use.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Tried in this order when a request names no channel; a channel that Twilio
    /// refuses for a number (a 4xx) falls through to the next.
    pub channels: Channels,
    /// Messages sent at the same time.
    pub workers: usize,
    /// Sends tried per message before it is marked failed.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled for each further one.
    pub retry_delay: Duration,
    /// How long a send that may have reached the provider is checked with it before
    /// it is given up as `unknown`.
    pub unknown_after: Duration,
}

/// `default_locale` is checked with the templates it picks (`otp.rs`).
pub(super) fn messaging(m: &RawMessaging) -> Result<MessagingConfig, ConfigError> {
    if !(1..=256).contains(&m.workers) {
        return Err(invalid("messaging.workers", "must be between 1 and 256"));
    }
    if !(1..=100).contains(&m.max_attempts) {
        return Err(invalid(
            "messaging.max_attempts",
            "must be between 1 and 100",
        ));
    }
    let mut channels = Vec::new();
    for name in &m.channels {
        let channel = Channel::parse(name).map_err(|_| {
            invalid(
                "messaging.channels",
                format!("{name:?}: use \"sms\" or \"whatsapp\""),
            )
        })?;
        if channels.contains(&channel) {
            return Err(invalid(
                "messaging.channels",
                format!("{name:?} is listed twice"),
            ));
        }
        channels.push(channel);
    }
    let Some(channels) = Channels::from_list(channels) else {
        return Err(invalid(
            "messaging.channels",
            "must list at least one channel",
        ));
    };
    let unknown_after = duration("messaging.unknown_after", &m.unknown_after)?;
    if unknown_after < Duration::from_secs(1) {
        return Err(invalid("messaging.unknown_after", "must be at least 1s"));
    }
    Ok(MessagingConfig {
        channels,
        workers: m.workers,
        max_attempts: m.max_attempts,
        retry_delay: duration("messaging.retry_delay", &m.retry_delay)?,
        unknown_after,
    })
}
