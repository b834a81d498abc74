//! Every message's row and status history, OTP deliveries and the outbox's alike: how a
//! code's message (or a test message) left, the history append every status goes
//! through, and the reads of one message or of recent ones (status callbacks: `callbacks.rs`).
//! It must not know what a code is, or how the outbox queues and retries.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, from_millis, millis};
use crate::types::Channel;

/// How a message left (or did not leave) otpd; `attempts` counts provider requests.
pub enum Delivery {
    Sent {
        provider: &'static str,
        sid: String,
        status: String,
        attempts: u32,
        /// Sent on WhatsApp with channels left: what a later failure report re-sends with.
        fallback: Option<Fallback>,
    },
    Failed {
        provider: &'static str,
        error_code: Option<i64>,
        error_message: String,
        attempts: u32,
    },
    /// Not attempted: the provider's circuit breaker is open.
    CircuitOpen {
        provider: &'static str,
        error_message: String,
    },
    /// A configured test number: no message, the code is usable at once.
    Skipped,
    /// Whether it left could not be decided in time (otpd stopped mid-send and the
    /// provider could not be asked): the code can never verify.
    Unknown {
        provider: &'static str,
        error_message: String,
    },
}

/// The channels left after a WhatsApp send (comma-separated, in order) and the code's
/// locale, kept so that Twilio reporting the message undelivered can re-send it.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub channels: String,
    pub locale: Option<String>,
}

/// A message in the listing of recent ones.
#[derive(Debug)]
pub struct MessageRow {
    pub id: i64,
    pub otp_id: Option<i64>,
    pub created_at: SystemTime,
    pub to: String,
    pub channel: String,
    pub provider: String,
    pub sid: Option<String>,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// Provider requests it took; `None` on rows from before migration 4.
    pub attempts: Option<u32>,
}

/// One message and its status history.
#[derive(Debug)]
pub struct MessageDetail {
    pub id: i64,
    pub otp_id: Option<i64>,
    pub kind: String,
    pub channel: String,
    pub to: String,
    pub user_id: Option<String>,
    pub status: String,
    pub sid: Option<String>,
    pub segments: Option<u32>,
    pub created_at: SystemTime,
    pub send_at: Option<SystemTime>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// An MMS's attachment URLs; empty for a text.
    pub media: Vec<String>,
    pub history: Vec<StatusEvent>,
}

/// One status a message passed through.
#[derive(Debug)]
pub struct StatusEvent {
    pub at: SystemTime,
    pub status: String,
    pub error_code: Option<i64>,
    pub detail: Option<String>,
}

/// Twilio's statuses in the order a message (or a voice code's call) moves through
/// them. Callbacks can arrive out of order; the message keeps the furthest status and
/// the history keeps them all.
pub(super) fn rank(status: &str) -> u8 {
    match status {
        "queued" | "accepted" | "scheduled" => 0,
        "sending" | "checking" | "initiated" | "ringing" => 1,
        "sent" | "delivered_to_outbox" | "in-progress" => 2,
        "delivered" | "undelivered" | "failed" | "canceled" | "unknown" => 3,
        "completed" | "busy" | "no-answer" => 3,
        "read" => 4,
        _ => 0,
    }
}

/// Appends a status to a message's history.
pub(super) fn event(
    tx: &rusqlite::Transaction<'_>,
    message_id: i64,
    at: SystemTime,
    status: &str,
    error_code: Option<i64>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO message_events (message_id, at, status, error_code, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![message_id, millis(at), status, error_code, detail])?;
    Ok(())
}

impl Store {
    /// Records a message that belongs to no code (the test-twilio endpoint).
    pub async fn record_message(
        &self,
        to: String,
        delivery: Delivery,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write("record_message", move |tx| {
            Self::insert_message(tx, None, &to, Channel::Sms, &delivery, now)
        })
        .await
    }

