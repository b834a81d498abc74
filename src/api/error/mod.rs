//! Every way a request can fail, and the one mapping from those errors to an HTTP
//! answer: status, stable `code`, sentence, `details`, extra fields, and the
//! `Retry-After` and `Allow` headers. The README's error table is this folder: the API's
//! own failures here, each service's own errors in `services.rs`, the causes both
//! services share in `shared.rs`.
//!
//! It knows the services' error types but not the handlers. It logs an error only where
//! the caller is told less than the operator needs (store faults, refused callers).

mod services;
mod shared;

use std::time::Duration;

use hyper::header::{ALLOW, HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Answer, json_response};
use crate::messaging::MessagingError;
use crate::otp::OtpError;
use crate::store::StoreError;
use crate::types::{Caller, InvalidInput};
use services::{messaging_failed, otp_failed};

use StatusCode as S;

/// Everything that can go wrong with a request, from the socket to Twilio.
#[derive(Debug)]
pub(super) enum Failure {
    Forbidden(Caller),
    NotFound,
    /// `allow` is the one method the route answers.
    MethodNotAllowed {
        method: Method,
        allow: &'static str,
    },
    BodyTooLarge(usize),
    BodyTimeout,
    BodyUnreadable,
    InvalidJson(serde_json::Error),
    InvalidRequest(serde_json::Error),
    InvalidQuery(String),
    Input(InvalidInput),
    Otp(OtpError),
    Messaging(MessagingError),
}

impl From<InvalidInput> for Failure {
    fn from(e: InvalidInput) -> Self {
        Failure::Input(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Otp(OtpError::Store(e))
    }
}

impl From<OtpError> for Failure {
    fn from(e: OtpError) -> Self {
        Failure::Otp(e)
    }
}

impl From<MessagingError> for Failure {
    fn from(e: MessagingError) -> Self {
        Failure::Messaging(e)
    }
}

/// An error answer: status, stable code, sentence, details, and extra JSON fields.
pub(super) struct Described {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    error: String,
    details: Option<String>,
    extra: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl Described {
    fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        Described {
            status,
            code,
            error: error.into(),
            details: None,
            extra: Map::new(),
            retry_after: None,
        }
    }

    fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Adds the fields of `extra` (an object) to the answer.
    fn extra(mut self, extra: Value) -> Self {
        if let Value::Object(fields) = extra {
            self.extra.extend(fields);
        }
        self
    }

    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// The body of every error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl Failure {
    /// The one match from errors to HTTP answers.
    pub(super) fn describe(&self) -> Described {
        match self {
            Failure::Forbidden(caller) => {
                Described::new(S::FORBIDDEN, "forbidden", "This caller may not use otpd").details(
                    format!(
                        "uid {} gid {} is not in server.allowed_uids or server.allowed_gids",
                        caller.uid, caller.gid
                    ),
                )
            }
            Failure::NotFound => Described::new(S::NOT_FOUND, "not_found", "No such endpoint"),
            Failure::MethodNotAllowed { method, .. } => Described::new(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .details(format!("{method} is not allowed here")),
            Failure::BodyTooLarge(max) => Described::new(
                S::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request body too large",
            )
            .details(format!("the limit is {max} bytes")),
            Failure::BodyTimeout => Described::new(
                S::REQUEST_TIMEOUT,
                "request_timeout",
                "Request body not received in time",
            ),
            Failure::BodyUnreadable => Described::new(
                S::BAD_REQUEST,
                "invalid_request",
                "Request body could not be read",
            ),
            Failure::InvalidJson(e) => Described::new(
                S::BAD_REQUEST,
                "invalid_json",
                "Request body is not valid JSON",
            )
            .details(e.to_string()),
            Failure::InvalidRequest(e) => Described::new(
                S::BAD_REQUEST,
                "invalid_request",
                "Request body has missing or mistyped fields",
            )
            .details(e.to_string()),
            Failure::InvalidQuery(why) => {
                Described::new(S::BAD_REQUEST, "invalid_query", "Invalid query string")
                    .details(why.clone())
            }
            Failure::Input(e) => invalid_input(e),
            Failure::Otp(e) => otp_failed(e),
            Failure::Messaging(e) => messaging_failed(e),
        }
    }

    pub(super) fn into_response(self) -> Answer {
        let d = self.describe();
        match &self {
            // Logged here, once: the caller only learns that the store is unavailable.
            Failure::Otp(OtpError::Store(e)) | Failure::Messaging(MessagingError::Store(e)) => {
                log::error!("store: {e}")
            }
            Failure::Forbidden(c) => log::warn!(
                "refused a caller not on the allow-list: uid {} gid {} pid {:?}",
                c.uid,
                c.gid,
                c.pid
            ),
            _ => {}
        }
        let body = ErrorBody {
            error: &d.error,
            code: d.code,
            details: d.details.as_deref(),
            extra: &d.extra,
        };
        let mut response = json_response(d.status, &body);
        let headers = response.headers_mut();
        if let Some(wait) = d.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_seconds(wait)));
        }
        if let Failure::MethodNotAllowed { allow, .. } = self {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

fn invalid_input(e: &InvalidInput) -> Described {
    let (code, details) = match e {
        InvalidInput::PhoneNumber(why) => ("invalid_phone_number", why.to_string()),
        InvalidInput::Purpose(allowed) => (
            "invalid_purpose",
            format!("purpose must be one of: {allowed}"),
        ),
        InvalidInput::UserId(why) => ("invalid_user_id", why.to_string()),
        InvalidInput::OtpCode(why) => ("invalid_otp_code", why.to_string()),
        InvalidInput::Channel(why) => ("invalid_channel", why.clone()),
    };
    Described::new(S::BAD_REQUEST, code, e.to_string()).details(details)
}

/// Whole seconds, rounded up and never 0: "retry now" would invite a busy loop.
fn retry_seconds(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(200)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2001)), 3);
    }
}
