//! The bounded keyed store behind the per-phone and per-user limits: governor's keyed
//! GCRA over 8-byte keys, with at most `limits.max_keys` keys held. Refilled keys are
//! forgotten whenever the map doubles (and by the periodic prune); a map still full
//! after that refuses NEW keys until some refill: fail closed, because evicting live
//! state would let a flood of fresh numbers reset the limit of the number it targets.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};

use super::{Limit, RateLimited, quota};
use crate::config::Rate;
use crate::telemetry;

/// A full map tries to forget refilled keys at most this often: the scan visits every
/// key, so a flood of new keys must not trigger one per request.
const FULL_PRUNE_EVERY: Duration = Duration::from_secs(1);
/// A map is first scanned for refilled keys when it reaches this many keys, then each
/// time it has doubled since the last scan: a scan of n keys after n new ones costs O(1)
/// a key, and the map holds about twice its live keys instead of everything seen since
/// the periodic prune (a minute), which under a flood of new numbers was most of otpd's
/// memory.
pub(super) const FIRST_PRUNE_AT: usize = 4096;

/// governor's own DashMap store, shared so that the bound can ask whether a key is
/// already held (the rate limiter owns its store and offers no lookup).
#[derive(Clone, Default)]
struct SharedStore(Arc<DashMapStateStore<u64>>);

impl StateStore for SharedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type KeyedLimiter = RateLimiter<u64, SharedStore, DefaultClock, NoOpMiddleware>;

/// One keyed limiter with its bound.
pub(super) struct Keyed {
    limiter: KeyedLimiter,
    store: SharedStore,
    limit: Limit,
    max_keys: usize,
    /// How long a refused new key waits: one refill interval, when a key can free up.
    refill: Duration,
    /// When (ms since the limiter's epoch) a full map was last pruned.
    last_full_prune: AtomicU64,
    /// The length at which the next scan runs; `usize::MAX` while one runs.
    prune_at: AtomicUsize,
}

impl Keyed {
    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets every key that has fully refilled (the periodic prune).
    pub(super) fn forget_refilled(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub(super) fn new(rate: Rate, limit: Limit, max_keys: usize) -> Self {
        let store = SharedStore::default();
        Keyed {
            limiter: RateLimiter::new(quota(rate), store.clone(), DefaultClock::default()),
            store,
            limit,
            max_keys,
            refill: rate.period / rate.count.get(),
            last_full_prune: AtomicU64::new(0),
            prune_at: AtomicUsize::new(FIRST_PRUNE_AT.min(max_keys)),
        }
    }

    pub(super) fn check(&self, key: u64, epoch: Instant) -> Result<(), RateLimited> {
        let limiter = &self.limiter;
        let len = limiter.len();
        if len >= self.prune_at.load(Ordering::Relaxed) {
            self.prune(len, epoch);
        }
        // `len` and the insert are not one atomic step: concurrent workers can overshoot
        // the bound by at most one key each.
        if len >= self.max_keys
            && !self.store.0.contains_key(&key)
            && limiter.len() >= self.max_keys
        {
            metrics::counter!(telemetry::LIMITER_FULL, "limit" => self.limit.as_str()).increment(1);
            return Err(refused(self.limit, self.refill));
        }
        limiter.check_key(&key).map_err(|not_until| {
            refused(self.limit, not_until.wait_time_from(limiter.clock().now()))
        })
    }

    /// Forgets refilled keys: by doubling while there is room, at most once a second
    /// when full. One request scans; the others go on meanwhile.
    pub(super) fn prune(&self, len: usize, epoch: Instant) {
        let at = self.prune_at.load(Ordering::Relaxed);
        if len >= self.max_keys {
            let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let last = self.last_full_prune.load(Ordering::Relaxed);
            let due = last == 0 || now.saturating_sub(last) >= FULL_PRUNE_EVERY.as_millis() as u64;
            if !due
                || self
                    .last_full_prune
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return;
            }
        }
        if self
            .prune_at
            .compare_exchange(at, usize::MAX, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.limiter.retain_recent();
        let left = self.limiter.len();
        if left >= self.max_keys {
            log::warn!(
                "limiter {} is full ({} keys, limits.max_keys): refusing new keys until some refill",
                self.limit,
                self.max_keys
            );
        }
        let next = left
            .saturating_mul(2)
            .max(FIRST_PRUNE_AT)
            .min(self.max_keys);
        self.prune_at.store(next, Ordering::Relaxed);
    }
}

pub(super) fn refused(limit: Limit, retry_after: Duration) -> RateLimited {
    RateLimited { limit, retry_after }
}

/// An E.164 number as its digits, with their count on top so that no two numbers share
/// a key; anything else (never reached: numbers are validated at the edge) is hashed
/// into the half of the key space that digits never use.
pub(super) fn phone_key(phone: &str, hasher: &impl BuildHasher) -> u64 {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        let value = digits
            .bytes()
            .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        return (digits.len() as u64) << 56 | value;
    }
    hasher.hash_one(phone) | 1 << 63
}
