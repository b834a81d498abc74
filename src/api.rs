//! The HTTP API v1: routes, JSON in and out, and the one place where every error becomes
//! a status code and a stable error code ([`Failure::describe`]; the README's error
//! table is that match). Request values are parsed into `types` here, at the edge; the
//! service below never sees HTTP.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::ServerConfig;
use crate::guard::GuardError;
use crate::limiter::RateLimited;
use crate::messaging::{
    Content, IdempotencyKey, MessagingError, MessagingService, SendSms, SmsBody,
};
use crate::otp::{OtpError, OtpService, SendOtp, VerifyOtp};
use crate::sender::SendError;
use crate::store::{Fault, MessageDetail, StoreError};
use crate::telemetry::{self, Kept};
use crate::templates::TemplateError;
use crate::twilio::TwilioError;
use crate::types::{Caller, Channel, InvalidInput, OtpCode, PhoneNumber, Purpose, Region, UserId};

pub struct Api {
    service: OtpService,
    messaging: Arc<MessagingService>,
    max_body_bytes: usize,
    body_timeout: Duration,
    metrics: PrometheusHandle,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
enum Route {
    SendOtp,
    VerifyOtp,
    TestTwilio,
    Status,
    Messages,
    SendSms,
    Message(i64),
    StatusCallback,
    Audit,
    Purge,
    Health,
    Metrics,
    OpenApi,
}

impl Route {
    /// Paths match the backend's existing API; the trailing slash is optional.
    fn find(path: &str) -> Option<(Route, &'static str)> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some(id) = path.strip_prefix("/api/v1/messaging/messages/") {
            // Positive decimal ids only: "+1", "01" and "1e3" name no message.
            let id = id
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0 && id.bytes().all(|b| b.is_ascii_digit()))?;
            return Some((Route::Message(id), "GET"));
        }
        Some(match path {
            "/api/v1/messaging/send-otp" => (Route::SendOtp, "POST"),
            "/api/v1/messaging/verify-otp" => (Route::VerifyOtp, "POST"),
            "/api/v1/messaging/test-twilio" => (Route::TestTwilio, "GET"),
            "/api/v1/messaging/status" => (Route::Status, "GET"),
            "/api/v1/messaging/messages" => (Route::Messages, "GET"),
            "/api/v1/messaging/send-sms" => (Route::SendSms, "POST"),
            "/api/v1/messaging/twilio/status-callback" => (Route::StatusCallback, "POST"),
            "/api/v1/messaging/audit" => (Route::Audit, "GET"),
            "/api/v1/messaging/purge" => (Route::Purge, "POST"),
            "/healthz" => (Route::Health, "GET"),
            "/metrics" => (Route::Metrics, "GET"),
            "/api/v1/openapi.json" => (Route::OpenApi, "GET"),
            _ => return None,
        })
    }

    /// The slot of this route's kept metric handles, and of its name in [`ROUTE_NAMES`].
    fn slot(route: Option<Route>) -> usize {
        match route {
            Some(Route::SendOtp) => 0,
            Some(Route::VerifyOtp) => 1,
            Some(Route::TestTwilio) => 2,
            Some(Route::Status) => 3,
            Some(Route::Messages) => 4,
            Some(Route::SendSms) => 5,
            Some(Route::Message(_)) => 6,
            Some(Route::StatusCallback) => 7,
            Some(Route::Audit) => 8,
            Some(Route::Purge) => 9,
            Some(Route::Health) => 10,
            Some(Route::Metrics) => 11,
            Some(Route::OpenApi) => 12,
            None => 13,
        }
    }
}

/// The `route` label of the request metrics, by [`Route::slot`]; "unknown" for no route.
const ROUTE_NAMES: [&str; 14] = [
    "send_otp",
    "verify_otp",
    "test_twilio",
    "status",
    "messages",
    "send_sms",
    "message",
    "status_callback",
    "audit",
    "purge",
    "healthz",
    "metrics",
    "openapi",
    "unknown",
];

