//! Why a message did not leave, in the provider's terms but none of its types: the
//! services decide on these (fall back, retry, give up) whatever the provider is, and
//! `from_twilio` is the one place Twilio's errors become them.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::twilio::TwilioError;
use crate::types::Channel;

/// Why a message did not leave, in the provider's terms but not its types: the
/// services decide on these (fall back, retry, give up) whatever the provider is.
#[derive(Debug, Error)]
pub enum SendError {
    #[error("no SMS provider is configured")]
    NotConfigured,
    #[error("no sender is configured for {0}")]
    ChannelNotConfigured(Channel),
    /// The provider answered and refused the message (bad number, blocked,
    /// credentials, ...): the same request would get the same answer.
    #[error("{provider} rejected the message (HTTP {status}, code {}): {message}{}", code.map_or("none".to_owned(), |c| c.to_string()), after(*attempts))]
    Rejected {
        provider: &'static str,
        status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
        attempts: u32,
    },
    /// No usable answer within the deadline, and the message is known not sent: no
    /// request reached the provider, or it answered with an error. `retry_after` is the
    /// provider's own hint.
    #[error("{provider} is unavailable: {reason}{}", after(*attempts))]
    Unavailable {
        provider: &'static str,
        reason: String,
        code: Option<i64>,
        retry_after: Option<Duration>,
        attempts: u32,
    },
    /// A request may have reached the provider but its answer was lost, and the
    /// provider could not be asked whether it took the message: neither sent nor known
    /// not sent.
    #[error("{provider} may have taken the message, but its answer was lost: {reason}{}", after(*attempts))]
    Unconfirmed {
        provider: &'static str,
        reason: String,
        attempts: u32,
    },
    /// The provider's circuit breaker is open: no request was made.
    #[error("{provider}'s circuit is open after repeated failures; next try in {}s", retry_after.as_secs_f64().ceil())]
    CircuitOpen {
        provider: &'static str,
        retry_after: Duration,
    },
    #[error("cannot write the development outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn after(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(" (after {n} requests)"),
    }
}

impl SendError {
    /// Requests made to the provider for this message.
    pub fn attempts(&self) -> u32 {
        match self {
            SendError::Rejected { attempts, .. }
            | SendError::Unavailable { attempts, .. }
            | SendError::Unconfirmed { attempts, .. } => *attempts,
            SendError::NotConfigured
            | SendError::ChannelNotConfigured(_)
            | SendError::CircuitOpen { .. } => 0,
            SendError::Outbox { .. } => 1,
        }
    }

    /// The provider's own error code, when it gave one.
    pub fn provider_code(&self) -> Option<i64> {
        match self {
            SendError::Rejected { code, .. } | SendError::Unavailable { code, .. } => *code,
            _ => None,
        }
    }

    /// The provider may hold the message: only asking it can tell.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, SendError::Unconfirmed { .. })
    }

    /// How long the provider asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Unavailable { retry_after, .. } => *retry_after,
            SendError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Twilio's error, with the number of requests it took, in the provider-neutral terms.
    pub(super) fn from_twilio(error: TwilioError, attempts: u32) -> Self {
        const TWILIO: &str = "Twilio";
        match error {
            TwilioError::Rejected {
                status,
                code,
                message,
                more_info,
            } => SendError::Rejected {
                provider: TWILIO,
                status,
                code,
                message,
                more_info,
                attempts,
            },
            TwilioError::Unavailable {
                reason,
                code,
                retry_after,
            } => SendError::Unavailable {
                provider: TWILIO,
                reason,
                code,
                retry_after,
                attempts,
            },
            TwilioError::Interrupted { reason } => SendError::Unconfirmed {
                provider: TWILIO,
                reason,
                attempts,
            },
            TwilioError::CircuitOpen { retry_after } => SendError::CircuitOpen {
                provider: TWILIO,
                retry_after,
            },
            TwilioError::Client(reason) => SendError::Unavailable {
                provider: TWILIO,
                reason: format!("cannot build the HTTP client: {reason}"),
                code: None,
                retry_after: None,
                attempts,
            },
        }
    }
}
