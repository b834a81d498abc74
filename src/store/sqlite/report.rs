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
            let codes = code_groups(c, first, since)?;
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

/// Sent codes in the window by (prefix, purpose, channel, provider). Grouped here, not
/// by SQL's GROUP BY, which sorts every row through a temporary b-tree: the groups are
/// few, the rows many, and a lookup by a reused key buffer allocates nothing per row.
fn code_groups(c: &Connection, first: i64, since: i64) -> rusqlite::Result<Vec<CodeGroup>> {
    let mut statement = c.prepare(
        "SELECT substr(o.phone, 2, 3), o.purpose, coalesce(m.channel, 'sms'),
                coalesce(m.provider, ''), o.state = 'verified'
         FROM otps o LEFT JOIN messages m ON m.id =
             (SELECT max(id) FROM messages WHERE otp_id = o.id AND sid IS NOT NULL)
         WHERE o.id >= ?1 AND o.created_at >= ?2 AND o.test_number = 0
           AND o.state NOT IN ('pending', 'failed')",
    )?;
    let mut rows = statement.query(params![first, since])?;
    let mut groups: std::collections::HashMap<String, CodeGroup> = Default::default();
    let mut key = String::new();
    while let Some(row) = rows.next()? {
        let text = |i| row.get_ref(i).map(|v| v.as_str().unwrap_or_default());
        let (prefix, purpose, channel, provider) = (text(0)?, text(1)?, text(2)?, text(3)?);
        key.clear();
        for part in [prefix, purpose, channel, provider] {
            key.push_str(part);
            key.push('\0');
        }
        let verified = i64::from(row.get::<_, bool>(4)?);
        match groups.get_mut(key.as_str()) {
            Some(group) => {
                group.sent += 1;
                group.verified += verified;
            }
            None => {
                groups.insert(
                    key.clone(),
                    CodeGroup {
                        prefix: prefix.to_owned(),
                        purpose: purpose.to_owned(),
                        channel: channel.to_owned(),
                        provider: provider.to_owned(),
                        sent: 1,
                        verified,
                    },
                );
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// An id below which every code was created before `since`, and from which on every
/// code was created at or after it: ids grow with time, so a binary search, each probe
/// a primary-key lookup of the next live row.
fn first_code_since(c: &Connection, since: i64) -> rusqlite::Result<i64> {
    // Two statements: SQLite answers a lone min() or max() from the b-tree's edge, but
    // scans the whole table for both in one.
    let mut low: i64 = c.query_row("SELECT coalesce(min(id), 1) FROM otps", [], |r| r.get(0))?;
    let mut high: i64 = c.query_row("SELECT coalesce(max(id), 0) + 1 FROM otps", [], |r| {
        r.get(0)
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::migrated;

    #[test]
    fn the_window_starts_at_the_first_code_created_in_it() {
        let conn = migrated();
        // Codes 1..=1000 created at 10 ms apart, with gaps where the retention job ran.
        for id in (1..=1000i64).filter(|id| id % 7 != 0) {
            conn.execute(
                "INSERT INTO otps (id, phone, purpose, code_hash, state, max_attempts,
                                   created_at, expires_at)
                 VALUES (?1, '+34600000000', 'login', x'00', 'sent', 5, ?2, ?2)",
                params![id, id * 10],
            )
            .unwrap();
        }
        for (since, first) in [(0, 1), (10, 1), (11, 2), (500, 50), (505, 51), (700, 70)] {
            let found = first_code_since(&conn, since).unwrap();
            assert!(found <= first, "since {since}: {found} > {first}");
            let skipped: i64 = conn
                .query_row(
                    "SELECT count(*) FROM otps WHERE id < ?1 AND created_at >= ?2",
                    params![found, since],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                skipped, 0,
                "since {since}: codes before {found} are in the window"
            );
            let scanned: i64 = conn
                .query_row(
                    "SELECT count(*) FROM otps WHERE id >= ?1 AND created_at < ?2",
                    params![found, since],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                scanned, 0,
                "since {since}: the range from {found} holds older codes"
            );
        }
        assert_eq!(first_code_since(&conn, 1_000_000).unwrap(), 1001);
        let empty = migrated();
        assert_eq!(first_code_since(&empty, 5).unwrap(), 1);
    }
}