/// Routes, and "unknown" for no route: the slots of the kept request metrics.
const ROUTES: usize = ROUTE_NAMES.len();
/// Per route: requests answered 200 (other statuses go through the macro), and the
/// duration histogram.
static HTTP_OK: [Kept<Counter>; ROUTES] = [const { Kept::new() }; ROUTES];
static HTTP_TIME: [Kept<Histogram>; ROUTES] = [const { Kept::new() }; ROUTES];

/// Everything that can go wrong with a request, from the socket to Twilio.
#[derive(Debug)]
enum Failure {
    Forbidden(Caller),
    NotFound,
    MethodNotAllowed(Method),
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

impl From<MessagingError> for Failure {
    fn from(e: MessagingError) -> Self {
        Failure::Messaging(e)
    }
}

impl From<InvalidInput> for Failure {
    fn from(e: InvalidInput) -> Self {
        Failure::Input(e)
    }
}

impl From<OtpError> for Failure {
    fn from(e: OtpError) -> Self {
        Failure::Otp(e)
    }
}

/// An error answer: status, stable code, sentence, details, and extra JSON fields.
struct Described {
    status: StatusCode,
    code: &'static str,
    error: String,
    details: Option<String>,
    extra: Value,
    retry_after: Option<Duration>,
}

impl Described {
    fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        Described {
            status,
            code,
            error: error.into(),
            details: None,
            extra: json!({}),
            retry_after: None,
        }
    }

    fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    fn extra(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }

    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl Failure {
    /// The one match from errors to HTTP answers.
    fn describe(&self) -> Described {
        use StatusCode as S;
        let not_verified = |code, error: &str, details: &str| {
            Described::new(S::BAD_REQUEST, code, error)
                .details(details)
                .extra(json!({"verified": false}))
        };
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
            Failure::MethodNotAllowed(m) => Described::new(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .details(format!("{m} is not allowed here")),
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
            Failure::Input(e) => {
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
            Failure::Otp(e) => match e {
                OtpError::WrongCode { attempts_remaining } => {
                    let details = match attempts_remaining {
                        0 => "no attempts remain; request a new code".to_owned(),
                        1 => "1 attempt remaining".to_owned(),
                        n => format!("{n} attempts remaining"),
                    };
                    not_verified("invalid_otp", "Invalid OTP code", &details)
                        .extra(json!({"verified": false, "attempts_remaining": attempts_remaining}))
                }
                OtpError::Expired => {
                    not_verified("otp_expired", "OTP code has expired", "request a new code")
                }
                OtpError::AlreadyUsed => not_verified(
                    "otp_already_used",
                    "OTP code has already been used",
                    "request a new code",
                ),
                OtpError::NoCode => not_verified(
                    "otp_not_found",
                    "No OTP code to verify",
                    "no code was sent for this phone number and purpose",
                ),
                OtpError::AttemptsExhausted { retry_after } => Described::new(
                    S::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "Too many wrong attempts for this code",
                )
                .details("request a new code")
                .extra(json!({"verified": false}))
                .retry_after(*retry_after),
                OtpError::RateLimited(limited) => rate_limited(limited),
                OtpError::Guard(g) => guard_refused(g),
                OtpError::NoTestNumber => Described::new(
                    S::SERVICE_UNAVAILABLE,
                    "test_phone_not_configured",
                    "No test phone number is configured",
                )
                .details("set twilio.test_phone_number or TEST_PHONE_NUMBER"),
                OtpError::Send(SendError::NotConfigured) => provider_not_configured(),
                OtpError::Send(SendError::ChannelNotConfigured(channel)) => {
                    channel_not_configured(*channel)
                }
                OtpError::Send(SendError::Twilio {
                    error:
                        TwilioError::Rejected {
                            status,
                            code,
                            message,
                            more_info,
                        },
                    ..
                }) => {
                    let details = match code {
                        Some(code) => format!("Twilio error {code}: {message}"),
                        None => format!("Twilio answered HTTP {status}: {message}"),
                    };
                    Described::new(
                        S::BAD_GATEWAY,
                        "twilio_rejected",
                        "Twilio rejected the message",
                    )
                    .details(details)
                    .extra(json!({"twilio_code": code, "twilio_more_info": more_info}))
                }
                OtpError::Send(
                    e @ SendError::Twilio {
                        error: TwilioError::Unavailable { retry_after, .. },
                        ..
                    },
                ) => {
                    let described = Described::new(
                        S::SERVICE_UNAVAILABLE,
                        "twilio_unavailable",
                        "Twilio is unreachable",
                    )
                    .details(e.to_string());
                    // Twilio said when to come back (maybe past our deadline): pass it on.
                    match retry_after {
                        Some(wait) if !wait.is_zero() => described.retry_after(*wait),
                        _ => described,
                    }
                }
                OtpError::Send(
                    e @ SendError::Twilio {
                        error: TwilioError::Client(_),
                        ..
                    },
                ) => Described::new(
                    S::SERVICE_UNAVAILABLE,
                    "twilio_unavailable",
                    "Twilio is unreachable",
                )
                .details(e.to_string()),
                OtpError::Send(SendError::Twilio {
                    error: TwilioError::CircuitOpen { retry_after },
                    ..
                }) => Described::new(
                    S::SERVICE_UNAVAILABLE,
                    "twilio_circuit_open",
                    "Twilio is failing; sends are paused",
                )
                .details(format!(
                    "after repeated Twilio failures no request is made until the circuit \
                     closes; retry in {} s",
                    retry_seconds(*retry_after)
                ))
                .extra(json!({"retry_after": retry_seconds(*retry_after)}))
                .retry_after(*retry_after),
                OtpError::Send(e @ SendError::Outbox { .. }) => Described::new(
                    S::SERVICE_UNAVAILABLE,
                    "outbox_unavailable",
                    "The development outbox cannot be written",
                )
                .details(e.to_string()),
                OtpError::Store(e) => store_failure(e),
            },
            Failure::Messaging(e) => match e {
                MessagingError::Body(why) => {
                    Described::new(S::BAD_REQUEST, "invalid_body", "Invalid message body")
                        .details(why.clone())
                }
                MessagingError::BodyTooLong(segments) => {
                    Described::new(S::BAD_REQUEST, "body_too_long", "Message body is too long")
                        .details(format!(
                            "{} characters; Twilio's limit is {}",
                            segments.chars,
                            crate::segments::MAX_BODY_CHARS
                        ))
                        .extra(json!({
                            "characters": segments.chars,
                            "segments": segments.count,
                            "encoding": segments.encoding.as_str(),
                        }))
                }
                MessagingError::IdempotencyKey(why) => Described::new(
                    S::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Invalid idempotency_key",
                )
                .details(*why),
                MessagingError::SendAt(why) => {
                    Described::new(S::BAD_REQUEST, "invalid_send_at", "Invalid send_at")
                        .details(why.clone())
                }
                MessagingError::ChannelNotConfigured(channel) => channel_not_configured(*channel),
                MessagingError::Guard(g) => guard_refused(g),
                MessagingError::KeyConflict { message_id } => Described::new(
                    S::CONFLICT,
                    "idempotency_key_reused",
                    "This idempotency_key was used for a different request",
                )
                .details("use a new key for a new message")
                .extra(json!({"message_id": message_id})),
                MessagingError::NotFound(id) => {
                    Described::new(S::NOT_FOUND, "message_not_found", "No such message")
                        .details(format!("no message has id {id}"))
                }
                MessagingError::UnknownSid(sid) => {
                    Described::new(S::NOT_FOUND, "message_not_found", "No such message")
                        .details(format!("no message has SID {sid:.40}"))
                }
                MessagingError::NotConfigured => provider_not_configured(),
                MessagingError::CallbacksNotConfigured => Described::new(
                    S::SERVICE_UNAVAILABLE,
                    "callbacks_not_configured",
                    "Status callbacks are not configured",
                )
                .details("set twilio.status_callback_url and twilio.auth_token"),
                MessagingError::BadSignature => Described::new(
                    S::FORBIDDEN,
                    "invalid_signature",
                    "X-Twilio-Signature is missing or wrong",
                )
                .details("the callback was refused and audited"),
                MessagingError::BadCallback => Described::new(
                    S::BAD_REQUEST,
                    "invalid_callback",
                    "Status callback lacks MessageSid or MessageStatus",
                ),
                MessagingError::BodyOrTemplate => Described::new(
                    S::BAD_REQUEST,
                    "invalid_request",
                    "Give either body or template",
                )
                .details("send-sms takes a body, or a template with its variables, not both"),
                MessagingError::Template(e) => {
                    let code = match e {
                        TemplateError::UnknownTemplate(_) => "unknown_template",
                        TemplateError::MissingVariable(_) => "template_variable_missing",
                        TemplateError::UnknownVariable(_) => "template_variable_unknown",
                        // Texts are checked at load; these cannot come from a request.
                        TemplateError::Unclosed
                        | TemplateError::Unopened
                        | TemplateError::BadName(_) => "invalid_template",
                    };
                    Described::new(S::BAD_REQUEST, code, "Cannot render the template")
                        .details(e.to_string())
                }
                MessagingError::RateLimited(limited) => rate_limited(limited),
                MessagingError::Store(e) => store_failure(e),
            },
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
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
        let mut body = json!({"error": d.error, "code": d.code});
        if let Some(details) = d.details {
            body["details"] = Value::String(details);
        }
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, d.extra) {
            body.extend(extra);
        }
        let mut response = json_response(d.status, &body);
        if let Some(wait) = d.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_seconds(wait)));
        }
        response
    }
}

