//! The HTTP side of one exchange: what arrived, recorded; and the answer, after the
//! configured latency, whole or (for a slow-body fault) in two parts.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response};

use serde_json::Value;

use super::faults::Fault;
use super::{Created, Outcome, Shared, hex32, routes};

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Reads and records what arrived (status 0 until answered).
pub(super) async fn read_request(req: Request<Incoming>) -> (RecordedRequest, bool, Method) {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let header_text = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let authorization = header_text(header::AUTHORIZATION);
    let content_type = header_text(header::CONTENT_TYPE);
    let raw = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let is_form = content_type.as_deref().is_some_and(|value| {
        value.split(';').next().is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    let form = if is_form {
        form_urlencoded::parse(&raw).into_owned().collect()
    } else {
        Vec::new()
    };
    let record = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        authorization,
        content_type,
        form,
        status: 0,
        body: String::from_utf8_lossy(&raw).into_owned(),
        response_body: String::new(),
        received_at: Instant::now(),
        fault: None,
    };
    (record, is_form, method)
}

/// Records the request with its outcome (and what it created), then answers after the
/// configured latency; with `slow`, half the body goes at once and the rest after that pause.
pub(super) async fn answer(
    shared: &Shared,
    mut record: RecordedRequest,
    outcome: Outcome,
    slow: Option<Duration>,
) -> Response<Body> {
    let body = outcome.body.to_string();
    record.status = outcome.status.as_u16();
    record.response_body.clone_from(&body);
    let latency = {
        let mut state = shared.state();
        state.requests.push(record);
        match outcome.created {
            Some(Created::Message(message)) => state.messages.push(message),
            Some(Created::Call(call)) => state.calls.push(call),
            None => {}
        }
        state.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let body = Bytes::from(body);
    let length = body.len();
    let body: Body = match slow {
        None => Full::new(body).boxed_unsync(),
        Some(pause) => {
            let (first, rest) = (body.slice(..length / 2), body.slice(length / 2..));
            let parts = futures_util::stream::iter([(first, Duration::ZERO), (rest, pause)]).then(
                |(data, wait)| async move {
                    tokio::time::sleep(wait).await;
                    Ok::<_, Infallible>(Frame::data(data))
                },
            );
            StreamBody::new(parts).boxed_unsync()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = outcome.status;
    // The full length up front, as Twilio sends it: the client waits for every byte.
    if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, value);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(request_id) = HeaderValue::from_str(&format!("RQ{}", hex32())) {
        headers.insert(HeaderName::from_static("twilio-request-id"), request_id);
    }
    for (name, value) in outcome.headers {
        headers.insert(name, value);
    }
    response
}

/// One HTTP request the mock received (accepted or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// URI path without the query string.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// Raw `Authorization` header.
    pub authorization: Option<String>,
    /// Raw `Content-Type` header.
    pub content_type: Option<String>,
    /// Decoded form fields in order (empty unless the body was form-urlencoded).
    pub form: Vec<(String, String)>,
    /// Status answered; `0` when hung or reset.
    pub status: u16,
    /// Raw request body (lossy UTF-8).
    pub body: String,
    /// JSON body answered (empty when hung or reset).
    pub response_body: String,
    /// When the request (headers and body) had arrived.
    pub received_at: Instant,
    /// The scripted fault it got, if any.
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// First value of form field `name` (case-sensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }

    /// All values of form field `name` (for the array fields `MediaUrl`, `PersistentAction`).
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// First value of query parameter `name` (case-sensitive).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    /// Decoded Basic-auth `(username, password)`, if the header is well-formed.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        self.authorization
            .as_deref()
            .and_then(routes::parse_basic_auth)
    }

    /// The answered JSON, parsed (`None` when hung).
    pub fn response_json(&self) -> Option<Value> {
        serde_json::from_str(&self.response_body).ok()
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
