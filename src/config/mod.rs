//! Configuration: the TOML file, the environment variables the backend already uses and
//! systemd credentials, parsed and validated once at start-up into a [`Config`] that
//! cannot be invalid. Every default lives in the `Default` impls of the raw structs
//! below, and every error names the key it is about.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::templates::{Catalog, Localized};
use crate::types::{Channel, OtpCode, PhoneNumber, Region};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// The longest `server.socket_path` otpd can bind: 107 bytes, less one for the hidden
/// name it binds first.
pub const MAX_SOCKET_PATH: usize = 106;

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub otp: OtpConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub guard: GuardConfig,
    pub messaging: MessagingConfig,
    /// Every template, `otp` included (built from `otp.message_template` if not given).
    pub templates: Catalog,
    pub provider: ProviderConfig,
    /// Destination of `GET /test-twilio/`.
    pub test_phone_number: Option<PhoneNumber>,
    /// What `check-config` prints: the effective file, secrets masked.
    effective: RawConfig,
}

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

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// How long a write waits for a lock another process holds before `store_busy`.
    pub busy_timeout: Duration,
    /// Cap on the database file (rounded down to whole pages); `None`: the disk's size.
    pub max_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct OtpConfig {
    pub length: usize,
    pub ttl: Duration,
    pub max_attempts: u32,
    pub purposes: Vec<String>,
    /// The `otp` template: `{code}` and optionally `{minutes}` and `{purpose}`.
    pub template: Localized,
    pub hmac_key: KeySource,
    pub test_numbers: Vec<TestNumber>,
    /// Numbers without a country code are read in this country's national format;
    /// `None`: callers must send international numbers.
    pub default_region: Option<Region>,
}

/// Where the HMAC key for stored codes comes from; never from the database.
#[derive(Clone)]
pub enum KeySource {
    /// A file, created with 32 random bytes and mode 0600 on first start if missing.
    File(PathBuf),
    /// The systemd credential `otpd_hmac_key` (hex or raw bytes).
    Credential(Vec<u8>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
            KeySource::Credential(_) => f.write_str("Credential(********)"),
        }
    }
}

/// A number (or number prefix) that gets a fixed code and no SMS until a date:
/// for app-store review and staging. Limits still apply.
#[derive(Debug, Clone)]
pub struct TestNumber {
    /// E.164 digits; a trailing `*` in the config makes this a prefix.
    pub pattern: String,
    pub is_prefix: bool,
    pub code: String,
    pub until: SystemTime,
}

impl TestNumber {
    pub fn matches(&self, phone: &PhoneNumber, now: SystemTime) -> bool {
        let number = phone.as_str();
        let hit = if self.is_prefix {
            number.starts_with(&self.pattern)
        } else {
            number == self.pattern
        };
        hit && now < self.until
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// Parses "5/10m", "50/1s" or "10/h": a count, then a period of s, m, h or d.
    fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            invalid(
                key,
                format!("{text:?} is not \"N/period\" such as \"5/10m\""),
            )
        };
        let (count, period) = text.split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let unit_at = period.len().checked_sub(1).ok_or_else(bad)?;
        let (amount, unit) = period.split_at(unit_at);
        let amount: u64 = if amount.is_empty() {
            1
        } else {
            amount.parse().map_err(|_| bad())?
        };
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        if amount == 0 {
            return Err(bad());
        }
        Ok(Rate {
            count,
            period: Duration::from_secs(amount.saturating_mul(seconds)),
        })
    }
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

/// How long rows are kept; the retention job runs every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Kept this long after they expire.
    pub codes: Duration,
    pub messages: Duration,
    pub audit: Duration,
    pub interval: Duration,
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

/// A destination region: an ISO 3166 code from libphonenumber's metadata, or `None`
/// for non-geographic numbers (+800, +882, ...), written "001" as libphonenumber does.
pub type GuardRegion = Option<phonenumber::country::Id>;

/// Parses "ES" (any case) or "001".
pub fn parse_region(text: &str) -> Option<GuardRegion> {
    let text = text.trim().to_ascii_uppercase();
    if text == "001" {
        return Some(None);
    }
    text.parse().ok().map(Some)
}

