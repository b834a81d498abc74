//! The report's reads: codes by destination prefix, purpose, channel and provider with
//! how many verified, the median time to verify, failed messages by provider error,
//! the guard's blocks by rule, and what was billed by destination prefix. Plain counts
//! in SQL; what a prefix's country is and what a segment costs is `reports/`'s.
//!
//! `otps` has no index on `created_at` (every send would pay for one): its ids grow
//! with time, so the window's first id is found by a binary search of point lookups and
//! the window is a range of the primary key.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, StoreError, millis};
use crate::store::types::{Billed, CodeGroup, ReportRows};

impl SqliteStore {
    /// Everything the report counts, from `since` on. Test numbers are left out: they
    /// are sent nothing.
    pub async fn report_rows(&self, since: SystemTime) -> Result<ReportRows, StoreError> {
        let since = millis(since);
        self.read("report", move |c| {
            let first = first_code_since(c, since)?;
            let codes: Vec<CodeGroup> = c
                .prepare(
                    "SELECT substr(o.phone, 2, 3), o.purpose, coalesce(m.channel, 'sms'),
                            coalesce(m.provider, ''), count(*), sum(o.state = 'verified')
                     FROM otps o LEFT JOIN messages m ON m.id =
                         (SELECT max(id) FROM messages WHERE otp_id = o.id AND sid IS NOT NULL)
                     WHERE o.id >= ?1 AND o.created_at >= ?2 AND o.test_number = 0
                       AND o.state NOT IN ('pending', 'failed')
                     GROUP BY 1, 2, 3, 4",
                )?
                .query_map(params![first, since], |r| {
                    Ok(CodeGroup {
                        prefix: r.get(0)?,
                        purpose: r.get(1)?,
                        channel: r.get(2)?,
                        provider: r.get(3)?,
                        sent: r.get(4)?,
                        verified: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let verified: i64 = codes.iter().map(|g| g.verified).sum();
            let median = match verified {
                0 => None,
                n => c
                    .prepare(
                        "SELECT verified_at - created_at FROM otps
                         WHERE id >= ?1 AND created_at >= ?2 AND state = 'verified'
                           AND test_number = 0
                         ORDER BY 1 LIMIT 1 OFFSET ?3",
                    )?
                    .query_row(params![first, since, (n - 1) / 2], |r| r.get::<_, i64>(0))
                    .optional()?
                    .map(|ms| ms as f64 / 1000.0),
            };
            let failures = c
                .prepare(
                    "SELECT coalesce(provider, ''), error_code, count(*) FROM messages
                     WHERE created_at >= ?1 AND status IN ('failed', 'undelivered')
                     GROUP BY 1, 2 ORDER BY 3 DESC",
                )?
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let guard_blocks = c
                .prepare(
                    "SELECT coalesce(detail, ''), count(*) FROM audit
                     WHERE at >= ?1 AND event = 'guard_blocked' GROUP BY 1 ORDER BY 2 DESC",
                )?
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let billed = c
                .prepare(
                    "SELECT substr(to_number, 1, 6), channel, count(*), sum(coalesce(segments, 1))
                     FROM messages
                     WHERE created_at >= ?1 AND sid IS NOT NULL AND provider != 'dev_outbox'
                     GROUP BY 1, 2",
                )?
                .query_map([since], |r| {
                    Ok(Billed {
                        prefix: r.get(0)?,
                        channel: r.get(1)?,
                        messages: r.get(2)?,
                        segments: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(ReportRows {
                codes,
                median_seconds_to_verify: median,
                failures,
                guard_blocks,
                billed,
            })
        })
        .await
    }
}

/// An id below which every code was created before `since`, and from which on every
/// code was created at or after it: ids grow with time, so a binary search, each probe
/// a primary-key lookup of the next live row.
fn first_code_since(c: &Connection, since: i64) -> rusqlite::Result<i64> {
    let (mut low, mut high): (i64, i64) = c.query_row(
        "SELECT coalesce(min(id), 1), coalesce(max(id), 0) + 1 FROM otps",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut at =
        c.prepare_cached("SELECT id, created_at FROM otps WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    while low < high {
        let mid = low + (high - low) / 2;
        match at
            .query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .optional()?
        {
            Some((id, created)) if created < since => low = id + 1,
            // No row lives in [mid, id): the first one in the window is below mid, or
            // is id, and `id >= mid` reaches it either way.
            _ => high = mid,
        }
    }
    Ok(low)
}
