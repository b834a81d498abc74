//! The daily message cap: one count per UTC day for codes, plain messages and the test
//! message alike. The store holds every message written today, so the count is seeded
//! from it at the day's first send (and survives restarts), then kept here.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::GuardError;
use crate::config::GuardMode;

const DAY: u64 = 86_400;

/// Messages counted for the current UTC day.
#[derive(Debug, Clone, Copy)]
struct DayCount {
    day: u64,
    count: u64,
}

pub(super) struct DailyCap {
    cap: Option<u64>,
    mode: GuardMode,
    /// `None` until seeded from the store (at the first send, and each new UTC day).
    /// std Mutex: held only to compare and add, never across an await.
    today: Mutex<Option<DayCount>>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl DailyCap {
    pub(super) fn new(cap: Option<u64>, mode: GuardMode) -> Self {
        DailyCap {
            cap,
            mode,
            today: Mutex::new(None),
        }
    }

    /// The start of `now`'s UTC day, when the store's count since then is needed: there
    /// is a cap and today's count is not seeded yet.
    pub(super) fn needs_seed(&self, now: SystemTime) -> Option<SystemTime> {
        let day = unix_secs(now) / DAY;
        let seeded = self.lock().is_some_and(|t| t.day == day);
        (self.cap.is_some() && !seeded).then(|| UNIX_EPOCH + Duration::from_secs(day * DAY))
    }

    /// Counts one message against today's cap; `seed` is the store's count asked for by
    /// [`DailyCap::needs_seed`]. Refused sends are not counted in enforce mode; in
    /// record mode every send counts, as every send leaves.
    pub(super) fn count(&self, now: SystemTime, seed: Option<u64>) -> Result<(), GuardError> {
        let Some(cap) = self.cap else {
            return Ok(());
        };
        let secs = unix_secs(now);
        let day = secs / DAY;
        let mut today = self.lock();
        if let Some(count) = seed
            && today.is_none_or(|t| t.day != day)
        {
            *today = Some(DayCount { day, count });
        }
        let Some(t) = today.as_mut().filter(|t| t.day == day) else {
            return Ok(());
        };
        let over = t.count >= cap;
        if !over || self.mode == GuardMode::Record {
            t.count += 1;
        }
        if over {
            // Until the next UTC midnight.
            let retry_after = Duration::from_secs(DAY - secs % DAY);
            return Err(GuardError::DailyCapReached { cap, retry_after });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DayCount>> {
        // A panic while holding this lock cannot leave the count inconsistent.
        self.today
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use phonenumber::country::Id;

    use super::super::tests::config;
    use super::super::{Destination, Guard, GuardConfig, Observed};
    use super::*;
    use crate::types::PhoneNumber;

    /// What the service would pass: the seed count when the guard asks for one.
    fn observed(guard: &Guard, dest: &Destination, now: SystemTime, today: u64) -> Observed {
        let needs = guard.needs(Some(dest), now);
        Observed {
            unverified: (0, None),
            messages_today: needs.messages_since.map(|_| today),
        }
    }

    #[test]
    fn the_daily_cap_starts_again_at_utc_midnight() {
        let guard = Guard::new(&GuardConfig {
            daily_message_cap: Some(2),
            ..config()
        });
        let dest = guard.destination(&PhoneNumber::parse("+34600111222").unwrap());
        let day = UNIX_EPOCH + Duration::from_secs(20_000 * DAY);
        let late = day + Duration::from_secs(DAY - 10);
        let check = |now| guard.check(&dest, now, &observed(&guard, &dest, now, 0));
        for _ in 0..2 {
            let verdict = check(late);
            assert!(verdict.blocked.is_none(), "{verdict:?}");
        }
        for _ in 0..3 {
            assert_eq!(
                check(late).blocked,
                Some(GuardError::DailyCapReached {
                    cap: 2,
                    retry_after: Duration::from_secs(10)
                })
            );
        }
        let next_day = day + Duration::from_secs(DAY);
        for _ in 0..2 {
            let verdict = check(next_day);
            assert!(verdict.blocked.is_none(), "{verdict:?}");
        }
        assert!(check(next_day).blocked.is_some());
    }

    #[test]
    fn the_daily_cap_is_seeded_with_what_the_store_counted_today() {
        let guard = Guard::new(&GuardConfig {
            daily_message_cap: Some(3),
            ..config()
        });
        let dest = guard.destination(&PhoneNumber::parse("+34600111222").unwrap());
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 12 * 3600);
        assert!(guard.needs(Some(&dest), now).messages_since.is_some());
        let first = guard.check(&dest, now, &observed(&guard, &dest, now, 2));
        assert!(first.blocked.is_none(), "{first:?}");
        // Seeded: the guard counts on by itself and asks no more.
        assert!(guard.needs(Some(&dest), now).messages_since.is_none());
        let second = guard.check(&dest, now, &Observed::default());
        assert_eq!(second.blocked.map(|e| e.rule()), Some("daily_message_cap"));
    }

    #[test]
    fn a_send_refused_by_another_rule_does_not_count_against_the_daily_cap() {
        let guard = Guard::new(&GuardConfig {
            daily_message_cap: Some(1),
            deny_countries: vec![Some(Id::ES)],
            ..config()
        });
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 12 * 3600);
        let es = guard.destination(&PhoneNumber::parse("+34600111222").unwrap());
        let pt = guard.destination(&PhoneNumber::parse("+351912345678").unwrap());
        for _ in 0..3 {
            let verdict = guard.check(&es, now, &observed(&guard, &es, now, 0));
            assert_eq!(verdict.blocked.map(|e| e.rule()), Some("country"));
        }
        let verdict = guard.check(&pt, now, &observed(&guard, &pt, now, 0));
        assert!(verdict.blocked.is_none(), "{verdict:?}");
        let verdict = guard.check(&pt, now, &observed(&guard, &pt, now, 0));
        assert_eq!(verdict.blocked.map(|e| e.rule()), Some("daily_message_cap"));
    }
}
