//! Plain messages: send-sms (text or template, idempotency key, `send_at`), the message
//! list, one message with its status history, and Twilio's status callback. Bodies are
//! parsed into the messaging service's types here; answers are written as JSON.
//!
//! Knows the messaging service's request and answer types and the store's row shapes it
//! renders; it does not check the callback's signature itself (the service does, for
//! now) and knows nothing of how errors become statuses (error.rs).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::body::{Query, UserIdField};
use super::error::Failure;
use super::{Answer, Api, json_response, rfc3339};
use crate::messaging::{Content, IdempotencyKey, Media, MessagingError, SendSms, SmsBody};
use crate::store::{MessageDetail, MessageRow, StatusEvent};
use crate::types::{Caller, Channel, PhoneNumber};

#[derive(Deserialize)]
struct SendSmsBody {
    to: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, VariableValue>,
    #[serde(default)]
    user_id: Option<UserIdField>,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// RFC 3339 with any offset; absent or past means now.
    #[serde(default)]
    send_at: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    /// https URLs the provider attaches (an MMS).
    #[serde(default)]
    media_urls: Vec<String>,
}

/// A template variable: a string, or a number rendered as the caller wrote it (`4.50`
/// stays `4.50`, `1e2` stays `1e2`). Read as the raw JSON text, because serde_json's
/// `Number` keeps only an f64 of a decimal.
struct VariableValue(String);

impl<'de> Deserialize<'de> for VariableValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str(text)
                .map(VariableValue)
                .map_err(D::Error::custom),
            // The parser has checked it is a JSON number.
            Some(b'-' | b'0'..=b'9') => Ok(VariableValue(text.to_owned())),
            _ => Err(D::Error::custom(
                "a template variable must be a string or a number",
            )),
        }
    }
}

#[derive(Serialize)]
struct Queued {
    message_id: i64,
    status: String,
    segments: u32,
    encoding: &'static str,
    send_at: String,
    replayed: bool,
}

#[derive(Serialize)]
struct MessageList<'a> {
    messages: Vec<ListedMessage<'a>>,
}

#[derive(Serialize)]
struct ListedMessage<'a> {
    id: i64,
    otp_id: Option<i64>,
    created_at: String,
    to: &'a str,
    channel: &'a str,
    provider: &'a str,
    sid: Option<&'a str>,
    status: &'a str,
    error_code: Option<i64>,
    error_message: Option<&'a str>,
    attempts: Option<u32>,
}

#[derive(Serialize)]
struct Message<'a> {
    id: i64,
    kind: &'a str,
    channel: &'a str,
    otp_id: Option<i64>,
    to: &'a str,
    user_id: Option<&'a str>,
    status: &'a str,
    sid: Option<&'a str>,
    segments: Option<u32>,
    created_at: String,
    send_at: Option<String>,
    error_code: Option<i64>,
    error_message: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    media_urls: &'a [String],
    history: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    at: String,
    status: &'a str,
    error_code: Option<i64>,
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct CallbackAccepted {
    message_id: i64,
    accepted: bool,
}

pub(super) async fn send_sms(
    api: &Api,
    req: Request<Incoming>,
    caller: Caller,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let body: SendSmsBody = api.json_body(req).await?;
    let content = match (body.body, body.template) {
        (Some(text), None) => Content::Text(SmsBody::parse(text)?),
        (None, Some(name)) => Content::Template {
            name,
            locale: body.locale,
            variables: body
                .variables
                .into_iter()
                .map(|(k, VariableValue(v))| (k, v))
                .collect(),
        },
        _ => return Err(MessagingError::BodyOrTemplate.into()),
    };
    let request = SendSms {
        caller,
        to: PhoneNumber::parse_in(&body.to, api.default_region)?,
        content,
        user_id: UserIdField::parse(body.user_id)?,
        idempotency_key: body
            .idempotency_key
            .map(IdempotencyKey::parse)
            .transpose()?,
        send_at: body.send_at.as_deref().map(send_at).transpose()?,
        channel: body.channel.as_deref().map(Channel::parse).transpose()?,
        media: Media::parse(body.media_urls)?,
    };
    let accepted = api.messaging.send_sms(request, now).await?;
    let queued = Queued {
        message_id: accepted.message_id,
        status: accepted.status,
        segments: accepted.segments.count,
        encoding: accepted.segments.encoding.as_str(),
        send_at: rfc3339(accepted.send_at),
        replayed: accepted.replayed,
    };
    Ok(json_response(StatusCode::ACCEPTED, &queued))
}

