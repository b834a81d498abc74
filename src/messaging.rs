//! General messaging: plain SMS through a durable outbox, and the status of every message.
//!
//! `send-sms` commits the message to the store before answering 202; the workers here
//! claim due messages (now, or at `send_at`), send them through the [`Sender`], and
//! record each step (queued → sending → sent / failed, then Twilio's delivered /
//! undelivered from status callbacks). A message interrupted mid-send by a crash
//! becomes `unknown` and is not sent again: at most once (see [`Store::recover_interrupted`]).
//! Knows nothing of HTTP; takes `now` from its caller, except in the workers' own loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::callback::{self, StatusUpdate};
use crate::config::{Config, MessagingConfig, ProviderConfig, Secret};
use crate::guard::{Guard, GuardError, Subject};
use crate::limiter::{Limiter, RateLimited};
use crate::segments::{self, Segments};
use crate::sender::{SendError, Sender};
use crate::store::{Claimed, Enqueued, MessageDetail, NewOutgoing, Outcome, Store, StoreError};
use crate::templates::{Catalog, TemplateError};
use crate::twilio::TwilioError;
use crate::types::{Caller, Channel, PhoneNumber, UserId};

/// Twilio schedules messages at most 35 days ahead; otpd keeps the same horizon.
const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(35 * 24 * 3600);
/// How long an idempotency key is remembered.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Retries never wait longer than this, however many came before.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The workers look at the queue at least this often, whatever woke them last.
const IDLE_POLL: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum MessagingError {
    #[error("invalid body: {0}")]
    Body(String),
    #[error("body too long: {} characters", .0.chars)]
    BodyTooLong(Segments),
    #[error("invalid idempotency_key: {0}")]
    IdempotencyKey(&'static str),
    #[error("invalid send_at: {0}")]
    SendAt(String),
    #[error("no sender is configured for {0}")]
    ChannelNotConfigured(Channel),
    #[error("idempotency key already used for a different request (message {message_id})")]
    KeyConflict { message_id: i64 },
    #[error("no message {0}")]
    NotFound(i64),
    #[error("no SMS provider is configured")]
    NotConfigured,
    #[error("status callbacks are not configured")]
    CallbacksNotConfigured,
    #[error("the callback's X-Twilio-Signature does not match")]
    BadSignature,
    #[error("the callback lacks MessageSid or MessageStatus")]
    BadCallback,
    #[error("no message has SID {0}")]
    UnknownSid(String),
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error("give either body or template, not both")]
    BodyOrTemplate,
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An SMS body Twilio will take: not empty, at most 1600 characters, no NUL.
#[derive(Debug, Clone)]
pub struct SmsBody {
    text: String,
    segments: Segments,
}

impl SmsBody {
    pub fn parse(text: String) -> Result<Self, MessagingError> {
        if text.trim().is_empty() {
            return Err(MessagingError::Body("body is empty".into()));
        }
        if text.contains('\0') {
            return Err(MessagingError::Body("body contains a NUL character".into()));
        }
        let segments = segments::count(&text);
        if segments.chars > segments::MAX_BODY_CHARS {
            return Err(MessagingError::BodyTooLong(segments));
        }
        Ok(SmsBody { text, segments })
    }

    pub fn segments(&self) -> Segments {
        self.segments
    }
}

/// A caller's key for "send this once": 1-255 printable ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: String) -> Result<Self, MessagingError> {
        if text.is_empty() || text.len() > 255 {
            return Err(MessagingError::IdempotencyKey("use 1 to 255 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MessagingError::IdempotencyKey(
                "use printable ASCII without spaces",
            ));
        }
        Ok(IdempotencyKey(text))
    }
}

/// What to send: a text, or a configured template to render.
pub enum Content {
    Text(SmsBody),
    Template {
        name: String,
        locale: Option<String>,
        variables: BTreeMap<String, String>,
    },
}

pub struct SendSms {
    pub caller: Caller,
    pub to: PhoneNumber,
    pub content: Content,
    pub user_id: Option<UserId>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub send_at: Option<SystemTime>,
    /// Only this channel; `None`: `messaging.channels` in order.
    pub channel: Option<Channel>,
}

