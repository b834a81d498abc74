//! Codes by voice call (issue 21): `"channel":"voice"` places a call through CreateCall
//! with inline TwiML that says the code digit by digit, twice, in the request's locale;
//! the call's status callback is tracked like a message's; a refused call falls back to
//! the next channel; a lost answer never rings twice; voice carries codes only.

use crate::common::mock_twilio::{Fault, Operation, magic};
use crate::common::outbox::{CALLBACK_URL, callback, send_sms, wait_for_status};
use crate::common::{
    Daemon, MockOptions, MockTwilio, PHONE, Setup, check_config, send_body, verify_body,
};
use serde_json::{Value, json};

const VOICE_FROM: &str = magic::FROM_VALID;

fn voice(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("twilio", &format!("voice_from = \"{VOICE_FROM}\""))
        .set(
            "twilio",
            &format!("status_callback_url = \"{CALLBACK_URL}\""),
        )
}

fn by_voice(locale: Option<&str>) -> Value {
    let mut body = send_body(PHONE, "login", Some("42"));
    body["channel"] = json!("voice");
    if let Some(locale) = locale {
        body["locale"] = json!(locale);
    }
    body
}

/// What each `<Say>` of the call's TwiML says, with its language.
fn said(twiml: &str) -> Vec<(String, String)> {
    twiml
        .split("<Say language=\"")
        .skip(1)
        .map(|part| {
            let (language, rest) = part.split_once("\">").unwrap();
            let text = rest.split("</Say>").next().unwrap();
            (language.to_owned(), text.to_owned())
        })
        .collect()
}

/// The code a call says: its first `length` digits (the template's minutes come after).
fn spoken_code(text: &str, length: usize) -> String {
    text.chars()
        .filter(char::is_ascii_digit)
        .take(length)
        .collect()
}

async fn messages(otpd: &Daemon) -> Vec<Value> {
    let reply = otpd.get("/api/v1/messaging/messages/?since=1h").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_voice_code_is_a_call_that_says_it_twice_and_verifies() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = voice(&mock).start();
    let reply = otpd.send_otp(by_voice(Some("es"))).await;
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.json, otpd.log());
    assert_eq!(reply.json["channel"], "voice");
    assert!(mock.messages().is_empty(), "a call, not a message");
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.to.as_str(), call.from.as_str()), (PHONE, VOICE_FROM));
    assert_eq!(call.status_callback.as_deref(), Some(CALLBACK_URL));
    let twiml = call.twiml.as_deref().unwrap();
    let says = said(twiml);
    assert_eq!(says.len(), 2, "said twice: {twiml}");
    assert_eq!(says[0], says[1]);
    assert_eq!(says[0].0, "es-ES", "Spanish, in <Say>'s Spanish: {twiml}");
    let code = spoken_code(&says[0].1, 6);
    let digits: Vec<String> = code.chars().map(String::from).collect();
    assert!(
        says[0].1.contains(&digits.join(", ")),
        "digit by digit: {twiml}"
    );
    assert!(
        !twiml.contains(&code),
        "the code never appears as one number: {twiml}"
    );

    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", Some("42")))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);

    // The call is tracked like a message, and its signed status callback lands on it.
    let rows = messages(&otpd).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["channel"], "voice");
    assert_eq!(rows[0]["sid"], call.sid.as_str());
    let reply = callback(
        &otpd,
        &[("CallSid", &call.sid), ("CallStatus", "completed")],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(messages(&otpd).await[0]["status"], "completed");
    assert!(!otpd.log().contains(&code), "the code is never logged");
}

#[tokio::test]
async fn a_locale_say_does_not_speak_gets_the_configured_language() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = voice(&mock)
        .set("twilio", "voice_language = \"en-GB\"")
        .start();
    let reply = otpd.send_otp(by_voice(Some("eu"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let twiml = mock.calls()[0].twiml.clone().unwrap();
    assert!(
        said(&twiml).iter().all(|(language, _)| language == "en-GB"),
        "{twiml}"
    );
}

#[tokio::test]
async fn a_refused_call_falls_back_to_the_next_channel() {
    let mock = MockTwilio::start(MockOptions::default());
    // Not a number of this account: Twilio refuses the call (21210).
    let otpd = voice(&mock)
        .set(
            "twilio",
            &format!("voice_from = \"{}\"", magic::FROM_NOT_OWNED),
        )
        .set("messaging", "channels = [\"voice\", \"sms\"]")
        .start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["channel"], "sms");
    assert!(mock.calls().is_empty());
    assert_eq!(mock.messages().len(), 1);
    let tried: Vec<(String, String)> = messages(&otpd)
        .await
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        tried.contains(&("voice".into(), "failed".into())),
        "{tried:?}"
    );
}

#[tokio::test]
async fn a_call_whose_answer_was_lost_is_never_placed_again() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = voice(&mock).start();
    mock.script_for(Operation::CreateCall, [Fault::Reset]);
    let reply = otpd.send_otp(by_voice(None)).await;
    assert!(reply.status.is_server_error(), "{:?}", reply.json);
    let call_requests = mock
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Calls.json"))
        .count();
    assert_eq!(call_requests, 1, "one ring at most");
}

#[tokio::test]
async fn voice_carries_codes_only_and_needs_its_number() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = voice(&mock)
        .set("messaging", "channels = [\"voice\", \"sms\"]")
        .set("messaging", "retry_delay = \"200ms\"")
        .start();
    send_sms(
        &otpd,
        json!({"to": PHONE, "body": "hi", "channel": "voice"}),
    )
    .await
    .assert_error(400, "invalid_channel");
    // A plain message skips voice in messaging.channels.
    let reply = send_sms(&otpd, json!({"to": PHONE, "body": "Table at 8"})).await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    assert_eq!(wait_for_status(&otpd, id, "sent").await["channel"], "sms");
    assert!(mock.calls().is_empty());

    // Without twilio.voice_from there is no voice channel.
    let plain = Setup::new().twilio(&mock).start();
    let reply = plain.send_otp(by_voice(None)).await;
    reply.assert_error(503, "channel_not_configured");
    assert!(
        reply.json["details"]
            .as_str()
            .unwrap()
            .contains("voice_from"),
        "{:?}",
        reply.json
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Setup::new()
        .twilio(&mock)
        .set("messaging", "channels = [\"voice\"]")
        .write_config(dir.path());
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("twilio.voice_from"), "{stderr}");
}
