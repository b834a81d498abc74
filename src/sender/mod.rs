//! The provider boundary: one `send(to, channel, body)` (and `call` for a voice code) for
//! Twilio and for the development outbox,
//! plus "no provider" so a daemon without credentials says so instead of pretending.
//! It reports how many requests each message took and the state of Twilio's circuit,
//! tells a message known not sent from one that may have been sent, and asks the
//! provider which messages it holds for a number (`sent_since`), in the provider's
//! terms but none of its types. Knows nothing of OTPs, the store or HTTP serving.

mod dev;
mod error;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Instant, SystemTime};

use thiserror::Error;

use crate::clock::Clock;
use crate::config::ProviderConfig;
use crate::telemetry;
use crate::twilio::{Failed, TwilioClient, Verdict};
use crate::types::{Channel, Channels, PhoneNumber};
use dev::DevOutbox;
pub use error::SendError;

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
