//! The outbox across crashes and lost answers, through the real binary and the mock
//! Twilio: an attempt refused at connect is known not sent and stays queued across
//! `kill -9`; an attempt whose request may have reached Twilio is checked with Twilio's
//! Messages list before anything is sent again (found: recorded with its SID; not
//! there: sent; Twilio unreachable: asked again later, and `unknown` only after
//! `messaging.unknown_after`).

use std::time::Duration;

use crate::common::mock_twilio::{Fault, Operation};
use crate::common::outbox::*;
use crate::common::{Daemon, MockOptions, MockTwilio, Setup};
use serde_json::{Value, json};

const TO: &str = "+34600111222";

fn setup(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("messaging", "retry_delay = \"200ms\"")
        .set("messaging", "workers = 8")
        .set("twilio", "breaker_cooldown = \"200ms\"")
}

/// Waits until message `id` is past `sending` and `checking` for good.
async fn settled(daemon: &Daemon, id: i64) -> Value {
    wait_for(daemon, id, Duration::from_secs(20), "settled", |m| {
        ["sent", "failed", "unknown"].contains(&m["status"].as_str().unwrap_or(""))
    })
    .await
}

/// Waits until the mock has seen `n` CreateMessage requests with `body`.
async fn until_posted(mock: &MockTwilio, body: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while posted_with(mock, body) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{body:?} never reached the mock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The reproduction: Twilio refuses connections, the workers are retrying,
/// otpd is killed. Every attempt was refused at connect, so none reached Twilio: all
/// are sent once Twilio and otpd are back, none is given up as `unknown`.
#[tokio::test]
async fn messages_refused_at_connect_survive_kill_9_mid_retry_and_are_sent_once() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_down(true);
    let mut otpd = setup(&mock).set("twilio", "send_deadline = \"3s\"").start();
    let bodies: Vec<String> = (0..6).map(|n| format!("refused at connect {n}")).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(accepted_id(
            &send_sms(&otpd, json!({"to": TO, "body": body})).await,
        ));
    }
    // Every message has been tried: the kill comes while the workers are retrying.
    for id in &ids {
        wait_for(&otpd, *id, Duration::from_secs(10), "tried", |m| {
            statuses(m).contains(&"sending".to_owned())
        })
        .await;
    }
    otpd.kill_9();
    mock.set_down(false);

    let otpd = otpd.start_again();
    for (id, body) in ids.iter().zip(&bodies) {
        let m = settled(&otpd, *id).await;
        assert_eq!(m["status"], "sent", "{m}");
        assert_eq!(created_with(&mock, body), 1, "{body}: {m}");
    }
}

/// The request reached Twilio, which created the message; otpd died before the
/// answer. After the restart Twilio's list shows it: recorded with its SID, not resent.
#[tokio::test]
async fn a_send_cut_by_kill_9_after_twilio_took_it_is_found_at_twilio_not_resent() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_latency(Duration::from_secs(3));
    let mut otpd = setup(&mock).set("twilio", "timeout = \"5s\"").start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "in flight"})).await);
    until_posted(&mock, "in flight", 1).await;
    otpd.kill_9();
    mock.set_latency(Duration::ZERO);

    let otpd = otpd.start_again();
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(posted_with(&mock, "in flight"), 1, "sent again: {m}");
    assert_eq!(m["sid"], mock.messages()[0].sid.as_str());
    assert_eq!(statuses(&m), ["queued", "sending", "checking", "sent"]);
    let h = history(&m);
    assert!(h[2].1.contains("otpd stopped while sending"), "{h:?}");
    assert!(h[3].1.contains("found at"), "{h:?}");
    // The check asked for exactly this message's window and addresses.
    let list = mock
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(list.query_param("To"), Some(TO));
    assert_eq!(list.query_param("From"), Some(crate::common::TWILIO_FROM));
    // An instant (Twilio's description types DateSent as date-time), at most a minute
    // before the attempt: the window the message can be in.
    let after: jiff::Timestamp = list.query_param("DateSent>").unwrap().parse().unwrap();
    let sending = &m["history"][1]["at"];
    let attempt: jiff::Timestamp = sending.as_str().unwrap().parse().unwrap();
    let margin = attempt.duration_since(after);
    assert!(
        margin >= jiff::SignedDuration::ZERO && margin <= jiff::SignedDuration::from_secs(61),
        "DateSent> {after} for an attempt at {attempt}"
    );
}