fn rate_limited(limited: &RateLimited) -> Described {
    let seconds = retry_seconds(limited.retry_after);
    Described::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
    )
    .details(format!(
        "{} limit reached; retry in {seconds} s",
        limited.limit
    ))
    .extra(json!({"limit": limited.limit.as_str()}))
    .retry_after(limited.retry_after)
}

/// The cost guard's refusals, for codes and plain messages alike.
fn guard_refused(g: &GuardError) -> Described {
    use StatusCode as S;
    let d = match g {
        // 422, not 403: the caller may use otpd; this destination is
        // refused by policy, and sending again will not change that.
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
        // 503, not 429: the whole service is out of budget until UTC
        // midnight, whoever asks; 5xx is what operators' alerts watch.
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
    let mut extra = d.extra.clone();
    extra["rule"] = json!(g.rule());
    d.extra(extra)
}

fn channel_not_configured(channel: Channel) -> Described {
    Described::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "channel_not_configured",
        "This channel is not configured",
    )
    .details(format!(
        "{channel} needs a sender: set twilio.whatsapp_from (or messaging_service_sid)"
    ))
}

fn provider_not_configured() -> Described {
    Described::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_not_configured",
        "SMS provider is not configured",
    )
    .details("set the Twilio credentials, or run with --dev for a local outbox")
}

/// Store faults an operator can clear without a restart are each named, with a retry
/// hint; the daemon picks up again by itself.
fn store_failure(e: &StoreError) -> Described {
    use StatusCode as S;
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
        Fault::Other => Described::new(
            S::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The OTP store is unavailable",
        )
        .details("see the daemon's log"),
    }
}

/// Whole seconds, rounded up and never 0: "retry now" would invite a busy loop.
fn retry_seconds(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

/// The `status` label: the usual codes as static strings, so counting a request
/// allocates nothing.
fn status_label(status: StatusCode) -> metrics::SharedString {
    let known = match status.as_u16() {
        200 => "200",
        202 => "202",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => return status.as_str().to_owned().into(),
    };
    known.into()
}

// The two hot answers as structs rather than `json!` trees: serialized straight to
// bytes, without building and dropping a map per request. Fields in alphabetical
// order, as serde_json's map writes them, so the bytes are the same as before
// (`hot_answers_are_the_bytes_json_wrote`).

#[derive(Serialize)]
struct Sent {
    channel: &'static str,
    expires_at: String,
    message: &'static str,
    otp_id: i64,
}

#[derive(Serialize)]
struct Verified {
    message: &'static str,
    otp_id: i64,
    verified: bool,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The query string of the read endpoints: `since` (a duration back from now, "1h",
/// or an RFC 3339 time), `limit` (1-1000, default 100) and filters such as `phone`.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, Failure> {
        Ok(Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        ))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn since(&self, now: SystemTime) -> Result<SystemTime, Failure> {
        let text = self.get("since").unwrap_or("24h");
        if let Ok(ago) = humantime::parse_duration(text) {
            return Ok(now.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH));
        }
        humantime::parse_rfc3339_weak(text).map_err(|_| {
            Failure::InvalidQuery(format!(
                "since={text:?} is neither a duration (1h) nor an RFC 3339 time"
            ))
        })
    }

    fn limit(&self) -> Result<u32, Failure> {
        match self.get("limit") {
            None => Ok(100),
            Some(text) => text
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    Failure::InvalidQuery(format!("limit={text:?} is not a number from 1 to 1000"))
                }),
        }
    }
}

