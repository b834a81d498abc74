//! Refusals made visible: every one counts in `otpd_rate_limited_total{limit}`, and an
//! info line names the limit at most once a minute per limit (with how many refusals
//! the quiet minute hid), so an operator sees a limit biting without a flood of
//! refused requests flooding the journal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Limit, RateLimited};
use crate::telemetry;

const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Refusals {
    /// Per limit: when its last line was written, in ms since the limiter's epoch + 1
    /// (0: never), and the refusals since then.
    logged_at: [AtomicU64; Limit::COUNT],
    unlogged: [AtomicU64; Limit::COUNT],
}

impl Refusals {
    /// `since_epoch`: the limiter's own clock, which the caller reads.
    pub(super) fn note(&self, refused: &RateLimited, since_epoch: Duration) {
        let limit = refused.limit;
        metrics::counter!(telemetry::RATE_LIMITED, "limit" => limit.as_str()).increment(1);
        let (Some(logged_at), Some(unlogged)) = (
            self.logged_at.get(limit as usize),
            self.unlogged.get(limit as usize),
        ) else {
            return;
        };
        let now = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX) + 1;
        let last = logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        // One racer wins the minute's line; the others count toward the next one.
        if !due
            || logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let hidden = unlogged.swap(0, Ordering::Relaxed);
        let wait = refused.retry_after.as_secs();
        match hidden {
            0 => {
                log::info!(limit = limit.as_str(); "rate limit {limit} refused a request (retry after {wait} s)")
            }
            n => {
                log::info!(limit = limit.as_str(), refused = n + 1; "rate limit {limit} refused a request (retry after {wait} s), and {n} more since its last line")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(limit: Limit) -> RateLimited {
        RateLimited {
            limit,
            retry_after: Duration::from_secs(5),
        }
    }

    fn hidden(refusals: &Refusals, limit: Limit) -> u64 {
        refusals.unlogged[limit as usize].load(Ordering::Relaxed)
    }

    #[test]
    fn one_line_per_limit_per_minute_and_the_rest_are_counted() {
        let refusals = Refusals::default();
        let at = Duration::from_secs;
        for _ in 0..5 {
            refusals.note(&refusal(Limit::SendGlobal), at(0));
        }
        assert_eq!(
            hidden(&refusals, Limit::SendGlobal),
            4,
            "four waited for a line"
        );
        // Another limit has its own minute.
        refusals.note(&refusal(Limit::SendPerPhone), at(1));
        assert_eq!(hidden(&refusals, Limit::SendPerPhone), 0);
        refusals.note(&refusal(Limit::SendGlobal), at(59));
        assert_eq!(hidden(&refusals, Limit::SendGlobal), 5);
        // A minute on, the next refusal writes the line and reports the hidden five.
        refusals.note(&refusal(Limit::SendGlobal), at(61));
        assert_eq!(hidden(&refusals, Limit::SendGlobal), 0);
    }
}
