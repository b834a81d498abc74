//! The durable outbox on the shared store: enqueue (an idempotency key through two
//! hosts at once gives one message: the second insert waits on the unique index and
//! then finds the first), claims with `FOR UPDATE SKIP LOCKED` under this instance's
//! name, and each attempt's outcome, committed before the next step.

use std::time::SystemTime;

use super::messages::event;
use super::{PgStore, int, uint};
use crate::store::StoreError;
use crate::store::shared::{KEEP_BODY_FOR_FALLBACK, join_media, split_media};
use crate::store::types::{Claimed, Enqueued, NewOutgoing, Outcome, from_millis, millis};

const HOLDING_KEY: &str = "SELECT id, request_hash, status FROM messages
     WHERE idempotency_key = $1 AND created_at >= $2";

impl PgStore {
    /// Commits the message as `queued` (or finds the first one for its idempotency key).
    pub async fn enqueue(&self, m: NewOutgoing) -> Result<Enqueued, StoreError> {
        let s = self.clone();
        self.run("enqueue", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let since = millis(m.replay_since);
            if let Some(key) = &m.idempotency_key {
                if let Some(r) = tx.query_opt(HOLDING_KEY, &[key, &since]).await? {
                    return Ok(Enqueued::replay(
                        r.get(0),
                        r.get(1),
                        &m.request_hash,
                        r.get(2),
                    ));
                }
                // Past the window: the old message keeps its row but gives up the key.
                tx.execute(
                    "UPDATE messages SET idempotency_key = NULL WHERE idempotency_key = $1",
                    &[key],
                )
                .await?;
            }
            let inserted = tx
                .query_opt(
                    &tx.prepare_cached(
                        "INSERT INTO messages (kind, channel, created_at, updated_at, to_number,
                                               provider, status, body, user_id, idempotency_key,
                                               request_hash, send_at, segments, fallback, media)
                         VALUES ('sms', $1, $2, $2, $3, '', 'queued', $4, $5, $6, $7, $8, $9,
                                 $10, $11)
                         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL
                         DO NOTHING RETURNING id",
                    )
                    .await?,
                    &[
                        &m.channel,
                        &millis(m.now),
                        &m.to,
                        &m.body,
                        &m.user_id,
                        &m.idempotency_key,
                        &m.request_hash,
                        &millis(m.send_at),
                        &int(m.segments),
                        &m.fallback,
                        &join_media(&m.media),
                    ],
                )
                .await?;
            let Some(inserted) = inserted else {
                // Another host's request with this key committed first: it holds it.
                let key = m.idempotency_key.as_deref().unwrap_or_default();
                let r = tx.query_one(HOLDING_KEY, &[&key, &since]).await?;
                return Ok(Enqueued::replay(
                    r.get(0),
                    r.get(1),
                    &m.request_hash,
                    r.get(2),
                ));
            };
            let id: i64 = inserted.get(0);
            let detail = (m.send_at > m.now).then(|| {
                format!(
                    "scheduled for {}",
                    humantime::format_rfc3339_seconds(m.send_at)
                )
            });
            event(&tx, id, m.now, "queued", None, detail.as_deref()).await?;
            tx.commit().await?;
            Ok(Enqueued::New { id })
        })
        .await
    }

    /// The message holding `key` since `since`: its id, request hash and status.
    pub async fn find_idempotent(
        &self,
        key: String,
        since: SystemTime,
    ) -> Result<Option<(i64, String, String)>, StoreError> {
        let s = self.clone();
        self.run("find_idempotent", async move {
            let c = s.client().await?;
            let found = c.query_opt(HOLDING_KEY, &[&key, &millis(since)]).await?;
            Ok(found.map(|r| (r.get(0), r.get(1), r.get(2))))
        })
        .await
    }

    /// Moves up to `limit` due messages to `sending` under this instance's name. Rows
    /// another instance is claiming are skipped, not waited for: each message goes to
    /// exactly one host.
    pub async fn claim_due(&self, now: SystemTime, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        let s = self.clone();
        self.run("claim_due", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    &tx.prepare_cached(
                        "WITH due AS (SELECT id FROM messages
                                      WHERE status = 'queued' AND kind = 'sms' AND send_at <= $1
                                      ORDER BY send_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                         UPDATE messages m SET status = 'sending', updated_at = $1,
                                attempted_at = $1, send_attempts = m.send_attempts + 1,
                                claimed_by = $3, claimed_at = $1
                         FROM due WHERE m.id = due.id
                         RETURNING m.id, m.to_number, m.body, m.channel, m.send_attempts,
                                   m.fallback, m.media",
                    )
                    .await?,
                    &[&millis(now), &i64::from(limit), &&*s.instance],
                )
                .await?;
            let mut claimed: Vec<Claimed> = rows
                .iter()
                .map(|r| Claimed {
                    id: r.get(0),
                    to: r.get(1),
                    body: r.get::<_, Option<String>>(2).unwrap_or_default(),
                    channel: r.get(3),
                    attempts: uint(r.get(4)),
                    fallback: r.get(5),
                    media: split_media(r.get(6)),
                })
                .collect();
            claimed.sort_by_key(|c| c.id);
            for m in &claimed {
                event(&tx, m.id, now, "sending", None, None).await?;
            }
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    /// When the next queued message or check falls due, if any.
    pub async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let s = self.clone();
        self.run("next_due", async move {
            let c = s.client().await?;
            let due: Option<i64> = c
                .query_one(
                    "SELECT least(
                        (SELECT min(send_at) FROM messages WHERE status = 'queued' AND kind = 'sms'),
                        (SELECT min(send_at) FROM messages WHERE status = 'checking' AND kind = 'sms'))",
                    &[],
                )
                .await?
                .get(0);
            Ok(due.map(from_millis))
        })
        .await
    }

    /// Records how a worker's send ended, as SQLite's `finish` does.
    pub async fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("finish", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let at = millis(now);
            match &outcome {
                Outcome::Sent { provider, sid } => {
                    tx.execute(
                        &format!(
                            "UPDATE messages SET status = 'sent', provider = $2, sid = $3,
                                    body = {KEEP_BODY_FOR_FALLBACK}, updated_at = $4
                             WHERE id = $1"
                        ),
                        &[&id, provider, sid, &at],
                    )
                    .await?;
                    event(&tx, id, now, "sent", None, Some(sid)).await?;
                }
                Outcome::Failed {
                    error_code,
                    error_message,
                } => {
                    tx.execute(
                        "UPDATE messages SET status = 'failed', error_code = $2,
                                error_message = $3, body = NULL, updated_at = $4
                         WHERE id = $1",
                        &[&id, error_code, error_message, &at],
                    )
                    .await?;
                    event(&tx, id, now, "failed", *error_code, Some(error_message)).await?;
                }
                Outcome::Fallback { next, rest, reason } => {
                    tx.execute(
                        "UPDATE messages SET status = 'queued', channel = $2, fallback = $3,
                                send_at = $4, updated_at = $4, send_attempts = 0
                         WHERE id = $1",
                        &[&id, next, rest, &at],
                    )
                    .await?;
                    let detail = format!("{reason}; trying {next}");
                    event(&tx, id, now, "queued", None, Some(&detail)).await?;
                }
                Outcome::Retry {
                    at: retry_at,
                    reason,
                    counted,
                } => {
                    tx.execute(
                        "UPDATE messages SET status = 'queued', send_at = $2, updated_at = $3,
                                send_attempts = send_attempts - $4
                         WHERE id = $1",
                        &[&id, &millis(*retry_at), &at, &i32::from(!*counted)],
                    )
                    .await?;
                    let detail = format!(
                        "not sent ({reason}); retry at {}",
                        humantime::format_rfc3339_seconds(*retry_at)
                    );
                    event(&tx, id, now, "queued", None, Some(&detail)).await?;
                }
                Outcome::Unconfirmed { reason, check_at } => {
                    tx.execute(
                        "UPDATE messages SET status = 'checking', send_at = $2, updated_at = $3
                         WHERE id = $1",
                        &[&id, &millis(*check_at), &at],
                    )
                    .await?;
                    let detail = format!(
                        "{reason}; asking whether it arrived at {}",
                        humantime::format_rfc3339_seconds(*check_at)
                    );
                    event(&tx, id, now, "checking", None, Some(&detail)).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}