/// The outbox workers behind `send-sms`, and the channels every send may use.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Tried in this order when a request names no channel; a channel that Twilio
    /// refuses for a number (a 4xx) falls through to the next.
    pub channels: Vec<Channel>,
    /// Messages sent at the same time.
    pub workers: usize,
    /// Sends tried per message before it is marked failed.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled for each further one.
    pub retry_delay: Duration,
}

/// Who delivers messages.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Twilio(Box<TwilioConfig>),
    /// Development mode: messages are appended to this JSON-lines file, never sent.
    DevOutbox(PathBuf),
    /// No credentials and no development mode: sends answer 503.
    None,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    /// Basic-auth user: the Account SID, or an API key SID (SK…).
    pub auth_user: String,
    pub auth_secret: Secret,
    pub from: TwilioFrom,
    /// The WhatsApp sender; without it WhatsApp goes through the messaging service, if any.
    pub whatsapp_from: Option<PhoneNumber>,
    pub api_base: String,
    pub timeout: Duration,
    /// The public URL Twilio posts status callbacks to (passed as `StatusCallback`).
    pub status_callback_url: Option<String>,
    /// The Auth Token signs callbacks; `None` when only an API key is configured.
    pub auth_token: Option<Secret>,
    /// When Twilio fails: retries, their deadline and the circuit breaker.
    pub faults: TwilioFaults,
}

impl TwilioConfig {
    /// Who sends on `channel`: WhatsApp needs its own sender, or a messaging service
    /// (which picks its WhatsApp sender); `None` when the account is not set up for it.
    pub fn sender(&self, channel: Channel) -> Option<TwilioFrom> {
        match (channel, &self.whatsapp_from, &self.from) {
            (Channel::Sms, _, from) => Some(from.clone()),
            (Channel::WhatsApp, Some(number), _) => Some(TwilioFrom::Number(number.clone())),
            (Channel::WhatsApp, None, service @ TwilioFrom::MessagingService(_)) => {
                Some(service.clone())
            }
            (Channel::WhatsApp, None, TwilioFrom::Number(_)) => None,
        }
    }
}

/// How otpd rides out Twilio faults (see `twilio.rs`).
#[derive(Debug, Clone, Copy)]
pub struct TwilioFaults {
    /// Every attempt and every wait for one message fit in this.
    pub send_deadline: Duration,
    /// The longest wait before the first retry (full jitter); it doubles per retry.
    pub retry_backoff: Duration,
    /// Consecutive failed requests that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses sends before one probe is let through.
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub enum TwilioFrom {
    Number(PhoneNumber),
    MessagingService(String),
}

/// A secret that prints as asterisks.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// Where values that are not in the file come from: the process environment and the
/// systemd credentials directory. A struct so tests can pass their own.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub env: HashMap<String, String>,
    pub credentials_dir: Option<PathBuf>,
}

