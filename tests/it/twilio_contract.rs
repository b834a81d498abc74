//! The Twilio sender against Twilio's own OpenAPI description, served by Prism: the
//! request's path, Basic auth, content type and form fields must satisfy CreateMessage,
//! and otpd must read Prism's spec-generated 201 answer; the Messages list otpd reads
//! to check a send it could not confirm must satisfy ListMessage. (Prism accepts unknown fields;
//! the mock Twilio, whose field list is checked against the same spec, rejects them.)

use crate::common::prism::{Prism, twilio_spec_path};
use crate::common::*;

const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn the_twilio_sender_satisfies_twilios_openapi_description() {
    let prism = Prism::start(&twilio_spec_path());
    let otpd = Setup::new()
        .twilio_at(&prism.base_url(), ACCOUNT, TOKEN)
        .set("twilio", "timeout = \"10s\"")
        .set("twilio", "test_phone_number = \"+34600999888\"")
        .start();

    for purpose in ["registration", "login"] {
        let sent = otpd.send_otp(send_body(PHONE, purpose, Some("42"))).await;
        assert_eq!(
            sent.status,
            200,
            "{:?}\nprism:\n{}",
            sent.json,
            prism.output()
        );
    }
    let test = otpd.get("/api/v1/messaging/test-twilio/").await;
    assert_eq!(
        test.status,
        200,
        "{:?}\nprism:\n{}",
        test.json,
        prism.output()
    );
    assert!(
        test.json["message"].as_str().unwrap().contains("SID: SM"),
        "{:?}",
        test.json
    );

    // The same with an API key and a Messaging Service instead of a From number.
    let otpd = Setup::new()
        .twilio_at(&prism.base_url(), ACCOUNT, "")
        .set("twilio", &format!("api_key_sid = \"SK{}\"", "b".repeat(32)))
        .set("twilio", "api_key_secret = \"secret\"")
        .set(
            "twilio",
            &format!("messaging_service_sid = \"MG{}\"", "c".repeat(32)),
        )
        .start();
    let sent = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(
        sent.status,
        200,
        "{:?}\nprism:\n{}",
        sent.json,
        prism.output()
    );
}

#[tokio::test]
async fn a_request_off_the_contract_is_refused_by_prism() {
    // The control: the contract test can fail. A wrong path is not in Twilio's spec.
    let prism = Prism::start(&twilio_spec_path());
    let otpd = Setup::new()
        .twilio_at(&format!("{}/v3", prism.base_url()), ACCOUNT, TOKEN)
        .start();
    let sent = otpd.send_otp(send_body(PHONE, "login", None)).await;
    sent.assert_error(502, "twilio_rejected");
}

/// What otpd asks after a send it cannot confirm: its ListMessage request (the path,
/// Basic auth, `To`, `From`, `PageSize`) must satisfy Twilio's description. The message
/// is left `sending` by killing otpd while a mock Twilio holds its request; the
/// restarted otpd, pointed at Prism, checks it. Prism checks `DateSent` but ignores the
/// `DateSent>` form otpd sends (it lets even `DateSent>=soon` through), so that value
/// being an RFC 3339 instant is asserted on the request the mock recorded
/// (`outbox_recovery::a_send_cut_by_kill_9_after_twilio_took_it_is_found_at_twilio_not_resent`).
#[tokio::test]
async fn the_messages_list_otpd_asks_after_a_crash_satisfies_twilios_openapi_description() {
    use crate::common::mock_twilio::{Fault, Operation};
    let prism = Prism::start(&twilio_spec_path());
    let mock = MockTwilio::start(MockOptions {
        account_sid: ACCOUNT.to_owned(),
        auth_token: TOKEN.to_owned(),
        ..MockOptions::default()
    });
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let checks = |setup: Setup| setup.set("messaging", "retry_delay = \"100ms\"");
    let mut otpd = checks(Setup::new().twilio_at(&mock.base_url(), ACCOUNT, TOKEN))
        .set("twilio", "timeout = \"10s\"")
        .start();
    let reply = otpd
        .post(
            "/api/v1/messaging/send-sms/",
            &serde_json::json!({"to": PHONE, "body": "checked against the spec"}),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mock.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never sent");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    otpd.kill_9();

    otpd.setup = checks(Setup::new().twilio_at(&prism.base_url(), ACCOUNT, TOKEN));
    let otpd = otpd.start_again();
    let list = format!("get /2010-04-01/Accounts/{ACCOUNT}/Messages.json");
    let asked = prism.log_shows(&list, std::time::Duration::from_secs(20));
    assert!(
        asked,
        "otpd never listed messages\nprism:\n{}\n{}",
        prism.request_log(),
        otpd.log()
    );
    // Prism judges the request first; its own example answer then breaks the answer's
    // schema (relative URIs), a response violation otpd reads as "cannot ask".
    assert!(
        prism.log_shows(
            "The request passed the validation rules",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        prism.request_log()
    );
    let log = prism.request_log();
    let received = log
        .lines()
        .filter(|l| l.contains(&list) && l.contains("Request received"))
        .count();
    let valid = log
        .lines()
        .filter(|l| l.contains("The request passed the validation rules"))
        .count();
    assert!(received >= 1 && valid >= received - 1, "{log}");
    assert!(!log.contains("Request query"), "{log}");
    assert!(!log.contains("Invalid security scheme"), "{log}");
}

// An MMS is not checked through Prism: Prism reads a repeated form key as one value
// (stoplightio/prism#2473), so it refuses Twilio's own wire form for `MediaUrl`, which
// the mock checks instead (mms.rs reads the field's schema from the same description).

/// Issue 21: a voice code's CreateCall (To, From, Twiml, StatusCallback) satisfies the
/// description, and otpd reads Prism's spec-generated call resource.
#[tokio::test]
async fn a_voice_codes_call_satisfies_twilios_openapi_description() {
    let prism = Prism::start(&twilio_spec_path());
    let otpd = Setup::new()
        .twilio_at(&prism.base_url(), ACCOUNT, TOKEN)
        .set("twilio", "timeout = \"10s\"")
        .set("twilio", "voice_from = \"+15005550006\"")
        .set(
            "twilio",
            "status_callback_url = \"https://backend.example.com/otpd/status-callback/\"",
        )
        .start();
    let mut body = send_body(PHONE, "login", None);
    body["channel"] = serde_json::json!("voice");
    let sent = otpd.send_otp(body).await;
    assert_eq!(
        sent.status,
        200,
        "{:?}\nprism:\n{}",
        sent.json,
        prism.output()
    );
    assert_eq!(sent.json["channel"], "voice");
    assert!(
        prism.output().contains("Calls.json"),
        "the call went to CreateCall:\n{}",
        prism.output()
    );
}
