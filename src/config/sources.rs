//! Where values that are not in config.toml come from, and which one wins: systemd
//! credentials, then the process environment, then config.toml. Also [`Secret`], which
//! prints as asterisks. What the values mean is the sections' business, not this file's.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::ConfigError;
use super::raw::RawTwilio;

/// A secret that prints as asterisks.
#[derive(Clone)]
pub struct Secret(pub(super) String);

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

    pub(super) fn credential(&self, name: &str) -> Result<Option<Vec<u8>>, ConfigError> {
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
}

/// The `[twilio]` values that may come from outside config.toml, by environment
/// variable; the systemd credential is the variable's name in lower case
/// (`twilio_auth_token`, ...), as config.toml.example documents.
type External = (&'static str, fn(&mut RawTwilio) -> &mut String);

const EXTERNAL: [External; 6] = [
    ("TWILIO_ACCOUNT_SID", |t| &mut t.account_sid),
    ("TWILIO_AUTH_TOKEN", |t| &mut t.auth_token),
    ("TWILIO_API_KEY_SID", |t| &mut t.api_key_sid),
    ("TWILIO_API_KEY_SECRET", |t| &mut t.api_key_secret),
    ("TWILIO_PHONE_NUMBER", |t| &mut t.from_number),
    ("TEST_PHONE_NUMBER", |t| &mut t.test_phone_number),
];

/// Overlays credentials and environment on `[twilio]`, writing the winners back into
/// the raw view so check-config shows what is in effect (masked by the caller).
pub(super) fn overlay(t: &mut RawTwilio, sources: &Sources) -> Result<(), ConfigError> {
    for (variable, field) in EXTERNAL {
        let value = if let Some(bytes) = sources.credential(&variable.to_ascii_lowercase())? {
            String::from_utf8_lossy(&bytes).trim().to_owned()
        } else if let Some(value) = sources.env(variable) {
            value
        } else {
            field(t).trim().to_owned()
        };
        *field(t) = value;
    }
    Ok(())
}
