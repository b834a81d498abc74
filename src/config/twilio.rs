//! `[twilio]` and `[dev]`, validated: who delivers messages ([`ProviderConfig`]), the
//! account's credentials, its sender per channel, how its faults are ridden out, and
//! the URLs it is reached at and calls back. It sees the secrets after the overlay
//! (`sources.rs`) and must not care where each came from; it knows nothing of HTTP.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawDev, RawTwilio};
use super::sources::Secret;
use super::values::duration;
use super::{ConfigError, invalid};
use crate::types::{Channel, PhoneNumber};

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
    /// The voice-capable number codes are called from; `None`: no voice channel.
    pub voice_from: Option<PhoneNumber>,
    /// What `<Say>` speaks when the request's locale is not one of [`SAY_LANGUAGES`].
    pub voice_language: &'static str,
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
        if channel == Channel::Voice {
            // A messaging service cannot place calls: voice needs its own number.
            return self.voice_from.clone().map(TwilioFrom::Number);
        }
        match (channel, &self.whatsapp_from, &self.from) {
            (Channel::Sms, _, from) => Some(from.clone()),
            (Channel::WhatsApp, Some(number), _) => Some(TwilioFrom::Number(number.clone())),
            (Channel::WhatsApp, None, service @ TwilioFrom::MessagingService(_)) => {
                Some(service.clone())
            }
            (Channel::WhatsApp, None, TwilioFrom::Number(_)) | (Channel::Voice, _, _) => None,
        }
    }
}

/// The languages Twilio's `<Say>` speaks with its standard voices (TwiML `<Say>`
/// reference, "language" attribute).
pub const SAY_LANGUAGES: [&str; 26] = [
    "ca-ES", "da-DK", "de-DE", "en-AU", "en-CA", "en-GB", "en-IN", "en-US", "es-ES", "es-MX",
    "fi-FI", "fr-CA", "fr-FR", "it-IT", "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL", "pt-BR",
    "pt-PT", "ru-RU", "sv-SE", "zh-CN", "zh-HK", "zh-TW",
];

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

/// The destination of `GET /test-twilio/`, if configured.
pub(super) fn test_phone_number(t: &RawTwilio) -> Result<Option<PhoneNumber>, ConfigError> {
    match t.test_phone_number.as_str() {
        "" => Ok(None),
        n => PhoneNumber::parse(n)
            .map(Some)
            .map_err(|_| invalid("twilio.test_phone_number", "is not a valid E.164 number")),
    }
}

/// The outbox in development mode (`dev`: `--dev` or `[dev] enabled`), else Twilio if
/// configured, else none.
pub(super) fn provider(
    t: &RawTwilio,
    d: &RawDev,
    dev: bool,
) -> Result<ProviderConfig, ConfigError> {
    if dev {
        return Ok(ProviderConfig::DevOutbox(d.outbox_path.clone()));
    }
    Ok(match twilio(t)? {
        Some(twilio) => ProviderConfig::Twilio(Box::new(twilio)),
        None => ProviderConfig::None,
    })
}

/// `None` when no credentials are configured at all; an error when half are.
fn twilio(t: &RawTwilio) -> Result<Option<TwilioConfig>, ConfigError> {
    // Checked even without credentials, so a bad value never waits for them.
    let faults = faults(t)?;
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
    let voice_from = match t.voice_from.trim() {
        "" => None,
        number => Some(
            PhoneNumber::parse(number)
                .map_err(|_| invalid("twilio.voice_from", "is not a valid E.164 number"))?,
        ),
    };
    let voice_language = SAY_LANGUAGES
        .iter()
        .copied()
        .find(|l| l.eq_ignore_ascii_case(t.voice_language.trim()))
        .ok_or_else(|| {
            invalid(
                "twilio.voice_language",
                format!(
                    "is not one of Twilio's <Say> languages: {}",
                    SAY_LANGUAGES.join(", ")
                ),
            )
        })?;
    let api_base = t.api_base.trim_end_matches('/').to_owned();
    http_url("twilio.api_base", &api_base)?;
    let status_callback_url = match t.status_callback_url.trim() {
        "" => None,
        url => {
            http_url("twilio.status_callback_url", url)?;
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
        voice_from,
        voice_language,
        api_base,
        timeout: duration("twilio.timeout", &t.timeout)?,
        status_callback_url,
        auth_token: (!t.auth_token.is_empty()).then(|| Secret(t.auth_token.clone())),
        faults,
    }))
}

fn faults(t: &RawTwilio) -> Result<TwilioFaults, ConfigError> {
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

/// An absolute http or https URL with a host.
fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let ok = reqwest::Url::parse(url)
        .map(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{url:?} is not an http(s) URL")))
    }
}