// ---- Request bodies, as callers send them ----

/// Django user ids are integers; accept `42` as well as `"42"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserIdField {
    Text(String),
    Number(i64),
}

impl UserIdField {
    fn parse(field: Option<UserIdField>) -> Result<Option<UserId>, InvalidInput> {
        match field {
            None => Ok(None),
            Some(UserIdField::Text(s)) => UserId::parse(&s).map(Some),
            Some(UserIdField::Number(n)) => UserId::parse(&n.to_string()).map(Some),
        }
    }
}

#[derive(Deserialize)]
struct SendOtpBody {
    phone_number: String,
    purpose: String,
    #[serde(default)]
    user_id: Option<UserIdField>,
    #[serde(default)]
    locale: Option<String>,
    /// "sms" or "whatsapp"; absent: `messaging.channels` in order.
    #[serde(default)]
    channel: Option<String>,
}

/// Template variables: strings, or numbers written as the caller wrote them.
#[derive(Deserialize)]
#[serde(untagged)]
enum VariableValue {
    Text(String),
    Number(serde_json::Number),
}

#[derive(Deserialize)]
struct SendSmsBody {
    to: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, VariableValue>,
    #[serde(default)]
    user_id: Option<UserIdField>,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// RFC 3339 with any offset; absent or past means now.
    #[serde(default)]
    send_at: Option<String>,
    #[serde(default)]
    channel: Option<String>,
}

fn send_at(text: &str) -> Result<SystemTime, MessagingError> {
    text.parse::<jiff::Timestamp>()
        // Before 1970 is in the past all the same: "send now".
        .map(|t| UNIX_EPOCH + Duration::from_millis(u64::try_from(t.as_millisecond()).unwrap_or(0)))
        .map_err(|_| {
            MessagingError::SendAt(format!(
                "{:.64?} is not an RFC 3339 time such as 2027-01-31T09:00:00+01:00",
                text
            ))
        })
}

fn message_json(m: &MessageDetail) -> Value {
    let history: Vec<Value> = m
        .history
        .iter()
        .map(|e| {
            json!({"at": rfc3339(e.at), "status": e.status, "error_code": e.error_code,
                   "detail": e.detail})
        })
        .collect();
    json!({
        "id": m.id, "kind": m.kind, "channel": m.channel, "otp_id": m.otp_id, "to": m.to,
        "user_id": m.user_id, "status": m.status, "sid": m.sid, "segments": m.segments,
        "created_at": rfc3339(m.created_at), "send_at": m.send_at.map(rfc3339),
        "error_code": m.error_code, "error_message": m.error_message, "history": history,
    })
}

#[derive(Deserialize)]
struct VerifyOtpBody {
    phone_number: String,
    otp_code: String,
    purpose: String,
    #[serde(default)]
    user_id: Option<UserIdField>,
}

impl Api {
    pub fn new(
        service: OtpService,
        messaging: Arc<MessagingService>,
        server: &ServerConfig,
        metrics: PrometheusHandle,
    ) -> Self {
        Api {
            service,
            messaging,
            max_body_bytes: server.max_body_bytes,
            body_timeout: server.request_timeout,
            metrics,
            allowed_uids: server.allowed_uids.clone(),
            allowed_gids: server.allowed_gids.clone(),
        }
    }

    /// With no allow-list, the socket's mode and group are the whole access control.
    fn allows(&self, caller: Caller) -> bool {
        (self.allowed_uids.is_empty() && self.allowed_gids.is_empty())
            || self.allowed_uids.contains(&caller.uid)
            || self.allowed_gids.contains(&caller.gid)
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }

