//! General messaging through the real binary: `send-sms` into the durable outbox, the
//! workers sending through the mock Twilio, idempotency, scheduling, segment counts,
//! `kill -9` mid-queue (mid-send: `outbox_recovery.rs`), and signed status callbacks.

use std::time::{Duration, Instant, SystemTime};

use crate::common::mock_twilio::{DEFAULT_AUTH_TOKEN, magic};
use crate::common::outbox::{CALLBACK, CALLBACK_URL, callback, wait_for_status};
use crate::common::{Daemon, MockOptions, MockTwilio, Reply, Setup, request_with};
use hyper::Method;
use serde_json::{Value, json};

const SEND_SMS: &str = "/api/v1/messaging/send-sms/";
const TO: &str = "+34600111222";

fn setup(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set(
            "twilio",
            &format!("status_callback_url = \"{CALLBACK_URL}\""),
        )
        .set("messaging", "retry_delay = \"200ms\"")
}

async fn send_sms(daemon: &Daemon, body: Value) -> Reply {
    daemon.post(SEND_SMS, &body).await
}

async fn message(daemon: &Daemon, id: i64) -> Value {
    let reply = daemon
        .get(&format!("/api/v1/messaging/messages/{id}"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

fn statuses(m: &Value) -> Vec<String> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

fn sent_bodies(mock: &MockTwilio, body: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.field("Body") == Some(body))
        .count()
}

#[tokio::test]
async fn a_message_is_accepted_queued_then_sent_once_with_its_history() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();

    let reply = send_sms(
        &daemon,
        json!({"to": "+34 600 11 12 22", "body": "Your table for 4 is booked for 21:00.", "user_id": 42}),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    assert_eq!(reply.json["status"], "queued");
    assert_eq!(reply.json["segments"], 1);
    assert_eq!(reply.json["encoding"], "GSM-7");
    assert_eq!(reply.json["replayed"], false);
    let id = reply.json["message_id"].as_i64().unwrap();

    let m = wait_for_status(&daemon, id, "sent").await;
    assert_eq!(m["to"], TO);
    assert_eq!(m["kind"], "sms");
    assert_eq!(m["user_id"], "42");
    assert_eq!(statuses(&m), ["queued", "sending", "sent"]);
    let sent = mock.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(m["sid"], sent[0].sid.as_str());
    assert_eq!(sent[0].to, TO);
    // Twilio is told where to post the delivery status.
    assert_eq!(
        mock.requests()[0].field("StatusCallback"),
        Some(CALLBACK_URL)
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_message_and_sends_once() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    let body =
        json!({"to": TO, "body": "Reminder: dentist at 10:00", "idempotency_key": "reminder-77"});

    let first = send_sms(&daemon, body.clone()).await;
    assert_eq!(first.status, 202, "{:?}", first.json);
    let id = first.json["message_id"].as_i64().unwrap();
    wait_for_status(&daemon, id, "sent").await;

    let again = send_sms(&daemon, body).await;
    assert_eq!(again.status, 202, "{:?}", again.json);
    assert_eq!(again.json["message_id"], id);
    assert_eq!(again.json["replayed"], true);
    assert_eq!(again.json["status"], "sent");

    let other = send_sms(
        &daemon,
        json!({"to": TO, "body": "Something else", "idempotency_key": "reminder-77"}),
    )
    .await;
    other.assert_error(409, "idempotency_key_reused");
    assert_eq!(other.json["message_id"], id);

    // Nothing can be sent later: ids are rowids (max + 1), so a second message for the
    // key would be the next id, and the first one's history records its one send.
    daemon
        .get(&format!("/api/v1/messaging/messages/{}", id + 1))
        .await
        .assert_error(404, "message_not_found");
    assert_eq!(
        statuses(&message(&daemon, id).await),
        ["queued", "sending", "sent"]
    );
    assert_eq!(mock.requests().len(), 1, "one Twilio call for one key");
}

#[tokio::test]
async fn segments_are_counted_for_gsm7_extended_and_unicode_bodies() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    let cases = [
        ("a".repeat(160), 1, "GSM-7"),
        ("a".repeat(161), 2, "GSM-7"),
        ("€".repeat(80), 1, "GSM-7"),
        ("€".repeat(81), 2, "GSM-7"),
        (format!("{}ó", "a".repeat(69)), 1, "UCS-2"),
        (format!("{}ó", "a".repeat(70)), 2, "UCS-2"),
        ("😀".repeat(36), 2, "UCS-2"),
    ];
    for (body, segments, encoding) in cases {
        let reply = send_sms(&daemon, json!({"to": TO, "body": body})).await;
        assert_eq!(reply.status, 202, "{:?}", reply.json);
        assert_eq!(reply.json["segments"], segments, "{body}");
        assert_eq!(reply.json["encoding"], encoding, "{body}");
        // The mock counts independently; simple bodies must agree.
        assert_eq!(
            crate::common::mock_twilio::segments(&body),
            segments,
            "{body}"
        );
    }

    let too_long = send_sms(&daemon, json!({"to": TO, "body": "ó".repeat(1601)})).await;
    too_long.assert_error(400, "body_too_long");
    assert_eq!(too_long.json["characters"], 1601);
    assert_eq!(too_long.json["segments"], 24);
    assert_eq!(too_long.json["encoding"], "UCS-2");
    let at_limit = send_sms(&daemon, json!({"to": TO, "body": "a".repeat(1600)})).await;
    assert_eq!(at_limit.status, 202, "{:?}", at_limit.json);
    assert_eq!(at_limit.json["segments"], 11);
}

#[tokio::test]
async fn bad_requests_get_stable_codes_and_queue_nothing() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    // Bracketed by two good messages: ids are rowids (max + 1), so consecutive ids prove
    // that no bad request left a message behind to be sent later.
    let before = send_sms(&daemon, json!({"to": TO, "body": "before"})).await;
    let before = before.json["message_id"].as_i64().unwrap();
    let cases = [
        (json!({"to": TO, "body": "  "}), 400, "invalid_body"),
        (json!({"to": TO, "body": "a\u{0}b"}), 400, "invalid_body"),
        (
            json!({"to": "12", "body": "hi"}),
            400,
            "invalid_phone_number",
        ),
        (json!({"to": TO}), 400, "invalid_request"),
        (
            json!({"to": TO, "body": "hi", "send_at": "tomorrow"}),
            400,
            "invalid_send_at",
        ),
        (
            json!({"to": TO, "body": "hi", "send_at": "2199-01-01T00:00:00Z"}),
            400,
            "invalid_send_at",
        ),
        (
            json!({"to": TO, "body": "hi", "channel": "fax"}),
            400,
            "invalid_channel",
        ),
        (
            json!({"to": TO, "body": "hi", "idempotency_key": "has space"}),
            400,
            "invalid_idempotency_key",
        ),
        (
            json!({"to": TO, "body": "hi", "idempotency_key": "k".repeat(256)}),
            400,
            "invalid_idempotency_key",
        ),
    ];
    for (body, status, code) in cases {
        send_sms(&daemon, body).await.assert_error(status, code);
    }
    daemon
        .get("/api/v1/messaging/messages/999")
        .await
        .assert_error(404, "message_not_found");
    daemon
        .get("/api/v1/messaging/messages/abc")
        .await
        .assert_error(404, "not_found");
    let after = send_sms(&daemon, json!({"to": TO, "body": "after"})).await;
    assert_eq!(after.json["message_id"].as_i64(), Some(before + 1));
    wait_for_status(&daemon, before, "sent").await;
    wait_for_status(&daemon, before + 1, "sent").await;
    let bodies: Vec<String> = mock.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn a_permanent_twilio_refusal_marks_the_message_failed_after_one_call() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    let reply = send_sms(
        &daemon,
        json!({"to": magic::TO_UNSUBSCRIBED, "body": "hello"}),
    )
    .await;
    let id = reply.json["message_id"].as_i64().unwrap();
    let m = wait_for_status(&daemon, id, "failed").await;
    assert_eq!(m["error_code"], 21610);
    // The history is written in the transaction that decides: a retry would have put the
    // message back in the queue ("queued") instead of "failed", and a failed message
    // keeps no body to send. So the one request seen now is all there will be.
    assert_eq!(statuses(&m), ["queued", "sending", "failed"]);
    assert_eq!(
        mock.requests().len(),
        1,
        "a permanent refusal is not retried"
    );
}

#[tokio::test]
async fn an_unreachable_twilio_is_retried_from_the_outbox_until_it_answers() {
    let mock = MockTwilio::start(MockOptions::default());
    // Refused at connect: known not sent, so each attempt goes back to the queue.
    mock.set_down(true);
    let daemon = setup(&mock)
        .set("twilio", "breaker_cooldown = \"1s\"")
        .start();
    let reply = send_sms(&daemon, json!({"to": TO, "body": "retry me"})).await;
    let id = reply.json["message_id"].as_i64().unwrap();

    // Wait for a retry to be scheduled (the message goes back to queued).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = message(&daemon, id).await;
        if statuses(&m).iter().filter(|s| *s == "queued").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no retry scheduled: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mock.set_down(false);
    let m = wait_for_status(&daemon, id, "sent").await;
    assert_eq!(mock.messages().len(), 1, "{m}");
}

#[tokio::test]
async fn a_scheduled_message_is_not_sent_before_send_at() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    let send_at = SystemTime::now() + Duration::from_secs(2);
    let send_at_text = humantime::format_rfc3339_seconds(send_at).to_string();
    let reply = send_sms(
        &daemon,
        json!({"to": TO, "body": "later", "send_at": send_at_text}),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    assert_eq!(reply.json["send_at"], send_at_text.as_str());
    let id = reply.json["message_id"].as_i64().unwrap();

    let m = wait_for_status(&daemon, id, "sent").await;
    let sending_at = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "sending")
        .unwrap()["at"]
        .as_str()
        .unwrap()
        .to_owned();
    let sending_at = humantime::parse_rfc3339(&sending_at).unwrap();
    assert!(
        sending_at >= humantime::parse_rfc3339(&send_at_text).unwrap(),
        "sent at {sending_at:?}, before {send_at_text}"
    );
    assert_eq!(mock.messages().len(), 1);
}

