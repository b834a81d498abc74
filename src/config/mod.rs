//! Configuration: the TOML file, the environment variables the backend already uses, an
//! optional secrets file (`twilio.secrets_file`) and systemd credentials, parsed and
//! validated once (at start, at each reload and by `check-config`) into a [`Config`]
//! that cannot be invalid. Every error names the key it is about.
//!
//! The way through, one file per step: `raw.rs` is the file as written and the one home
//! of every default; `sources.rs` overlays the secrets from outside the file;
//! `sections.rs`, `otp.rs` and `twilio.rs` turn each table into its checked struct
//! with the parsers of `values.rs`; this file composes them and keeps what
//! `check-config` prints. Other modules use the types re-exported here, never the
//! raw structs.

mod otp;
mod postgres;
mod raw;
mod sections;
mod sources;
mod twilio;
mod values;

use std::path::Path;

use thiserror::Error;

use crate::clock::Clock;
use crate::templates::Catalog;
use crate::types::{Channel, PhoneNumber};

pub use otp::{KeySource, OtpConfig, OtpSlot, TestNumber};
pub use postgres::{PASSWORD_CREDENTIAL, PostgresConfig, SslMode};
use raw::RawConfig;
pub use sections::{
    Backend, GuardConfig, GuardMode, LimitsConfig, MAX_SOCKET_PATH, MessagingConfig, ReportsConfig,
    RetentionConfig, ServerConfig, StoreConfig,
};
pub use sources::{Secret, Sources};
pub use twilio::{ProviderConfig, SAY_LANGUAGES, TwilioConfig, TwilioFaults, TwilioFrom};
pub use values::{GuardRegion, Rate, parse_region};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

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
    pub reports: ReportsConfig,
    pub guard: GuardConfig,
    pub messaging: MessagingConfig,
    /// Every template, `otp` included (built from `otp.message_template` if not given).
    pub templates: Catalog,
    pub provider: ProviderConfig,
    /// Destination of `GET /test-twilio/`.
    pub test_phone_number: Option<PhoneNumber>,
    /// What time it is: the system's, or in development mode moved by a file.
    pub clock: Clock,
    /// What `check-config` prints: the effective file, secrets masked.
    effective: RawConfig,
}

impl Config {
    /// Loads the file at `path` (or the development defaults when `dev` and no path),
    /// overlays environment, secrets file and credentials, and validates everything.
    /// `--dev` with a file is refused: the file's unset paths would be the production
    /// ones (`/run/otpd`, `/var/lib/otpd`), which a developer asking for `--dev` does not
    /// expect; `[dev] enabled = true` in the file is the explicit way.
    pub fn load(path: Option<&Path>, dev: bool, sources: &Sources) -> Result<Config, ConfigError> {
        if dev && path.is_some() {
            return Err(invalid(
                "--dev",
                "cannot be combined with --config: without a file, --dev keeps the socket, \
                 database, key and outbox in the current directory; to run a file in \
                 development mode, set `[dev] enabled = true` in it (its paths are then \
                 the file's)",
            ));
        }
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

    /// The sections in a fixed order, so that of several mistakes the same one is
    /// reported first every time; the secrets come last, after every plain key.
    fn from_raw(mut raw: RawConfig, dev: bool, sources: &Sources) -> Result<Config, ConfigError> {
        let server = sections::server(&raw.server)?;
        let store = sections::store(&raw.store, sources)?;
        let templates = otp::templates(&raw)?;
        let otp = otp::otp(&raw.otp, &templates, &store, sources)?;
        let limits = sections::limits(&raw.limits)?;
        let retention = sections::retention(&raw.retention)?;
        let reports = sections::reports(&raw.reports)?;
        let guard = sections::guard(&raw.guard)?;
        let messaging = sections::messaging(&raw.messaging)?;

        for warning in sources::overlay(&mut raw.twilio, sources)? {
            sources::warn(&warning);
        }
        let test_phone_number = twilio::test_phone_number(&raw.twilio)?;
        let dev = dev || raw.dev.enabled;
        let provider = twilio::provider(&raw.twilio, &raw.dev, dev)?;
        let clock = sources::clock(sources, dev);
        if let ProviderConfig::Twilio(twilio) = &provider
            && let Some(channel) = messaging
                .channels
                .iter()
                .find(|c| twilio.sender(*c).is_none())
        {
            let needs = match channel {
                Channel::Voice => "twilio.voice_from is not set",
                _ => "neither twilio.whatsapp_from nor twilio.messaging_service_sid is set",
            };
            return Err(invalid(
                "messaging.channels",
                format!("lists {channel}, but {needs}"),
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
            reports,
            guard,
            messaging,
            templates,
            provider,
            test_phone_number,
            clock,
            effective,
        })
    }

    /// The effective configuration as TOML, secrets masked: what `check-config` prints.
    pub fn effective_toml(&self) -> String {
        toml::to_string(&self.effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

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
        let config = config.unwrap();
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
    fn only_development_mode_lets_a_file_move_the_clock() {
        let sources = Sources {
            env: HashMap::from([(
                crate::clock::DEV_CLOCK_FILE.to_owned(),
                "clock-offset".to_owned(),
            )]),
            credentials_dir: None,
        };
        let raw = |text| Config::parse_raw(Path::new("test.toml"), text).unwrap();
        let dev = Config::from_raw(raw(""), true, &sources).unwrap();
        assert_eq!(dev.clock.offset_file(), Some(Path::new("clock-offset")));
        let enabled = Config::from_raw(raw("[dev]\nenabled = true"), false, &sources).unwrap();
        assert!(enabled.clock.offset_file().is_some());
        let production = Config::from_raw(raw(""), false, &sources).unwrap();
        assert_eq!(production.clock.offset_file(), None);
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
        let creds = creds.unwrap();
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
        let config = config.unwrap();
        let ProviderConfig::Twilio(t) = &config.provider else {
            panic!("not Twilio: {:?}", config.provider)
        };
        assert_eq!(t.auth_secret.expose(), "from-credential");
        let shown = config.effective_toml();
        assert!(
            !shown.contains("from-credential") && shown.contains("********"),
            "{shown}"
        );
    }

    #[test]
    fn a_secrets_file_configures_twilio_and_check_config_masks_it() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("otpd.env");
        let config_file = dir.path().join("config.toml");
        let written = std::fs::write(
            &secrets,
            format!(
                "TWILIO_ACCOUNT_SID=AC{}\nexport TWILIO_AUTH_TOKEN='tok-from-file'\n\
                 TWILIO_PHONE_NUMBER=\"+15005550006\"\n",
                "0".repeat(32)
            ),
        )
        .and_then(|()| {
            std::fs::write(
                &config_file,
                format!("[twilio]\nsecrets_file = {:?}\n", secrets.display()),
            )
        });
        assert!(written.is_ok(), "{written:?}");
        let config = Config::load(Some(&config_file), false, &Sources::default());
        let config = config.unwrap();
        let ProviderConfig::Twilio(t) = &config.provider else {
            panic!("not Twilio: {:?}", config.provider)
        };
        assert_eq!(t.auth_secret.expose(), "tok-from-file");
        let shown = config.effective_toml();
        assert!(
            !shown.contains("tok-from-file")
                && shown.contains("auth_token = \"********\"")
                && shown.contains("otpd.env"),
            "{shown}"
        );
        // Without the key, check-config prints no secrets_file line at all.
        let plain = load("", &Sources::default()).map(|c| c.effective_toml());
        assert!(plain.is_ok_and(|text| !text.contains("secrets_file")));
    }
}
