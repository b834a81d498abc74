//! WhatsApp failures Twilio reports later (issue 18): a message Twilio accepted on
//! WhatsApp and then reported `undelivered` or `failed` through a signed status callback
//! (63003: the number is not on WhatsApp) is re-sent once on the next configured channel,
//! for outbox messages and for codes, and its history says why.

use crate::common::mock_twilio::WHATSAPP_SANDBOX;
use crate::common::outbox::{CALLBACK_URL, callback, message, send_sms, wait_for, wait_for_status};
use crate::common::{Daemon, MockOptions, MockTwilio, Setup, code_in, send_body, verify_body};
use serde_json::json;
use std::time::Duration;

const PHONE: &str = "+34600111222";
const WA_PHONE: &str = "whatsapp:+34600111222";

fn whatsapp_then_sms(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("twilio", &format!("whatsapp_from = \"{WHATSAPP_SANDBOX}\""))
        .set(
            "twilio",
            &format!("status_callback_url = \"{CALLBACK_URL}\""),
        )
        .set("messaging", "channels = [\"whatsapp\", \"sms\"]")
}

async fn report(otpd: &Daemon, sid: &str, status: &str, error_code: &str) {
    let reply = callback(
        otpd,
        &[
            ("MessageSid", sid),
            ("MessageStatus", status),
            ("ErrorCode", error_code),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

/// The messages the mock took, as (To, Body).
fn sent(mock: &MockTwilio) -> Vec<(String, String)> {
    mock.messages()
        .into_iter()
        .map(|m| (m.to, m.body))
        .collect()
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn an_outbox_message_reported_undelivered_on_whatsapp_goes_once_by_sms() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp_then_sms(&mock).sqlite_only().start();
    let reply = send_sms(&otpd, json!({"to": PHONE, "body": "Table at 8"})).await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let first = wait_for_status(&otpd, id, "sent").await;
    assert_eq!(first["channel"], "whatsapp");
    let whatsapp_sid = first["sid"].as_str().unwrap().to_owned();

    report(&otpd, &whatsapp_sid, "undelivered", "63003").await;
    let resent = wait_for(&otpd, id, Duration::from_secs(10), "re-sent by SMS", |m| {
        m["channel"] == "sms" && m["status"] == "sent"
    })
    .await;
    assert_ne!(resent["sid"], whatsapp_sid.as_str());
    let history = resent["history"].to_string();
    assert!(history.contains("63003"), "{history}");
    assert!(history.contains("trying sms"), "{history}");
    assert_eq!(
        sent(&mock),
        [
            (WA_PHONE.to_owned(), "Table at 8".to_owned()),
            (PHONE.to_owned(), "Table at 8".to_owned())
        ]
    );

    // A late report on the WhatsApp SID joins the history without moving the message;
    // the SMS failing too sends nothing more: once.
    report(&otpd, &whatsapp_sid, "failed", "63003").await;
    let sms_sid = resent["sid"].as_str().unwrap().to_owned();
    report(&otpd, &sms_sid, "undelivered", "30003").await;
    let last = message(&otpd, id).await;
    assert_eq!(last["status"], "undelivered");
    assert_eq!(last["channel"], "sms");
    assert_eq!(last["sid"], sms_sid.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.messages().len(), 2, "re-sent once, never twice");
    // Its body is gone once it left for good.
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let body: Option<String> = conn
        .query_row("SELECT body FROM messages WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(body, None);
}

#[tokio::test]
async fn a_code_reported_failed_on_whatsapp_is_replaced_and_sent_by_sms() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp_then_sms(&mock).start();
    let reply = otpd.send_otp(send_body(PHONE, "login", Some("42"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["channel"], "whatsapp");
    let otp_id = reply.json["otp_id"].clone();
    let whatsapp = mock.messages().last().unwrap().clone();
    assert_eq!(whatsapp.to, WA_PHONE);
    let first_code = code_in(&whatsapp.body);

    report(&otpd, &whatsapp.sid, "failed", "63003").await;
    let messages = mock.messages();
    assert_eq!(messages.len(), 2, "{:?}", sent(&mock));
    let sms = messages.last().unwrap();
    assert_eq!(sms.to, PHONE);
    let second_code = code_in(&sms.body);

    // The code that never arrived no longer verifies; the one the SMS carried does.
    if first_code != second_code {
        otpd.verify_otp(verify_body(PHONE, &first_code, "login", Some("42")))
            .await
            .assert_error(400, "invalid_otp");
    }
    let verified = otpd
        .verify_otp(verify_body(PHONE, &second_code, "login", Some("42")))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(verified.json["otp_id"], otp_id);

    let audit = otpd.get("/api/v1/messaging/audit/?since=1h").await.json;
    let fallback = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "channel_fallback")
        .unwrap_or_else(|| panic!("{audit:?}"))
        .clone();
    assert!(
        fallback["detail"].to_string().contains("63003"),
        "{fallback:?}"
    );

    // Once: the SMS failing too sends nothing more.
    report(&otpd, &sms.sid, "undelivered", "30003").await;
    assert_eq!(mock.messages().len(), 2);
}

#[tokio::test]
async fn a_verified_code_is_not_sent_again() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp_then_sms(&mock).start();
    otpd.send_otp(send_body(PHONE, "login", None)).await;
    let whatsapp = mock.messages().last().unwrap().clone();
    let code = code_in(&whatsapp.body);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    // A late (or wrong) report for a code already used changes nothing.
    report(&otpd, &whatsapp.sid, "undelivered", "63003").await;
    assert_eq!(mock.messages().len(), 1);
}