#[tokio::test]
async fn queued_messages_survive_kill_9_and_are_sent_exactly_once() {
    let mock = MockTwilio::start(MockOptions::default());
    let mut daemon = setup(&mock).start();
    // Due in two seconds: committed and acknowledged, not yet sent, when the kill comes.
    let send_at =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(2)).to_string();
    let mut ids = Vec::new();
    for n in 0..10 {
        let reply = send_sms(
            &daemon,
            json!({"to": TO, "body": format!("queued {n}"), "send_at": send_at}),
        )
        .await;
        assert_eq!(reply.status, 202, "{:?}", reply.json);
        ids.push(reply.json["message_id"].as_i64().unwrap());
    }
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    assert!(mock.requests().is_empty());

    let daemon = daemon.start_again();
    // One "sending" per message: each was claimed from the queue once, and a sent
    // message leaves the queue for good.
    for id in &ids {
        let m = wait_for_status(&daemon, *id, "sent").await;
        assert_eq!(statuses(&m), ["queued", "sending", "sent"], "{m}");
    }
    for n in 0..10 {
        assert_eq!(sent_bodies(&mock, &format!("queued {n}")), 1, "queued {n}");
    }
}

#[tokio::test]
async fn signed_status_callbacks_update_sms_and_otp_messages_and_forged_ones_are_refused() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = setup(&mock).start();
    let reply = send_sms(&daemon, json!({"to": TO, "body": "track me"})).await;
    let id = reply.json["message_id"].as_i64().unwrap();
    let m = wait_for_status(&daemon, id, "sent").await;
    let sid = m["sid"].as_str().unwrap().to_owned();

    let delivered = callback(
        &daemon,
        &[
            ("MessageSid", &sid),
            ("MessageStatus", "delivered"),
            ("AccountSid", &mock.options().account_sid),
        ],
        None,
    )
    .await;
    assert_eq!(delivered.status, 200, "{:?}", delivered.json);
    assert_eq!(delivered.json["message_id"], id);
    // A late "sent" does not take a delivered message back.
    let late = callback(
        &daemon,
        &[("MessageSid", &sid), ("MessageStatus", "sent")],
        None,
    )
    .await;
    assert_eq!(late.status, 200);
    let m = message(&daemon, id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "sent", "delivered", "sent"]
    );

    // Forged: signed with another token, or over other parameters, or not signed.
    let forged = otpd::twilio::webhook::sign(
        "not-the-token",
        CALLBACK_URL,
        &[
            ("MessageSid".into(), sid.clone()),
            ("MessageStatus".into(), "failed".into()),
        ],
    );
    let params = [("MessageSid", sid.as_str()), ("MessageStatus", "failed")];
    callback(&daemon, &params, Some(&forged))
        .await
        .assert_error(403, "invalid_signature");
    let good_for_other = otpd::twilio::webhook::sign(
        DEFAULT_AUTH_TOKEN,
        CALLBACK_URL,
        &[
            ("MessageSid".into(), sid.clone()),
            ("MessageStatus".into(), "delivered".into()),
        ],
    );
    callback(&daemon, &params, Some(&good_for_other))
        .await
        .assert_error(403, "invalid_signature");
    request_with(
        &daemon.socket(),
        Method::POST,
        CALLBACK,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(format!("MessageSid={sid}&MessageStatus=failed").into_bytes()),
    )
    .await
    .assert_error(403, "invalid_signature");
    assert_eq!(message(&daemon, id).await["status"], "delivered");
    let audit = daemon.get("/api/v1/messaging/audit/?since=1h").await;
    let refused = audit.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "callback_refused")
        .count();
    assert_eq!(refused, 3, "{:?}", audit.json);

    // OTP messages get the same tracking.
    let otp = daemon
        .send_otp(json!({"phone_number": TO, "purpose": "login"}))
        .await;
    assert_eq!(otp.status, 200, "{:?}", otp.json);
    let otp_sid = mock.messages().last().unwrap().sid.clone();
    let undelivered = callback(
        &daemon,
        &[
            ("MessageSid", &otp_sid),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ],
        None,
    )
    .await;
    assert_eq!(undelivered.status, 200, "{:?}", undelivered.json);
    let otp_message = message(&daemon, undelivered.json["message_id"].as_i64().unwrap()).await;
    assert_eq!(otp_message["kind"], "otp");
    assert_eq!(otp_message["otp_id"], otp.json["otp_id"]);
    assert_eq!(otp_message["status"], "undelivered");
    assert_eq!(otp_message["error_code"], 30003);

    callback(
        &daemon,
        &[("MessageSid", "SMnope"), ("MessageStatus", "sent")],
        None,
    )
    .await
    .assert_error(404, "message_not_found");
    callback(&daemon, &[("MessageSid", &sid)], None)
        .await
        .assert_error(400, "invalid_callback");
}

