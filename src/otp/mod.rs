//! The OTP service: issues a code (test numbers, channel choice, limits, cost guard,
//! store, then the SMS with fallback across channels), verifies one (a counted
//! attempt, a constant-time compare, a conditional consume), and decides the codes a
//! crash left pending by asking the provider (`recover.rs`). It takes `now` as a
//! parameter and knows nothing of HTTP, SQL or which provider carries the message.

mod code;
mod recover;
mod send;
mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::Counter;
use thiserror::Error;

pub(crate) use code::CodeKey;
pub use code::KeyError;
#[cfg(test)]
pub(crate) use code::code_matches;
use code::load_key;

use crate::config::{Config, OtpConfig};
use crate::guard::{Guard, GuardError};
use crate::limiter::{Limiter, RateLimited};
use crate::sender::{SendError, Sender};
use crate::store::{Store, StoreError};
use crate::telemetry::{self, CountryCounter};
use crate::types::{Caller, Channel, Channels, OtpCode, PhoneNumber, Purpose, UserId};

#[derive(Debug, Error)]
pub enum OtpError {
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("wrong code")]
    WrongCode { attempts_remaining: u32 },
    #[error("code expired")]
    Expired,
    #[error("code already used")]
    AlreadyUsed,
    #[error("no code to verify")]
    NoCode,
    #[error("no attempts left")]
    AttemptsExhausted { retry_after: Duration },
    #[error("no test phone number is configured")]
    NoTestNumber,
}

pub struct SendOtp {
    pub caller: Caller,
    pub phone: PhoneNumber,
    pub purpose: Purpose,
    pub user_id: Option<UserId>,
    /// The SMS language; falls back to its language, then `messaging.default_locale`.
    pub locale: Option<String>,
    /// Only this channel; `None`: `messaging.channels` in order.
    pub channel: Option<Channel>,
}

pub struct VerifyOtp {
    pub caller: Caller,
    pub phone: PhoneNumber,
    pub code: OtpCode,
    pub purpose: Purpose,
    pub user_id: Option<UserId>,
}

pub struct Issued {
    pub otp_id: i64,
    pub expires_at: SystemTime,
    /// The channel that carried the code (for a test number: the one it would have).
    pub channel: Channel,
}

pub struct OtpService {
    otp: OtpConfig,
    test_phone: Option<PhoneNumber>,
    key: CodeKey,
    store: Store,
    limiter: Arc<Limiter>,
    guard: Arc<Guard>,
    sender: Arc<Sender>,
    channels: Channels,
    /// How long a code whose SMS may have left is asked about (`messaging.unknown_after`).
    unknown_after: Duration,
    events: Events,
}

const TEST_MESSAGE: &str = "Test message from otpd: your Twilio settings work.";

impl OtpService {
    pub fn new(
        config: &Config,
        store: Store,
        sender: Arc<Sender>,
        limiter: Arc<Limiter>,
        guard: Arc<Guard>,
    ) -> Result<Self, KeyError> {
        Ok(OtpService {
            otp: config.otp.clone(),
            test_phone: config.test_phone_number.clone(),
            key: CodeKey::new(&load_key(&config.otp.hmac_key)?),
            limiter,
            guard,
            store,
            sender,
            channels: config.messaging.channels.clone(),
            unknown_after: config.messaging.unknown_after,
            events: Events::new(),
        })
    }
}

impl OtpService {
    /// The HMAC key's check value, for the store to compare across instances.
    pub fn key_check_value(&self) -> String {
        self.key.check_value()
    }
}

/// `otpd_otp_events_total` by event: the handles are made once, with the service.
struct Events {
    test_number: Counter,
    sent: Counter,
    channel_fallback: Counter,
    circuit_open: Counter,
    send_failed: Counter,
    verified: Counter,
    wrong_code: Counter,
    not_found: Counter,
    already_used: Counter,
    expired: Counter,
    attempts_exhausted: Counter,
    sent_in: CountryCounter,
    verified_in: CountryCounter,
}

impl Events {
    fn new() -> Self {
        let event = |name: &'static str| metrics::counter!(telemetry::OTP_EVENTS, "event" => name);
        Events {
            test_number: event("test_number"),
            sent: event("sent"),
            channel_fallback: event("channel_fallback"),
            circuit_open: event("circuit_open"),
            send_failed: event("send_failed"),
            verified: event("verified"),
            wrong_code: event("wrong_code"),
            not_found: event("not_found"),
            already_used: event("already_used"),
            expired: event("expired"),
            attempts_exhausted: event("attempts_exhausted"),
            sent_in: CountryCounter::new("sent"),
            verified_in: CountryCounter::new("verified"),
        }
    }
}

/// Counts a verify that did not succeed under its reason.
fn refusal(counter: &Counter, error: OtpError) -> OtpError {
    counter.increment(1);
    error
}
