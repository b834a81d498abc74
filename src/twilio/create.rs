//! CreateMessage (`POST .../Messages.json`) and CreateCall (`.../Calls.json`, whose
//! answer has the same `sid` and `status`): one request with its own timeout, and
//! Twilio's answer read into a typed result. Which failures mean "not sent" and which
//! "maybe sent" is decided here, once, from where the request failed; retrying is the
//! caller's (`mod.rs`).

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::retry::retry_after;
use super::{TwilioClient, TwilioError};
use crate::types::mask_numbers;

/// The fields of the created message resource that otpd keeps.
#[derive(Debug, Deserialize)]
pub(super) struct Message {
    pub(super) sid: String,
    #[serde(default)]
    pub(super) status: Option<String>,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

impl TwilioClient {
    /// One request, with its own timeout.
    pub(super) async fn attempt(
        &self,
        url: &reqwest::Url,
        form: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<Message, TwilioError> {
        let unavailable = |e: reqwest::Error| TwilioError::Unavailable {
            reason: describe(e),
            code: None,
            retry_after: None,
        };
        let request = self.http.post(url.clone());
        let response = request
            .basic_auth(&self.auth_user, Some(self.auth_secret.expose()))
            .form(form)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_builder() {
                    TwilioError::Client(e.without_url().to_string())
                } else if e.is_connect() {
                    // Refused, DNS, TLS handshake: no byte of the request left.
                    unavailable(e)
                } else {
                    interrupted(e)
                }
            })?;
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(response.headers(), self.clock.now())
            }
            _ => None,
        };
        // An error status is Twilio's answer even when its body is cut short.
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if status.is_success() => return Err(interrupted(e)),
            Err(_) => Default::default(),
        };
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| TwilioError::Interrupted {
                reason: format!("unreadable answer to a {status} from Twilio: {e}"),
            });
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        // Twilio's texts name the number ("The 'To' number +34... is not valid"): they
        // reach logs, the audit trail and API answers, so they are masked here, once.
        let message = error
            .as_ref()
            .and_then(|e| e.message.as_deref())
            .map(|text| mask_numbers(text).into_owned())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let code = error.as_ref().and_then(|e| e.code);
        // 429 and 5xx say "not now", not "never".
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TwilioError::Unavailable {
                reason: format!("HTTP {status}: {message}"),
                code,
                retry_after,
            });
        }
        Err(TwilioError::Rejected {
            status: status.as_u16(),
            code,
            message,
            more_info: error.and_then(|e| e.more_info),
        })
    }
}

/// A failure after the request was written: Twilio may have created the message.
fn interrupted(e: reqwest::Error) -> TwilioError {
    TwilioError::Interrupted {
        reason: describe(e),
    }
}

/// reqwest's message and its innermost cause ("error sending request: connection reset
/// by peer"), without the URL: reqwest's message would repeat it, and it is noise here.
pub(super) fn describe(error: reqwest::Error) -> String {
    use std::error::Error as _;
    let error = error.without_url();
    let mut root = error.source();
    while let Some(deeper) = root.and_then(|e| e.source()) {
        root = Some(deeper);
    }
    match root {
        Some(root) => format!("{error}: {root}"),
        None => error.to_string(),
    }
}