#[tokio::test]
async fn without_a_callback_url_callbacks_are_refused_and_without_a_provider_nothing_queues() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = Setup::new().twilio(&mock).start();
    callback(
        &daemon,
        &[("MessageSid", "SM1"), ("MessageStatus", "sent")],
        None,
    )
    .await
    .assert_error(503, "callbacks_not_configured");

    let bare = Setup::new().start();
    send_sms(&bare, json!({"to": TO, "body": "hi"}))
        .await
        .assert_error(503, "provider_not_configured");
}

#[tokio::test]
async fn a_callback_url_without_the_auth_token_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpd.toml");
    std::fs::write(
        &path,
        format!(
            "[twilio]\naccount_sid = \"{}\"\napi_key_sid = \"{}\"\napi_key_secret = \"s\"\n\
             from_number = \"+15005550006\"\nstatus_callback_url = \"{CALLBACK_URL}\"\n",
            crate::common::mock_twilio::DEFAULT_ACCOUNT_SID,
            crate::common::mock_twilio::TEST_API_KEY_SID
        ),
    )
    .unwrap();
    let out = crate::common::check_config(&path);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("twilio.status_callback_url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn with_templates(setup: Setup) -> Setup {
    setup
        .set("templates.booking", "en = \"Table for {party} at {time}.\"")
        .set(
            "templates.booking",
            "es = \"Mesa para {party} a las {time}.\"",
        )
        .set(
            "templates.otp",
            "en = \"Your code is {code}. It expires in {minutes} minutes.\"",
        )
        .set(
            "templates.otp",
            "es = \"Tu código es {code}. Caduca en {minutes} minutos.\"",
        )
}

