//! In-process rate limits: governor's keyed GCRA limiters for sends per phone, sends per
//! user and verify attempts per phone, and one direct limiter for the global send
//! ceiling. Knows nothing of HTTP, SQL or Twilio; only keys, quotas and wait times.
//!
//! Memory stays bounded whatever callers send: keys are 8-byte integers (an E.164
//! number is its digits; a user id is hashed with SipHash under a per-process random
//! key, so callers cannot choose colliding ids), and each keyed map holds at most
//! `limits.max_keys` keys. Keys that have refilled behave exactly like unseen keys and
//! are forgotten whenever a map has doubled since its last scan (and by the periodic
//! prune); if a map is still full after a scan, a NEW key is refused (429)
//! until keys refill: failing closed, because evicting live state would let a flood of
//! fresh numbers reset the limit of the number it targets.

use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use thiserror::Error;

mod bounded;
mod refusals;
use bounded::{Keyed, phone_key, refused};
use refusals::Refusals;

use crate::config::{LimitsConfig, Rate};

/// Which limit refused a request; its name is part of the API error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    SendPerPhone,
    SendPerUser,
    VerifyPerPhone,
    SendGlobal,
}

impl Limit {
    const COUNT: usize = 4;

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
    send_per_phone: ArcSwap<Keyed>,
    send_per_user: ArcSwap<Keyed>,
    verify_per_phone: ArcSwap<Keyed>,
    send_global: ArcSwap<DefaultDirectRateLimiter>,
    /// The quotas in force; std Mutex: only `reconfigure` takes it, never across an await.
    limits: Mutex<LimitsConfig>,
    /// SipHash-1-3 with keys drawn at random for this process: user ids (and any phone
    /// that is not E.164, which validation never lets through).
    user_keys: std::collections::hash_map::RandomState,
    epoch: Instant,
    refusals: Refusals,
}

/// A shared limit's key: kind, quota and subject (`sp/5/600000/+34600111222`).
fn shared(limit: Limit, kind: &str, subject: &str, rate: Rate) -> (Limit, String, Rate) {
    let key = format!(
        "{kind}/{}/{}/{subject}",
        rate.count,
        rate.period.as_millis()
    );
    (limit, key, rate)
}

/// "N per period" as GCRA: a burst of N, refilled one cell every period / N.
pub fn quota(rate: Rate) -> Quota {
    let interval = rate.period / rate.count.get();
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(rate.count)
}

impl Limiter {
    pub fn new(limits: &LimitsConfig) -> Self {
        let max = limits.max_keys;
        let keyed = |rate, limit| ArcSwap::from_pointee(Keyed::new(rate, limit, max));
        Limiter {
            send_per_phone: keyed(limits.send_per_phone, Limit::SendPerPhone),
            send_per_user: keyed(limits.send_per_user, Limit::SendPerUser),
            verify_per_phone: keyed(limits.verify_per_phone, Limit::VerifyPerPhone),
            send_global: ArcSwap::from_pointee(RateLimiter::direct(quota(limits.send_global))),
            limits: Mutex::new(limits.clone()),
            user_keys: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            refusals: Refusals::default(),
        }
    }

    /// Applies reloaded limits: a limit whose quota (or `max_keys`) changed starts
    /// afresh; the others keep their limiter, so their keys keep their state.
    pub fn reconfigure(&self, new: &LimitsConfig) {
        let mut current = self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let max_changed = current.max_keys != new.max_keys;
        let changed = |limit: Limit, old: Rate, new: Rate| {
            let changed = old != new || max_changed;
            if changed {
                log::info!("rate limit {limit} changed; its counters restart");
            }
            changed
        };
        let keyed = |slot: &ArcSwap<Keyed>, rate, limit| {
            slot.store(Arc::new(Keyed::new(rate, limit, new.max_keys)));
        };
        if changed(
            Limit::SendPerPhone,
            current.send_per_phone,
            new.send_per_phone,
        ) {
            keyed(
                &self.send_per_phone,
                new.send_per_phone,
                Limit::SendPerPhone,
            );
        }
        if changed(Limit::SendPerUser, current.send_per_user, new.send_per_user) {
            keyed(&self.send_per_user, new.send_per_user, Limit::SendPerUser);
        }
        if changed(
            Limit::VerifyPerPhone,
            current.verify_per_phone,
            new.verify_per_phone,
        ) {
            keyed(
                &self.verify_per_phone,
                new.verify_per_phone,
                Limit::VerifyPerPhone,
            );
        }
        if current.send_global != new.send_global {
            log::info!(
                "rate limit {} changed; its counters restart",
                Limit::SendGlobal
            );
            self.send_global
                .store(Arc::new(RateLimiter::direct(quota(new.send_global))));
        }
        *current = new.clone();
    }

