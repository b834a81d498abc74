//! The durable outbox: plain SMS queued by `send-sms`, claimed by the workers one
//! attempt at a time, and finished with how that attempt ended, committed before the
//! next step. Each step also extends the message's status history (`messages.rs`); an
//! attempt that may have reached the provider is `unconfirmed.rs`'s to resolve. It must
//! not know how a send is made or why it failed: outcomes arrive already decided. Same
//! rules as the rest of the store: writes on the writer thread, one transaction each;
//! reads on the pool.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::event;
use super::{SqliteStore, StoreError, from_millis, millis};
use crate::store::shared::{KEEP_BODY_FOR_FALLBACK, join_media, split_media};
use crate::store::types::{Claimed, Enqueued, NewOutgoing, Outcome};

/// Claims the queued messages that are due, oldest first (`messages_due` index); the
/// attempt's start bounds where its check looks.
const CLAIM_DUE: &str = "UPDATE messages SET status = 'sending', updated_at = ?1,
            attempted_at = ?1, send_attempts = send_attempts + 1
     WHERE id IN (SELECT id FROM messages
                  WHERE status = 'queued' AND kind = 'sms' AND send_at <= ?1
                  ORDER BY send_at, id LIMIT ?2)
     RETURNING id, to_number, body, channel, send_attempts, fallback, media";

/// When the next queued message or check falls due (`messages_due`, `messages_checking`).
const NEXT_DUE: &str = "SELECT min(due) FROM (
        SELECT min(send_at) AS due FROM messages WHERE status = 'queued' AND kind = 'sms'
        UNION ALL
        SELECT min(send_at) FROM messages WHERE status = 'checking' AND kind = 'sms')";

