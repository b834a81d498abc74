//! The file as written: private serde structs, one per TOML table, and their `Default`s,
//! which are the one home of every default (`config.toml.example` and the README's
//! table document exactly these). Values stay as written (durations and rates as
//! strings) so errors can name the key and `check-config` can print them back; turning
//! them into checked values is the sections' job, and nothing here validates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::postgres::RawPostgres;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) store: RawStore,
    pub(super) otp: RawOtp,
    pub(super) limits: RawLimits,
    pub(super) retention: RawRetention,
    pub(super) guard: RawGuard,
    pub(super) messaging: RawMessaging,
    /// `[templates.NAME]` tables of `locale = "text"`.
    pub(super) templates: BTreeMap<String, BTreeMap<String, String>>,
    pub(super) twilio: RawTwilio,
    pub(super) dev: RawDev,
    pub(super) reports: RawReports,
}

impl RawConfig {
    /// `serve --dev` with no file: everything in the current directory, no root needed.
    pub(super) fn dev_defaults() -> Self {
        let mut raw = RawConfig::default();
        raw.server.socket_path = "otpd.sock".into();
        raw.store.path = "otpd.db".into();
        raw.dev.enabled = true;
        raw
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) socket_path: PathBuf,
    pub(super) socket_mode: String,
    pub(super) socket_user: String,
    pub(super) socket_group: String,
    pub(super) allowed_uids: Vec<u32>,
    pub(super) allowed_gids: Vec<u32>,
    pub(super) max_body_bytes: usize,
    pub(super) max_connections: usize,
    pub(super) request_timeout: String,
    pub(super) shutdown_timeout: String,
    pub(super) log_level: String,
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
pub(super) struct RawStore {
    /// "sqlite" (one file per host) or "postgres" (one database shared by every host).
    pub(super) backend: String,
    pub(super) path: PathBuf,
    pub(super) busy_timeout: String,
    pub(super) max_size: String,
    pub(super) postgres: RawPostgres,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "sqlite".into(),
            postgres: RawPostgres::default(),
            path: "/var/lib/otpd/otpd.db".into(),
            busy_timeout: "5s".into(),
            max_size: "0".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOtp {
    pub(super) length: usize,
    pub(super) ttl: String,
    pub(super) max_attempts: u32,
    pub(super) purposes: Vec<String>,
    pub(super) message_template: String,
    /// Empty: `hmac.key` beside the database.
    pub(super) hmac_key_file: PathBuf,
    pub(super) test_numbers: Vec<RawTestNumber>,
    pub(super) default_region: String,
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
pub(super) struct RawTestNumber {
    pub(super) pattern: String,
    pub(super) code: String,
    pub(super) until: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) send_per_phone: String,
    pub(super) send_per_user: String,
    pub(super) verify_per_phone: String,
    pub(super) send_global: String,
    pub(super) max_keys: u64,
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
pub(super) struct RawRetention {
    pub(super) codes: String,
    pub(super) messages: String,
    pub(super) audit: String,
    pub(super) interval: String,
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

/// `[reports]`: what a segment costs, by destination prefix ("+34" = 0.0798).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawReports {
    pub(super) currency: String,
    pub(super) prices: BTreeMap<String, f64>,
}

impl Default for RawReports {
    fn default() -> Self {
        RawReports {
            currency: "USD".into(),
            prices: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawGuard {
    pub(super) mode: String,
    pub(super) allow_countries: Vec<String>,
    pub(super) deny_countries: Vec<String>,
    /// Empty: off.
    pub(super) per_country: String,
    pub(super) per_prefix: String,
    pub(super) prefix_digits: usize,
    /// 0: off.
    pub(super) daily_message_cap: u64,
    pub(super) unverified_per_country: u64,
    pub(super) unverified_window: String,
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
pub(super) struct RawMessaging {
    pub(super) default_locale: String,
    pub(super) channels: Vec<String>,
    pub(super) workers: usize,
    pub(super) max_attempts: u32,
    pub(super) retry_delay: String,
    pub(super) unknown_after: String,
}

impl Default for RawMessaging {
    fn default() -> Self {
        RawMessaging {
            default_locale: "en".into(),
            channels: vec!["sms".into()],
            workers: 4,
            max_attempts: 5,
            retry_delay: "30s".into(),
            unknown_after: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTwilio {
    /// Empty: none; check-config prints the key only when it is set.
    #[serde(skip_serializing_if = "is_empty")]
    pub(super) secrets_file: PathBuf,
    pub(super) account_sid: String,
    pub(super) auth_token: String,
    pub(super) api_key_sid: String,
    pub(super) api_key_secret: String,
    pub(super) from_number: String,
    pub(super) messaging_service_sid: String,
    pub(super) whatsapp_from: String,
    pub(super) voice_from: String,
    pub(super) voice_language: String,
    pub(super) test_phone_number: String,
    pub(super) api_base: String,
    pub(super) timeout: String,
    pub(super) status_callback_url: String,
    pub(super) send_deadline: String,
    pub(super) retry_backoff: String,
    pub(super) breaker_failures: u32,
    pub(super) breaker_cooldown: String,
}

impl Default for RawTwilio {
    fn default() -> Self {
        RawTwilio {
            secrets_file: PathBuf::new(),
            account_sid: String::new(),
            auth_token: String::new(),
            api_key_sid: String::new(),
            api_key_secret: String::new(),
            from_number: String::new(),
            messaging_service_sid: String::new(),
            whatsapp_from: String::new(),
            voice_from: String::new(),
            voice_language: "en-US".into(),
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
pub(super) struct RawDev {
    /// Development mode without `--dev`: deliver to the outbox, never to Twilio.
    pub(super) enabled: bool,
    pub(super) outbox_path: PathBuf,
}

impl Default for RawDev {
    fn default() -> Self {
        RawDev {
            enabled: false,
            outbox_path: "outbox.jsonl".into(),
        }
    }
}

fn is_empty(path: &Path) -> bool {
    path.as_os_str().is_empty()
}
