//! Status callbacks on the shared store: a report (posted to any host) joins the
//! message's history under a row lock, so two reports for one SID on two hosts never
//! lose the higher rank; a WhatsApp message reported lost moves to the next channel
//! once, as on SQLite (`store/sqlite/callbacks.rs` says why).

use std::time::SystemTime;

use deadpool_postgres::Transaction;

use super::PgStore;
use super::messages::event;
use crate::store::StoreError;
use crate::store::shared::{rank, will_not_arrive};
use crate::store::types::{AfterReport, CodeResend, millis};

impl PgStore {
    /// Applies a (validated) status callback. Returns the message id and what follows,
    /// or `None` when no message has (or had) that SID.
    pub async fn apply_status(
        &self,
        sid: String,
        status: String,
        error_code: Option<i64>,
        now: SystemTime,
    ) -> Result<Option<(i64, AfterReport)>, StoreError> {
        let s = self.clone();
        self.run("apply_status", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let found = tx
                .query_opt(
                    "SELECT id, status, kind, channel, fallback, otp_id
                     FROM messages WHERE sid = $1 FOR UPDATE",
                    &[&sid],
                )
                .await?;
            let Some(row) = found else {
                // A late report on the SID a message had before it was re-sent.
                let earlier = tx
                    .query_opt("SELECT id FROM messages WHERE previous_sid = $1", &[&sid])
                    .await?;
                let Some(earlier) = earlier else {
                    return Ok(None);
                };
                let id: i64 = earlier.get(0);
                let detail = format!("status callback for its earlier message {sid}");
                event(&tx, id, now, &status, error_code, Some(&detail)).await?;
                tx.commit().await?;
                return Ok(Some((id, AfterReport::Nothing)));
            };
            let id: i64 = row.get(0);
            let current: String = row.get(1);
            let kind: String = row.get(2);
            let channel: String = row.get(3);
            let fallback: Option<String> = row.get(4);
            let otp_id: Option<i64> = row.get(5);
            event(&tx, id, now, &status, error_code, Some("status callback")).await?;
            if rank(&status) >= rank(&current) {
                tx.execute(
                    "UPDATE messages SET status = $2, error_code = coalesce($3, error_code),
                            updated_at = $4
                     WHERE id = $1",
                    &[&id, &status, &error_code, &millis(now)],
                )
                .await?;
            }
            let channels = fallback.filter(|f| !f.is_empty());
            let after = match (channel == "whatsapp" && will_not_arrive(&status), channels) {
                (true, Some(channels)) => {
                    let reason = match error_code {
                        Some(code) => format!("whatsapp reported {status} ({code})"),
                        None => format!("whatsapp reported {status}"),
                    };
                    match (kind.as_str(), otp_id) {
                        ("sms", _) => requeue(&tx, id, &sid, &channels, &reason, now).await?,
                        (_, Some(otp_id)) => {
                            tx.execute("UPDATE messages SET fallback = NULL WHERE id = $1", &[&id])
                                .await?;
                            code_to_resend(&tx, otp_id, channels, reason, now).await?
                        }
                        _ => AfterReport::Nothing,
                    }
                }
                _ => AfterReport::Nothing,
            };
            tx.commit().await?;
            Ok(Some((id, after)))
        })
        .await
    }
}

/// The outbox message goes back to the queue on the next channel, now.
async fn requeue(
    tx: &Transaction<'_>,
    id: i64,
    sid: &str,
    channels: &str,
    reason: &str,
    now: SystemTime,
) -> Result<AfterReport, tokio_postgres::Error> {
    let (next, rest) = channels.split_once(',').unwrap_or((channels, ""));
    tx.execute(
        "UPDATE messages SET status = 'queued', channel = $2, fallback = $3, previous_sid = $4,
                sid = NULL, send_at = $5, updated_at = $5, send_attempts = 0,
                claimed_by = NULL, claimed_at = NULL
         WHERE id = $1",
        &[
            &id,
            &next,
            &Some(rest).filter(|r| !r.is_empty()),
            &sid,
            &millis(now),
        ],
    )
    .await?;
    let detail = format!("{reason}; trying {next}");
    event(tx, id, now, "queued", None, Some(&detail)).await?;
    Ok(AfterReport::Requeued {
        channel: next.to_owned(),
    })
}

/// A code still waiting to be verified is re-issued; any other is left alone.
async fn code_to_resend(
    tx: &Transaction<'_>,
    otp_id: i64,
    channels: String,
    reason: String,
    now: SystemTime,
) -> Result<AfterReport, tokio_postgres::Error> {
    let live = tx
        .query_opt(
            "SELECT phone, purpose, user_id, locale FROM otps
             WHERE id = $1 AND state = 'sent' AND expires_at > $2",
            &[&otp_id, &millis(now)],
        )
        .await?;
    Ok(match live {
        Some(r) => AfterReport::ResendCode(CodeResend {
            otp_id,
            phone: r.get(0),
            purpose: r.get(1),
            user_id: r.get(2),
            locale: r.get(3),
            channels,
            reason,
        }),
        None => AfterReport::Nothing,
    })
}