    pub fn service(&self) -> &OtpService {
        &self.service
    }

    /// hyper's service function: never fails, every problem is a JSON answer.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let found = Route::find(req.uri().path());
        // Only the debug line below needs the path after `req` is consumed: no copy
        // per request when it is off.
        let path = log::log_enabled!(log::Level::Debug).then(|| req.uri().path().to_owned());
        let response = match found {
            _ if !self.allows(caller) => Failure::Forbidden(caller).into_response(),
            None => Failure::NotFound.into_response(),
            Some((_, allowed)) if method.as_str() != allowed => {
                let mut response = Failure::MethodNotAllowed(method.clone()).into_response();
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allowed));
                response
            }
            Some((route, _)) => match self.route(route, req, caller).await {
                Ok(response) => response,
                Err(failure) => failure.into_response(),
            },
        };
        let elapsed = started.elapsed();
        let slot = Route::slot(found.map(|(route, _)| route));
        let route = ROUTE_NAMES[slot];
        if response.status() == StatusCode::OK {
            HTTP_OK[slot].with(
                || metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route, "status" => "200"),
                |c| c.increment(1),
            );
        } else {
            metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route, "status" => status_label(response.status()))
                .increment(1);
        }
        HTTP_TIME[slot].with(
            || metrics::histogram!(telemetry::HTTP_DURATION, "route" => route),
            |h| h.record(elapsed),
        );
        log::debug!(
            "{method} {} -> {} in {elapsed:?} (uid {} gid {} pid {:?})",
            path.as_deref().unwrap_or_default(),
            response.status().as_u16(),
            caller.uid,
            caller.gid,
            caller.pid
        );
        Ok(response)
    }

    async fn route(
        &self,
        route: Route,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Response<Full<Bytes>>, Failure> {
        // The real clock is read here, once per request; everything below takes `now`.
        let now = SystemTime::now();
        let service = &self.service;
        match route {
            Route::SendOtp => {
                let bytes = self.body_bytes(req).await?;
                let request =
                    send_request(&bytes, caller, service.purposes(), service.default_region())?;
                let issued = service.send_otp(request, now).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &Sent {
                        channel: issued.channel.as_str(),
                        expires_at: rfc3339(issued.expires_at),
                        message: "OTP sent successfully",
                        otp_id: issued.otp_id,
                    },
                ))
            }
            Route::VerifyOtp => {
                let bytes = self.body_bytes(req).await?;
                let request =
                    verify_request(&bytes, caller, service.purposes(), service.default_region())?;
                let otp_id = service.verify_otp(request, now).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &Verified {
                        message: "OTP verified successfully",
                        otp_id,
                        verified: true,
                    },
                ))
            }
            Route::TestTwilio => {
                let sid = service.send_test_message(now).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"message": format!("Test message sent successfully with SID: {sid}")}),
                ))
            }
            Route::Status => {
                let s = service.status().await?;
                let counts = |rows: &[(String, i64)]| {
                    rows.iter()
                        .map(|(k, n)| (k.clone(), json!(n)))
                        .collect::<serde_json::Map<_, _>>()
                };
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "enabled": s.provider.is_some(),
                        "provider": s.provider,
                        "provider_reachable": s.provider_reachable,
                        "provider_circuit": s.provider_circuit.map(|c| c.name()),
                        "dev_mode": s.dev_mode,
                        "test_phone_configured": s.test_phone_configured,
                        "purposes": s.purposes,
                        "otp_length": s.otp_length,
                        "otp_ttl_seconds": s.otp_ttl.as_secs(),
                        "limiter_keys": s.limiter_keys,
                        "codes": counts(&s.counts.codes),
                        "messages": counts(&s.counts.messages),
                        "version": env!("CARGO_PKG_VERSION"),
                    }),
                ))
            }
            Route::Messages => {
                let query = Query::parse(req.uri().query())?;
                let rows = service
                    .messages_since(query.since(now)?, query.limit()?)
                    .await?;
                let messages: Vec<Value> = rows
                    .into_iter()
                    .map(|m| {
                        json!({
                            "id": m.id, "otp_id": m.otp_id, "created_at": rfc3339(m.created_at),
                            "to": m.to, "channel": m.channel, "provider": m.provider, "sid": m.sid,
                            "status": m.status, "error_code": m.error_code,
                            "error_message": m.error_message, "attempts": m.attempts,
                        })
                    })
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "messages": messages }),
                ))
            }
            Route::SendSms => {
                let body: SendSmsBody = self.json_body(req).await?;
                let content = match (body.body, body.template) {
                    (Some(text), None) => Content::Text(SmsBody::parse(text)?),
                    (None, Some(name)) => Content::Template {
                        name,
                        locale: body.locale,
                        variables: body
                            .variables
                            .into_iter()
                            .map(|(k, v)| match v {
                                VariableValue::Text(s) => (k, s),
                                VariableValue::Number(n) => (k, n.to_string()),
                            })
                            .collect(),
                    },
                    _ => return Err(MessagingError::BodyOrTemplate.into()),
                };
                let request = SendSms {
                    caller,
                    to: PhoneNumber::parse_in(&body.to, service.default_region())?,
                    content,
                    user_id: UserIdField::parse(body.user_id)?,
                    idempotency_key: body
                        .idempotency_key
                        .map(IdempotencyKey::parse)
                        .transpose()?,
                    send_at: body.send_at.as_deref().map(send_at).transpose()?,
                    channel: body.channel.as_deref().map(Channel::parse).transpose()?,
                };
                let accepted = self.messaging.send_sms(request, now).await?;
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({
                        "message_id": accepted.message_id,
                        "status": accepted.status,
                        "segments": accepted.segments.count,
                        "encoding": accepted.segments.encoding.as_str(),
                        "send_at": rfc3339(accepted.send_at),
                        "replayed": accepted.replayed,
                    }),
                ))
            }
            Route::Message(id) => {
                let message = self.messaging.message(id).await?;
                Ok(json_response(StatusCode::OK, &message_json(&message)))
            }
            Route::StatusCallback => {
                let signature = req
                    .headers()
                    .get("x-twilio-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = self.body_bytes(req).await?;
                let params = form_urlencoded::parse(&bytes).into_owned().collect();
                let id = self
                    .messaging
                    .status_callback(params, signature, caller, now)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"message_id": id, "accepted": true}),
                ))
            }
            Route::Audit => {
                let query = Query::parse(req.uri().query())?;
                let region = service.default_region();
                let phone = query
                    .get("phone")
                    .map(|p| PhoneNumber::parse_in(p, region))
                    .transpose()?;
                let rows = service
                    .audit_since(query.since(now)?, phone.as_ref(), query.limit()?)
                    .await?;
                let events: Vec<Value> = rows
                    .into_iter()
                    .map(|a| {
                        json!({
                            "id": a.id, "at": rfc3339(a.at), "otp_id": a.otp_id, "event": a.event,
                            "phone": a.phone, "purpose": a.purpose, "user_id": a.user_id,
                            "detail": a.detail,
                            "peer": a.caller.map(|c| json!({"uid": c.uid, "gid": c.gid, "pid": c.pid})),
                        })
                    })
                    .collect();
                Ok(json_response(StatusCode::OK, &json!({ "events": events })))
            }
            Route::Purge => {
                let purged = service.purge(now).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"deleted": {"codes": purged.otps, "messages": purged.messages, "audit": purged.audit}}),
                ))
            }
            Route::Metrics => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
            Route::OpenApi => {
                // The document is compiled in, so it is the one of this build's API.
                let mut response = Response::new(Full::new(Bytes::from_static(
                    include_str!("../docs/openapi.json").as_bytes(),
                )));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Ok(response)
            }
            Route::Health => {
                service
                    .store()
                    .ping()
                    .await
                    .map_err(|e| Failure::Otp(e.into()))?;
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
        }
    }

    /// Reads a size-capped body within the request timeout and parses it as JSON.
    async fn json_body<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, Failure> {
        parse_json(&self.body_bytes(req).await?)
    }

    /// Reads a size-capped body within the request timeout.
    async fn body_bytes(&self, req: Request<Incoming>) -> Result<Bytes, Failure> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(Failure::BodyTooLarge(self.max_body_bytes));
        }
        let body = Limited::new(req.into_body(), self.max_body_bytes);
        let collected = tokio::time::timeout(self.body_timeout, body.collect())
            .await
            .map_err(|_| Failure::BodyTimeout)?;
        let bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(Failure::BodyTooLarge(self.max_body_bytes));
            }
            Err(_) => return Err(Failure::BodyUnreadable),
        };
        Ok(bytes)
    }
}