#[tokio::test]
async fn templates_render_in_the_requested_locale_or_fall_back() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = with_templates(setup(&mock)).start();
    let cases = [
        (Some("es-MX"), "Mesa para 4 a las 21:00."),
        (Some("es"), "Mesa para 4 a las 21:00."),
        (Some("fr"), "Table for 4 at 21:00."),
        (None, "Table for 4 at 21:00."),
    ];
    for (locale, expected) in cases {
        let reply = send_sms(
            &daemon,
            json!({"to": TO, "template": "booking", "locale": locale,
                   "variables": {"party": 4, "time": "21:00"}}),
        )
        .await;
        assert_eq!(reply.status, 202, "{:?}", reply.json);
        let id = reply.json["message_id"].as_i64().unwrap();
        wait_for_status(&daemon, id, "sent").await;
        assert_eq!(mock.messages().last().unwrap().body, expected, "{locale:?}");
    }

    let bad = [
        (
            json!({"to": TO, "template": "booking", "variables": {"party": 4}}),
            "template_variable_missing",
        ),
        (
            json!({"to": TO, "template": "booking", "variables": {"party": 4, "time": "9", "tiem": "9"}}),
            "template_variable_unknown",
        ),
        (json!({"to": TO, "template": "nope"}), "unknown_template"),
        (
            json!({"to": TO, "template": "otp", "variables": {"code": "123456", "minutes": "5"}}),
            "unknown_template",
        ),
        (
            json!({"to": TO, "template": "booking", "body": "hi"}),
            "invalid_request",
        ),
    ];
    for (body, code) in bad {
        send_sms(&daemon, body).await.assert_error(400, code);
    }

    // OTPs use the `otp` template in the caller's locale.
    let otp = daemon
        .send_otp(json!({"phone_number": TO, "purpose": "login", "locale": "es"}))
        .await;
    assert_eq!(otp.status, 200, "{:?}", otp.json);
    let body = mock.messages().last().unwrap().body.clone();
    assert!(body.starts_with("Tu código es "), "{body}");
    assert!(body.ends_with("Caduca en 10 minutos."), "{body}");
    let code = crate::common::code_in(&body);
    let verified = daemon
        .verify_otp(json!({"phone_number": TO, "purpose": "login", "otp_code": code}))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
}

#[test]
fn templates_are_checked_when_the_config_loads() {
    let cases = [
        (
            "[templates.otp]\nen = \"Code {code} for {user}\"\n",
            "templates.otp",
        ),
        ("[templates.otp]\nes = \"Código {code}\"\n", "templates.otp"),
        (
            "[otp]\nmessage_template = \"Your code is {cod}\"\n",
            "otp.message_template",
        ),
        (
            "[templates.booking]\nen = \"At {time}\"\nes = \"A las {hora}\"\n",
            "templates.booking.es",
        ),
        (
            "[templates.booking]\nen = \"At {time\"\n",
            "templates.booking.en",
        ),
        (
            "[templates.Booking]\nen = \"At {time}\"\n",
            "templates.Booking",
        ),
    ];
    for (text, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.toml");
        std::fs::write(&path, text).unwrap();
        let out = crate::common::check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: expected {key} in {stderr}");
    }
}