/// The request reached Twilio, which never created the message (it hung); otpd died.
/// Twilio's list has no such message, so it is sent, once.
#[tokio::test]
async fn a_send_cut_by_kill_9_before_twilio_took_it_is_sent_once_after_asking() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let mut otpd = setup(&mock).set("twilio", "timeout = \"10s\"").start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "never taken"})).await);
    until_posted(&mock, "never taken", 1).await;
    otpd.kill_9();

    let otpd = otpd.start_again();
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(created_with(&mock, "never taken"), 1);
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "checking", "queued", "sending", "sent"]
    );
    assert!(history(&m)[3].1.contains("no such message"), "{m}");
}

/// Twilio cannot be asked after the restart: the message waits in `checking`, is not
/// sent blind, and is decided once Twilio answers.
#[tokio::test]
async fn while_twilio_cannot_be_asked_the_message_waits_then_is_decided() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let mut otpd = setup(&mock).set("twilio", "timeout = \"10s\"").start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "ask later"})).await);
    until_posted(&mock, "ask later", 1).await;
    otpd.kill_9();
    mock.set_down(true);

    let otpd = otpd.start_again();
    let m = wait_for(&otpd, id, Duration::from_secs(10), "failed to ask", |m| {
        history(m)
            .iter()
            .any(|(_, detail)| detail.contains("cannot ask Twilio"))
    })
    .await;
    assert_eq!(m["status"], "checking", "{m}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(message(&otpd, id).await["status"], "checking");

    mock.set_down(false);
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(created_with(&mock, "ask later"), 1);
}

/// What cannot be decided within `messaging.unknown_after` becomes `unknown`, says why
/// in its history and in the audit trail, and is never sent afterwards.
#[tokio::test]
async fn undecidable_within_unknown_after_becomes_unknown_and_says_so() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Hang]);
    let mut otpd = setup(&mock)
        .set("twilio", "timeout = \"10s\"")
        .set("messaging", "unknown_after = \"2s\"")
        .start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "undecidable"})).await);
    until_posted(&mock, "undecidable", 1).await;
    otpd.kill_9();
    mock.set_down(true);

    let otpd = otpd.start_again();
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "unknown", "{m}");
    let (status, detail) = history(&m).pop().unwrap();
    assert_eq!(status, "unknown");
    assert!(detail.contains("within 2s"), "{detail}");
    let audit = otpd.get("/api/v1/messaging/audit/?since=1h").await;
    let events = audit.json["events"].as_array().unwrap();
    let unknown = events
        .iter()
        .find(|e| e["event"] == "message_unknown")
        .unwrap_or_else(|| panic!("{:?}", audit.json));
    assert!(
        unknown["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("message {id}"))),
        "{unknown}"
    );

    mock.set_down(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(message(&otpd, id).await["status"], "unknown");
    assert_eq!(created_with(&mock, "undecidable"), 0);
}

/// No crash: Twilio took the message but its answer was too slow. The attempt may have
/// reached Twilio, so the message is checked, found, and not sent a second time.
#[tokio::test]
async fn an_answer_lost_after_twilio_took_the_message_is_checked_not_resent() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(
        Operation::CreateMessage,
        [Fault::SlowBody(Duration::from_secs(2))],
    );
    let otpd = setup(&mock).set("twilio", "timeout = \"500ms\"").start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "slow answer"})).await);
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(posted_with(&mock, "slow answer"), 1, "{m}");
    assert_eq!(m["sid"], mock.messages()[0].sid.as_str());
    assert_eq!(statuses(&m), ["queued", "sending", "checking", "sent"]);
}

/// No crash: the connection was reset after the request was written, and Twilio never
/// created the message. Checked, not there, sent once.
#[tokio::test]
async fn a_reset_after_the_request_left_is_checked_then_sent_once() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script_for(Operation::CreateMessage, [Fault::Reset]);
    let otpd = setup(&mock).start();
    let id = accepted_id(&send_sms(&otpd, json!({"to": TO, "body": "reset"})).await);
    let m = settled(&otpd, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(created_with(&mock, "reset"), 1);
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "checking", "queued", "sending", "sent"]
    );
}
