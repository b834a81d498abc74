//! How long to wait before Twilio is asked again: full-jitter backoff, and Twilio's own
//! `Retry-After`. The deadline that bounds all attempts is the client's (see the parent).

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest wait between two attempts, whatever the retry count.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An attempt given less time than this would mostly add a duplicate risk: not made.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// Full jitter: anywhere from 0 to `base * 2^(retry - 1)`, capped at [`MAX_BACKOFF`].
pub fn backoff(base: Duration, retry: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    rand::rng().random_range(Duration::ZERO..=ceiling)
}

/// `Retry-After` as seconds or as an HTTP-date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_stays_under_its_doubling_ceiling() {
        let base = Duration::from_millis(100);
        for retry in 1..=10 {
            let ceiling = (base * 2u32.pow(retry - 1)).min(MAX_BACKOFF);
            for _ in 0..50 {
                assert!(backoff(base, retry) <= ceiling);
            }
        }
        assert!(backoff(Duration::from_secs(3600), 60) <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(with("2"), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(with(&later), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(with(&earlier), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
