//! The audit trail on the shared store (each row names the instance that wrote it),
//! the counts the cost guard starts from, the `/status/` counts and the retention
//! purge, which skips rows another instance's purge holds.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::PgStore;
use crate::store::StoreError;
use crate::store::types::{AuditRow, Counts, Cutoffs, GuardEvent, Purged, from_millis, millis};
use crate::types::Caller;

/// Audits an event of code `otp_id`, copying the code's context so the trail reads on
/// its own after retention.
pub(super) async fn code_event(
    c: &impl GenericClient,
    instance: &str,
    at: SystemTime,
    otp_id: i64,
    event: &str,
    detail: Option<&str>,
    caller: Caller,
) -> Result<(), tokio_postgres::Error> {
    let statement = c
        .prepare_cached(
            "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                                peer_uid, peer_gid, peer_pid, instance)
             SELECT $1, id, $3, phone, purpose, user_id, $4, $5, $6, $7, $8
             FROM otps WHERE id = $2",
        )
        .await?;
    c.execute(
        &statement,
        &[
            &millis(at),
            &otp_id,
            &event,
            &detail,
            &i64::from(caller.uid),
            &i64::from(caller.gid),
            &caller.pid,
            &instance,
        ],
    )
    .await?;
    Ok(())
}

/// An audit row that belongs to no code: its context comes with it.
pub(super) struct Unlinked<'a> {
    pub event: &'a str,
    pub phone: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub detail: &'a str,
    pub caller: Option<Caller>,
}

