//! General messaging: plain SMS through a durable outbox, and the status of every message.
//!
//! `send-sms` commits the message to the store before answering 202; the workers here
//! claim due messages (now, or at `send_at`), make one attempt each through the
//! [`Sender`], and record its outcome before the next step (queued → sending → sent /
//! failed, then Twilio's delivered / undelivered from status callbacks). An attempt
//! that may have reached the provider (a lost answer, a crash mid-send) is checked
//! with the provider before anything is sent again (`confirm.rs`): once, never twice.
//! Knows nothing of HTTP; takes `now` from its caller, except in the workers' own loop.

mod confirm;
mod key_lock;
mod media;
mod status;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Notify;

use crate::checks::{self, Check, Subject};
use crate::clock::Clock;
use crate::config::{Config, MessagingConfig, ProviderConfig, Secret};
use crate::guard::{Guard, GuardError};
use crate::limiter::{Limiter, RateLimited};
use crate::segments::{self, Segments};
use crate::sender::Sender;
use crate::store::{Enqueued, MessageDetail, NewOutgoing, Store, StoreError};
use crate::templates::{Catalog, TemplateError};
use crate::types::{Caller, Channel, Channels, PhoneNumber, UserId};
pub use media::{MAX_MEDIA, Media};
pub use status::Reported;

/// Twilio schedules messages at most 35 days ahead; otpd keeps the same horizon.
const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(35 * 24 * 3600);
/// How long an idempotency key is remembered.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Error)]
pub enum MessagingError {
    #[error("invalid body: {0}")]
    Body(String),
    #[error("body too long: {} characters", .0.chars)]
    BodyTooLong(Segments),
    #[error("invalid idempotency_key: {0}")]
    IdempotencyKey(&'static str),
    #[error("invalid media_urls: {0}")]
    Media(String),
    #[error("invalid send_at: {0}")]
    SendAt(String),
    #[error("no sender is configured for {0}")]
    ChannelNotConfigured(Channel),
    #[error("{0} carries codes only")]
    CodesOnly(Channel),
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
    /// Attachments: an MMS on the SMS channel.
    pub media: Media,
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
    /// The workers' time (requests bring their own `now`).
    clock: Clock,
    /// How long a claimed check keeps others off it: longer than asking can take.
    check_lease: Duration,
    keys: key_lock::KeyLocks,
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
        let check_lease = match &config.provider {
            ProviderConfig::Twilio(t) => t.faults.send_deadline * 2,
            _ => Duration::from_secs(10),
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
            clock: config.clock.clone(),
            check_lease,
            keys: key_lock::KeyLocks::default(),
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
        if let Some(channel) = req.channel.filter(|c| !c.carries_text()) {
            return Err(MessagingError::CodesOnly(channel));
        }
        // A plain message is never read out: voice in `messaging.channels` is skipped
        // (SMS when nothing else is left).
        let written = Channels::from_list(
            self.config
                .channels
                .iter()
                .filter(|c| c.carries_text())
                .collect(),
        )
        .unwrap_or_else(|| Channels::one(Channel::Sms));
        let channels = self
            .sender
            .channels(req.channel, &written)
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
            channel: channels.first().as_str().to_owned(),
            fallback: Channels::stored(channels.rest()),
            user_id: req.user_id.as_ref().map(|u| u.as_str().to_owned()),
            idempotency_key: req.idempotency_key.map(|k| k.0),
            request_hash,
            send_at,
            segments: segments.count,
            media: req.media.urls().to_vec(),
            now,
            replay_since: now.checked_sub(IDEMPOTENCY_WINDOW).unwrap_or(now),
        };
        // A replay sends nothing, so it must not be refused by (or spend) the limits or
        // the cost guard: under the key's lock, look it up first. The insert checks it
        // again in its transaction: the lock is this process's, that check holds across them.
        let key = outgoing.idempotency_key.clone();
        let _held = match &key {
            Some(key) => Some(self.keys.lock(key).await),
            None => None,
        };
        let earlier = match key {
            Some(key) => {
                self.store
                    .find_idempotent(key, outgoing.replay_since)
                    .await?
            }
            None => None,
        };
        let enqueued = match earlier {
            Some((id, hash, status)) => Enqueued::replay(id, &hash, &outgoing.request_hash, status),
            None => {
                self.limiter.check_global()?;
                let shared = self.limiter.shared_global();
                checks::shared_limits(&self.store, &self.limiter, shared).await??;
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
        let who = Subject {
            phone: to,
            purpose: None,
            user_id: user_id.map(UserId::as_str),
            caller: Some(caller),
        };
        let check = Check::Message(&dest);
        match checks::guard(&self.guard, &self.store, check, who, now).await? {
            Some(refused) => Err(refused.into()),
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
    // Only when there are some: a key's hash from before media existed stays the same.
    for url in req.media.urls() {
        hash.update([1]);
        hash.update(url.as_bytes());
    }
    hex::encode(hash.finalize())
}