pub struct Accepted {
    pub message_id: i64,
    pub status: String,
    pub segments: Segments,
    pub send_at: SystemTime,
    /// The idempotency key matched an earlier request: nothing new was queued.
    pub replayed: bool,
}

pub struct MessagingService {
    config: MessagingConfig,
    templates: Catalog,
    store: Store,
    sender: Arc<Sender>,
    limiter: Arc<Limiter>,
    guard: Arc<Guard>,
    callbacks: Option<(String, Secret)>,
    wake: Notify,
}

impl MessagingService {
    pub fn new(
        config: &Config,
        store: Store,
        sender: Arc<Sender>,
        limiter: Arc<Limiter>,
        guard: Arc<Guard>,
    ) -> Self {
        let callbacks = match &config.provider {
            ProviderConfig::Twilio(t) => t.status_callback_url.clone().zip(t.auth_token.clone()),
            _ => None,
        };
        MessagingService {
            config: config.messaging.clone(),
            templates: config.templates.clone(),
            store,
            sender,
            limiter,
            guard,
            callbacks,
            wake: Notify::new(),
        }
    }

    /// Validates, takes one send from the global cost ceiling, and commits the message
    /// (or finds the first one with the same idempotency key).
    pub async fn send_sms(
        &self,
        req: SendSms,
        now: SystemTime,
    ) -> Result<Accepted, MessagingError> {
        if self.sender.provider().is_none() {
            return Err(MessagingError::NotConfigured);
        }
        let channels = self
            .sender
            .channels(req.channel, &self.config.channels)
            .map_err(MessagingError::ChannelNotConfigured)?;
        let send_at = req.send_at.unwrap_or(now).max(now);
        if send_at > now + MAX_SCHEDULE_AHEAD {
            return Err(MessagingError::SendAt(
                "send_at is more than 35 days ahead".into(),
            ));
        }
        let body = match &req.content {
            Content::Text(body) => body.clone(),
            Content::Template {
                name,
                locale,
                variables,
            } => self.render(name, locale.as_deref(), variables)?,
        };
        let segments = body.segments;
        let request_hash = fingerprint(&req, &body);
        let outgoing = NewOutgoing {
            to: req.to.as_str().to_owned(),
            body: body.text,
            channel: channels[0].as_str().to_owned(),
            fallback: join(&channels[1..]),
            user_id: req.user_id.as_ref().map(|u| u.as_str().to_owned()),
            idempotency_key: req.idempotency_key.map(|k| k.0),
            request_hash,
            send_at,
            segments: segments.count,
            now,
            replay_since: now.checked_sub(IDEMPOTENCY_WINDOW).unwrap_or(now),
        };
        // A replay sends nothing, so it must not be refused by (or spend) the cost
        // ceiling: look the key up first. The insert checks it again in its transaction.
        let earlier = match &outgoing.idempotency_key {
            Some(key) => {
                self.store
                    .find_idempotent(key.clone(), outgoing.replay_since)
                    .await?
            }
            None => None,
        };
        let enqueued = match earlier {
            Some((id, hash, status)) => Enqueued::replay(id, &hash, &outgoing.request_hash, status),
            None => {
                self.limiter.check_global()?;
                if self.guard.is_active() {
                    self.guard_message(&req.to, req.user_id.as_ref(), req.caller, now)
                        .await?;
                }
                self.store.enqueue(outgoing).await?
            }
        };
        let (message_id, status, replayed) = match enqueued {
            Enqueued::New { id } => {
                self.wake.notify_one();
                log::info!(message_id = id; "queued message {id} ({} segments)", segments.count);
                (id, "queued".to_owned(), false)
            }
            Enqueued::Replayed { id, status } => (id, status, true),
            Enqueued::KeyConflict { id } => {
                return Err(MessagingError::KeyConflict { message_id: id });
            }
        };
        Ok(Accepted {
            message_id,
            status,
            segments,
            send_at,
            replayed,
        })
    }