pub(super) async fn unlinked(
    c: &impl GenericClient,
    instance: &str,
    at: SystemTime,
    row: Unlinked<'_>,
) -> Result<(), tokio_postgres::Error> {
    let statement = c
        .prepare_cached(
            "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                                peer_uid, peer_gid, peer_pid, instance)
             VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    c.execute(
        &statement,
        &[
            &millis(at),
            &row.event,
            &row.phone,
            &row.purpose,
            &row.user_id,
            &row.detail,
            &row.caller.map(|c| i64::from(c.uid)),
            &row.caller.map(|c| i64::from(c.gid)),
            &row.caller.and_then(|c| c.pid),
            &instance,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Audits a send the cost guard refused; it belongs to no code.
    pub async fn record_guard_event(&self, e: GuardEvent) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("record_guard_event", async move {
            let c = s.client().await?;
            let row = Unlinked {
                event: e.event,
                phone: Some(&e.phone),
                purpose: e.purpose.as_deref(),
                user_id: e.user_id.as_deref(),
                detail: e.detail,
                caller: e.caller,
            };
            unlinked(&c, &s.instance, e.at, row).await?;
            Ok(())
        })
        .await
    }

    /// A refused callback or other event that belongs to no code.
    pub async fn audit_other(
        &self,
        event: &'static str,
        detail: String,
        caller: Caller,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("audit_other", async move {
            let c = s.client().await?;
            let row = Unlinked {
                event,
                phone: None,
                purpose: None,
                user_id: None,
                detail: &detail,
                caller: Some(caller),
            };
            unlinked(&c, &s.instance, now, row).await?;
            Ok(())
        })
        .await
    }

    /// Audit events at or after `since`, optionally for one phone, newest first. Two
    /// statements, not `($2 IS NULL OR phone = $2)`: a generic plan for that cannot
    /// use the phone index.
    pub async fn audit_since(
        &self,
        since: SystemTime,
        phone: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        const COLUMNS: &str = "SELECT id, at, otp_id, event, phone, purpose, user_id, detail,
                                      peer_uid, peer_gid, peer_pid FROM audit";
        let s = self.clone();
        self.run("audit_since", async move {
            let c = s.client().await?;
            let limit = i64::from(limit);
            let rows = match &phone {
                Some(phone) => {
                    let sql = format!(
                        "{COLUMNS} WHERE at >= $1 AND phone = $2 ORDER BY at DESC, id DESC LIMIT $3"
                    );
                    c.query(
                        &c.prepare_cached(&sql).await?,
                        &[&millis(since), phone, &limit],
                    )
                    .await?
                }
                None => {
                    let sql =
                        format!("{COLUMNS} WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2");
                    c.query(&c.prepare_cached(&sql).await?, &[&millis(since), &limit])
                        .await?
                }
            };
            Ok(rows
                .iter()
                .map(|r| AuditRow {
                    id: r.get(0),
                    at: from_millis(r.get(1)),
                    otp_id: r.get(2),
                    event: r.get(3),
                    phone: r.get(4),
                    purpose: r.get(5),
                    user_id: r.get(6),
                    detail: r.get(7),
                    caller: match (r.get::<_, Option<i64>>(8), r.get::<_, Option<i64>>(9)) {
                        (Some(uid), Some(gid)) => Some(Caller {
                            uid: u32::try_from(uid).unwrap_or(u32::MAX),
                            gid: u32::try_from(gid).unwrap_or(u32::MAX),
                            pid: r.get(10),
                        }),
                        _ => None,
                    },
                })
                .collect())
        })
        .await
    }

    /// Messages created at or after `since`, every instance's.
    pub async fn count_messages_since(&self, since: SystemTime) -> Result<u64, StoreError> {
        let s = self.clone();
        self.run("count_messages_since", async move {
            let c = s.client().await?;
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM messages WHERE created_at >= $1",
                    &[&millis(since)],
                )
                .await?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// Codes to `country` since `since` that cost an SMS and were not verified, and
    /// when the oldest was created. Soft across hosts: two sends at once both count
    /// what was there before either.
    pub async fn count_unverified(
        &self,
        country: String,
        since: SystemTime,
    ) -> Result<(u64, Option<SystemTime>), StoreError> {
        let s = self.clone();
        self.run("count_unverified", async move {
            let c = s.client().await?;
            let row = c
                .query_one(
                    &c.prepare_cached(
                        "SELECT count(*), min(created_at) FROM otps
                         WHERE country = $1 AND created_at >= $2
                           AND state NOT IN ('verified', 'failed') AND NOT test_number",
                    )
                    .await?,
                    &[&country, &millis(since)],
                )
                .await?;
            let count = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            Ok((count, row.get::<_, Option<i64>>(1).map(from_millis)))
        })
        .await
    }

    /// Codes by state and messages by status, for `/status/`.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let s = self.clone();
        self.run("counts", async move {
            let c = s.client().await?;
            let group = |rows: Vec<tokio_postgres::Row>| {
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect()
            };
            Ok(Counts {
                codes: group(
                    c.query(
                        "SELECT state, count(*) FROM otps GROUP BY state ORDER BY state",
                        &[],
                    )
                    .await?,
                ),
                messages: group(
                    c.query(
                        "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status",
                        &[],
                    )
                    .await?,
                ),
            })
        })
        .await
    }

    /// Deletes old rows in batches, as SQLite's does; `SKIP LOCKED` lets two instances'
    /// purges run at once without waiting on each other.
    pub async fn purge(&self, cutoffs: Cutoffs) -> Result<Purged, StoreError> {
        const BATCH: i64 = 5000;
        let statements = [
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < $1
             AND status NOT IN ('queued', 'sending') LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2
             FOR UPDATE SKIP LOCKED)",
            "DELETE FROM otps WHERE id IN (SELECT id FROM otps WHERE expires_at < $1
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.otp_id = otps.id) LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        ];
        let before = [
            cutoffs.messages_before,
            cutoffs.audit_before,
            cutoffs.codes_before,
        ];
        let mut deleted = [0u64; 3];
        for ((sql, before), count) in statements.into_iter().zip(before).zip(&mut deleted) {
            let before = millis(before);
            loop {
                let s = self.clone();
                let n = self
                    .run("purge", async move {
                        let c = s.client().await?;
                        Ok(c.execute(sql, &[&before, &BATCH]).await?)
                    })
                    .await?;
                *count += n;
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        let [messages, audit, otps] = deleted;
        Ok(Purged {
            otps,
            messages,
            audit,
        })
    }
}
