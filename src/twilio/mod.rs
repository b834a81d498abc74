//! Twilio's Messages API (and its Calls API for voice codes, `voice.rs`) over reqwest
//! (rustls): one form-encoded POST per message, Basic
//! auth with the Account SID + Auth Token or an API key, Twilio's answers turned into
//! typed results, and how otpd rides out Twilio's faults: retries with backoff inside a
//! deadline, and a circuit breaker; `account.rs` asks, for free, whether Twilio accepts
//! the credentials. Knows nothing of OTPs, the store or HTTP serving.
//!
//! Retry rules, per message:
//! - Retried: 429 and 5xx (honouring `Retry-After`, seconds or HTTP-date, on 429/503),
//!   connection errors, timeouts, resets and an unreadable 2xx. Never retried: any other
//!   4xx (invalid number 21211, unsubscribed 21610, authentication 20003, ...), because
//!   the same request would get the same answer.
//! - Waits: full jitter, up to `retry_backoff` doubling per retry (capped at
//!   [`MAX_BACKOFF`]), or Twilio's `Retry-After` if longer. Every attempt and wait fits in
//!   `send_deadline`: no wait runs past it, the last attempt's timeout is cut to it, and
//!   when it is spent the caller gets the last error.
//! - Not sent, or maybe sent: a connection error (refused, DNS, TLS handshake) means no
//!   byte of the request reached Twilio, and any answer (429, 5xx, 4xx) means Twilio
//!   did not create the message. A timeout, reset or unreadable 2xx after the request
//!   was written may mean Twilio created it: [`TwilioError::Interrupted`]. Before a
//!   retry after one of those, Twilio's Messages list is asked whether the message is
//!   there (`list.rs`): found, it is the answer; not there, the retry sends it once;
//!   Twilio cannot be asked, the send ends `Interrupted` (neither sent nor known not
//!   sent) and its caller decides. [`TwilioClient::send_once`] makes one request and
//!   leaves every retry to its caller (the outbox records each attempt first).
//! - The breaker counts every request that failed in a retryable way (a 4xx refusal is
//!   an answer: Twilio is up); while it is open, sends fail at once without a request.

mod account;
pub mod breaker;
mod create;
mod list;
mod retry;
mod voice;
pub mod webhook;

use std::time::{Duration, Instant};

use thiserror::Error;

use crate::clock::Clock;
use crate::config::{Secret, TwilioConfig, TwilioFaults, TwilioFrom};
use crate::telemetry;
use crate::types::{Channel, PhoneNumber};
pub use account::Verdict;
use breaker::{Breaker, CircuitState, Transition};
use create::describe;
use retry::{MIN_ATTEMPT, backoff};

#[derive(Debug, Error)]
pub enum TwilioError {
    /// Twilio answered and refused (4xx): bad number, bad credentials, blocked, ...
    #[error("Twilio rejected the message (HTTP {status}, code {}): {message}", code.map_or("none".to_owned(), |c| c.to_string()))]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
    },
    /// No usable answer: connection failure, timeout, a 429/5xx, or an unreadable 2xx.
    /// `code` is Twilio's error code when it sent one; `retry_after` its `Retry-After`.
    #[error("Twilio is unavailable: {reason}")]
    Unavailable {
        reason: String,
        code: Option<i64>,
        retry_after: Option<Duration>,
    },
    /// The request may have reached Twilio, but no usable answer came (a timeout, a
    /// reset or an unreadable 2xx after it was written): Twilio may have the message.
    #[error("Twilio's answer was lost: {reason}")]
    Interrupted { reason: String },
    /// The circuit breaker is open: no request was made.
    #[error("Twilio's circuit is open after repeated failures; next try in {}s", retry_after.as_secs_f64().ceil())]
    CircuitOpen { retry_after: Duration },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A message Twilio accepted, and how many requests that took.
#[derive(Debug)]
pub struct Accepted {
    pub sid: String,
    pub status: Option<String>,
    pub attempts: u32,
}

/// The final error of a message, and how many requests were made (0: none, the circuit
/// was open).
#[derive(Debug)]
pub struct Failed {
    pub error: TwilioError,
    pub attempts: u32,
}