    pub(super) const INSERT_DELIVERY: &str =
        "INSERT INTO messages (otp_id, created_at, to_number, provider, sid, status,
                               error_code, error_message, attempts, channel)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

    /// The row of a message a code (or the test endpoint) sent or failed to send, and
    /// its first status; a test number's delivery has none.
    pub(super) fn insert_message(
        tx: &rusqlite::Transaction<'_>,
        otp_id: Option<i64>,
        to: &str,
        channel: Channel,
        delivery: &Delivery,
        now: SystemTime,
    ) -> rusqlite::Result<()> {
        let (provider, sid, status, code, message, attempts) = match delivery {
            Delivery::Sent {
                provider,
                sid,
                status,
                attempts,
                ..
            } => (
                *provider,
                Some(sid.as_str()),
                status.as_str(),
                None,
                None,
                *attempts,
            ),
            Delivery::Failed {
                provider,
                error_code,
                error_message,
                attempts,
            } => (
                *provider,
                None,
                "failed",
                *error_code,
                Some(error_message.as_str()),
                *attempts,
            ),
            Delivery::CircuitOpen {
                provider,
                error_message,
            } => (
                *provider,
                None,
                "circuit_open",
                None,
                Some(error_message.as_str()),
                0,
            ),
            Delivery::Unknown {
                provider,
                error_message,
            } => (
                *provider,
                None,
                "unknown",
                None,
                Some(error_message.as_str()),
                1,
            ),
            Delivery::Skipped => return Ok(()),
        };
        tx.prepare_cached(Self::INSERT_DELIVERY)?.execute(params![
            otp_id,
            millis(now),
            to,
            provider,
            sid,
            status,
            code,
            message,
            attempts,
            channel.as_str()
        ])?;
        let id = tx.last_insert_rowid();
        // Rare (WhatsApp first, with channels left), so not part of the insert every
        // code's delivery runs.
        if let Delivery::Sent {
            fallback: Some(fallback),
            ..
        } = delivery
        {
            tx.prepare_cached("UPDATE messages SET fallback = ?2 WHERE id = ?1")?
                .execute(params![id, fallback.channels])?;
        }
        // OTP messages get the same status history as the outbox's.
        event(tx, id, now, status, code, message)?;
        Ok(())
    }

    /// Messages created at or after `since`, newest first.
    pub async fn messages_since(
        &self,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<MessageRow>, StoreError> {
        self.read("messages_since", move |c| {
            c.prepare_cached(
                "SELECT id, otp_id, created_at, to_number, provider, sid, status, error_code,
                        error_message, attempts, channel
                 FROM messages WHERE created_at >= ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![millis(since), limit], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    otp_id: r.get(1)?,
                    created_at: from_millis(r.get(2)?),
                    to: r.get(3)?,
                    provider: r.get(4)?,
                    sid: r.get(5)?,
                    status: r.get(6)?,
                    error_code: r.get(7)?,
                    error_message: r.get(8)?,
                    attempts: r.get(9)?,
                    channel: r.get(10)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// One message and its status history, oldest first.
    pub async fn message(&self, id: i64) -> Result<Option<MessageDetail>, StoreError> {
        self.read("message", move |c| {
            let found = c
                .prepare_cached(
                    "SELECT id, otp_id, kind, channel, to_number, user_id, status, sid, segments,
                            created_at, send_at, error_code, error_message, media
                     FROM messages WHERE id = ?1",
                )?
                .query_row(params![id], |r| {
                    Ok(MessageDetail {
                        id: r.get(0)?,
                        otp_id: r.get(1)?,
                        kind: r.get(2)?,
                        channel: r.get(3)?,
                        to: r.get(4)?,
                        user_id: r.get(5)?,
                        status: r.get(6)?,
                        sid: r.get(7)?,
                        segments: r.get(8)?,
                        created_at: from_millis(r.get(9)?),
                        send_at: r.get::<_, Option<i64>>(10)?.map(from_millis),
                        error_code: r.get(11)?,
                        error_message: r.get(12)?,
                        media: super::outbox::split_media(r.get(13)?),
                        history: Vec::new(),
                    })
                })
                .optional()?;
            let Some(mut detail) = found else {
                return Ok(None);
            };
            detail.history = c
                .prepare_cached(
                    "SELECT at, status, error_code, detail FROM message_events
                     WHERE message_id = ?1 ORDER BY id",
                )?
                .query_map(params![id], |r| {
                    Ok(StatusEvent {
                        at: from_millis(r.get(0)?),
                        status: r.get(1)?,
                        error_code: r.get(2)?,
                        detail: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some(detail))
        })
        .await
    }
}
