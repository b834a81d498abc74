//! ListMessage (`GET .../Messages.json`): whether Twilio holds a message, asked when a
//! CreateMessage request may have reached Twilio but its answer was lost. It filters
//! the way Twilio's description offers (`To`, `From`, `DateSent>` as an RFC 3339
//! instant), reads a few pages at most, and goes through the circuit breaker like a
//! send. Which listed body is the message is the caller's call (an outbox text, or a
//! code recognised by its MAC); [`TwilioClient::find_sent`] compares the text itself.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::retry::MIN_ATTEMPT;
use super::{Outgoing, TwilioClient, TwilioError, circuit_changed, describe};
use crate::config::TwilioFrom;
use crate::types::{Channel, PhoneNumber};

/// How far before the attempt the list is read: `DateSent` is Twilio's clock, not
/// ours, and hosts drift. A wider window costs nothing but a longer list; the body
/// still has to match.
pub const LOOKUP_MARGIN: Duration = Duration::from_secs(60);
/// Messages per page, and pages read at most: more messages than that to one number in
/// the window means something else is sending to it, and otpd will not guess.
const PAGE_SIZE: usize = 100;
const MAX_PAGES: usize = 5;

/// A message Twilio holds, as its list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub sid: String,
    pub status: String,
    pub body: String,
}

/// The fields of ListMessage's answer that otpd reads.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Item>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    sid: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

impl TwilioClient {
    /// The messages this account's sender for `channel` sent to `to` since `since`
    /// (less [`LOOKUP_MARGIN`]), newest first. A messaging service picks its own
    /// sender, so then the list is not filtered by `From`.
    pub async fn sent_since(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        since: SystemTime,
    ) -> Result<Vec<Listed>, TwilioError> {
        if !channel.carries_text() {
            // Calls are listed without what they said: no list can tell ours apart.
            return Err(TwilioError::Unavailable {
                reason: "a call cannot be found by what it said".into(),
                code: None,
                retry_after: None,
            });
        }
        let deadline = Instant::now() + self.faults.send_deadline;
        let from = match self.sender(channel) {
            Some(TwilioFrom::Number(number)) => Some(channel.address(number.as_str())),
            _ => None,
        };
        let to = channel.address(to.as_str());
        self.list(&to, from.as_deref(), since, deadline).await
    }

    /// The message `message` would create, if Twilio holds one sent since `since`.
    pub(super) async fn find_sent(
        &self,
        message: &Outgoing,
        since: SystemTime,
        deadline: Instant,
    ) -> Result<Option<Listed>, TwilioError> {
        let field = |name: &str| {
            message
                .form
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        let (Some(to), Some(body)) = (field("To"), field("Body")) else {
            return Ok(None);
        };
        let listed = self.list(to, field("From"), since, deadline).await?;
        Ok(listed.into_iter().find(|m| m.body == body))
    }

    async fn list(
        &self,
        to: &str,
        from: Option<&str>,
        since: SystemTime,
        deadline: Instant,
    ) -> Result<Vec<Listed>, TwilioError> {
        let after = since.checked_sub(LOOKUP_MARGIN).unwrap_or(since);
        let mut url = self.messages_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("To", to);
            if let Some(from) = from {
                query.append_pair("From", from);
            }
            // An instant, not a day: Twilio's description types DateSent as date-time.
            query.append_pair(
                "DateSent>",
                &humantime::format_rfc3339_seconds(after).to_string(),
            );
            query.append_pair("PageSize", &PAGE_SIZE.to_string());
        }
        let mut listed = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.page(url, deadline).await?;
            listed.extend(page.messages.into_iter().map(|m| Listed {
                sid: m.sid,
                status: m.status.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            }));
            match page.next_page_uri {
                // Relative to the API's root, as Twilio writes it.
                Some(next) => {
                    url = self
                        .messages_url
                        .join(&next)
                        .map_err(|e| unreadable(format!("next_page_uri {next:?}: {e}")))?;
                }
                None => return Ok(listed),
            }
        }
        Err(unreadable(format!(
            "more than {} messages to one number in the window",
            PAGE_SIZE * MAX_PAGES
        )))
    }

    /// One page, through the breaker and within the deadline.
    async fn page(&self, url: Url, deadline: Instant) -> Result<Page, TwilioError> {
        let now = Instant::now();
        let permit = self
            .breaker
            .admit(now)
            .map_err(|refused| TwilioError::CircuitOpen {
                retry_after: refused.retry_after,
            })?;
        let timeout = self.timeout.min(deadline.saturating_duration_since(now));
        if timeout < MIN_ATTEMPT.min(self.timeout) {
            return Err(unreadable("no time left in send_deadline to ask".into()));
        }
        let result = self.get(url, timeout).await;
        let now = Instant::now();
        let transition = match &result {
            Ok(_) | Err(TwilioError::Rejected { .. }) => permit.succeeded(now),
            Err(_) => permit.failed(now),
        };
        circuit_changed(transition, &self.faults);
        result
    }

    async fn get(&self, url: Url, timeout: Duration) -> Result<Page, TwilioError> {
        let failed = |e: reqwest::Error| TwilioError::Unavailable {
            reason: describe(e),
            code: None,
            retry_after: None,
        };
        let response = self
            .http
            .get(url)
            .basic_auth(&self.auth_user, Some(self.auth_secret.expose()))
            .timeout(timeout)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| unreadable(format!("unreadable Messages list from Twilio: {e}")));
        }
        let reason = format!("HTTP {status} to the Messages list");
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unreadable(reason));
        }
        Err(TwilioError::Rejected {
            status: status.as_u16(),
            code: None,
            message: reason,
            more_info: None,
        })
    }
}

fn unreadable(reason: String) -> TwilioError {
    TwilioError::Unavailable {
        reason,
        code: None,
        retry_after: None,
    }
}
