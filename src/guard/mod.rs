//! The cost guard against SMS pumping (toll fraud through OTP sends): before a code's
//! SMS is paid for, it checks the destination against the country allow- and
//! deny-lists, per-country and per-number-prefix send limits, the daily message cap,
//! and the country's budget of sent-but-never-verified codes. In record mode it lets
//! everything through and reports what it would have refused; the service audits both.
//!
//! Plain messages (`send-sms`) go through the country lists and the daily cap only:
//! the backend writes them to its own users, so the pumping rules do not fit them, but
//! they cost the same money and count against the same day.
//!
//! It holds no store: the service reads the counts it [`Needs`] and passes them in as
//! [`Observed`], and writes the audit events of the [`Verdict`]. Knows nothing of HTTP or
//! SQL. The caller's own limits (per phone, per user, global) stay in the limiter, which
//! runs first, so a flood is refused there before it can reach the guard.

mod daily_cap;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use thiserror::Error;

use crate::config::{GuardConfig, GuardMode, GuardRegion as Region};
use crate::telemetry;
use crate::types::PhoneNumber;
use daily_cap::DailyCap;

/// A send the guard refuses; each variant has its own API error code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuardError {
    #[error("sending to {country} is not allowed")]
    CountryNotAllowed { country: String },
    #[error("the send limit for {country} is reached")]
    CountryLimited {
        country: String,
        retry_after: Duration,
    },
    #[error("the send limit for this number prefix is reached")]
    PrefixLimited { retry_after: Duration },
    #[error("the daily cap of {cap} messages is reached")]
    DailyCapReached { cap: u64, retry_after: Duration },
    #[error("{country} has {budget} unverified codes in the window")]
    UnverifiedBudgetExhausted {
        country: String,
        budget: u64,
        retry_after: Duration,
    },
}

impl GuardError {
    /// The rule's name, as written to the audit trail and the metric.
    pub fn rule(&self) -> &'static str {
        match self {
            GuardError::CountryNotAllowed { .. } => "country",
            GuardError::CountryLimited { .. } => "per_country",
            GuardError::PrefixLimited { .. } => "per_prefix",
            GuardError::DailyCapReached { .. } => "daily_message_cap",
            GuardError::UnverifiedBudgetExhausted { .. } => "unverified_per_country",
        }
    }
}

/// What the guard found for one send.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The rule that refuses the send (enforce mode); the send must not happen.
    pub blocked: Option<GuardError>,
    /// Rules that would have refused it (record mode); the send goes ahead.
    pub would_block: Vec<GuardError>,
}

impl Verdict {
    /// Every refusal and would-be refusal, with the audit event it is recorded as.
    pub fn events(&self) -> impl Iterator<Item = (&'static str, &GuardError)> {
        (self.blocked.iter().map(|e| ("guard_blocked", e)))
            .chain(self.would_block.iter().map(|e| ("guard_would_block", e)))
    }
}

/// The counts a check needs from the store, which the service reads before asking.
#[derive(Debug, Default)]
pub struct Needs {
    /// Codes sent to this country since this time and never verified.
    pub unverified: Option<(String, SystemTime)>,
    /// Messages written since this time (the start of the UTC day), to seed the cap.
    pub messages_since: Option<SystemTime>,
}

/// The counts the service read for [`Needs`].
#[derive(Debug, Default)]
pub struct Observed {
    /// How many unverified codes, and when the oldest of them was sent.
    pub unverified: (u64, Option<SystemTime>),
    pub messages_today: Option<u64>,
}

/// Where a number goes, as the guard sees it.
pub struct Destination {
    pub region: Region,
    /// The first digits of the E.164 number: the country code and `prefix_digits`
    /// national digits, as one integer. Country codes are prefix-free and E.164 never
    /// starts with 0, so distinct prefixes give distinct keys (8 bytes, no heap).
    prefix: u64,
}

impl Destination {
    /// The region as stored and shown: "ES", or "001" for non-geographic numbers.
    pub fn region_code(&self) -> String {
        match self.region {
            Some(id) => id.as_ref().to_owned(),
            None => "001".to_owned(),
        }
    }
}

pub struct Guard {
    config: GuardConfig,
    per_country: Option<DefaultKeyedRateLimiter<Region>>,
    per_prefix: Option<DefaultKeyedRateLimiter<u64>>,
    daily: DailyCap,
}

