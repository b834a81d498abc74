//! The value types and parsers the sections share: rates ("5/10m"), durations, byte
//! sizes, user and group ids, dates and regions. Each parser takes the key it reads so
//! its error names it. Nothing here knows which section a value belongs to.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// Parses "5/10m", "50/1s" or "10/h": a count, then a period of s, m, h or d.
    pub(super) fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            invalid(
                key,
                format!("{text:?} is not \"N/period\" such as \"5/10m\""),
            )
        };
        let (count, period) = text.split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let unit_at = period.len().checked_sub(1).ok_or_else(bad)?;
        let (amount, unit) = period.split_at(unit_at);
        let amount: u64 = if amount.is_empty() {
            1
        } else {
            amount.parse().map_err(|_| bad())?
        };
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        if amount == 0 {
            return Err(bad());
        }
        Ok(Rate {
            count,
            period: Duration::from_secs(amount.saturating_mul(seconds)),
        })
    }

    /// An optional rule: empty means off.
    pub(super) fn optional(key: &str, text: &str) -> Result<Option<Self>, ConfigError> {
        match text.trim() {
            "" => Ok(None),
            text => Rate::parse(key, text).map(Some),
        }
    }
}

/// A destination region: an ISO 3166 code from libphonenumber's metadata, or `None`
/// for non-geographic numbers (+800, +882, ...), written "001" as libphonenumber does.
pub type GuardRegion = Option<phonenumber::country::Id>;

/// Parses "ES" (any case) or "001".
pub fn parse_region(text: &str) -> Option<GuardRegion> {
    let text = text.trim().to_ascii_uppercase();
    if text == "001" {
        return Some(None);
    }
    text.parse().ok().map(Some)
}

pub(super) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration such as \"10s\" or \"10m\": {e}"),
        )
    })
}

/// A size in bytes: "0", "65536", "512KiB", "100MiB", "2GiB" (powers of 1024; "KB",
/// "MB" and "GB" are read the same way, as SQLite and most sysadmins mean them).
pub(super) fn byte_size(key: &str, text: &str) -> Result<u64, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not a size such as \"0\", \"512KiB\" or \"100MiB\""),
            )
        })
}

/// A user name or numeric uid; empty means "leave it".
pub(super) fn user_id(key: &str, name: &str) -> Result<Option<u32>, ConfigError> {
    account_id(key, name, "user", |name| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|user| user.uid.as_raw())
    })
}

/// A group name or numeric gid; empty means "leave it".
pub(super) fn group_id(key: &str, name: &str) -> Result<Option<u32>, ConfigError> {
    account_id(key, name, "group", |name| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|group| group.gid.as_raw())
    })
}

fn account_id(
    key: &str,
    name: &str,
    kind: &str,
    lookup: impl FnOnce(&str) -> Option<u32>,
) -> Result<Option<u32>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(id) = name.parse() {
        return Ok(Some(id));
    }
    match lookup(name) {
        Some(id) => Ok(Some(id)),
        None => Err(invalid(key, format!("no {kind} named {name:?}"))),
    }
}

pub(super) fn timestamp(key: &str, text: &str) -> Result<SystemTime, ConfigError> {
    // A bare date means the start of that day, UTC.
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339(&full).map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not a date (2027-01-31) or RFC 3339 time"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_a_period_count() {
        assert_eq!(
            Rate::parse("k", "5/10m")
                .ok()
                .map(|r| (r.count.get(), r.period.as_secs())),
            Some((5, 600))
        );
        assert_eq!(
            Rate::parse("k", "3/h").ok().map(|r| r.period.as_secs()),
            Some(3600)
        );
        for bad in ["5", "0/1m", "5/0m", "5/10", "5/10w", "/1m", "x/1m"] {
            assert!(Rate::parse("k", bad).is_err(), "{bad}");
        }
    }
}
