//! Shared rate limits: the authoritative GCRA state of every limited key, one row per
//! key, in the database's clock (hosts with skewed clocks agree). One conditional
//! upsert per key is the whole check: allowed when the new theoretical arrival time is
//! at most `tau` ahead of now, as governor decides in process. A refused request
//! changes nothing; the keys that passed before it are refunded, so a refusal by the
//! per-phone limit never spends the global ceiling.

use std::time::Duration;

use super::PgStore;
use crate::store::StoreError;
use crate::store::types::LimitCheck;

/// Allowed: a row. Refused: none, and the second column says how long until allowed.
const TAKE: &str =
    "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us),
     up AS (INSERT INTO limits AS l (key, tat) SELECT $1, now.us + $2 FROM now
            ON CONFLICT (key) DO UPDATE SET tat = greatest(l.tat + $2, excluded.tat)
            WHERE greatest(l.tat + $2, excluded.tat) - excluded.tat <= $3
            RETURNING tat)
     SELECT (SELECT count(*) FROM up),
            coalesce((SELECT tat FROM limits WHERE key = $1), 0) - $3 - (SELECT us FROM now)";

const REFUND: &str = "UPDATE limits SET tat = tat - $2 WHERE key = $1";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Takes one cell from each key in order; at the first refusal, gives back the
    /// cells taken and answers its index and how long until it would pass.
    pub async fn take_limits(
        &self,
        checks: Vec<LimitCheck>,
    ) -> Result<Option<(usize, Duration)>, StoreError> {
        let s = self.clone();
        self.run("take_limits", async move {
            let c = s.client().await?;
            let take = c.prepare_cached(TAKE).await?;
            for (i, check) in checks.iter().enumerate() {
                let interval = micros(check.interval);
                let tau = interval.saturating_mul(i64::from(check.burst.saturating_sub(1)));
                let row = c.query_one(&take, &[&check.key, &interval, &tau]).await?;
                if row.get::<_, i64>(0) == 1 {
                    continue;
                }
                for taken in checks.iter().take(i) {
                    c.execute(REFUND, &[&taken.key, &micros(taken.interval)])
                        .await?;
                }
                let wait = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
                return Ok(Some((
                    i,
                    Duration::from_micros(wait).max(Duration::from_secs(1)),
                )));
            }
            Ok(None)
        })
        .await
    }

    /// Forgets keys whose arrival time has passed: they behave exactly like no row.
    pub async fn prune_limits(&self) -> Result<u64, StoreError> {
        let s = self.clone();
        self.run("prune_limits", async move {
            let c = s.client().await?;
            Ok(c.execute(
                "DELETE FROM limits WHERE key IN (SELECT key FROM limits
                 WHERE tat < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
                 LIMIT 5000 FOR UPDATE SKIP LOCKED)",
                &[],
            )
            .await?)
        })
        .await
    }
}