// ---- Body bytes to typed requests: pure, so the property tests (src/properties.rs)
// drive exactly the path a request takes, with any bytes. ----

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Failure::InvalidRequest(e),
        _ => Failure::InvalidJson(e),
    })
}

fn send_request(
    bytes: &[u8],
    caller: Caller,
    purposes: &[String],
    region: Option<Region>,
) -> Result<SendOtp, Failure> {
    let body: SendOtpBody = parse_json(bytes)?;
    Ok(SendOtp {
        caller,
        phone: PhoneNumber::parse_in(&body.phone_number, region)?,
        purpose: Purpose::parse(&body.purpose, purposes)?,
        user_id: UserIdField::parse(body.user_id)?,
        locale: body.locale,
        channel: body.channel.as_deref().map(Channel::parse).transpose()?,
    })
}

fn verify_request(
    bytes: &[u8],
    caller: Caller,
    purposes: &[String],
    region: Option<Region>,
) -> Result<VerifyOtp, Failure> {
    let body: VerifyOtpBody = parse_json(bytes)?;
    Ok(VerifyOtp {
        caller,
        phone: PhoneNumber::parse_in(&body.phone_number, region)?,
        code: OtpCode::parse(&body.otp_code)?,
        purpose: Purpose::parse(&body.purpose, purposes)?,
        user_id: UserIdField::parse(body.user_id)?,
    })
}

