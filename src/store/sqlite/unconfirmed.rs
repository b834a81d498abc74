//! Sends that may or may not have reached the provider. Outbox messages: what a crash
//! left `sending` becomes `checking` at start, the workers claim the checks that are
//! due, and each check ends found (sent, with the provider's SID), not there (queued
//! again), later (still checking) or unknown (given up, in the history and the audit
//! trail). Codes: the pending ones an earlier run left behind, read once at start, and
//! which SIDs otpd already holds. It must not know how the provider is asked or how a
//! listed message is recognised; outcomes arrive decided.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};

use super::messages::event;
use super::{SqliteStore, StoreError, from_millis, millis};
use crate::store::shared::{KEEP_BODY_FOR_FALLBACK, rank};
use crate::store::types::{Checked, PendingCode, Unconfirmed};

/// Which attempt a row's check reads from: rows from before migration 10 have no
/// `attempted_at`; their claim set `updated_at`.
const ATTEMPTED_AT: &str = "coalesce(attempted_at, updated_at, created_at)";

impl SqliteStore {
    /// At start-up: messages left `sending` by a crash may or may not have reached the
    /// provider. They become `checking`, asked about no sooner than `settle` after their
    /// attempt began; the interrupted attempt is given back (the crash was otpd's).
    pub async fn recover_interrupted(
        &self,
        now: SystemTime,
        settle: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let settle = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
        self.write("recover_interrupted", move |tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(&format!(
                    "UPDATE messages SET status = 'checking', updated_at = ?1,
                            attempted_at = {ATTEMPTED_AT},
                            send_at = max(?1, {ATTEMPTED_AT} + ?2),
                            send_attempts = max(send_attempts - 1, 0)
                     WHERE status = 'sending' AND kind = 'sms' RETURNING id"
                ))?
                .query_map(params![millis(now), settle], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                let detail = "otpd stopped while sending; asking whether it arrived";
                event(tx, *id, now, "checking", None, Some(detail))?;
            }
            Ok(ids)
        })
        .await
    }

    /// Claims up to `limit` checks that are due, pushing each one `lease` ahead so the
    /// next round does not claim it again while it runs (a crash just delays it).
    pub async fn claim_checks(
        &self,
        now: SystemTime,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Unconfirmed>, StoreError> {
        let until = now + lease;
        self.write("claim_checks", move |tx| {
            tx.prepare_cached(&format!(
                "UPDATE messages SET send_at = ?2
                 WHERE id IN (SELECT id FROM messages
                              WHERE status = 'checking' AND kind = 'sms' AND send_at <= ?1
                              ORDER BY send_at, id LIMIT ?3)
                 RETURNING id, to_number, channel, body, {ATTEMPTED_AT}"
            ))?
            .query_map(params![millis(now), millis(until), limit], |r| {
                Ok(Unconfirmed {
                    id: r.get(0)?,
                    to: r.get(1)?,
                    channel: r.get(2)?,
                    body: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    attempted_at: from_millis(r.get(4)?),
                })
            })?
            .collect()
        })
        .await
    }

    /// Records how a check ended, if the message is still `checking`. Returns false
    /// when nothing changed: it no longer is, or (found) another message already holds
    /// that SID, so this listed message is not this one's.
    pub async fn resolve_check(
        &self,
        id: i64,
        checked: Checked,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.write("resolve_check", move |tx| {
            let at = millis(now);
            match &checked {
                Checked::Found {
                    provider,
                    sid,
                    status,
                } => {
                    let changed = tx
                        .prepare_cached(&format!(
                            "UPDATE messages SET status = 'sent', provider = ?2, sid = ?3,
                                    body = {KEEP_BODY_FOR_FALLBACK}, updated_at = ?4
                             WHERE id = ?1 AND status = 'checking'
                               AND NOT EXISTS (SELECT 1 FROM messages WHERE sid = ?3)"
                        ))?
                        .execute(params![id, provider, sid, at])?;
                    if changed == 0 {
                        return Ok(false);
                    }
                    let detail = format!("{sid}: found at {provider}, which took it");
                    event(tx, id, now, "sent", None, Some(&detail))?;
                    // Listed as delivered (or failed) already: the furthest status wins.
                    if rank(status) > rank("sent") {
                        event(tx, id, now, status, None, Some("as listed by the provider"))?;
                        tx.prepare_cached("UPDATE messages SET status = ?2 WHERE id = ?1")?
                            .execute(params![id, status])?;
                    }
                }
                Checked::NotThere { detail } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE messages SET status = 'queued', send_at = ?2, updated_at = ?2
                             WHERE id = ?1 AND status = 'checking'",
                        )?
                        .execute(params![id, at])?;
                    if changed == 0 {
                        return Ok(false);
                    }
                    event(tx, id, now, "queued", None, Some(detail))?;
                }
                Checked::Later { detail, at: next } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE messages SET send_at = ?2, updated_at = ?3
                             WHERE id = ?1 AND status = 'checking'",
                        )?
                        .execute(params![id, millis(*next), at])?;
                    if changed == 0 {
                        return Ok(false);
                    }
                    event(tx, id, now, "checking", None, Some(detail))?;
                }
                Checked::Unknown { detail } => {
                    let to: Option<String> = tx
                        .prepare_cached(
                            "UPDATE messages SET status = 'unknown', body = NULL, updated_at = ?2
                             WHERE id = ?1 AND status = 'checking' RETURNING to_number",
                        )?
                        .query_row(params![id, at], |r| r.get(0))
                        .optional()?;
                    let Some(to) = to else {
                        return Ok(false);
                    };
                    event(tx, id, now, "unknown", None, Some(detail))?;
                    tx.prepare_cached(SqliteStore::INSERT_UNLINKED)?
                        .execute(params![
                            at,
                            "message_unknown",
                            to,
                            None::<&str>,
                            None::<&str>,
                            format!("message {id}: {detail}"),
                            None::<u32>,
                            None::<u32>,
                            None::<i32>,
                        ])?;
                }
            }
            Ok(true)
        })
        .await
    }

    /// The codes still `pending` that were created before `before` (an earlier run's)
    /// and have not expired by `now`; test numbers are never sent, so never in doubt.
    pub async fn pending_codes(
        &self,
        before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<PendingCode>, StoreError> {
        self.read("pending_codes", move |c| {
            c.prepare_cached(
                "SELECT id, phone, purpose, code_hash, created_at, expires_at FROM otps
                 WHERE state = 'pending' AND test_number = 0 AND created_at < ?1
                   AND expires_at > ?2",
            )?
            .query_map(params![millis(before), millis(now)], |r| {
                Ok(PendingCode {
                    id: r.get(0)?,
                    phone: r.get(1)?,
                    purpose: r.get(2)?,
                    code_hash: r.get(3)?,
                    created_at: from_millis(r.get(4)?),
                    expires_at: from_millis(r.get(5)?),
                })
            })?
            .collect()
        })
        .await
    }

    /// Those of `sids` that a message here already holds.
    pub async fn known_sids(&self, sids: Vec<String>) -> Result<Vec<String>, StoreError> {
        self.read("known_sids", move |c| {
            let mut known = Vec::new();
            let mut held = c.prepare_cached("SELECT 1 FROM messages WHERE sid = ?1")?;
            for sid in sids {
                if held.exists(params![sid])? {
                    known.push(sid);
                }
            }
            Ok(known)
        })
        .await
    }
}
