//! Every message's row and status history on the shared store: how a code's message
//! (or a test message) left, the history append every status goes through, and the
//! reads of one message or of recent ones.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::{PgStore, int, uint};
use crate::store::StoreError;
use crate::store::shared::{DeliveryRow, split_media};
use crate::store::types::{Delivery, MessageDetail, MessageRow, StatusEvent, from_millis, millis};
use crate::types::Channel;

/// Appends a status to a message's history.
pub(super) async fn event(
    c: &impl GenericClient,
    message_id: i64,
    at: SystemTime,
    status: &str,
    error_code: Option<i64>,
    detail: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let statement = c
        .prepare_cached(
            "INSERT INTO message_events (message_id, at, status, error_code, detail)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    c.execute(
        &statement,
        &[&message_id, &millis(at), &status, &error_code, &detail],
    )
    .await?;
    Ok(())
}

/// The row of a message a code (or the test endpoint) sent or failed to send, and its
/// first status; a test number's delivery has none.
pub(super) async fn insert_message(
    c: &impl GenericClient,
    otp_id: Option<i64>,
    to: &str,
    channel: Channel,
    delivery: &Delivery,
    now: SystemTime,
) -> Result<(), tokio_postgres::Error> {
    let Some(DeliveryRow {
        provider,
        sid,
        status,
        error_code,
        error_message,
        attempts,
    }) = delivery.row()
    else {
        return Ok(());
    };
    let fallback = match delivery {
        Delivery::Sent {
            fallback: Some(fallback),
            ..
        } => Some(fallback.channels.as_str()),
        _ => None,
    };
    let statement = c
        .prepare_cached(
            "INSERT INTO messages (otp_id, created_at, to_number, provider, sid, status,
                                   error_code, error_message, attempts, channel, fallback)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .await?;
    let id: i64 = c
        .query_one(
            &statement,
            &[
                &otp_id,
                &millis(now),
                &to,
                &provider,
                &sid,
                &status,
                &error_code,
                &error_message,
                &int(attempts),
                &channel.as_str(),
                &fallback,
            ],
        )
        .await?
        .get(0);
    event(c, id, now, status, error_code, error_message).await
}

impl PgStore {
    /// Records a message that belongs to no code (the test-twilio endpoint).
    pub async fn record_message(
        &self,
        to: String,
        delivery: Delivery,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("record_message", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            insert_message(&tx, None, &to, Channel::Sms, &delivery, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Messages created at or after `since`, newest first.
    pub async fn messages_since(
        &self,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let s = self.clone();
        self.run("messages_since", async move {
            let c = s.client().await?;
            let rows = c
                .query(
                    &c.prepare_cached(
                        "SELECT id, otp_id, created_at, to_number, provider, sid, status,
                                error_code, error_message, attempts, channel
                         FROM messages WHERE created_at >= $1 ORDER BY id DESC LIMIT $2",
                    )
                    .await?,
                    &[&millis(since), &i64::from(limit)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| MessageRow {
                    id: r.get(0),
                    otp_id: r.get(1),
                    created_at: from_millis(r.get(2)),
                    to: r.get(3),
                    provider: r.get(4),
                    sid: r.get(5),
                    status: r.get(6),
                    error_code: r.get(7),
                    error_message: r.get(8),
                    attempts: r.get::<_, Option<i32>>(9).map(uint),
                    channel: r.get(10),
                })
                .collect())
        })
        .await
    }

    /// One message and its status history, oldest first.
    pub async fn message(&self, id: i64) -> Result<Option<MessageDetail>, StoreError> {
        let s = self.clone();
        self.run("message", async move {
            let c = s.client().await?;
            let Some(r) = c
                .query_opt(
                    &c.prepare_cached(
                        "SELECT id, otp_id, kind, channel, to_number, user_id, status, sid,
                                segments, created_at, send_at, error_code, error_message, media
                         FROM messages WHERE id = $1",
                    )
                    .await?,
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            let history = c
                .query(
                    &c.prepare_cached(
                        "SELECT at, status, error_code, detail FROM message_events
                         WHERE message_id = $1 ORDER BY id",
                    )
                    .await?,
                    &[&id],
                )
                .await?
                .iter()
                .map(|e| StatusEvent {
                    at: from_millis(e.get(0)),
                    status: e.get(1),
                    error_code: e.get(2),
                    detail: e.get(3),
                })
                .collect();
            Ok(Some(MessageDetail {
                id: r.get(0),
                otp_id: r.get(1),
                kind: r.get(2),
                channel: r.get(3),
                to: r.get(4),
                user_id: r.get(5),
                status: r.get(6),
                sid: r.get(7),
                segments: r.get::<_, Option<i32>>(8).map(uint),
                created_at: from_millis(r.get(9)),
                send_at: r.get::<_, Option<i64>>(10).map(from_millis),
                error_code: r.get(11),
                error_message: r.get(12),
                media: split_media(r.get(13)),
                history,
            }))
        })
        .await
    }
}
