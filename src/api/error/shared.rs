//! The causes both services share, one answer each: a limit, the cost guard, a missing
//! provider or channel, the provider's failure, the store. Called from both services'
//! arms today; the future shared service error maps here in one match.

use std::time::Duration;

use serde_json::json;

use super::{Described, S, retry_seconds};
use crate::guard::GuardError;
use crate::limiter::RateLimited;
use crate::sender::SendError;
use crate::store::{Fault, StoreError};
use crate::types::Channel;

pub(super) fn rate_limited(limited: &RateLimited) -> Described {
    let seconds = retry_seconds(limited.retry_after);
    Described::new(S::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
        .details(format!(
            "{} limit reached; retry in {seconds} s",
            limited.limit
        ))
        .extra(json!({"limit": limited.limit.as_str()}))
        .retry_after(limited.retry_after)
}

/// The cost guard's refusals, for codes and plain messages alike.
pub(super) fn guard_refused(g: &GuardError) -> Described {
    let d = match g {
        // 422, not 403: the caller may use otpd; this destination is refused by
        // policy, and sending again will not change that.
        GuardError::CountryNotAllowed { country } => Described::new(
            S::UNPROCESSABLE_ENTITY,
            "country_not_allowed",
            "SMS to this country is not allowed",
        )
        .details(format!(
            "{country} is not allowed by guard.allow_countries / deny_countries"
        ))
        .extra(json!({"country": country})),
        GuardError::CountryLimited {
            country,
            retry_after,
        } => Described::new(
            S::TOO_MANY_REQUESTS,
            "country_rate_limited",
            "Too many SMS to this country",
        )
        .details(format!(
            "guard.per_country reached for {country}; retry in {} s",
            retry_seconds(*retry_after)
        ))
        .extra(json!({"country": country}))
        .retry_after(*retry_after),
        GuardError::PrefixLimited { retry_after } => Described::new(
            S::TOO_MANY_REQUESTS,
            "prefix_rate_limited",
            "Too many SMS to numbers in this range",
        )
        .details(format!(
            "guard.per_prefix reached; retry in {} s",
            retry_seconds(*retry_after)
        ))
        .retry_after(*retry_after),
        // 503, not 429: the whole service is out of budget until UTC midnight,
        // whoever asks; 5xx is what operators' alerts watch.
        GuardError::DailyCapReached { cap, retry_after } => Described::new(
            S::SERVICE_UNAVAILABLE,
            "daily_cap_reached",
            "The daily SMS cap is reached",
        )
        .details(format!(
            "guard.daily_message_cap of {cap} messages reached; resets at 00:00 UTC"
        ))
        .retry_after(*retry_after),
        GuardError::UnverifiedBudgetExhausted {
            country,
            budget,
            retry_after,
        } => Described::new(
            S::TOO_MANY_REQUESTS,
            "unverified_budget_exhausted",
            "Too many unverified codes to this country",
        )
        .details(format!(
            "{budget} codes sent to {country} within guard.unverified_window were not verified"
        ))
        .extra(json!({"country": country}))
        .retry_after(*retry_after),
    };
    d.extra(json!({"rule": g.rule()}))
}

pub(super) fn channel_not_configured(channel: Channel) -> Described {
    Described::new(
        S::SERVICE_UNAVAILABLE,
        "channel_not_configured",
        "This channel is not configured",
    )
    .details(match channel {
        Channel::Voice => "voice needs a number to call from: set twilio.voice_from".to_owned(),
        _ => {
            format!("{channel} needs a sender: set twilio.whatsapp_from (or messaging_service_sid)")
        }
    })
}

pub(super) fn provider_not_configured() -> Described {
    Described::new(
        S::SERVICE_UNAVAILABLE,
        "provider_not_configured",
        "SMS provider is not configured",
    )
    .details("set the Twilio credentials, or run with --dev for a local outbox")
}

/// The provider's failure; the codes keep Twilio's name, the API's stable contract.
pub(super) fn send_failed(e: &SendError) -> Described {
    match e {
        SendError::NotConfigured => provider_not_configured(),
        SendError::ChannelNotConfigured(channel) => channel_not_configured(*channel),
        SendError::Rejected {
            provider,
            status,
            code,
            message,
            more_info,
            ..
        } => {
            let details = match code {
                Some(code) => format!("{provider} error {code}: {message}"),
                None => format!("{provider} answered HTTP {status}: {message}"),
            };
            Described::new(
                S::BAD_GATEWAY,
                "twilio_rejected",
                "Twilio rejected the message",
            )
            .details(details)
            .extra(json!({"twilio_code": code, "twilio_more_info": more_info}))
        }
        SendError::Unavailable { retry_after, .. } => {
            let described = Described::new(
                S::SERVICE_UNAVAILABLE,
                "twilio_unavailable",
                "Twilio is unreachable",
            )
            .details(e.to_string());
            // The provider said when to come back (maybe past our deadline): pass it on.
            match retry_after {
                Some(wait) if !wait.is_zero() => described.retry_after(*wait),
                _ => described,
            }
        }
        // The caller learns what matters to it: no usable answer from Twilio.
        SendError::Unconfirmed { .. } => Described::new(
            S::SERVICE_UNAVAILABLE,
            "twilio_unavailable",
            "Twilio is unreachable",
        )
        .details(e.to_string()),
        SendError::CircuitOpen { retry_after, .. } => Described::new(
            S::SERVICE_UNAVAILABLE,
            "twilio_circuit_open",
            "Twilio is failing; sends are paused",
        )
        .details(format!(
            "after repeated Twilio failures no request is made until the circuit closes; \
             retry in {} s",
            retry_seconds(*retry_after)
        ))
        .extra(json!({"retry_after": retry_seconds(*retry_after)}))
        .retry_after(*retry_after),
        SendError::Outbox { .. } => Described::new(
            S::SERVICE_UNAVAILABLE,
            "outbox_unavailable",
            "The development outbox cannot be written",
        )
        .details(e.to_string()),
    }
}

/// Store faults an operator can clear without a restart are each named, with a retry
/// hint; the daemon picks up again by itself.
pub(super) fn store_failed(e: &StoreError) -> Described {
    match e.fault() {
        Fault::Busy => Described::new(
            S::SERVICE_UNAVAILABLE,
            "store_busy",
            "The OTP store is locked by another process",
        )
        .details("another process held the database's write lock longer than store.busy_timeout")
        .retry_after(Duration::from_secs(1)),
        Fault::Full => Described::new(
            S::INSUFFICIENT_STORAGE,
            "store_full",
            "The OTP store is full",
        )
        .details("the disk or store.max_size is full; purge old rows or free space")
        .retry_after(Duration::from_secs(60)),
        Fault::ReadOnly => Described::new(
            S::SERVICE_UNAVAILABLE,
            "store_read_only",
            "The OTP store cannot be written",
        )
        .details("the database file or its file system is read-only"),
        Fault::Unavailable => Described::new(
            S::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The OTP store is unavailable",
        )
        .details("the shared PostgreSQL database cannot be reached or did not answer in time")
        .retry_after(Duration::from_secs(2)),
        Fault::Other => Described::new(
            S::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The OTP store is unavailable",
        )
        .details("see the daemon's log"),
    }
}
