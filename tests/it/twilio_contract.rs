//! The Twilio sender against Twilio's own OpenAPI description, served by Prism: the
//! request's path, Basic auth, content type and form fields must satisfy CreateMessage,
//! and otpd must read Prism's spec-generated 201 answer. (Prism accepts unknown fields;
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
