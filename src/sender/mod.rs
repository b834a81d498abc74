//! The provider boundary: one `send(to, channel, body)` (and `call` for a voice code) for
//! Twilio and for the development outbox,
//! plus "no provider" so a daemon without credentials says so instead of pretending.
//! It reports how many requests each message took and the state of Twilio's circuit,
//! tells a message known not sent from one that may have been sent, and asks the
//! provider which messages it holds for a number (`sent_since`), in the provider's
//! terms but none of its types. Knows nothing of OTPs, the store or HTTP serving.

mod dev;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::clock::Clock;
use crate::config::ProviderConfig;
use crate::telemetry;
use crate::twilio::{Failed, TwilioClient, TwilioError, Verdict};
use crate::types::{Channel, Channels, PhoneNumber};
use dev::DevOutbox;

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
    fn from_twilio(error: TwilioError, attempts: u32) -> Self {
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

/// A message the provider accepted.
#[derive(Debug)]
pub struct Sent {
    pub sid: String,
    pub status: String,
    /// Requests it took (1 unless Twilio needed retries).
    pub attempts: u32,
}

/// A message the provider holds, as its list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub sid: String,
    pub status: String,
    pub body: String,
}

/// Why the provider could not say which messages it holds.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error("no provider is configured")]
    NotConfigured,
    #[error("cannot ask {provider}: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
    },
}

/// How many requests a send may make.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tries {
    /// Retries within the provider's deadline (a code's caller is waiting).
    Retry,
    /// One request (the outbox records each attempt before the next).
    Once,
}

/// The configured provider, and whether it answered last time (for `/status/`).
pub struct Sender {
    provider: Provider,
    reachable: AtomicU8,
}

enum Provider {
    // Boxed: the client (with its breaker) dwarfs the other variants.
    Twilio(Box<TwilioClient>),
    DevOutbox(DevOutbox),
    None,
}

const UNKNOWN: u8 = 0;
const REACHABLE: u8 = 1;
const UNREACHABLE: u8 = 2;

impl Sender {
    pub fn new(config: &ProviderConfig, clock: &Clock) -> Result<Sender, SendError> {
        let provider = match config {
            ProviderConfig::Twilio(twilio) => {
                let client = TwilioClient::new(twilio, clock.clone())
                    .map_err(|e| SendError::from_twilio(e, 0))?;
                Provider::Twilio(Box::new(client))
            }
            ProviderConfig::DevOutbox(path) => {
                Provider::DevOutbox(DevOutbox::new(path.clone(), clock.clone()))
            }
            ProviderConfig::None => Provider::None,
        };
        Ok(Sender {
            provider,
            reachable: AtomicU8::new(UNKNOWN),
        })
    }