    /// Takes one send from each limit that applies, most specific first, so a single
    /// abusive phone or user is refused before it can eat into the global ceiling.
    pub fn check_send(&self, phone: &str, user: Option<&str>) -> Result<(), RateLimited> {
        self.noted(|| {
            self.send_per_phone
                .load()
                .check(phone_key(phone, &self.user_keys), self.epoch)?;
            if let Some(user) = user {
                self.send_per_user
                    .load()
                    .check(self.user_keys.hash_one(user), self.epoch)?;
            }
            self.global()
        })
    }

    /// The global ceiling alone, for messages that have no phone/user owner (send-sms,
    /// test-twilio).
    pub fn check_global(&self) -> Result<(), RateLimited> {
        self.noted(|| self.global())
    }

    pub fn check_verify(&self, phone: &str) -> Result<(), RateLimited> {
        self.noted(|| {
            self.verify_per_phone
                .load()
                .check(phone_key(phone, &self.user_keys), self.epoch)
        })
    }

    /// The send limits as every host spells them, for the shared store (PostgreSQL):
    /// which limit, its key and its quota, in the order [`Limiter::check_send`] takes
    /// them. The quota is part of the key, so a changed limit starts afresh, as this
    /// limiter's own do on reload. User ids are keys as they are (every host must
    /// agree on them; the audit trail holds them already).
    pub fn shared_send(&self, phone: &str, user: Option<&str>) -> Vec<(Limit, String, Rate)> {
        let limits = self.quotas();
        let mut checks = vec![shared(
            Limit::SendPerPhone,
            "sp",
            phone,
            limits.send_per_phone,
        )];
        if let Some(user) = user {
            checks.push(shared(Limit::SendPerUser, "su", user, limits.send_per_user));
        }
        checks.push(shared(Limit::SendGlobal, "g", "", limits.send_global));
        checks
    }

    pub fn shared_global(&self) -> Vec<(Limit, String, Rate)> {
        vec![shared(
            Limit::SendGlobal,
            "g",
            "",
            self.quotas().send_global,
        )]
    }

    pub fn shared_verify(&self, phone: &str) -> Vec<(Limit, String, Rate)> {
        let rate = self.quotas().verify_per_phone;
        vec![shared(Limit::VerifyPerPhone, "vp", phone, rate)]
    }

    /// A refusal the shared limits made, counted and logged like this limiter's own.
    pub fn note(&self, refused: &RateLimited) {
        self.refusals.note(refused, self.epoch.elapsed());
    }

    fn quotas(&self) -> LimitsConfig {
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn global(&self) -> Result<(), RateLimited> {
        let global = self.send_global.load();
        global.check().map_err(|not_until| {
            refused(
                Limit::SendGlobal,
                not_until.wait_time_from(global.clock().now()),
            )
        })
    }

    /// Every refusal, whichever limit made it, is counted and (throttled) logged here.
    fn noted(&self, check: impl FnOnce() -> Result<(), RateLimited>) -> Result<(), RateLimited> {
        check().inspect_err(|refused| self.refusals.note(refused, self.epoch.elapsed()))
    }

    /// Forgets keys whose limit has fully refilled: they behave exactly like unseen
    /// keys, so dropping them loses nothing and keeps memory bounded.
    pub fn prune(&self) {
        for keyed in [
            self.send_per_phone.load(),
            self.send_per_user.load(),
            self.verify_per_phone.load(),
        ] {
            keyed.forget_refilled();
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
mod tests;