/// A message ready to post: CreateMessage's (or, for a voice code, CreateCall's) form
/// fields, addresses and sender chosen.
pub struct Outgoing {
    /// For the log lines, masked.
    to: PhoneNumber,
    form: Vec<(&'static str, String)>,
    /// A call cannot be found again in the Messages list after a lost answer.
    call: bool,
}

pub struct TwilioClient {
    http: reqwest::Client,
    /// CreateMessage's URL, parsed once (reqwest would parse a `&str` on every request).
    messages_url: reqwest::Url,
    /// CreateCall's, for voice codes.
    calls_url: reqwest::Url,
    /// `<Say>`'s language when the request's locale is not one it speaks.
    voice_language: &'static str,
    auth_user: String,
    auth_secret: Secret,
    /// The sender per channel (`Channel::ALL` order); `None`: not set up for it.
    senders: [Option<TwilioFrom>; 3],
    status_callback: Option<String>,
    timeout: Duration,
    faults: TwilioFaults,
    breaker: Breaker,
    /// For Retry-After given as a date.
    clock: Clock,
    /// Whether Twilio accepts the credentials (account.rs).
    probe: account::Probe,
}

impl TwilioClient {
    pub fn new(config: &TwilioConfig, clock: Clock) -> Result<Self, TwilioError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Client(e.to_string()))?;
        circuit_gauge(false);
        // The Account SID stays in the path even when an API key authenticates.
        let messages_url = reqwest::Url::parse(&format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.api_base, config.account_sid
        ))
        .map_err(|e| TwilioError::Client(format!("twilio.api_base: {e}")))?;
        let calls_url = reqwest::Url::parse(&format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            config.api_base, config.account_sid
        ))
        .map_err(|e| TwilioError::Client(format!("twilio.api_base: {e}")))?;
        Ok(TwilioClient {
            http,
            messages_url,
            calls_url,
            voice_language: config.voice_language,
            auth_user: config.auth_user.clone(),
            auth_secret: config.auth_secret.clone(),
            senders: Channel::ALL.map(|channel| config.sender(channel)),
            status_callback: config.status_callback_url.clone(),
            timeout: config.timeout,
            faults: config.faults,
            breaker: Breaker::new(
                config.faults.breaker_failures,
                config.faults.breaker_cooldown,
            ),
            clock,
            probe: account::Probe::new(config)?,
        })
    }

    pub fn circuit(&self) -> CircuitState {
        self.breaker.state(Instant::now())
    }

    /// Creates one outbound message (CreateMessage), retrying within the deadline.
    pub async fn send(&self, message: &Outgoing) -> Result<Accepted, Failed> {
        self.send_within(message, true).await
    }

    /// One CreateMessage request, no retry: its outcome is the caller's to record
    /// before the next attempt.
    pub async fn send_once(&self, message: &Outgoing) -> Result<Accepted, Failed> {
        self.send_within(message, false).await
    }

    async fn send_within(&self, message: &Outgoing, retry: bool) -> Result<Accepted, Failed> {
        let deadline = Instant::now() + self.faults.send_deadline;
        // Where a lookup starts: before the first request, which a later one may follow.
        let first_sent = self.clock.now();
        let mut attempts = 0;
        let mut last: Option<TwilioError> = None;
        loop {
            let now = Instant::now();
            let permit = match self.breaker.admit(now) {
                Ok(permit) => permit,
                Err(refused) => {
                    // Others' failures opened it while we waited: stop, with what Twilio
                    // last told us.
                    let error = last.unwrap_or(TwilioError::CircuitOpen {
                        retry_after: refused.retry_after,
                    });
                    return Err(Failed { error, attempts });
                }
            };
            attempts += 1;
            let url = match message.call {
                true => &self.calls_url,
                false => &self.messages_url,
            };
            let result = self
                .attempt(
                    url,
                    &message.form,
                    self.timeout.min(deadline.saturating_duration_since(now)),
                )
                .await;
            let now = Instant::now();
            let (error, retry_after) = match result {
                Ok(message) => {
                    circuit_changed(permit.succeeded(now), &self.faults);
                    return Ok(Accepted {
                        sid: message.sid,
                        status: message.status,
                        attempts,
                    });
                }
                Err(error @ TwilioError::Unavailable { retry_after, .. }) => {
                    let opened = permit.failed(now);
                    circuit_changed(opened, &self.faults);
                    if opened.is_some() || !retry {
                        // This failure (re)opened the circuit: no point waiting to be refused.
                        return Err(Failed { error, attempts });
                    }
                    (error, retry_after)
                }
                Err(error @ TwilioError::Interrupted { .. }) => {
                    circuit_changed(permit.failed(now), &self.faults);
                    // A call's words are not listed anywhere: calling again could ring twice.
                    if !retry || message.call {
                        return Err(Failed { error, attempts });
                    }
                    // Twilio may hold the message: ask before sending it again.
                    match self.find_sent(message, first_sent, deadline).await {
                        Ok(Some(found)) => {
                            log::info!(
                                "Twilio request {attempts} for {} lost its answer; Twilio has the message, sid {}",
                                message.to.masked(),
                                found.sid
                            );
                            return Ok(Accepted {
                                sid: found.sid,
                                status: Some(found.status),
                                attempts,
                            });
                        }
                        Ok(None) => (error, None),
                        Err(lookup) => {
                            log::warn!(
                                "Twilio request {attempts} for {} lost its answer ({error}) and Twilio cannot be asked whether it has the message: {lookup}",
                                message.to.masked()
                            );
                            return Err(Failed { error, attempts });
                        }
                    }
                }
                Err(error) => {
                    if let TwilioError::Rejected { .. } = error {
                        // A refusal is an answer: Twilio is up.
                        circuit_changed(permit.succeeded(now), &self.faults);
                    }
                    return Err(Failed { error, attempts });
                }
            };
            let wait =
                backoff(self.faults.retry_backoff, attempts).max(retry_after.unwrap_or_default());
            if now + wait + MIN_ATTEMPT.min(self.timeout) > deadline {
                return Err(Failed { error, attempts });
            }
            log::info!(
                "Twilio request {attempts} for {} failed ({error}); retrying in {} ms",
                message.to.masked(),
                wait.as_millis()
            );
            metrics::counter!(telemetry::PROVIDER_RETRIES, "provider" => "twilio").increment(1);
            tokio::time::sleep(wait).await;
            last = Some(error);
        }
    }

    fn sender(&self, channel: Channel) -> Option<&TwilioFrom> {
        self.senders.get(channel as usize)?.as_ref()
    }

    /// CreateMessage's form for one message. On WhatsApp both addresses carry
    /// `whatsapp:` (Twilio refuses a mixed pair with 21910); a messaging service picks
    /// its WhatsApp sender. `media` becomes one `MediaUrl` per URL, in order (an MMS on
    /// SMS, attachments on WhatsApp). `None` when the account has no sender for
    /// `channel`, or `channel` is voice (see [`TwilioClient::call`]).
    pub fn message(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        body: &str,
        media: &[String],
    ) -> Option<Outgoing> {
        if !channel.carries_text() {
            return None;
        }
        let from = match self.sender(channel)? {
            TwilioFrom::Number(number) => ("From", channel.address(number.as_str())),
            TwilioFrom::MessagingService(sid) => ("MessagingServiceSid", sid.clone()),
        };
        let mut form = vec![
            ("To", channel.address(to.as_str())),
            from,
            ("Body", body.to_owned()),
        ];
        form.extend(media.iter().map(|url| ("MediaUrl", url.clone())));
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        Some(Outgoing {
            to: to.clone(),
            form,
            call: false,
        })
    }

    /// Whether this account is set up to send on `channel`.
    pub fn supports(&self, channel: Channel) -> bool {
        self.sender(channel).is_some()
    }
}

fn circuit_changed(transition: Option<Transition>, faults: &TwilioFaults) {
    match transition {
        Some(Transition::Opened) => {
            log::warn!(
                "Twilio circuit opened after {} consecutive failed requests: sends fail at once for {}",
                faults.breaker_failures,
                humantime::format_duration(faults.breaker_cooldown)
            );
            circuit_gauge(true);
        }
        Some(Transition::Reopened) => log::warn!(
            "Twilio probe failed: the circuit stays open for another {}",
            humantime::format_duration(faults.breaker_cooldown)
        ),
        Some(Transition::Closed) => {
            log::info!("Twilio circuit closed: Twilio answers again");
            circuit_gauge(false);
        }
        None => {}
    }
}

fn circuit_gauge(open: bool) {
    metrics::gauge!(telemetry::PROVIDER_CIRCUIT_OPEN, "provider" => "twilio")
        .set(f64::from(u8::from(open)));
}
