//! Whether Twilio accepts the credentials otpd sends with, asked with a free read and
//! cached briefly, so that a status poll neither costs a message nor hits Twilio each
//! time.
//!
//! The Account SID and auth token are checked with FetchAccount (the Account resource).
//! An API key is checked with ListMessage for one day before Twilio existed: Twilio
//! refuses Standard keys the Account resource, which would report a working key as
//! rejected, while any key may list messages, and that empty page brings none back.
//! Neither answer's body is read: FetchAccount's carries the account's auth token.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::{TwilioClient, TwilioError, describe};
use crate::config::TwilioConfig;

/// How long an answer (accepted or rejected) stands before Twilio is asked again.
const FRESH: Duration = Duration::from_secs(60);
/// No answer is retried sooner, so a status poll sees Twilio come back, yet does not
/// wait out a timeout on every call while it is down.
const FRESH_UNKNOWN: Duration = Duration::from_secs(10);
/// A status call waits at most this for Twilio, whatever `twilio.timeout` is.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// What Twilio said of the credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// 401 or 403: these credentials cannot send.
    Rejected,
    /// No answer, or one that says nothing about the credentials (429, 5xx, ...).
    Unknown,
}

/// The check's request and its last answer.
pub(super) struct Probe {
    url: reqwest::Url,
    operation: &'static str,
    // tokio's Mutex, held across the request on purpose: concurrent status calls wait
    // for the one check in flight instead of each asking Twilio.
    last: tokio::sync::Mutex<Option<(SystemTime, Verdict)>>,
}

impl Probe {
    pub(super) fn new(config: &TwilioConfig) -> Result<Probe, TwilioError> {
        let account = format!(
            "{}/2010-04-01/Accounts/{}",
            config.api_base, config.account_sid
        );
        let (url, operation) = if config.auth_user == config.account_sid {
            (format!("{account}.json"), "FetchAccount")
        } else {
            (
                format!("{account}/Messages.json?DateSent=2000-01-01&PageSize=1"),
                "ListMessage",
            )
        };
        Ok(Probe {
            url: reqwest::Url::parse(&url)
                .map_err(|e| TwilioError::Client(format!("twilio.api_base: {e}")))?,
            operation,
            last: tokio::sync::Mutex::new(None),
        })
    }
}

impl TwilioClient {
    /// Whether Twilio accepts the credentials, from an answer at most [`FRESH`] old
    /// (taken at `now`).
    pub async fn credentials(&self, now: SystemTime) -> Verdict {
        let mut last = self.probe.last.lock().await;
        if let Some(verdict) = still_fresh(*last, now) {
            return verdict;
        }
        let (verdict, why) = self.ask().await;
        // Said when it changes, not at every check.
        if last.map(|(_, v)| v) != Some(verdict) {
            match verdict {
                Verdict::Accepted => log::info!("Twilio accepts the credentials ({why})"),
                Verdict::Rejected => log::warn!(
                    "Twilio REJECTS the credentials ({why}): every send will fail; check \
                     twilio.account_sid and the auth token or API key"
                ),
                Verdict::Unknown => log::info!("cannot check the credentials with Twilio: {why}"),
            }
        }
        *last = Some((now, verdict));
        verdict
    }

    /// One request, and what its answer says.
    async fn ask(&self) -> (Verdict, String) {
        let operation = self.probe.operation;
        let answer = self
            .http
            .get(self.probe.url.clone())
            .basic_auth(&self.auth_user, Some(self.auth_secret.expose()))
            .timeout(self.timeout.min(MAX_WAIT))
            .send()
            .await;
        // The body is dropped unread (see the module doc).
        let status = match answer {
            Ok(response) => response.status(),
            Err(e) => return (Verdict::Unknown, format!("{operation}: {}", describe(e))),
        };
        let verdict = match status {
            s if s.is_success() => Verdict::Accepted,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Rejected,
            _ => Verdict::Unknown,
        };
        (verdict, format!("{operation} answered HTTP {status}"))
    }
}

/// The last verdict, if it is recent enough at `now` to stand.
fn still_fresh(last: Option<(SystemTime, Verdict)>, now: SystemTime) -> Option<Verdict> {
    let (at, verdict) = last?;
    // A clock that went back counts as fresh: the check after it corrects the date.
    let age = now.duration_since(at).unwrap_or_default();
    let fresh = match verdict {
        Verdict::Unknown => FRESH_UNKNOWN,
        _ => FRESH,
    };
    (age < fresh).then_some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_stand_a_minute_and_no_answer_ten_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let after = |s: u64| at + Duration::from_secs(s);
        for verdict in [Verdict::Accepted, Verdict::Rejected] {
            assert_eq!(still_fresh(Some((at, verdict)), after(59)), Some(verdict));
            assert_eq!(still_fresh(Some((at, verdict)), after(60)), None);
        }
        let unknown = Some((at, Verdict::Unknown));
        assert_eq!(still_fresh(unknown, after(9)), Some(Verdict::Unknown));
        assert_eq!(still_fresh(unknown, after(10)), None);
        assert_eq!(still_fresh(None, at), None);
        let earlier = at - Duration::from_secs(3600);
        assert_eq!(
            still_fresh(Some((at, Verdict::Rejected)), earlier),
            Some(Verdict::Rejected)
        );
    }
}
