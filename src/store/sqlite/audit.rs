//! The audit trail and the store's reports: audit rows (of codes, of the cost guard's
//! refusals, of events that belong to no code), the counts the cost guard starts from,
//! the `/status/` counts, and the retention purge. Events and details arrive as
//! strings: what a guard rule or a refusal means is its caller's business.

use std::time::SystemTime;

use rusqlite::params;

use super::{SqliteStore, StoreError, from_millis, millis};
use crate::store::types::{AuditRow, Counts, Cutoffs, GuardEvent, Purged};
use crate::types::Caller;

/// Audits an event of code `otp_id`, in the transaction that changed the code.
pub(super) fn code_event(
    tx: &rusqlite::Transaction<'_>,
    at: SystemTime,
    otp_id: i64,
    event: &str,
    detail: Option<&str>,
    caller: Caller,
) -> rusqlite::Result<()> {
    // Copies the code's context so the trail reads on its own after retention.
    tx.prepare_cached(
        "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                            peer_uid, peer_gid, peer_pid)
         SELECT ?1, id, ?3, phone, purpose, user_id, ?4, ?5, ?6, ?7 FROM otps WHERE id = ?2",
    )?
    .execute(params![
        millis(at),
        otp_id,
        event,
        detail,
        caller.uid,
        caller.gid,
        caller.pid
    ])?;
    Ok(())
}

impl SqliteStore {
    /// An audit row that belongs to no code: its context comes with it.
    pub(super) const INSERT_UNLINKED: &str =
        "INSERT INTO audit (at, otp_id, event, phone, purpose, user_id, detail,
                            peer_uid, peer_gid, peer_pid)
         VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

    /// Audits a send the cost guard refused; it belongs to no code.
    pub async fn record_guard_event(&self, e: GuardEvent) -> Result<(), StoreError> {
        self.write("record_guard_event", move |tx| {
            tx.prepare_cached(Self::INSERT_UNLINKED)?.execute(params![
                millis(e.at),
                e.event,
                e.phone,
                e.purpose,
                e.user_id,
                e.detail,
                e.caller.map(|c| c.uid),
                e.caller.map(|c| c.gid),
                e.caller.and_then(|c| c.pid),
            ])?;
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
        self.write("audit_other", move |tx| {
            tx.prepare_cached(Self::INSERT_UNLINKED)?.execute(params![
                millis(now),
                event,
                None::<&str>,
                None::<&str>,
                None::<&str>,
                detail,
                caller.uid,
                caller.gid,
                caller.pid
            ])?;
            Ok(())
        })
        .await
    }

    /// Walks `audit_by_time` newest first, so a read costs the `since` window.
    const AUDIT_SINCE: &str =
        "SELECT id, at, otp_id, event, phone, purpose, user_id, detail, peer_uid, peer_gid,
                peer_pid FROM audit
         WHERE at >= ?1 AND (?2 IS NULL OR phone = ?2)
         ORDER BY at DESC, id DESC LIMIT ?3";

    /// Audit events at or after `since`, optionally for one phone, newest first.
    pub async fn audit_since(
        &self,
        since: SystemTime,
        phone: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.read("audit_since", move |c| {
            c.prepare_cached(Self::AUDIT_SINCE)?
                .query_map(params![millis(since), phone, limit], |r| {
                    Ok(AuditRow {
                        id: r.get(0)?,
                        at: from_millis(r.get(1)?),
                        otp_id: r.get(2)?,
                        event: r.get(3)?,
                        phone: r.get(4)?,
                        purpose: r.get(5)?,
                        user_id: r.get(6)?,
                        detail: r.get(7)?,
                        caller: match (r.get(8)?, r.get(9)?) {
                            (Some(uid), Some(gid)) => Some(Caller {
                                uid,
                                gid,
                                pid: r.get(10)?,
                            }),
                            _ => None,
                        },
                    })
                })?
                .collect()
        })
        .await
    }

    /// Messages (sent or failed, any provider) created at or after `since`: what the
    /// cost guard's daily cap starts from after a restart.
    pub async fn count_messages_since(&self, since: SystemTime) -> Result<u64, StoreError> {
        self.read("count_messages_since", move |c| {
            c.prepare_cached("SELECT count(*) FROM messages WHERE created_at >= ?1")?
                .query_row([millis(since)], |r| {
                    Ok(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0))
                })
        })
        .await
    }

    /// The WHERE repeats the partial index's own terms so SQLite can use it.
    const COUNT_UNVERIFIED: &str = "SELECT count(*), min(created_at) FROM otps
         WHERE country = ?1 AND created_at >= ?2
           AND state NOT IN ('verified', 'failed') AND test_number = 0";

    /// Codes to `country` created at or after `since` that cost an SMS and were not
    /// verified (pending, sent, expired or superseded), and when the oldest was created.
    pub async fn count_unverified(
        &self,
        country: String,
        since: SystemTime,
    ) -> Result<(u64, Option<SystemTime>), StoreError> {
        self.read("count_unverified", move |c| {
            c.prepare_cached(Self::COUNT_UNVERIFIED)?.query_row(
                params![country, millis(since)],
                |r| {
                    let count = u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
                    Ok((count, r.get::<_, Option<i64>>(1)?.map(from_millis)))
                },
            )
        })
        .await
    }

    /// Codes by state and messages by status, for `/status/`.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.read("counts", |c| {
            let group = |sql: &str| -> rusqlite::Result<Vec<(String, i64)>> {
                c.prepare_cached(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            };
            Ok(Counts {
                codes: group("SELECT state, count(*) FROM otps GROUP BY state ORDER BY state")?,
                messages: group(
                    "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status",
                )?,
            })
        })
        .await
    }

    /// Deletes, in batches so verifies never wait long behind it: messages and audit
    /// rows older than their cutoffs, then codes that expired before `codes_before`
    /// and that no remaining message refers to.
    pub async fn purge(&self, cutoffs: Cutoffs) -> Result<Purged, StoreError> {
        const BATCH: i64 = 5000;
        let statements = [
            // Never a message still waiting to be sent, however old.
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ?1
             AND status NOT IN ('queued', 'sending') LIMIT ?2)",
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 LIMIT ?2)",
            "DELETE FROM otps WHERE id IN (SELECT id FROM otps WHERE expires_at < ?1
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.otp_id = otps.id) LIMIT ?2)",
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
                let n = self
                    .write("purge", move |tx| {
                        tx.prepare_cached(sql)?.execute(params![before, BATCH])
                    })
                    .await?;
                *count += n as u64;
                if (n as i64) < BATCH {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::{migrated, query_plan};

    #[test]
    fn reading_the_audit_since_a_time_uses_its_time_index() {
        let conn = migrated();
        let plan = query_plan(
            &conn,
            SqliteStore::AUDIT_SINCE,
            params![0, "+34600000001", 10],
        );
        assert!(
            plan.iter()
                .any(|p| p.contains("INDEX audit_by_time (at>?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[test]
    fn counting_unverified_codes_uses_the_partial_index() {
        let conn = migrated();
        let plan = query_plan(&conn, SqliteStore::COUNT_UNVERIFIED, params!["ES", 0]);
        assert!(
            plan.iter().any(
                |p| p.contains("INDEX otps_unverified_by_country (country=? AND created_at>?)")
            ),
            "{plan:?}"
        );
    }
}
