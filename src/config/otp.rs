//! `[otp]` and `[templates]`: code length and lifetime, purposes, test numbers, where
//! the HMAC key comes from, and the template catalog whose `otp` entry the codes are
//! sent with. Apart from the other sections because it is the largest and the one with
//! behaviour of its own ([`TestNumber::matches`]). It must not know how codes are made
//! or checked (`otp.rs` at the crate root does).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::raw::{RawConfig, RawOtp, RawTestNumber};
use super::sections::StoreConfig;
use super::sources::Sources;
use super::values::{duration, timestamp};
use super::{ConfigError, invalid};
use crate::templates::{Bound, Catalog};
use crate::types::{OtpCode, PhoneNumber, Region};

#[derive(Debug, Clone)]
pub struct OtpConfig {
    pub length: usize,
    pub ttl: Duration,
    pub max_attempts: u32,
    pub purposes: Vec<String>,
    /// The `otp` template, bound at load: `{code}` and optionally `{minutes}` and
    /// `{purpose}`, so rendering it cannot fail.
    pub template: Bound<OtpSlot>,
    pub hmac_key: KeySource,
    pub test_numbers: Vec<TestNumber>,
    /// Numbers without a country code are read in this country's national format;
    /// `None`: callers must send international numbers.
    pub default_region: Option<Region>,
}

/// The slots an `otp` text may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpSlot {
    Code,
    Minutes,
    Purpose,
}

impl OtpSlot {
    fn parse(name: &str) -> Option<OtpSlot> {
        match name {
            "code" => Some(OtpSlot::Code),
            "minutes" => Some(OtpSlot::Minutes),
            "purpose" => Some(OtpSlot::Purpose),
            _ => None,
        }
    }
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

/// `[templates]`, plus `otp` from `otp.message_template` unless `[templates.otp]` is
/// given; the `otp` texts may use only `{code}` (required), `{minutes}`, `{purpose}`.
pub(super) fn templates(raw: &RawConfig) -> Result<Catalog, ConfigError> {
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
        let key = if (key == "otp" || key.starts_with("otp.")) && otp_key == "otp.message_template"
        {
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
                format!("unknown variable {{{other}}}; use {{code}}, {{minutes}} or {{purpose}}"),
            ));
        }
    }
    Ok(catalog)
}

pub(super) fn otp(
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
    // `templates` checked the slots already, naming the key the text came from.
    let template = templates
        .get("otp")
        .ok_or_else(|| invalid("templates.otp", "is missing"))?
        .bind(OtpSlot::parse)
        .map_err(|e| invalid("templates.otp", e.to_string()))?;
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
    let test_numbers = o
        .test_numbers
        .iter()
        .enumerate()
        .map(|(i, t)| test_number(&format!("otp.test_numbers[{i}]"), t, o.length))
        .collect::<Result<_, _>>()?;
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

fn test_number(key: &str, t: &RawTestNumber, length: usize) -> Result<TestNumber, ConfigError> {
    let (pattern, is_prefix) = match t.pattern.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (t.pattern.as_str(), false),
    };
    let digits = pattern.strip_prefix('+').unwrap_or("");
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            key,
            "pattern must be + and digits, optionally ending in *",
        ));
    }
    if t.code.len() != length || !t.code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            key,
            format!("code must be {length} digits (otp.length)"),
        ));
    }
    Ok(TestNumber {
        pattern: pattern.to_owned(),
        is_prefix,
        code: t.code.clone(),
        until: timestamp(&format!("{key}.until"), &t.until)?,
    })
}
