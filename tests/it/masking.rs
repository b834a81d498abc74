//! Phone numbers inside Twilio's own error texts (21211 "The 'To' number +1500... is not
//! a valid phone number.", 21612, 21408, 21614, 21212, and a 5xx naming one) never reach
//! the daemon's log, the audit trail's `detail`, a message's history or the API's
//! `details` in full: for codes (send-otp) and plain messages (send-sms, the outbox).

use std::time::{Duration, Instant};

use crate::common::mock_twilio::{Fault, magic};
use crate::common::*;
use serde_json::{Value, json};

/// The numbers Twilio's texts name, as digits: no full one may appear anywhere.
const NAMED: [&str; 6] = [
    magic::TO_INVALID,
    magic::TO_UNROUTABLE,
    magic::TO_NO_INTERNATIONAL,
    magic::TO_NOT_MOBILE,
    magic::FROM_INVALID,
    "+34600111999",
];

fn assert_no_full_number(place: &str, text: &str) {
    for number in NAMED {
        let digits = number.trim_start_matches('+');
        assert!(
            !text.contains(digits),
            "{place} has {number} in full: {text}"
        );
    }
}

async fn message(otpd: &Daemon, id: i64) -> Value {
    otpd.get(&format!("/api/v1/messaging/messages/{id}"))
        .await
        .json
}

/// Waits for plain message `id` to fail (the outbox workers send it asynchronously).
async fn failed_message(otpd: &Daemon, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = message(otpd, id).await;
        if m["status"] == "failed" {
            return m;
        }
        assert!(Instant::now() < deadline, "message {id} never failed: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn numbers_in_twilio_error_texts_are_masked_everywhere_they_are_kept() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "send_deadline = \"1s\"")
        .set("messaging", "max_attempts = 1")
        .start();
    let to_numbers = [
        (magic::TO_INVALID, 21211),
        (magic::TO_UNROUTABLE, 21612),
        (magic::TO_NO_INTERNATIONAL, 21408),
        (magic::TO_NOT_MOBILE, 21614),
    ];
    let mut details = Vec::new();
    let mut ids = Vec::new();
    for (to, code) in to_numbers {
        let reply = otpd.send_otp(send_body(to, "login", None)).await;
        reply.assert_error(502, "twilio_rejected");
        assert_eq!(reply.json["twilio_code"], code);
        let text = reply.json["details"].as_str().unwrap().to_owned();
        assert!(
            text.contains("*****"),
            "{code}: not masked, or no number: {text}"
        );
        details.push(text);

        let queued = otpd
            .post(
                "/api/v1/messaging/send-sms/",
                &json!({"to": to, "body": "Your table is booked."}),
            )
            .await;
        assert_eq!(queued.status, 202, "{:?}", queued.json);
        ids.push(queued.json["message_id"].as_i64().unwrap());
    }
    for details in &details {
        assert_no_full_number("API details", details);
    }

    for id in &ids {
        let m = failed_message(&otpd, *id).await;
        assert_no_full_number("message error_message", &m["error_message"].to_string());
        for entry in m["history"].as_array().unwrap() {
            assert_no_full_number("message history", &entry.to_string());
        }
    }
    let listed = otpd.get("/api/v1/messaging/messages/?since=1h").await.json;
    for m in listed["messages"].as_array().unwrap() {
        assert_no_full_number(
            "message list error_message",
            &m["error_message"].to_string(),
        );
    }
    let audit = otpd
        .get("/api/v1/messaging/audit/?since=1h&limit=1000")
        .await
        .json;
    let events = audit["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["event"] == "send_failed"),
        "{audit}"
    );
    for event in events {
        assert_no_full_number("audit detail", &event["detail"].to_string());
    }

    // A wrong From: Twilio's 21212 names the account's own sender.
    let bad_from = Setup::new()
        .twilio(&mock)
        .set(
            "twilio",
            &format!("from_number = \"{}\"", magic::FROM_INVALID),
        )
        .start();
    let reply = bad_from.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 21212);
    assert_no_full_number(
        "API details (21212)",
        reply.json["details"].as_str().unwrap(),
    );

    // A 5xx whose text names a number: "unavailable", its reason kept and shown too.
    let flaky = MockTwilio::start(MockOptions::default());
    flaky.script(
        (0..20).map(|_| Fault::error(500, 20500, "Internal error sending to +34600111999", None)),
    );
    let unavailable = Setup::new()
        .twilio(&flaky)
        .set("twilio", "send_deadline = \"1s\"")
        .start();
    let reply = unavailable.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "twilio_unavailable");
    assert_no_full_number("API details (5xx)", reply.json["details"].as_str().unwrap());
    let audit = unavailable
        .get("/api/v1/messaging/audit/?since=1h")
        .await
        .json;
    for event in audit["events"].as_array().unwrap() {
        assert_no_full_number("audit detail (5xx)", &event["detail"].to_string());
    }

    // The daemons' logs (stderr, at debug level), after everything above; they did
    // record the refusals.
    assert!(otpd.log().contains("21211"), "{}", otpd.log());
    assert_no_full_number("the log", &otpd.log());
    assert_no_full_number("the log (21212)", &bad_from.log());
    assert_no_full_number("the log (5xx)", &unavailable.log());
}