    /// The cost guard's country lists and daily cap; every refusal is audited.
    async fn guard_message(
        &self,
        to: &PhoneNumber,
        user_id: Option<&UserId>,
        caller: Caller,
        now: SystemTime,
    ) -> Result<(), MessagingError> {
        let dest = self.guard.destination(to);
        let verdict = self.guard.check_message(&dest, now, &self.store).await?;
        let who = Subject {
            phone: to,
            purpose: None,
            user_id: user_id.map(UserId::as_str),
            caller: Some(caller),
        };
        match self.guard.audit(verdict, who, now, &self.store).await? {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Renders a configured template; the `otp` template is only for codes.
    fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        variables: &BTreeMap<String, String>,
    ) -> Result<SmsBody, MessagingError> {
        let template = self
            .templates
            .get(name)
            .filter(|_| name != "otp")
            .ok_or_else(|| TemplateError::UnknownTemplate(name.to_owned()))?;
        let text = template.render(template.locale_for(locale), variables)?;
        SmsBody::parse(text)
    }

    pub async fn message(&self, id: i64) -> Result<MessageDetail, MessagingError> {
        self.store
            .message(id)
            .await?
            .ok_or(MessagingError::NotFound(id))
    }

    /// A status callback, as Twilio posted it (form fields and the signature header).
    /// Only a valid signature over the configured public URL is trusted; a forged or
    /// unsigned one is refused and audited.
    pub async fn status_callback(
        &self,
        params: Vec<(String, String)>,
        signature: Option<String>,
        caller: Caller,
        now: SystemTime,
    ) -> Result<i64, MessagingError> {
        let Some((url, token)) = &self.callbacks else {
            return Err(MessagingError::CallbacksNotConfigured);
        };
        let valid = signature
            .as_deref()
            .is_some_and(|s| callback::signature_is_valid(token.expose(), url, &params, s));
        if !valid {
            let sid = params
                .iter()
                .find(|(k, _)| k == "MessageSid")
                .map_or("none", |(_, v)| v.as_str());
            let detail = format!(
                "{} X-Twilio-Signature for MessageSid {sid:.40}",
                if signature.is_some() {
                    "invalid"
                } else {
                    "missing"
                }
            );
            log::warn!("refused a status callback: {detail}");
            self.store
                .audit_other("callback_refused", detail, caller, now)
                .await?;
            return Err(MessagingError::BadSignature);
        }
        let update = StatusUpdate::from_params(&params).ok_or(MessagingError::BadCallback)?;
        let id = self
            .store
            .apply_status(update.sid.clone(), update.status, update.error_code, now)
            .await?;
        id.ok_or(MessagingError::UnknownSid(update.sid))
    }

    /// The workers: until `shutdown` turns true, claim due messages and send them, at
    /// most `messaging.workers` at a time; then wait for the sends in flight.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.store.recover_interrupted(SystemTime::now()).await {
            Ok(ids) if !ids.is_empty() => log::warn!(
                "{} message(s) were being sent when otpd stopped; marked unknown, not resent: {ids:?}",
                ids.len()
            ),
            Ok(_) => {}
            Err(e) => log::error!("outbox recovery: {e}"),
        }
        let mut sends = JoinSet::new();
        while !*shutdown.borrow() {
            while sends.try_join_next().is_some() {}
            if sends.len() >= self.config.workers {
                tokio::select! {
                    _ = sends.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let free = self.config.workers - sends.len();
            match self.store.claim_due(SystemTime::now(), free as u32).await {
                Ok(batch) => {
                    let full = batch.len() == free;
                    for message in batch {
                        sends.spawn(self.clone().send_one(message));
                    }
                    if full {
                        // More may be due: go round once a worker is free.
                        continue;
                    }
                }
                Err(e) => {
                    log::error!("outbox: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            // Nothing more is due now: sleep until the next scheduled message, a new
            // one, a finished send, or shutdown.
            let wait = match self.store.next_due().await {
                Ok(Some(due)) => due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(IDLE_POLL),
                Ok(None) => IDLE_POLL,
                Err(e) => {
                    log::error!("outbox: {e}");
                    IDLE_POLL
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = sends.join_next(), if !sends.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Sends already handed to Twilio finish and are recorded; none start.
        while sends.join_next().await.is_some() {}
    }

    async fn send_one(self: Arc<Self>, message: Claimed) {
        let to = PhoneNumber::parse(&message.to);
        let channel = Channel::parse(&message.channel);
        let outcome = match (to, channel) {
            (Err(_), _) | (_, Err(_)) => Outcome::Failed {
                error_code: None,
                error_message: "stored number or channel no longer parses".into(),
            },
            (Ok(to), Ok(channel)) => match self.sender.send(&to, channel, &message.body).await {
                Ok(sent) => Outcome::Sent {
                    provider: self.sender.provider().unwrap_or("none"),
                    sid: sent.sid,
                },
                // Twilio refused this channel for this number: the next one may reach it.
                Err(
                    error @ SendError::Twilio {
                        error: TwilioError::Rejected { .. },
                        ..
                    },
                ) if message.fallback.as_deref().is_some_and(|f| !f.is_empty()) => {
                    let fallback = message.fallback.as_deref().unwrap_or_default();
                    let (next, rest) = fallback.split_once(',').unwrap_or((fallback, ""));
                    Outcome::Fallback {
                        next: next.to_owned(),
                        rest: Some(rest.to_owned()).filter(|r| !r.is_empty()),
                        reason: format!("{channel} refused: {error}"),
                    }
                }
                Err(SendError::Twilio {
                    error: TwilioError::Rejected { code, message, .. },
                    ..
                }) => Outcome::Failed {
                    error_code: code,
                    error_message: message,
                },
                // No request was made: wait for the breaker's probe without spending
                // one of the message's attempts.
                Err(SendError::Twilio {
                    error: TwilioError::CircuitOpen { retry_after },
                    ..
                }) => Outcome::Retry {
                    at: SystemTime::now() + retry_after.mul_f64(rand::random_range(1.0..1.25)),
                    reason: "Twilio's circuit is open".into(),
                    counted: false,
                },
                Err(e @ (SendError::NotConfigured | SendError::ChannelNotConfigured(_))) => {
                    Outcome::Failed {
                        error_code: None,
                        error_message: e.to_string(),
                    }
                }
                Err(e) if message.attempts >= self.config.max_attempts => Outcome::Failed {
                    error_code: None,
                    error_message: format!("gave up after {} attempts: {e}", message.attempts),
                },
                Err(e) => Outcome::Retry {
                    at: SystemTime::now() + self.retry_delay(message.attempts),
                    reason: e.to_string(),
                    counted: true,
                },
            },
        };
        match &outcome {
            Outcome::Sent { .. } => {
                log::info!(message_id = message.id; "message {} sent", message.id)
            }
            Outcome::Failed { error_message, .. } => {
                log::warn!(message_id = message.id, error = error_message.as_str(); "message {} failed: {error_message}", message.id)
            }
            Outcome::Retry { reason, .. } => {
                log::warn!(message_id = message.id; "message {} will be retried: {reason}", message.id)
            }
            Outcome::Fallback { reason, next, .. } => {
                log::warn!(message_id = message.id; "message {} {reason}; trying {next}", message.id)
            }
        }
        if let Err(e) = self
            .store
            .finish(message.id, outcome, SystemTime::now())
            .await
        {
            log::error!("outbox: recording message {}: {e}", message.id);
        }
    }

    /// `retry_delay` doubled per attempt already made, capped, with ±25% jitter so a
    /// burst of failures does not come back as one burst.
    fn retry_delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .config
            .retry_delay
            .saturating_mul(1 << attempts.saturating_sub(1).min(16));
        let base = doubled.min(MAX_RETRY_DELAY);
        base.mul_f64(rand::random_range(0.75..1.25))
    }
}

/// Channels as the store keeps them: comma-separated, `None` when there are none.
fn join(channels: &[Channel]) -> Option<String> {
    let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    Some(names.join(",")).filter(|s| !s.is_empty())
}

/// What the caller asked for, hashed: a reused key must come with the same request.
fn fingerprint(req: &SendSms, body: &SmsBody) -> String {
    let mut hash = Sha256::new();
    for part in [
        req.to.as_str(),
        body.text.as_str(),
        req.channel.map_or("", Channel::as_str),
        req.user_id.as_ref().map_or("", |u| u.as_str()),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    if let Some(send_at) = req.send_at {
        hash.update(humantime::format_rfc3339_seconds(send_at).to_string());
    }
    hex::encode(hash.finalize())
}
