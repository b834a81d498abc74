//! Sends that may or may not have reached the provider, on the shared store. A restart
//! turns only its own instance's interrupted sends into checks; a host that died with
//! claims leaves them `sending`, and any instance's next round of checks takes those
//! whose claim is older than the lease (checked, never simply sent again). Codes: only
//! the pending ones this instance created, since another host may be sending its own.

use std::time::{Duration, SystemTime};

use super::audit::unlinked;
use super::messages::event;
use super::{PgStore, ms};
use crate::store::StoreError;
use crate::store::shared::{KEEP_BODY_FOR_FALLBACK, rank};
use crate::store::types::{Checked, PendingCode, Unconfirmed, from_millis, millis};

/// Which attempt a row's check reads from.
const ATTEMPTED_AT: &str = "coalesce(attempted_at, updated_at, created_at)";

/// How long a claim holds before another instance may take it over as a check: far
/// longer than one send's deadline, so a live host's send is never taken from it.
pub(super) const CLAIM_LEASE: Duration = Duration::from_secs(120);

impl PgStore {
    /// At start-up: this instance's messages left `sending` become `checking`.
    pub async fn recover_interrupted(
        &self,
        now: SystemTime,
        settle: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let s = self.clone();
        self.run("recover_interrupted", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let ids = to_checks(&tx, "claimed_by = $3", now, settle, &&*s.instance).await?;
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    /// Claims up to `limit` checks that are due, pushing each one `lease` ahead; first
    /// takes over the sends of instances whose claims outlived [`CLAIM_LEASE`].
    pub async fn claim_checks(
        &self,
        now: SystemTime,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Unconfirmed>, StoreError> {
        let s = self.clone();
        self.run("claim_checks", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let stale = millis(now) - ms(CLAIM_LEASE);
            let taken =
                to_checks(&tx, "claimed_at < $3::bigint", now, Duration::ZERO, &stale).await?;
            if !taken.is_empty() {
                log::warn!(
                    "{} outbox messages claimed by an instance that stopped are checked before \
                     anything is sent again",
                    taken.len()
                );
            }
            let rows = tx
                .query(
                    &format!(
                        "UPDATE messages SET send_at = $2
                         WHERE id IN (SELECT id FROM messages
                                      WHERE status = 'checking' AND kind = 'sms' AND send_at <= $1
                                      ORDER BY send_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                         RETURNING id, to_number, channel, body, {ATTEMPTED_AT}"
                    ),
                    &[&millis(now), &millis(now + lease), &i64::from(limit)],
                )
                .await?;
            tx.commit().await?;
            Ok(rows
                .iter()
                .map(|r| Unconfirmed {
                    id: r.get(0),
                    to: r.get(1),
                    channel: r.get(2),
                    body: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    attempted_at: from_millis(r.get(4)),
                })
                .collect())
        })
        .await
    }

    /// Records how a check ended, if the message is still `checking`.
    pub async fn resolve_check(
        &self,
        id: i64,
        checked: Checked,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let s = self.clone();
        self.run("resolve_check", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let at = millis(now);
            match &checked {
                Checked::Found {
                    provider,
                    sid,
                    status,
                } => {
                    let sql = format!(
                        "UPDATE messages SET status = 'sent', provider = $2, sid = $3,
                                body = {KEEP_BODY_FOR_FALLBACK}, updated_at = $4
                         WHERE id = $1 AND status = 'checking'
                           AND NOT EXISTS (SELECT 1 FROM messages WHERE sid = $3)"
                    );
                    if tx.execute(&sql, &[&id, provider, sid, &at]).await? == 0 {
                        return Ok(false);
                    }
                    let detail = format!("{sid}: found at {provider}, which took it");
                    event(&tx, id, now, "sent", None, Some(&detail)).await?;
                    if rank(status) > rank("sent") {
                        event(
                            &tx,
                            id,
                            now,
                            status,
                            None,
                            Some("as listed by the provider"),
                        )
                        .await?;
                        tx.execute(
                            "UPDATE messages SET status = $2 WHERE id = $1",
                            &[&id, status],
                        )
                        .await?;
                    }
                }
                Checked::NotThere { detail } => {
                    let sql = "UPDATE messages SET status = 'queued', send_at = $2, updated_at = $2
                               WHERE id = $1 AND status = 'checking'";
                    if tx.execute(sql, &[&id, &at]).await? == 0 {
                        return Ok(false);
                    }
                    event(&tx, id, now, "queued", None, Some(detail)).await?;
                }
                Checked::Later { detail, at: next } => {
                    let sql = "UPDATE messages SET send_at = $2, updated_at = $3
                               WHERE id = $1 AND status = 'checking'";
                    if tx.execute(sql, &[&id, &millis(*next), &at]).await? == 0 {
                        return Ok(false);
                    }
                    event(&tx, id, now, "checking", None, Some(detail)).await?;
                }
                Checked::Unknown { detail } => {
                    let row = tx
                        .query_opt(
                            "UPDATE messages SET status = 'unknown', body = NULL, updated_at = $2
                             WHERE id = $1 AND status = 'checking' RETURNING to_number",
                            &[&id, &at],
                        )
                        .await?;
                    let Some(row) = row else {
                        return Ok(false);
                    };
                    let to: String = row.get(0);
                    event(&tx, id, now, "unknown", None, Some(detail)).await?;
                    let detail = format!("message {id}: {detail}");
                    let audit = super::audit::Unlinked {
                        event: "message_unknown",
                        phone: Some(&to),
                        purpose: None,
                        user_id: None,
                        detail: &detail,
                        caller: None,
                    };
                    unlinked(&tx, &s.instance, now, audit).await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// This instance's codes still `pending` from before `before`, not expired by `now`.
    pub async fn pending_codes(
        &self,
        before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<PendingCode>, StoreError> {
        let s = self.clone();
        self.run("pending_codes", async move {
            let c = s.client().await?;
            let rows = c
                .query(
                    "SELECT id, phone, purpose, code_hash, created_at, expires_at FROM otps
                     WHERE state = 'pending' AND NOT test_number AND created_at < $1
                       AND expires_at > $2 AND created_by = $3",
                    &[&millis(before), &millis(now), &&*s.instance],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| PendingCode {
                    id: r.get(0),
                    phone: r.get(1),
                    purpose: r.get(2),
                    code_hash: r.get(3),
                    created_at: from_millis(r.get(4)),
                    expires_at: from_millis(r.get(5)),
                })
                .collect())
        })
        .await
    }

    /// Those of `sids` that a message here already holds.
    pub async fn known_sids(&self, sids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let s = self.clone();
        self.run("known_sids", async move {
            let c = s.client().await?;
            let rows = c
                .query(
                    "SELECT DISTINCT sid FROM messages WHERE sid = ANY($1)",
                    &[&sids],
                )
                .await?;
            let held: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            Ok(sids.into_iter().filter(|s| held.contains(s)).collect())
        })
        .await
    }
}

/// Turns `sending` messages matching `which` (its `$3` is `arg`) into checks, asked
/// about no sooner than `settle` after their attempt began; the attempt is given back.
async fn to_checks(
    tx: &deadpool_postgres::Transaction<'_>,
    which: &str,
    now: SystemTime,
    settle: Duration,
    arg: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = tx
        .query(
            &format!(
                "UPDATE messages SET status = 'checking', updated_at = $1,
                        attempted_at = {ATTEMPTED_AT},
                        send_at = greatest($1, {ATTEMPTED_AT} + $2),
                        send_attempts = greatest(send_attempts - 1, 0)
                 WHERE status = 'sending' AND kind = 'sms' AND {which} RETURNING id"
            ),
            &[&millis(now), &ms(settle), arg],
        )
        .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    for id in &ids {
        let detail = "otpd stopped while sending; asking whether it arrived";
        event(tx, *id, now, "checking", None, Some(detail)).await?;
    }
    Ok(ids)
}