impl Sources {
    pub fn from_process() -> Self {
        Sources {
            env: std::env::vars().collect(),
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn credential(&self, name: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(dir) = &self.credentials_dir else {
            return Ok(None);
        };
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Credential file, then environment variable, then the file's value.
    fn secret(
        &self,
        file_value: &str,
        env: Option<&str>,
        credential: &str,
    ) -> Result<String, ConfigError> {
        if let Some(bytes) = self.credential(credential)? {
            return Ok(String::from_utf8_lossy(&bytes).trim().to_owned());
        }
        if let Some(value) = env.and_then(|name| self.env(name)) {
            return Ok(value);
        }
        Ok(file_value.trim().to_owned())
    }
}

// ---- The file as written: private serde structs, every default here. ----

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    store: RawStore,
    otp: RawOtp,
    limits: RawLimits,
    retention: RawRetention,
    guard: RawGuard,
    messaging: RawMessaging,
    /// `[templates.NAME]` tables of `locale = "text"`.
    templates: BTreeMap<String, BTreeMap<String, String>>,
    twilio: RawTwilio,
    dev: RawDev,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    socket_path: PathBuf,
    socket_mode: String,
    socket_user: String,
    socket_group: String,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    max_body_bytes: usize,
    max_connections: usize,
    request_timeout: String,
    shutdown_timeout: String,
    log_level: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            socket_path: "/run/otpd/otpd.sock".into(),
            socket_mode: "0660".into(),
            socket_user: String::new(),
            socket_group: String::new(),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_body_bytes: 16 * 1024,
            max_connections: 256,
            request_timeout: "10s".into(),
            shutdown_timeout: "10s".into(),
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    busy_timeout: String,
    max_size: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: "/var/lib/otpd/otpd.db".into(),
            busy_timeout: "5s".into(),
            max_size: "0".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawOtp {
    length: usize,
    ttl: String,
    max_attempts: u32,
    purposes: Vec<String>,
    message_template: String,
    /// Empty: `hmac.key` beside the database.
    hmac_key_file: PathBuf,
    test_numbers: Vec<RawTestNumber>,
    default_region: String,
}

impl Default for RawOtp {
    fn default() -> Self {
        RawOtp {
            length: 6,
            ttl: "10m".into(),
            max_attempts: 5,
            purposes: ["registration", "login", "password_reset", "two_factor"]
                .map(String::from)
                .to_vec(),
            message_template: "Your verification code is {code}. It expires in {minutes} minutes."
                .into(),
            hmac_key_file: PathBuf::new(),
            test_numbers: Vec::new(),
            default_region: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTestNumber {
    pattern: String,
    code: String,
    until: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    send_per_phone: String,
    send_per_user: String,
    verify_per_phone: String,
    send_global: String,
    max_keys: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            send_per_phone: "5/10m".into(),
            send_per_user: "10/1h".into(),
            verify_per_phone: "10/10m".into(),
            send_global: "50/1s".into(),
            // 8 times what the default limits let in before a key refills (50 sends/s
            // for 10 min = 30,000 numbers; 180,000 users in an hour would be 5.5x), at
            // 20-40 bytes a key (16 plus the hash table's slack): 5-10 MiB per map at worst.
            max_keys: 250_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawRetention {
    codes: String,
    messages: String,
    audit: String,
    interval: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            codes: "7d".into(),
            messages: "30d".into(),
            audit: "90d".into(),
            interval: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawGuard {
    mode: String,
    allow_countries: Vec<String>,
    deny_countries: Vec<String>,
    /// Empty: off.
    per_country: String,
    per_prefix: String,
    prefix_digits: usize,
    /// 0: off.
    daily_message_cap: u64,
    unverified_per_country: u64,
    unverified_window: String,
}

impl Default for RawGuard {
    fn default() -> Self {
        RawGuard {
            mode: "enforce".into(),
            allow_countries: Vec::new(),
            deny_countries: Vec::new(),
            per_country: String::new(),
            per_prefix: String::new(),
            prefix_digits: 7,
            daily_message_cap: 0,
            unverified_per_country: 0,
            unverified_window: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawMessaging {
    default_locale: String,
    channels: Vec<String>,
    workers: usize,
    max_attempts: u32,
    retry_delay: String,
}

impl Default for RawMessaging {
    fn default() -> Self {
        RawMessaging {
            default_locale: "en".into(),
            channels: vec!["sms".into()],
            workers: 4,
            max_attempts: 5,
            retry_delay: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawTwilio {
    account_sid: String,
    auth_token: String,
    api_key_sid: String,
    api_key_secret: String,
    from_number: String,
    messaging_service_sid: String,
    whatsapp_from: String,
    test_phone_number: String,
    api_base: String,
    timeout: String,
    status_callback_url: String,
    send_deadline: String,
    retry_backoff: String,
    breaker_failures: u32,
    breaker_cooldown: String,
}

impl Default for RawTwilio {
    fn default() -> Self {
        RawTwilio {
            account_sid: String::new(),
            auth_token: String::new(),
            api_key_sid: String::new(),
            api_key_secret: String::new(),
            from_number: String::new(),
            messaging_service_sid: String::new(),
            whatsapp_from: String::new(),
            test_phone_number: String::new(),
            api_base: "https://api.twilio.com".into(),
            timeout: "10s".into(),
            status_callback_url: String::new(),
            send_deadline: "10s".into(),
            retry_backoff: "250ms".into(),
            breaker_failures: 5,
            breaker_cooldown: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawDev {
    /// Development mode without `--dev`: deliver to the outbox, never to Twilio.
    enabled: bool,
    outbox_path: PathBuf,
}

impl Default for RawDev {
    fn default() -> Self {
        RawDev {
            enabled: false,
            outbox_path: "outbox.jsonl".into(),
        }
    }
}

impl RawConfig {
    /// `serve --dev` with no file: everything in the current directory, no root needed.
    fn dev_defaults() -> Self {
        let mut raw = RawConfig::default();
        raw.server.socket_path = "otpd.sock".into();
        raw.store.path = "otpd.db".into();
        raw.dev.enabled = true;
        raw
    }
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration such as \"10s\" or \"10m\": {e}"),
        )
    })
}

/// A size in bytes: "0", "65536", "512KiB", "100MiB", "2GiB" (powers of 1024; "KB",
/// "MB" and "GB" are read the same way, as SQLite and most sysadmins mean them).
fn byte_size(key: &str, text: &str) -> Result<u64, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not a size such as \"0\", \"512KiB\" or \"100MiB\""),
            )
        })
}

/// A user name or numeric uid; empty means "leave it".
fn user_id(key: &str, name: &str) -> Result<Option<u32>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(uid) = name.parse() {
        return Ok(Some(uid));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(Some(user.uid.as_raw())),
        _ => Err(invalid(key, format!("no user named {name:?}"))),
    }
}

/// A group name or numeric gid; empty means "leave it".
fn group_id(key: &str, name: &str) -> Result<Option<u32>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = name.parse() {
        return Ok(Some(gid));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
        _ => Err(invalid(key, format!("no group named {name:?}"))),
    }
}

fn timestamp(key: &str, text: &str) -> Result<SystemTime, ConfigError> {
    // A bare date means the start of that day, UTC.
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339(&full).map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not a date (2027-01-31) or RFC 3339 time"),
        )
    })
}

impl Config {
    /// Loads the file at `path` (or the development defaults when `dev` and no path),
    /// overlays environment and credentials, and validates everything.
    pub fn load(path: Option<&Path>, dev: bool, sources: &Sources) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse_raw(path, &text)?
            }
            None if dev => RawConfig::dev_defaults(),
            None => {
                return Err(invalid(
                    "--config",
                    "no configuration file given (use --dev for development)",
                ));
            }
        };
        Config::from_raw(raw, dev, sources)
    }

    fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    fn from_raw(mut raw: RawConfig, dev: bool, sources: &Sources) -> Result<Config, ConfigError> {
        let s = &raw.server;
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
                format!(
                    "must name a file, in at most {MAX_SOCKET_PATH} bytes (this is {path_len})"
                ),
            ));
        }
        let server = ServerConfig {
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
        };
        if raw.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        let store = StoreConfig {
            path: raw.store.path.clone(),
            busy_timeout: duration("store.busy_timeout", &raw.store.busy_timeout)?,
            max_size: match byte_size("store.max_size", &raw.store.max_size)? {
                0 => None,
                n if n < 64 * 1024 => {
                    return Err(invalid(
                        "store.max_size",
                        "must be 0 (no limit) or at least 64KiB: the schema alone needs that",
                    ));
                }
                n => Some(n),
            },
        };

        let templates = Self::templates(&raw)?;
        let otp = Self::otp(&raw.otp, &templates, &store, sources)?;
        let l = &raw.limits;
        let limits = LimitsConfig {
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
        };

        let r = &raw.retention;
        let retention = RetentionConfig {
            codes: duration("retention.codes", &r.codes)?,
            messages: duration("retention.messages", &r.messages)?,
            audit: duration("retention.audit", &r.audit)?,
            interval: duration("retention.interval", &r.interval)?,
        };
        if retention.interval < Duration::from_secs(1) {
            return Err(invalid("retention.interval", "must be at least 1s"));
        }
        let guard = Self::guard(&raw.guard)?;

        let m = &raw.messaging;
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
        if channels.is_empty() {
            return Err(invalid(
                "messaging.channels",
                "must list at least one channel",
            ));
        }
        let messaging = MessagingConfig {
            channels,
            workers: m.workers,
            max_attempts: m.max_attempts,
            retry_delay: duration("messaging.retry_delay", &m.retry_delay)?,
        };

        // Secrets and numbers from credentials / environment, written back into the raw
        // view so check-config shows what is in effect (masked).
        let t = &mut raw.twilio;
        t.account_sid = sources.secret(
            &t.account_sid,
            Some("TWILIO_ACCOUNT_SID"),
            "twilio_account_sid",
        )?;
        t.auth_token = sources.secret(
            &t.auth_token,
            Some("TWILIO_AUTH_TOKEN"),
            "twilio_auth_token",
        )?;
        t.api_key_sid = sources.secret(
            &t.api_key_sid,
            Some("TWILIO_API_KEY_SID"),
            "twilio_api_key_sid",
        )?;
        t.api_key_secret = sources.secret(
            &t.api_key_secret,
            Some("TWILIO_API_KEY_SECRET"),
            "twilio_api_key_secret",
        )?;
        t.from_number = sources.secret(
            &t.from_number,
            Some("TWILIO_PHONE_NUMBER"),
            "twilio_phone_number",
        )?;
        t.test_phone_number = sources.secret(
            &t.test_phone_number,
            Some("TEST_PHONE_NUMBER"),
            "test_phone_number",
        )?;

        let test_phone_number =
            match t.test_phone_number.as_str() {
                "" => None,
                n => Some(PhoneNumber::parse(n).map_err(|_| {
                    invalid("twilio.test_phone_number", "is not a valid E.164 number")
                })?),
            };
        let dev = dev || raw.dev.enabled;
        let provider = if dev {
            ProviderConfig::DevOutbox(raw.dev.outbox_path.clone())
        } else {
            match Self::twilio(t)? {
                Some(twilio) => ProviderConfig::Twilio(Box::new(twilio)),
                None => ProviderConfig::None,
            }
        };

        if let ProviderConfig::Twilio(twilio) = &provider
            && let Some(channel) = messaging
                .channels
                .iter()
                .find(|c| twilio.sender(**c).is_none())
        {
            return Err(invalid(
                "messaging.channels",
                format!(
                    "lists {channel}, but neither twilio.whatsapp_from nor \
                     twilio.messaging_service_sid is set"
                ),
            ));
        }

        let mut effective = raw;
        effective.dev.enabled = dev;
        for secret in [
            &mut effective.twilio.auth_token,
            &mut effective.twilio.api_key_secret,
        ] {
            if !secret.is_empty() {
                *secret = "********".into();
            }
        }
        Ok(Config {
            server,
            store,
            otp,
            limits,
            retention,
            guard,
            messaging,
            templates,
            provider,
            test_phone_number,
            effective,
        })
    }

    fn guard(g: &RawGuard) -> Result<GuardConfig, ConfigError> {
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
        let rate = |key: &str, text: &str| match text.trim() {
            "" => Ok(None),
            text => Rate::parse(key, text).map(Some),
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
            per_country: rate("guard.per_country", &g.per_country)?,
            per_prefix: rate("guard.per_prefix", &g.per_prefix)?,
            prefix_digits: g.prefix_digits,
            daily_message_cap: Some(g.daily_message_cap).filter(|n| *n > 0),
            unverified_per_country: Some(g.unverified_per_country).filter(|n| *n > 0),
            unverified_window,
        })
    }

    /// `[templates]`, plus `otp` from `otp.message_template` unless `[templates.otp]` is
    /// given; the `otp` texts may use only `{code}` (required), `{minutes}`, `{purpose}`.
    fn templates(raw: &RawConfig) -> Result<Catalog, ConfigError> {
        let locale = &raw.messaging.default_locale;
        let locale_ok = (2..=35).contains(&locale.len())
            && locale
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !locale_ok {
            return Err(invalid(
                "messaging.default_locale",
                format!("{locale:?} is not a locale such as \"en\" or \"es-MX\""),
            ));
        }
        let mut texts = raw.templates.clone();
        if let Some(bad) = texts.keys().find(|n| {
            n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(invalid(
                &format!("templates.{bad}"),
                "name templates with 1-64 lower-case letters, digits or '_'",
            ));
        }
        let otp_key = if texts.contains_key("otp") {
            "templates.otp"
        } else {
            texts.insert(
                "otp".into(),
                BTreeMap::from([(locale.clone(), raw.otp.message_template.clone())]),
            );
            "otp.message_template"
        };
        let catalog = Catalog::new(locale, &texts).map_err(|(key, why)| {
            let key =
                if (key == "otp" || key.starts_with("otp.")) && otp_key == "otp.message_template" {
                    otp_key.to_owned()
                } else {
                    format!("templates.{key}")
                };
            invalid(&key, why)
        })?;
        if let Some(otp) = catalog.get("otp") {
            let vars = otp.variables();
            if !vars.contains("code") {
                return Err(invalid(otp_key, "must contain {code}"));
            }
            if let Some(other) = vars
                .iter()
                .find(|v| !["code", "minutes", "purpose"].contains(&v.as_str()))
            {
                return Err(invalid(
                    otp_key,
                    format!(
                        "unknown variable {{{other}}}; use {{code}}, {{minutes}} or {{purpose}}"
                    ),
                ));
            }
        }
        Ok(catalog)
    }

    fn otp(
        o: &RawOtp,
        templates: &Catalog,
        store: &StoreConfig,
        sources: &Sources,
    ) -> Result<OtpConfig, ConfigError> {
        if !(OtpCode::MIN_LEN..=OtpCode::MAX_LEN).contains(&o.length) {
            return Err(invalid("otp.length", "must be between 4 and 10"));
        }
        let ttl = duration("otp.ttl", &o.ttl)?;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
            return Err(invalid("otp.ttl", "must be between 1s and 24h"));
        }
        if !(1..=100).contains(&o.max_attempts) {
            return Err(invalid("otp.max_attempts", "must be between 1 and 100"));
        }
        if o.purposes.is_empty() {
            return Err(invalid("otp.purposes", "must list at least one purpose"));
        }
        if let Some(p) = o.purposes.iter().find(|p| {
            p.is_empty()
                || p.len() > 64
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }) {
            return Err(invalid(
                "otp.purposes",
                format!("{p:?}: use 1-64 letters, digits, '_' or '-'"),
            ));
        }
        let template = templates
            .get("otp")
            .cloned()
            .ok_or_else(|| invalid("templates.otp", "is missing"))?;
        let hmac_key = match sources.credential("otpd_hmac_key")? {
            Some(bytes) => KeySource::Credential(bytes),
            None if o.hmac_key_file.as_os_str().is_empty() => KeySource::File(
                store
                    .path
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join("hmac.key"),
            ),
            None => KeySource::File(o.hmac_key_file.clone()),
        };
        let mut test_numbers = Vec::new();
        for (i, t) in o.test_numbers.iter().enumerate() {
            let key = format!("otp.test_numbers[{i}]");
            let (pattern, is_prefix) = match t.pattern.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (t.pattern.as_str(), false),
            };
            let digits = pattern.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(
                    &key,
                    "pattern must be + and digits, optionally ending in *",
                ));
            }
            if t.code.len() != o.length || !t.code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &key,
                    format!("code must be {} digits (otp.length)", o.length),
                ));
            }
            test_numbers.push(TestNumber {
                pattern: pattern.to_owned(),
                is_prefix,
                code: t.code.clone(),
                until: timestamp(&format!("{key}.until"), &t.until)?,
            });
        }
        let default_region = match o.default_region.as_str() {
            "" => None,
            code => Some(Region::parse(code).ok_or_else(|| {
                invalid(
                    "otp.default_region",
                    format!("{code:?} is not an ISO 3166-1 country code such as \"ES\" or \"US\""),
                )
            })?),
        };
        Ok(OtpConfig {
            default_region,
            length: o.length,
            ttl,
            max_attempts: o.max_attempts,
            purposes: o.purposes.clone(),
            template,
            hmac_key,
            test_numbers,
        })
    }

    /// `None` when no credentials are configured at all; an error when half are.
    fn twilio(t: &RawTwilio) -> Result<Option<TwilioConfig>, ConfigError> {
        // Checked even without credentials, so a bad value never waits for them.
        let faults = Self::twilio_faults(t)?;
        let any = [
            &t.account_sid,
            &t.auth_token,
            &t.api_key_sid,
            &t.api_key_secret,
        ]
        .iter()
        .any(|v| !v.is_empty());
        if !any {
            return Ok(None);
        }
        if !(t.account_sid.starts_with("AC") && t.account_sid.len() == 34) {
            return Err(invalid(
                "twilio.account_sid",
                "must be the 34-character Account SID starting with AC",
            ));
        }
        let (auth_user, auth_secret) = if !t.api_key_sid.is_empty() {
            if !(t.api_key_sid.starts_with("SK") && t.api_key_sid.len() == 34) {
                return Err(invalid(
                    "twilio.api_key_sid",
                    "must be a 34-character API key SID starting with SK",
                ));
            }
            if t.api_key_secret.is_empty() {
                return Err(invalid(
                    "twilio.api_key_secret",
                    "is required with api_key_sid",
                ));
            }
            (t.api_key_sid.clone(), t.api_key_secret.clone())
        } else {
            if t.auth_token.is_empty() {
                return Err(invalid(
                    "twilio.auth_token",
                    "is required (or api_key_sid and api_key_secret)",
                ));
            }
            (t.account_sid.clone(), t.auth_token.clone())
        };
        let from = match (t.from_number.as_str(), t.messaging_service_sid.as_str()) {
            (_, mg) if !mg.is_empty() => {
                if !(mg.starts_with("MG") && mg.len() == 34) {
                    return Err(invalid(
                        "twilio.messaging_service_sid",
                        "must be a 34-character SID starting with MG",
                    ));
                }
                TwilioFrom::MessagingService(mg.to_owned())
            }
            ("", _) => {
                return Err(invalid(
                    "twilio.from_number",
                    "is required (or messaging_service_sid)",
                ));
            }
            (number, _) => TwilioFrom::Number(
                PhoneNumber::parse(number)
                    .map_err(|_| invalid("twilio.from_number", "is not a valid E.164 number"))?,
            ),
        };
        let whatsapp_from = match t.whatsapp_from.trim() {
            "" => None,
            number => Some(
                PhoneNumber::parse(number)
                    .map_err(|_| invalid("twilio.whatsapp_from", "is not a valid E.164 number"))?,
            ),
        };
        let api_base = t.api_base.trim_end_matches('/').to_owned();
        let scheme_ok = reqwest::Url::parse(&api_base)
            .map(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .unwrap_or(false);
        if !scheme_ok {
            return Err(invalid(
                "twilio.api_base",
                format!("{api_base:?} is not an http(s) URL"),
            ));
        }
        let status_callback_url = match t.status_callback_url.trim() {
            "" => None,
            url => {
                let ok = reqwest::Url::parse(url)
                    .map(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
                    .unwrap_or(false);
                if !ok {
                    return Err(invalid(
                        "twilio.status_callback_url",
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
                // Twilio signs callbacks with the Auth Token, never with an API key.
                if t.auth_token.is_empty() {
                    return Err(invalid(
                        "twilio.status_callback_url",
                        "needs twilio.auth_token to check the callbacks' signatures",
                    ));
                }
                Some(url.to_owned())
            }
        };
        Ok(Some(TwilioConfig {
            account_sid: t.account_sid.clone(),
            auth_user,
            auth_secret: Secret(auth_secret),
            from,
            whatsapp_from,
            api_base,
            timeout: duration("twilio.timeout", &t.timeout)?,
            status_callback_url,
            auth_token: (!t.auth_token.is_empty()).then(|| Secret(t.auth_token.clone())),
            faults,
        }))
    }

    fn twilio_faults(t: &RawTwilio) -> Result<TwilioFaults, ConfigError> {
        let positive = |key: &str, text: &str| match duration(key, text)? {
            d if d.is_zero() => Err(invalid(key, "must be more than 0")),
            d => Ok(d),
        };
        if !(1..=1000).contains(&t.breaker_failures) {
            return Err(invalid("twilio.breaker_failures", "must be from 1 to 1000"));
        }
        Ok(TwilioFaults {
            send_deadline: positive("twilio.send_deadline", &t.send_deadline)?,
            retry_backoff: positive("twilio.retry_backoff", &t.retry_backoff)?,
            breaker_failures: t.breaker_failures,
            breaker_cooldown: positive("twilio.breaker_cooldown", &t.breaker_cooldown)?,
        })
    }

    /// The effective configuration as TOML, secrets masked: what `check-config` prints.
    pub fn effective_toml(&self) -> String {
        toml::to_string(&self.effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, sources: &Sources) -> Result<Config, ConfigError> {
        let raw = Config::parse_raw(Path::new("test.toml"), text)?;
        Config::from_raw(raw, false, sources)
    }

    fn error_key(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => format!("not an Invalid error: {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = load("", &Sources::default()).map_err(|e| e.to_string());
        let Ok(config) = config else {
            unreachable!("{config:?}")
        };
        assert_eq!(config.server.socket_mode, 0o660);
        assert_eq!(config.otp.length, 6);
        assert_eq!(config.otp.ttl, Duration::from_secs(600));
        assert_eq!(config.otp.max_attempts, 5);
        assert_eq!(
            config.limits.send_per_phone.period,
            Duration::from_secs(600)
        );
        assert!(matches!(config.provider, ProviderConfig::None));
        assert!(
            matches!(&config.otp.hmac_key, KeySource::File(p) if p == Path::new("/var/lib/otpd/hmac.key"))
        );
    }

    #[test]
    fn rates_parse_with_and_without_a_period_count() {
        assert_eq!(
            Rate::parse("k", "5/10m")
                .ok()
                .map(|r| (r.count.get(), r.period.as_secs())),
            Some((5, 600))
        );
        assert_eq!(
            Rate::parse("k", "3/h").ok().map(|r| r.period.as_secs()),
            Some(3600)
        );
        for bad in ["5", "0/1m", "5/0m", "5/10", "5/10w", "/1m", "x/1m"] {
            assert!(Rate::parse("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let s = Sources::default();
        assert_eq!(error_key(load("[otp]\nlength = 3", &s)), "otp.length");
        assert_eq!(
            error_key(load("[limits]\nsend_global = \"fast\"", &s)),
            "limits.send_global"
        );
        assert_eq!(
            error_key(load("[otp]\nmessage_template = \"no code\"", &s)),
            "otp.message_template"
        );
        assert_eq!(
            error_key(load("[otp]\nmessage_template = \"{code} {nope}\"", &s)),
            "otp.message_template"
        );
        assert_eq!(
            error_key(load("[twilio]\naccount_sid = \"AC123\"", &s)),
            "twilio.account_sid"
        );
        assert_eq!(
            error_key(load("[twilio]\nsend_deadline = \"0s\"", &s)),
            "twilio.send_deadline"
        );
        assert_eq!(
            error_key(load("[twilio]\nbreaker_failures = 0", &s)),
            "twilio.breaker_failures"
        );
        assert!(matches!(
            load("[server]\nsocket = \"x\"", &s),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn environment_and_credentials_override_the_file_and_are_masked() {
        let creds = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(creds) = creds else { unreachable!() };
        let _ = std::fs::write(creds.path().join("twilio_auth_token"), "from-credential\n");
        let sources = Sources {
            env: HashMap::from([
                (
                    "TWILIO_ACCOUNT_SID".to_owned(),
                    format!("AC{}", "0".repeat(32)),
                ),
                ("TWILIO_PHONE_NUMBER".to_owned(), "+15005550006".to_owned()),
                ("TWILIO_AUTH_TOKEN".to_owned(), "from-env".to_owned()),
            ]),
            credentials_dir: Some(creds.path().to_owned()),
        };
        let config = load("[twilio]\nauth_token = \"from-file\"", &sources);
        let Ok(config) = config else {
            unreachable!("{config:?}")
        };
        let ProviderConfig::Twilio(t) = &config.provider else {
            unreachable!()
        };
        assert_eq!(t.auth_secret.expose(), "from-credential");
        let shown = config.effective_toml();
        assert!(
            !shown.contains("from-credential") && shown.contains("********"),
            "{shown}"
        );
    }
}
