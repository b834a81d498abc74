//! Twilio's Messages API over reqwest (rustls): one form-encoded POST per message, Basic
//! auth with the Account SID + Auth Token or an API key, and Twilio's answers turned
//! into typed results. Knows nothing of OTPs, the store or HTTP serving.

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::config::{Secret, TwilioConfig, TwilioFrom};
use crate::types::PhoneNumber;

#[derive(Debug, Error)]
pub enum TwilioError {
    /// Twilio answered and refused (4xx): bad number, bad credentials, blocked, ...
    #[error("Twilio rejected the message (HTTP {status}, code {}): {message}", code.map_or("none".to_owned(), |c| c.to_string()))]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
    },
    /// No usable answer: connection failure, timeout, or a 429/5xx from Twilio.
    #[error("Twilio is unavailable: {0}")]
    Unavailable(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The fields of the created message resource that otpd keeps.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

pub struct TwilioClient {
    http: reqwest::Client,
    messages_url: String,
    auth_user: String,
    auth_secret: Secret,
    from: TwilioFrom,
    status_callback: Option<String>,
}

impl TwilioClient {
    pub fn new(config: &TwilioConfig) -> Result<Self, TwilioError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Client(e.to_string()))?;
        Ok(TwilioClient {
            http,
            // The Account SID stays in the path even when an API key authenticates.
            messages_url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                config.api_base, config.account_sid
            ),
            auth_user: config.auth_user.clone(),
            auth_secret: config.auth_secret.clone(),
            from: config.from.clone(),
            status_callback: config.status_callback_url.clone(),
        })
    }

    fn form<'a>(&'a self, to: &'a PhoneNumber, body: &'a str) -> Vec<(&'static str, &'a str)> {
        let from = match &self.from {
            TwilioFrom::Number(number) => ("From", number.as_str()),
            TwilioFrom::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let mut form = vec![("To", to.as_str()), from, ("Body", body)];
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.as_str()));
        }
        form
    }

    /// Creates one outbound message (CreateMessage).
    pub async fn send(&self, to: &PhoneNumber, body: &str) -> Result<Message, TwilioError> {
        let response = self
            .http
            .post(&self.messages_url)
            .basic_auth(&self.auth_user, Some(self.auth_secret.expose()))
            .form(&self.form(to, body))
            .send()
            .await
            // Without the URL: reqwest's message would repeat it, and it is noise here.
            .map_err(|e| TwilioError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TwilioError::Unavailable(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                TwilioError::Unavailable(format!(
                    "unreadable answer to a {status} from Twilio: {e}"
                ))
            });
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let message = error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        // 429 and 5xx say "not now", not "never": the caller may retry later.
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(TwilioError::Unavailable(format!(
                "HTTP {status}: {message}"
            )));
        }
        Err(TwilioError::Rejected {
            status: status.as_u16(),
            code: error.as_ref().and_then(|e| e.code),
            message,
            more_info: error.and_then(|e| e.more_info),
        })
    }
}