fn send_at(text: &str) -> Result<SystemTime, MessagingError> {
    text.parse::<jiff::Timestamp>()
        // Before 1970 is in the past all the same: "send now".
        .map(|t| UNIX_EPOCH + Duration::from_millis(u64::try_from(t.as_millisecond()).unwrap_or(0)))
        .map_err(|_| {
            MessagingError::SendAt(format!(
                "{:.64?} is not an RFC 3339 time such as 2027-01-31T09:00:00+01:00",
                text
            ))
        })
}

pub(super) async fn list(
    api: &Api,
    req: &Request<Incoming>,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let query = Query::parse(req.uri().query());
    let rows = api
        .reports
        .messages_since(query.since(now)?, query.limit()?)
        .await?;
    let list = MessageList {
        messages: rows.iter().map(ListedMessage::from).collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

impl<'a> From<&'a MessageRow> for ListedMessage<'a> {
    fn from(m: &'a MessageRow) -> Self {
        ListedMessage {
            id: m.id,
            otp_id: m.otp_id,
            created_at: rfc3339(m.created_at),
            to: &m.to,
            channel: &m.channel,
            provider: &m.provider,
            sid: m.sid.as_deref(),
            status: &m.status,
            error_code: m.error_code,
            error_message: m.error_message.as_deref(),
            attempts: m.attempts,
        }
    }
}

pub(super) async fn one(api: &Api, id: i64) -> Result<Answer, Failure> {
    let message = api.messaging.message(id).await?;
    Ok(json_response(StatusCode::OK, &Message::from(&message)))
}

impl<'a> From<&'a MessageDetail> for Message<'a> {
    fn from(m: &'a MessageDetail) -> Self {
        Message {
            id: m.id,
            kind: &m.kind,
            channel: &m.channel,
            otp_id: m.otp_id,
            to: &m.to,
            user_id: m.user_id.as_deref(),
            status: &m.status,
            sid: m.sid.as_deref(),
            segments: m.segments,
            created_at: rfc3339(m.created_at),
            send_at: m.send_at.map(rfc3339),
            error_code: m.error_code,
            error_message: m.error_message.as_deref(),
            media_urls: &m.media,
            history: m.history.iter().map(HistoryEntry::from).collect(),
        }
    }
}

impl<'a> From<&'a StatusEvent> for HistoryEntry<'a> {
    fn from(e: &'a StatusEvent) -> Self {
        HistoryEntry {
            at: rfc3339(e.at),
            status: &e.status,
            error_code: e.error_code,
            detail: e.detail.as_deref(),
        }
    }
}

pub(super) async fn status_callback(
    api: &Api,
    req: Request<Incoming>,
    caller: Caller,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = api.body_bytes(req).await?;
    let params = form_urlencoded::parse(&bytes).into_owned().collect();
    let reported = api
        .messaging
        .status_callback(params, signature, caller, now)
        .await?;
    // Before answering, so the re-send is on record when Twilio hears back; its own
    // failure is the code's history, not the callback's answer.
    if let Some(code) = reported.resend_code {
        api.service.resend_code(code, now).await;
    }
    let accepted = CallbackAccepted {
        message_id: reported.message_id,
        accepted: true,
    };
    Ok(json_response(StatusCode::OK, &accepted))
}
