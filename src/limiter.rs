//! In-process rate limits: governor's keyed GCRA limiters for sends per phone, sends per
//! user and verify attempts per phone, and one direct limiter for the global send
//! ceiling. Knows nothing of HTTP, SQL or Twilio; only keys, quotas and wait times.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use thiserror::Error;

use crate::config::{LimitsConfig, Rate};
use crate::telemetry;

/// Which limit refused a request; its name is part of the API error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    SendPerPhone,
    SendPerUser,
    VerifyPerPhone,
    SendGlobal,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::SendPerPhone => "send_per_phone",
            Limit::SendPerUser => "send_per_user",
            Limit::VerifyPerPhone => "verify_per_phone",
            Limit::SendGlobal => "send_global",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("rate limit {limit} reached")]
pub struct RateLimited {
    pub limit: Limit,
    pub retry_after: Duration,
}

/// Each limit sits behind an `ArcSwap` so a reload can replace only the limits whose
/// quota changed; a check holds the old limiter's `Arc` for its few instructions.
pub struct Limiter {
    send_per_phone: ArcSwap<DefaultKeyedRateLimiter<String>>,
    send_per_user: ArcSwap<DefaultKeyedRateLimiter<String>>,
    verify_per_phone: ArcSwap<DefaultKeyedRateLimiter<String>>,
    send_global: ArcSwap<DefaultDirectRateLimiter>,
    /// The quotas in force; std Mutex: only `reconfigure` takes it, never across an await.
    limits: Mutex<LimitsConfig>,
}

/// "N per period" as GCRA: a burst of N, refilled one cell every period / N.
fn quota(rate: Rate) -> Quota {
    let interval = rate.period / rate.count.get();
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(rate.count)
}

fn keyed(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: &str,
    limit: Limit,
) -> Result<(), RateLimited> {
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| refused(limit, not_until.wait_time_from(limiter.clock().now())))
}

fn keyed_limiter(rate: Rate) -> ArcSwap<DefaultKeyedRateLimiter<String>> {
    ArcSwap::from_pointee(RateLimiter::keyed(quota(rate)))
}

fn refused(limit: Limit, retry_after: Duration) -> RateLimited {
    metrics::counter!(telemetry::RATE_LIMITED, "limit" => limit.as_str()).increment(1);
    RateLimited { limit, retry_after }
}

impl Limiter {
    pub fn new(limits: &LimitsConfig) -> Self {
        Limiter {
            send_per_phone: keyed_limiter(limits.send_per_phone),
            send_per_user: keyed_limiter(limits.send_per_user),
            verify_per_phone: keyed_limiter(limits.verify_per_phone),
            send_global: ArcSwap::from_pointee(RateLimiter::direct(quota(limits.send_global))),
            limits: Mutex::new(limits.clone()),
        }
    }

    /// Applies reloaded limits: a limit whose quota changed starts afresh with the new
    /// quota; the others keep their limiter, so their keys keep their state.
    pub fn reconfigure(&self, new: &LimitsConfig) {
        let Ok(mut current) = self.limits.lock() else {
            return;
        };
        let changed = |limit: Limit, old: Rate, new: Rate| {
            if old != new {
                log::info!("rate limit {limit} changed; its counters restart");
            }
            old != new
        };
        if changed(
            Limit::SendPerPhone,
            current.send_per_phone,
            new.send_per_phone,
        ) {
            self.send_per_phone
                .store(Arc::new(RateLimiter::keyed(quota(new.send_per_phone))));
        }
        if changed(Limit::SendPerUser, current.send_per_user, new.send_per_user) {
            self.send_per_user
                .store(Arc::new(RateLimiter::keyed(quota(new.send_per_user))));
        }
        if changed(
            Limit::VerifyPerPhone,
            current.verify_per_phone,
            new.verify_per_phone,
        ) {
            self.verify_per_phone
                .store(Arc::new(RateLimiter::keyed(quota(new.verify_per_phone))));
        }
        if changed(Limit::SendGlobal, current.send_global, new.send_global) {
            self.send_global
                .store(Arc::new(RateLimiter::direct(quota(new.send_global))));
        }
        *current = new.clone();
    }

