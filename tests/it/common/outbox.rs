//! What the outbox tests share: send-sms, one message with its history, waiting for a
//! status (the workers are asynchronous), what the mock Twilio holds per body, and a
//! signed status callback.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use super::mock_twilio::DEFAULT_AUTH_TOKEN;
use super::{Daemon, MockTwilio, Reply, request_with};

pub const SEND_SMS: &str = "/api/v1/messaging/send-sms/";
pub const CALLBACK: &str = "/api/v1/messaging/twilio/status-callback/";
/// The public URL the tests configure as `twilio.status_callback_url`.
pub const CALLBACK_URL: &str = "https://backend.example.com/otpd/status-callback/";

pub async fn send_sms(daemon: &Daemon, body: Value) -> Reply {
    daemon.post(SEND_SMS, &body).await
}

/// `GET /messages/{id}`, which must answer 200.
pub async fn message(daemon: &Daemon, id: i64) -> Value {
    let reply = daemon
        .get(&format!("/api/v1/messaging/messages/{id}"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

/// Polls until message `id` satisfies `done` (bounded by `within`).
pub async fn wait_for(
    daemon: &Daemon,
    id: i64,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let m = message(daemon, id).await;
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} never {what}: {m}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until message `id` has `status`.
pub async fn wait_for_status(daemon: &Daemon, id: i64, status: &str) -> Value {
    let what = format!("reached {status}");
    wait_for(daemon, id, Duration::from_secs(15), &what, |m| {
        m["status"] == status
    })
    .await
}

/// The statuses of a message's history, oldest first.
pub fn statuses(m: &Value) -> Vec<String> {
    history(m).into_iter().map(|(status, _)| status).collect()
}

/// The history as (status, detail) pairs.
pub fn history(m: &Value) -> Vec<(String, String)> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Messages the mock created (201) with this body.
pub fn created_with(mock: &MockTwilio, body: &str) -> usize {
    mock.messages().iter().filter(|m| m.body == body).count()
}

/// CreateMessage requests that reached the mock with this body, answered or not.
pub fn posted_with(mock: &MockTwilio, body: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.field("Body") == Some(body))
        .count()
}

/// The `id` of a 202 from send-sms.
pub fn accepted_id(reply: &Reply) -> i64 {
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    reply.json["message_id"].as_i64().unwrap()
}

/// A status callback as Twilio posts it: form fields, signed with the mock's auth token
/// over [`CALLBACK_URL`] unless `signature` is given.
pub async fn callback(daemon: &Daemon, params: &[(&str, &str)], signature: Option<&str>) -> Reply {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&owned)
        .finish();
    let good = otpd::twilio::webhook::sign(DEFAULT_AUTH_TOKEN, CALLBACK_URL, &owned);
    let signature = signature.unwrap_or(&good);
    request_with(
        &daemon.socket(),
        Method::POST,
        CALLBACK,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", signature),
        ],
        Some(body.into_bytes()),
    )
    .await
}