fn keyed<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Duration> {
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

impl Guard {
    pub fn new(config: &GuardConfig) -> Self {
        Guard {
            per_country: config
                .per_country
                .map(|r| RateLimiter::keyed(crate::limiter::quota(r))),
            per_prefix: config
                .per_prefix
                .map(|r| RateLimiter::keyed(crate::limiter::quota(r))),
            daily: DailyCap::new(config.daily_message_cap, config.mode),
            config: config.clone(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.config.any_rule()
    }

    /// The region and prefix of `phone`.
    pub fn destination(&self, phone: &PhoneNumber) -> Destination {
        let digits = phone.as_str().trim_start_matches('+');
        let end = (phone.country_code_len() + self.config.prefix_digits).min(digits.len());
        Destination {
            region: phone.region(),
            prefix: digits.get(..end).and_then(|d| d.parse().ok()).unwrap_or(0),
        }
    }

    /// What [`Guard::check`] (with `dest`) or the daily cap alone (without) needs read.
    pub fn needs(&self, dest: Option<&Destination>, now: SystemTime) -> Needs {
        let c = &self.config;
        Needs {
            unverified: dest.zip(c.unverified_per_country).map(|(dest, _)| {
                let since = now.checked_sub(c.unverified_window).unwrap_or(UNIX_EPOCH);
                (dest.region_code(), since)
            }),
            messages_since: self.daily.needs_seed(now),
        }
    }

    /// Checks a code's SMS to `dest` against every rule, cheapest first, stopping at
    /// the first that refuses in enforce mode. The daily cap comes last and counts the
    /// message only if nothing refused it.
    pub fn check(&self, dest: &Destination, now: SystemTime, observed: &Observed) -> Verdict {
        let mut verdict = Verdict::default();
        let c = &self.config;
        let country = || dest.region_code();
        if self.country_refused(&mut verdict, dest) {
            return verdict;
        }
        if let Some(budget) = c.unverified_per_country {
            let (count, oldest) = observed.unverified;
            if count >= budget {
                // One slot frees when the oldest leaves the window (or sooner, by a verify).
                let retry_after = oldest
                    .map(|t| t + c.unverified_window)
                    .and_then(|t| t.duration_since(now).ok())
                    .unwrap_or_default();
                let e = GuardError::UnverifiedBudgetExhausted {
                    country: country(),
                    budget,
                    retry_after,
                };
                if self.refuse(&mut verdict, e) {
                    return verdict;
                }
            }
        }
        if let Some(limiter) = &self.per_prefix
            && let Err(retry_after) = keyed(limiter, &dest.prefix)
            && self.refuse(&mut verdict, GuardError::PrefixLimited { retry_after })
        {
            return verdict;
        }
        if let Some(limiter) = &self.per_country
            && let Err(retry_after) = keyed(limiter, &dest.region)
        {
            let e = GuardError::CountryLimited {
                country: country(),
                retry_after,
            };
            if self.refuse(&mut verdict, e) {
                return verdict;
            }
        }
        if let Err(e) = self.daily.count(now, observed.messages_today) {
            self.refuse(&mut verdict, e);
        }
        verdict
    }

    /// A plain message to `dest`: the country lists, then the daily cap.
    pub fn check_message(
        &self,
        dest: &Destination,
        now: SystemTime,
        observed: &Observed,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        if self.country_refused(&mut verdict, dest) {
            return verdict;
        }
        if let Err(e) = self.daily.count(now, observed.messages_today) {
            self.refuse(&mut verdict, e);
        }
        verdict
    }

    /// The allow- and deny-lists; true when the send must stop here.
    fn country_refused(&self, verdict: &mut Verdict, dest: &Destination) -> bool {
        let c = &self.config;
        let allowed = (c.allow_countries.is_empty() || c.allow_countries.contains(&dest.region))
            && !c.deny_countries.contains(&dest.region);
        !allowed
            && self.refuse(
                verdict,
                GuardError::CountryNotAllowed {
                    country: dest.region_code(),
                },
            )
    }

    /// The daily cap alone, for the test message: it costs money like any other, but
    /// goes to the operator's own number, so no destination rule applies.
    pub fn check_test_message(&self, now: SystemTime, observed: &Observed) -> Verdict {
        let mut verdict = Verdict::default();
        if let Err(e) = self.daily.count(now, observed.messages_today) {
            self.refuse(&mut verdict, e);
        }
        verdict
    }

    /// Files `e` as blocking (enforce: returns true, stop) or as a would-block.
    fn refuse(&self, verdict: &mut Verdict, e: GuardError) -> bool {
        let outcome = match self.config.mode {
            GuardMode::Enforce => "blocked",
            GuardMode::Record => "would_block",
        };
        metrics::counter!(telemetry::GUARD_BLOCKED, "rule" => e.rule(), "outcome" => outcome)
            .increment(1);
        match self.config.mode {
            GuardMode::Enforce => {
                verdict.blocked = Some(e);
                true
            }
            GuardMode::Record => {
                verdict.would_block.push(e);
                false
            }
        }
    }

    /// Forgets limiter keys that have fully refilled, as the limiter does.
    pub fn prune(&self) {
        if let Some(l) = &self.per_country {
            l.retain_recent();
        }
        if let Some(l) = &self.per_prefix {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuardMode;

    pub(super) fn config() -> GuardConfig {
        GuardConfig {
            mode: GuardMode::Enforce,
            allow_countries: Vec::new(),
            deny_countries: Vec::new(),
            per_country: None,
            per_prefix: None,
            prefix_digits: 7,
            daily_message_cap: None,
            unverified_per_country: None,
            unverified_window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_destination_has_its_region_and_a_prefix_of_country_code_and_national_digits() {
        let guard = Guard::new(&config());
        let es = guard.destination(&PhoneNumber::parse("+34600111222").unwrap());
        assert_eq!(es.region_code(), "ES");
        assert_eq!(es.prefix, 346_001_112);
        let us = guard.destination(&PhoneNumber::parse("+14155550100").unwrap());
        assert_eq!(us.region_code(), "US");
        assert_eq!(us.prefix, 14_155_550);
        let ca = guard.destination(&PhoneNumber::parse("+16135550123").unwrap());
        assert_eq!(ca.region_code(), "CA");
    }
}