    /// The name stored with each message and shown by `/status/`.
    pub fn provider(&self) -> Option<&'static str> {
        match self.provider {
            Provider::Twilio(_) => Some("twilio"),
            Provider::DevOutbox(_) => Some("dev_outbox"),
            Provider::None => None,
        }
    }

    /// Did the provider answer (accepting or refusing) the last message? `None` before
    /// the first one.
    pub fn reachable(&self) -> Option<bool> {
        match self.reachable.load(Ordering::Relaxed) {
            REACHABLE => Some(true),
            UNREACHABLE => Some(false),
            _ => None,
        }
    }

    /// Whether the provider accepts the credentials (`accepted`, `rejected`, `unknown`:
    /// no answer yet or unreachable), from a recent free check; `None` for the other
    /// providers, which have none.
    pub async fn credentials(&self, now: SystemTime) -> Option<&'static str> {
        match &self.provider {
            Provider::Twilio(client) => Some(match client.credentials(now).await {
                Verdict::Accepted => "accepted",
                Verdict::Rejected => "rejected",
                Verdict::Unknown => "unknown",
            }),
            _ => None,
        }
    }

    /// The state of Twilio's circuit breaker (`closed`, `open`, `half_open`); `None` for
    /// the other providers.
    pub fn circuit(&self) -> Option<&'static str> {
        match &self.provider {
            Provider::Twilio(client) => Some(client.circuit().name()),
            _ => None,
        }
    }

    /// Whether a message can go out on `channel` (the development outbox takes any).
    pub fn supports(&self, channel: Channel) -> bool {
        match &self.provider {
            Provider::Twilio(client) => client.supports(channel),
            Provider::DevOutbox(_) => true,
            Provider::None => false,
        }
    }

    /// The channels to try, in order: the one a request names, else `configured`
    /// (`messaging.channels`). Err: the named channel cannot be used here.
    pub fn channels(
        &self,
        requested: Option<Channel>,
        configured: &Channels,
    ) -> Result<Channels, Channel> {
        match requested {
            Some(channel) if !self.supports(channel) => Err(channel),
            Some(channel) => Ok(Channels::one(channel)),
            None => Ok(configured.clone()),
        }
    }

    /// Sends, retrying what may work a moment later within the provider's deadline;
    /// a request that may have reached the provider is not repeated before asking it.
    pub async fn send(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        body: &str,
    ) -> Result<Sent, SendError> {
        self.send_with(to, channel, body, None, &[], Tries::Retry)
            .await
    }

    /// A voice code: a call that says `text` in `locale` where the provider can, with
    /// the same retries as [`Sender::send`] except after a lost answer (a call cannot
    /// be looked up by what it said, so it is never placed twice).
    pub async fn call(
        &self,
        to: &PhoneNumber,
        text: &str,
        locale: Option<&str>,
    ) -> Result<Sent, SendError> {
        self.send_with(to, Channel::Voice, text, locale, &[], Tries::Retry)
            .await
    }

    /// One request to the provider, whatever happens: the caller retries. `media`: the
    /// attachments' URLs (an MMS on the SMS channel).
    pub async fn send_once(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        body: &str,
        media: &[String],
    ) -> Result<Sent, SendError> {
        self.send_with(to, channel, body, None, media, Tries::Once)
            .await
    }

    async fn send_with(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        body: &str,
        locale: Option<&str>,
        media: &[String],
        tries: Tries,
    ) -> Result<Sent, SendError> {
        let started = Instant::now();
        let result = match &self.provider {
            Provider::Twilio(client) => {
                let message = match channel {
                    Channel::Voice => client.call(to, body, locale),
                    _ => client.message(to, channel, body, media),
                }
                .ok_or(SendError::ChannelNotConfigured(channel))?;
                let sent = match tries {
                    Tries::Retry => client.send(&message).await,
                    Tries::Once => client.send_once(&message).await,
                };
                sent.map(|accepted| Sent {
                    sid: accepted.sid,
                    status: accepted.status.unwrap_or_else(|| "queued".to_owned()),
                    attempts: accepted.attempts,
                })
                .map_err(|Failed { error, attempts }| SendError::from_twilio(error, attempts))
            }
            Provider::DevOutbox(outbox) => outbox.append(to, channel, body, media).await,
            Provider::None => return Err(SendError::NotConfigured),
        };
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(SendError::Rejected { .. }) => "rejected",
            Err(SendError::CircuitOpen { .. }) => "circuit_open",
            Err(SendError::Unconfirmed { .. }) => "unconfirmed",
            Err(_) => "unavailable",
        };
        let provider = self.provider().unwrap_or("none");
        metrics::counter!(telemetry::PROVIDER_REQUESTS, "provider" => provider, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(telemetry::PROVIDER_DURATION, "provider" => provider)
            .record(started.elapsed());
        let reachable = match outcome {
            "unavailable" | "unconfirmed" | "circuit_open" => UNREACHABLE,
            _ => REACHABLE,
        };
        self.reachable.store(reachable, Ordering::Relaxed);
        result
    }

    /// The messages the provider holds that were sent to `to` on `channel` since
    /// `since` (with a margin for clocks), newest first: what the services compare a
    /// message that may have been sent against.
    pub async fn sent_since(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        since: SystemTime,
    ) -> Result<Vec<Listed>, LookupError> {
        let result = match &self.provider {
            Provider::Twilio(client) => client
                .sent_since(to, channel, since)
                .await
                .map(|listed| {
                    listed
                        .into_iter()
                        .map(|m| Listed {
                            sid: m.sid,
                            status: m.status,
                            body: m.body,
                        })
                        .collect()
                })
                .map_err(|e| LookupError::Unavailable {
                    provider: "Twilio",
                    reason: e.to_string(),
                }),
            Provider::DevOutbox(outbox) => outbox.sent_since(to, channel, since).await,
            Provider::None => Err(LookupError::NotConfigured),
        };
        let outcome = match &result {
            Ok(listed) if listed.is_empty() => "none",
            Ok(_) => "listed",
            Err(_) => "failed",
        };
        let provider = self.provider().unwrap_or("none");
        metrics::counter!(telemetry::PROVIDER_LOOKUPS, "provider" => provider, "outcome" => outcome)
            .increment(1);
        result
    }
}
