//! Status callbacks: the provider's later report on a message it took, appended to the
//! message's history, and what it sets in motion. A WhatsApp message reported
//! `undelivered`/`failed` with channels left goes to the next one, once: an outbox
//! message back to the queue (its old SID kept so late reports still find it), a code
//! handed back to the service to re-issue, since the store holds no code to re-send.
//! It must not know how a report is signed, or what a code's text is.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::messages::event;
use super::{SqliteStore, StoreError, audit, millis};
use crate::store::shared::{rank, will_not_arrive};
use crate::store::types::{AfterReport, CodeResend};
use crate::types::Caller;

/// The message a report names, as the decision needs it.
struct Reportee {
    id: i64,
    status: String,
    kind: String,
    channel: String,
    fallback: Option<String>,
    otp_id: Option<i64>,
}

impl SqliteStore {
    /// Applies a (validated) status callback. Returns the message id and what follows,
    /// or `None` when no message has (or had) that SID.
    pub async fn apply_status(
        &self,
        sid: String,
        status: String,
        error_code: Option<i64>,
        now: SystemTime,
    ) -> Result<Option<(i64, AfterReport)>, StoreError> {
        self.write("apply_status", move |tx| {
            let found = tx
                .prepare_cached(
                    "SELECT id, status, kind, channel, fallback, otp_id
                     FROM messages WHERE sid = ?1",
                )?
                .query_row(params![sid], |r| {
                    Ok(Reportee {
                        id: r.get(0)?,
                        status: r.get(1)?,
                        kind: r.get(2)?,
                        channel: r.get(3)?,
                        fallback: r.get(4)?,
                        otp_id: r.get(5)?,
                    })
                })
                .optional()?;
            let Some(Reportee {
                id,
                status: current,
                kind,
                channel,
                fallback,
                otp_id,
            }) = found
            else {
                // A late report on the SID a message had before it was re-sent: history only.
                let earlier: Option<i64> = tx
                    .prepare_cached("SELECT id FROM messages WHERE previous_sid = ?1")?
                    .query_row(params![sid], |r| r.get(0))
                    .optional()?;
                if let Some(id) = earlier {
                    let detail = format!("status callback for its earlier message {sid}");
                    event(tx, id, now, &status, error_code, Some(&detail))?;
                    return Ok(Some((id, AfterReport::Nothing)));
                }
                return Ok(None);
            };
            event(tx, id, now, &status, error_code, Some("status callback"))?;
            if rank(&status) >= rank(&current) {
                tx.prepare_cached(
                    "UPDATE messages SET status = ?2, error_code = coalesce(?3, error_code),
                            updated_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![id, status, error_code, millis(now)])?;
            }
            let channels = fallback.filter(|f| !f.is_empty());
            let (true, Some(channels)) =
                (channel == "whatsapp" && will_not_arrive(&status), channels)
            else {
                return Ok(Some((id, AfterReport::Nothing)));
            };
            let reason = match error_code {
                Some(code) => format!("whatsapp reported {status} ({code})"),
                None => format!("whatsapp reported {status}"),
            };
            let after = match (kind.as_str(), otp_id) {
                ("sms", _) => requeue(tx, id, &sid, &channels, &reason, now)?,
                (_, Some(otp_id)) => {
                    // Spent whatever follows: a code's message moves on once.
                    tx.prepare_cached("UPDATE messages SET fallback = NULL WHERE id = ?1")?
                        .execute([id])?;
                    code_to_resend(tx, otp_id, channels, reason, now)?
                }
                _ => AfterReport::Nothing,
            };
            Ok(Some((id, after)))
        })
        .await
    }

    /// Gives a code whose message never arrived a new MAC (its attempts and expiry
    /// stay), pending until the next channel's send is recorded. False when it was
    /// verified, superseded or expired meanwhile: then nothing is sent.
    pub async fn replace_code(
        &self,
        otp_id: i64,
        code_hash: Vec<u8>,
        reason: String,
        now: SystemTime,
        caller: Caller,
    ) -> Result<bool, StoreError> {
        self.write("replace_code", move |tx| {
            let replaced = tx
                .prepare_cached(
                    "UPDATE otps SET code_hash = ?2, state = 'pending'
                     WHERE id = ?1 AND state = 'sent' AND expires_at > ?3",
                )?
                .execute(params![otp_id, code_hash, millis(now)])?;
            if replaced == 1 {
                let detail = format!("{reason}; a new code goes by the next channel");
                audit::code_event(tx, now, otp_id, "channel_fallback", Some(&detail), caller)?;
            }
            Ok(replaced == 1)
        })
        .await
    }
}

/// The outbox message goes back to the queue on the next channel, now; its body was
/// kept for this (`KEEP_BODY_FOR_FALLBACK`), and leaving WhatsApp ends any later move.
fn requeue(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    sid: &str,
    channels: &str,
    reason: &str,
    now: SystemTime,
) -> rusqlite::Result<AfterReport> {
    let (next, rest) = channels.split_once(',').unwrap_or((channels, ""));
    tx.prepare_cached(
        "UPDATE messages SET status = 'queued', channel = ?2, fallback = ?3, previous_sid = ?4,
                sid = NULL, send_at = ?5, updated_at = ?5, send_attempts = 0
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        next,
        Some(rest).filter(|r| !r.is_empty()),
        sid,
        millis(now)
    ])?;
    event(
        tx,
        id,
        now,
        "queued",
        None,
        Some(&format!("{reason}; trying {next}")),
    )?;
    Ok(AfterReport::Requeued {
        channel: next.to_owned(),
    })
}

/// A code still waiting to be verified is re-issued; any other is left alone.
fn code_to_resend(
    tx: &rusqlite::Transaction<'_>,
    otp_id: i64,
    channels: String,
    reason: String,
    now: SystemTime,
) -> rusqlite::Result<AfterReport> {
    let live = tx
        .prepare_cached(
            "SELECT phone, purpose, user_id, locale FROM otps
             WHERE id = ?1 AND state = 'sent' AND expires_at > ?2",
        )?
        .query_row(params![otp_id, millis(now)], |r| {
            Ok(CodeResend {
                otp_id,
                phone: r.get(0)?,
                purpose: r.get(1)?,
                user_id: r.get(2)?,
                locale: r.get(3)?,
                channels,
                reason,
            })
        })
        .optional()?;
    Ok(live.map_or(AfterReport::Nothing, AfterReport::ResendCode))
}