/// The message holding `key` since `since`: its id, request hash and status.
fn holding_key(
    c: &Connection,
    key: &str,
    since: SystemTime,
) -> rusqlite::Result<Option<(i64, String, String)>> {
    c.prepare_cached(
        "SELECT id, request_hash, status FROM messages
         WHERE idempotency_key = ?1 AND created_at >= ?2",
    )?
    .query_row(params![key, millis(since)], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()
}

impl SqliteStore {
    /// Commits the message as `queued` (or finds the first one for its idempotency key).
    /// The caller is answered only after this returns, so a 202 is never lost.
    pub async fn enqueue(&self, m: NewOutgoing) -> Result<Enqueued, StoreError> {
        self.write("enqueue", move |tx| {
            if let Some(key) = &m.idempotency_key {
                // Inside the inserting transaction: of two requests racing on one key,
                // the second finds the first.
                if let Some((id, hash, status)) = holding_key(tx, key, m.replay_since)? {
                    return Ok(Enqueued::replay(id, &hash, &m.request_hash, status));
                }
                // Past the window: the old message keeps its row but gives up the key.
                tx.prepare_cached(
                    "UPDATE messages SET idempotency_key = NULL WHERE idempotency_key = ?1",
                )?
                .execute(params![key])?;
            }
            tx.prepare_cached(
                "INSERT INTO messages (kind, channel, created_at, updated_at, to_number, provider,
                                       status, body, user_id, idempotency_key, request_hash,
                                       send_at, segments, fallback, media)
                 VALUES ('sms', ?1, ?2, ?2, ?3, '', 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                m.channel,
                millis(m.now),
                m.to,
                m.body,
                m.user_id,
                m.idempotency_key,
                m.request_hash,
                millis(m.send_at),
                m.segments,
                m.fallback,
                join_media(&m.media),
            ])?;
            let id = tx.last_insert_rowid();
            let detail = (m.send_at > m.now).then(|| {
                format!(
                    "scheduled for {}",
                    humantime::format_rfc3339_seconds(m.send_at)
                )
            });
            event(tx, id, m.now, "queued", None, detail.as_deref())?;
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
        self.read("find_idempotent", move |c| holding_key(c, &key, since))
            .await
    }

    /// Moves up to `limit` due messages to `sending` and hands them to the caller.
    /// Committed before any send starts: a crash leaves them `sending`, for
    /// [`SqliteStore::recover_interrupted`].
    pub async fn claim_due(&self, now: SystemTime, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        self.write("claim_due", move |tx| {
            let claimed: Vec<Claimed> = tx
                .prepare_cached(CLAIM_DUE)?
                .query_map(params![millis(now), limit], |r| {
                    Ok(Claimed {
                        id: r.get(0)?,
                        to: r.get(1)?,
                        body: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        channel: r.get(3)?,
                        attempts: r.get(4)?,
                        fallback: r.get(5)?,
                        media: split_media(r.get(6)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            for c in &claimed {
                event(tx, c.id, now, "sending", None, None)?;
            }
            Ok(claimed)
        })
        .await
    }

    /// When the next queued message falls due, if any.
    pub async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        self.read("next_due", |c| {
            c.prepare_cached(NEXT_DUE)?
                .query_row([], |r| r.get::<_, Option<i64>>(0))
                .map(|t| t.map(from_millis))
        })
        .await
    }

    /// Records how a worker's send ended. The body is dropped once the message has left
    /// for good: otpd keeps what it needs to send, not an archive of what it sent.
    pub async fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write("finish", move |tx| {
            match &outcome {
                Outcome::Sent { provider, sid } => {
                    tx.prepare_cached(&format!(
                        "UPDATE messages SET status = 'sent', provider = ?2, sid = ?3,
                                body = {KEEP_BODY_FOR_FALLBACK}, updated_at = ?4
                         WHERE id = ?1"
                    ))?
                    .execute(params![id, provider, sid, millis(now)])?;
                    event(tx, id, now, "sent", None, Some(sid))?;
                }
                Outcome::Failed {
                    error_code,
                    error_message,
                } => {
                    tx.prepare_cached(
                        "UPDATE messages SET status = 'failed', error_code = ?2,
                                error_message = ?3, body = NULL, updated_at = ?4
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        error_code,
                        error_message,
                        millis(now)
                    ])?;
                    event(tx, id, now, "failed", *error_code, Some(error_message))?;
                }
                Outcome::Fallback { next, rest, reason } => {
                    tx.prepare_cached(
                        "UPDATE messages SET status = 'queued', channel = ?2, fallback = ?3,
                                send_at = ?4, updated_at = ?4, send_attempts = 0
                         WHERE id = ?1",
                    )?
                    .execute(params![id, next, rest, millis(now)])?;
                    let detail = format!("{reason}; trying {next}");
                    event(tx, id, now, "queued", None, Some(&detail))?;
                }
                Outcome::Retry {
                    at,
                    reason,
                    counted,
                } => {
                    tx.prepare_cached(
                        "UPDATE messages SET status = 'queued', send_at = ?2, updated_at = ?3,
                                send_attempts = send_attempts - ?4
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        millis(*at),
                        millis(now),
                        i64::from(!*counted)
                    ])?;
                    let detail = format!(
                        "not sent ({reason}); retry at {}",
                        humantime::format_rfc3339_seconds(*at)
                    );
                    event(tx, id, now, "queued", None, Some(&detail))?;
                }
                Outcome::Unconfirmed { reason, check_at } => {
                    tx.prepare_cached(
                        "UPDATE messages SET status = 'checking', send_at = ?2, updated_at = ?3
                         WHERE id = ?1",
                    )?
                    .execute(params![id, millis(*check_at), millis(now)])?;
                    let detail = format!(
                        "{reason}; asking whether it arrived at {}",
                        humantime::format_rfc3339_seconds(*check_at)
                    );
                    event(tx, id, now, "checking", None, Some(&detail))?;
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::{migrated, query_plan};

    #[test]
    fn the_outbox_finds_due_messages_through_its_index() {
        let conn = migrated();
        let plans = [
            query_plan(&conn, CLAIM_DUE, params![0, 10]),
            query_plan(&conn, NEXT_DUE, []),
        ];
        for plan in &plans {
            assert!(
                plan.iter().any(|p| p.contains("INDEX messages_due")),
                "{plan:?}"
            );
        }
        assert!(
            plans[1]
                .iter()
                .any(|p| p.contains("INDEX messages_checking")),
            "{:?}",
            plans[1]
        );
    }
}