    /// Takes one send from each limit that applies, most specific first, so a single
    /// abusive phone or user is refused before it can eat into the global ceiling.
    pub fn check_send(&self, phone: &str, user: Option<&str>) -> Result<(), RateLimited> {
        keyed(&self.send_per_phone.load(), phone, Limit::SendPerPhone)?;
        if let Some(user) = user {
            keyed(&self.send_per_user.load(), user, Limit::SendPerUser)?;
        }
        self.check_global()
    }

    /// The cost guard alone, for messages that have no phone/user owner (test-twilio).
    pub fn check_global(&self) -> Result<(), RateLimited> {
        let global = self.send_global.load();
        global.check().map_err(|not_until| {
            refused(
                Limit::SendGlobal,
                not_until.wait_time_from(global.clock().now()),
            )
        })
    }

    pub fn check_verify(&self, phone: &str) -> Result<(), RateLimited> {
        keyed(&self.verify_per_phone.load(), phone, Limit::VerifyPerPhone)
    }

    /// Forgets keys whose limit has fully refilled: they behave exactly like unseen
    /// keys, so dropping them loses nothing and keeps memory bounded.
    pub fn prune(&self) {
        for limiter in [
            self.send_per_phone.load(),
            self.send_per_user.load(),
            self.verify_per_phone.load(),
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys currently held, for status and tests.
    pub fn key_count(&self) -> usize {
        self.send_per_phone.load().len()
            + self.send_per_user.load().len()
            + self.verify_per_phone.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count: NonZeroU32::new(count).unwrap(),
            period: Duration::from_secs(secs),
        }
    }

    fn limiter() -> Limiter {
        Limiter::new(&LimitsConfig {
            send_per_phone: rate(2, 600),
            send_per_user: rate(3, 3600),
            verify_per_phone: rate(1, 60),
            send_global: rate(100, 1),
        })
    }

    #[test]
    fn a_phone_gets_its_burst_then_a_wait_of_one_refill_interval() {
        let l = limiter();
        assert!(l.check_send("+34600111222", None).is_ok());
        assert!(l.check_send("+34600111222", None).is_ok());
        let refused = l.check_send("+34600111222", None).unwrap_err();
        assert_eq!(refused.limit, Limit::SendPerPhone);
        // 2 per 10 minutes refills one send every 5 minutes.
        assert!(refused.retry_after > Duration::from_secs(290));
        assert!(refused.retry_after <= Duration::from_secs(300));
        assert!(l.check_send("+34600111223", None).is_ok());
    }

    #[test]
    fn a_user_is_limited_across_phones() {
        let l = limiter();
        for n in 0..3 {
            assert!(l.check_send(&format!("+3460011122{n}"), Some("42")).is_ok());
        }
        let refused = l.check_send("+34600111229", Some("42")).unwrap_err();
        assert_eq!(refused.limit, Limit::SendPerUser);
    }

    #[test]
    fn pruning_drops_only_refilled_keys() {
        let l = limiter();
        let _ = l.check_verify("+34600111222");
        assert_eq!(l.key_count(), 1);
        l.prune();
        // Still draining: kept, and still limited.
        assert_eq!(l.key_count(), 1);
        assert!(l.check_verify("+34600111222").is_err());
    }

    #[test]
    fn reconfigure_restarts_only_the_limits_that_changed() {
        let l = limiter();
        let _ = l.check_verify("+34600111222");
        assert!(l.check_send("+34600111222", None).is_ok());
        assert!(l.check_send("+34600111222", None).is_ok());
        assert!(l.check_send("+34600111222", None).is_err());
        l.reconfigure(&LimitsConfig {
            send_per_phone: rate(3, 600),
            send_per_user: rate(3, 3600),
            verify_per_phone: rate(1, 60),
            send_global: rate(100, 1),
        });
        // Unchanged limit: the key keeps its state.
        assert!(l.check_verify("+34600111222").is_err());
        // Changed limit: the new quota, from a fresh start.
        for _ in 0..3 {
            assert!(l.check_send("+34600111222", None).is_ok());
        }
        assert!(l.check_send("+34600111222", None).is_err());
    }
}
