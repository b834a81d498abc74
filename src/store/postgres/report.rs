//! The report's reads on the shared store: the same counts as SQLite's
//! (`store/sqlite/report.rs`) over every instance's rows. Ids come from one sequence
//! but hosts commit out of order, so the window is found by `created_at` alone.

use std::time::SystemTime;

use super::PgStore;
use crate::store::StoreError;
use crate::store::types::{Billed, CodeGroup, ReportRows, millis};

impl PgStore {
    /// Everything the report counts, from `since` on; test numbers are left out.
    pub async fn report_rows(&self, since: SystemTime) -> Result<ReportRows, StoreError> {
        let s = self.clone();
        let since = millis(since);
        self.run("report", async move {
            let c = s.client().await?;
            let codes: Vec<CodeGroup> = c
                .query(
                    "SELECT substr(o.phone, 2, 3), o.purpose, coalesce(m.channel, 'sms'),
                            coalesce(m.provider, ''), count(*),
                            count(*) FILTER (WHERE o.state = 'verified')
                     FROM otps o LEFT JOIN messages m ON m.id =
                         (SELECT max(id) FROM messages WHERE otp_id = o.id AND sid IS NOT NULL)
                     WHERE o.created_at >= $1 AND NOT o.test_number
                       AND o.state NOT IN ('pending', 'failed')
                     GROUP BY 1, 2, 3, 4",
                    &[&since],
                )
                .await?
                .iter()
                .map(|r| CodeGroup {
                    prefix: r.get(0),
                    purpose: r.get(1),
                    channel: r.get(2),
                    provider: r.get(3),
                    sent: r.get(4),
                    verified: r.get(5),
                })
                .collect();
            let median: Option<i64> = c
                .query_one(
                    "SELECT (percentile_disc(0.5) WITHIN GROUP (ORDER BY verified_at - created_at))::bigint
                     FROM otps WHERE created_at >= $1 AND state = 'verified' AND NOT test_number",
                    &[&since],
                )
                .await?
                .get(0);
            let failures = c
                .query(
                    "SELECT coalesce(provider, ''), error_code, count(*) FROM messages
                     WHERE created_at >= $1 AND status IN ('failed', 'undelivered')
                     GROUP BY 1, 2 ORDER BY 3 DESC",
                    &[&since],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let guard_blocks = c
                .query(
                    "SELECT coalesce(detail, ''), count(*) FROM audit
                     WHERE at >= $1 AND event = 'guard_blocked' GROUP BY 1 ORDER BY 2 DESC",
                    &[&since],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let billed = c
                .query(
                    "SELECT substr(to_number, 1, 6), channel, count(*),
                            sum(coalesce(segments, 1))::bigint
                     FROM messages
                     WHERE created_at >= $1 AND sid IS NOT NULL AND provider != 'dev_outbox'
                     GROUP BY 1, 2",
                    &[&since],
                )
                .await?
                .iter()
                .map(|r| Billed {
                    prefix: r.get(0),
                    channel: r.get(1),
                    messages: r.get(2),
                    segments: r.get(3),
                })
                .collect();
            Ok(ReportRows {
                codes,
                median_seconds_to_verify: median.map(|ms| ms as f64 / 1000.0),
                failures,
                guard_blocks,
                billed,
            })
        })
        .await
    }
}
