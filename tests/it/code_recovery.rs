//! Codes whose SMS was in flight when otpd was killed: the caller got no answer and the
//! code was left pending. After the restart otpd asks Twilio's Messages list: a code
//! whose SMS left verifies (the user has it), one whose SMS never left fails, and one
//! Twilio cannot be asked about is recorded unknown once `messaging.unknown_after` (or
//! its expiry) has passed. Only the code's MAC is stored, so it is recognised in the
//! listed bodies by its MAC and can never be sent again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::audit::audit_trail;
use crate::common::mock_twilio::{Fault, Operation};
use crate::common::*;
use serde_json::Value;

fn setup(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("twilio", "timeout = \"10s\"")
        .set("twilio", "send_deadline = \"10s\"")
}

/// Starts a send-otp that will get no answer (the daemon dies under it) and waits until
/// its request reached the mock; returns the code it carries.
async fn send_cut_short(otpd: &Daemon, mock: &MockTwilio) -> String {
    let socket: PathBuf = otpd.socket();
    tokio::spawn(async move {
        let body = send_body(PHONE, "login", None).to_string().into_bytes();
        let _ = try_request(
            &socket,
            hyper::Method::POST,
            "/api/v1/messaging/send-otp/",
            Some(body),
        )
        .await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let posted = mock.requests().into_iter().find(|r| r.method == "POST");
        if let Some(request) = posted {
            return code_in(request.field("Body").unwrap());
        }
        assert!(Instant::now() < deadline, "the send never reached the mock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the code's message row exists, and returns it.
async fn message_row(otpd: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = otpd.get("/api/v1/messaging/messages/?since=1h").await;
        if let Some(row) = reply.json["messages"].as_array().unwrap().first() {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the code was never decided\n{}",
            otpd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_code_whose_sms_left_before_kill_9_verifies_after_restart() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_latency(Duration::from_secs(3));
    let mut otpd = setup(&mock).start();
    let code = send_cut_short(&otpd, &mock).await;
    otpd.kill_9();
    mock.set_latency(Duration::ZERO);

    let otpd = otpd.start_again();
    let row = message_row(&otpd).await;
    assert_eq!(row["sid"], mock.messages()[0].sid.as_str(), "{row}");
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(mock.messages().len(), 1, "nothing is sent again");
    let events: Vec<String> = audit_trail(&otpd, None)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(events, ["generated", "sent", "verified"]);
    // The code never reaches a log, even while it is being recognised.
    assert!(!otpd.log().contains(&code), "{}", otpd.log());
}

#[tokio::test]
async fn a_code_whose_sms_never_left_before_kill_9_fails_after_asking() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let mut otpd = setup(&mock).start();
    let code = send_cut_short(&otpd, &mock).await;
    otpd.kill_9();

    let otpd = otpd.start_again();
    let row = message_row(&otpd).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["error_message"]
            .as_str()
            .unwrap()
            .contains("no such message"),
        "{row}"
    );
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    reply.assert_error(400, "otp_not_found");
    assert!(mock.messages().is_empty());
    // A new code for the number works as usual.
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

#[tokio::test]
async fn a_code_twilio_cannot_be_asked_about_is_unknown_after_unknown_after() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let mut otpd = setup(&mock)
        .set("messaging", "unknown_after = \"1s\"")
        .start();
    let code = send_cut_short(&otpd, &mock).await;
    otpd.kill_9();
    mock.set_down(true);

    let otpd = otpd.start_again();
    let row = message_row(&otpd).await;
    assert_eq!(row["status"], "unknown", "{row}");
    let (event, detail) = audit_trail(&otpd, None).await.pop().unwrap();
    assert_eq!(event, "send_unknown");
    assert!(detail.contains("could not learn in time"), "{detail}");
    mock.set_down(false);
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    reply.assert_error(400, "otp_not_found");
}