/// The property tests' view of the request path: the status and stable code a body
/// gets, or the typed request it becomes.
#[cfg(test)]
pub(crate) mod parse {
    use super::*;

    pub(crate) type Outcome<T> = Result<T, (StatusCode, &'static str)>;

    fn outcome<T>(r: Result<T, Failure>) -> Outcome<T> {
        r.map_err(|f| {
            let d = f.describe();
            (d.status, d.code)
        })
    }

    pub(crate) fn send(
        bytes: &[u8],
        purposes: &[String],
        region: Option<Region>,
    ) -> Outcome<SendOtp> {
        let caller = Caller {
            uid: 0,
            gid: 0,
            pid: None,
        };
        outcome(send_request(bytes, caller, purposes, region))
    }

    pub(crate) fn verify(
        bytes: &[u8],
        purposes: &[String],
        region: Option<Region>,
    ) -> Outcome<VerifyOtp> {
        let caller = Caller {
            uid: 0,
            gid: 0,
            pid: None,
        };
        outcome(verify_request(bytes, caller, purposes, region))
    }
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

    #[test]
    fn hot_answers_are_the_bytes_json_wrote() {
        let bytes = |r: Response<Full<Bytes>>| {
            futures_util::FutureExt::now_or_never(r.into_body().collect())
                .and_then(Result::ok)
                .map(|c| c.to_bytes())
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sent = Sent {
            channel: "sms",
            expires_at: rfc3339(at),
            message: "OTP sent successfully",
            otp_id: 42,
        };
        let before = json!({
            "message": "OTP sent successfully",
            "otp_id": 42,
            "expires_at": rfc3339(at),
            "channel": "sms",
        });
        assert_eq!(
            bytes(json_response(StatusCode::OK, &sent)),
            bytes(json_response(StatusCode::OK, &before))
        );
        let verified = Verified {
            message: "OTP verified successfully",
            otp_id: 7,
            verified: true,
        };
        let before = json!({"message": "OTP verified successfully", "verified": true, "otp_id": 7});
        assert_eq!(
            bytes(json_response(StatusCode::OK, &verified)),
            bytes(json_response(StatusCode::OK, &before))
        );
    }

    #[test]
    fn status_labels_are_the_codes() {
        for code in [
            200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 502, 503, 507,
        ] {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(status_label(status).as_ref(), status.as_str());
        }
    }
}
