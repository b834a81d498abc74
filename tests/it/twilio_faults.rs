//! Twilio faults, through the real daemon and a mock Twilio that misbehaves on cue:
//! what is retried (429, 5xx, connection errors) and what never is (4xx refusals),
//! what is asked about before a retry (hangs, resets, slow bodies: Twilio may have the
//! message), `Retry-After`, the per-message deadline, the circuit breaker, and what the
//! caller, the messages table and the audit trail show afterwards.

use std::time::{Duration, Instant, SystemTime};

use crate::common::audit::audit_trail;
use crate::common::mock_twilio::{Fault, Operation, magic};
use crate::common::*;
use serde_json::Value;

/// Short timeouts, so every fault resolves in about a second.
fn faulty(mock: &MockTwilio) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("twilio", "timeout = \"500ms\"")
        .set("twilio", "send_deadline = \"3s\"")
        .set("twilio", "retry_backoff = \"20ms\"")
}

async fn messages(otpd: &Daemon) -> Vec<Value> {
    let reply = otpd.get("/api/v1/messaging/messages/?since=1h").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["messages"].as_array().unwrap().clone()
}

async fn circuit(otpd: &Daemon) -> String {
    let status = otpd.get("/api/v1/messaging/status/").await;
    status.json["provider_circuit"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

/// Waits (bounded) until the cooldown is over and the circuit lets a probe through.
async fn until_half_open(otpd: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while circuit(otpd).await != "half_open" {
        assert!(Instant::now() < deadline, "the circuit never half-opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(otpd: &Daemon, line_start: &str) -> String {
    let text = String::from_utf8(otpd.get("/metrics").await.raw.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

/// The code in the SMS body of the mock's `n`th request (delivered or not).
fn code_sent_in(mock: &MockTwilio, n: usize) -> String {
    code_in(mock.requests()[n].field("Body").unwrap())
}

#[tokio::test]
async fn a_503_then_a_201_delivers_one_otp_after_one_retry() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script([Fault::unavailable()]);
    let otpd = faulty(&mock).start();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 201]);
    assert_eq!(mock.messages().len(), 1);
    assert_eq!(
        code_sent_in(&mock, 0),
        code_sent_in(&mock, 1),
        "a retry resends the same code"
    );

    let code = last_code(&mock, PHONE);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);

    let rows = messages(&otpd).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["status"], "queued");
    assert_eq!(rows[0]["sid"], mock.messages()[0].sid.as_str());
    let events = audit_trail(&otpd, Some(PHONE)).await;
    assert_eq!(events[1].0, "sent");
    assert!(events[1].1.contains("after 2 requests"), "{events:?}");
    let log = otpd.log();
    assert!(log.contains("retrying"), "{log}");
    assert!(!log.contains(PHONE), "a full number in the log:\n{log}");
}

#[tokio::test]
async fn a_429_with_retry_after_waits_at_least_that_long() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script([Fault::too_many_requests(1)]);
    // The backoff alone would wait at most 20 ms.
    let otpd = faulty(&mock).start();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].response_json().unwrap()["code"], 20429);
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test]
async fn a_503_with_an_http_date_retry_after_waits_until_that_date() {
    let mock = MockTwilio::start(MockOptions::default());
    // Room for the wait and the retry on a loaded machine: this is about the date.
    let otpd = faulty(&mock)
        .set("twilio", "send_deadline = \"10s\"")
        .start();
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    mock.script([Fault::error(503, 20503, "Service Unavailable", Some(at))]);

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    // The date has whole seconds: "in 3 s" is more than 1 s away, whatever the rounding.
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once_and_is_passed_on() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script([Fault::too_many_requests(30)]);
    let otpd = faulty(&mock).start();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "twilio_unavailable");
    assert_eq!(reply.retry_after(), Some(30));
    assert_eq!(mock.requests().len(), 1, "no request after giving up");
    let rows = messages(&otpd).await;
    assert_eq!(
        (
            &rows[0]["status"],
            &rows[0]["error_code"],
            &rows[0]["attempts"]
        ),
        (&Value::from("failed"), &Value::from(20429), &Value::from(1))
    );
}

#[tokio::test]
async fn permanent_refusals_are_never_retried_and_do_not_trip_the_breaker() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = faulty(&mock).set("twilio", "breaker_failures = 2").start();
    for (to, twilio_code) in [
        (magic::TO_INVALID, 21211),
        (magic::TO_UNSUBSCRIBED, 21610),
        (magic::TO_NOT_MOBILE, 21614),
    ] {
        mock.clear();
        let reply = otpd.send_otp(send_body(to, "login", None)).await;
        reply.assert_error(502, "twilio_rejected");
        assert_eq!(reply.json["twilio_code"], twilio_code);
        assert_eq!(mock.requests().len(), 1, "{to} was retried");
    }
    for fault in [
        Fault::error(400, 21604, "A 'To' phone number is required.", None),
        Fault::error(403, 20403, "Forbidden", None),
        Fault::error(404, 20404, "The requested resource was not found", None),
    ] {
        mock.clear();
        mock.script([fault.clone()]);
        let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
        reply.assert_error(502, "twilio_rejected");
        assert_eq!(mock.requests().len(), 1, "{fault:?} was retried");
    }
    assert_eq!(circuit(&otpd).await, "closed");

    // Bad credentials (20003) are final too.
    let o = mock.options();
    let otpd = faulty(&mock)
        .twilio_at(&mock.base_url(), &o.account_sid, &"0".repeat(32))
        .start();
    mock.clear();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 20003);
    assert_eq!(mock.requests().len(), 1);
}

/// The requests of one method, in arrival order.
fn of(mock: &MockTwilio, method: &str) -> Vec<crate::common::mock_twilio::RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == method)
        .collect()
}

/// A hang may mean Twilio has the message: before any retry otpd asks Twilio, which
/// hangs too, so the caller gets 503 and no second SMS was risked.
#[tokio::test]
async fn a_hang_is_asked_about_not_retried_and_the_code_can_never_verify() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_hang(true);
    let otpd = faulty(&mock)
        .set("twilio", "send_deadline = \"1500ms\"")
        .start();

    let started = Instant::now();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    let took = started.elapsed();
    reply.assert_error(503, "twilio_unavailable");
    // A bound, not a measurement: without the deadline the retries would go on.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(of(&mock, "POST").len(), 1, "sent again without asking");
    let asked = of(&mock, "GET");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].query_param("To"), Some(PHONE));

    // The code went out in a request Twilio may have seen; it must still be dead.
    let code = code_sent_in(&mock, 0);
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    reply.assert_error(400, "otp_not_found");
    assert_eq!(reply.json["verified"], false);

    let rows = messages(&otpd).await;
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["attempts"], 1);
    let events: Vec<String> = audit_trail(&otpd, Some(PHONE))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(events, ["generated", "send_failed"]);
}

/// A reset after the request left: Twilio is asked, has no such message, and the retry
/// sends it once.
#[tokio::test]
async fn a_connection_reset_is_asked_about_then_retried() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script([Fault::Reset]);
    let otpd = faulty(&mock).start();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let statuses: Vec<(String, u16)> = mock
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    let expected = [("POST", 0), ("GET", 200), ("POST", 201)].map(|(m, s)| (m.to_owned(), s));
    assert_eq!(statuses, expected, "a reset, a look, then the retry");
    assert!(
        otpd.log().contains("Connection reset by peer"),
        "{}",
        otpd.log()
    );
    let code = last_code(&mock, PHONE);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
}

/// After a timeout Twilio may have accepted the message: otpd asks Twilio's list,
/// finds it, and takes its SID instead of sending the code twice.
#[tokio::test]
async fn a_slow_body_after_twilio_accepted_is_found_by_asking_not_sent_twice() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.script([Fault::SlowBody(Duration::from_secs(3))]);
    let otpd = faulty(&mock).start();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let sent = mock.messages();
    assert_eq!(sent.len(), 1, "sent twice");
    assert_eq!(of(&mock, "GET").len(), 1);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code_in(&sent[0].body), "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    let rows = messages(&otpd).await;
    assert_eq!(rows[0]["sid"], sent[0].sid.as_str());
    assert_eq!(rows[0]["attempts"], 1);
}

#[tokio::test]
async fn the_breaker_opens_after_n_failures_and_then_refuses_without_a_request() {
    let mock = MockTwilio::start(MockOptions::default());
    // For sends only: a status call also asks Twilio (FetchAccount, the credentials).
    mock.script_for(
        Operation::CreateMessage,
        std::iter::repeat_n(Fault::internal_error(), 10),
    );
    let sends = || mock.requests_of(Operation::CreateMessage).len();
    let otpd = faulty(&mock)
        .set("twilio", "breaker_failures = 3")
        .set("twilio", "breaker_cooldown = \"60s\"")
        .start();
    assert_eq!(circuit(&otpd).await, "closed");

    // The third failed request opens the circuit, which also ends this send's retries.
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "twilio_unavailable");
    assert_eq!(sends(), 3);
    assert_eq!(circuit(&otpd).await, "open");

    let other = "+34600111333";
    let reply = otpd.send_otp(send_body(other, "login", None)).await;
    reply.assert_error(503, "twilio_circuit_open");
    let wait = reply.retry_after().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(reply.json["retry_after"], wait);
    assert_eq!(sends(), 3, "no request while open");

    let rows = messages(&otpd).await;
    assert_eq!(
        (&rows[0]["status"], &rows[0]["attempts"]),
        (&Value::from("circuit_open"), &Value::from(0))
    );
    assert_eq!(
        (
            &rows[1]["status"],
            &rows[1]["error_code"],
            &rows[1]["attempts"]
        ),
        (&Value::from("failed"), &Value::from(20500), &Value::from(3))
    );
    let events: Vec<String> = audit_trail(&otpd, Some(other))
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(events, ["generated", "circuit_open"]);
    assert_eq!(
        metric(&otpd, "otpd_provider_circuit_open").await,
        "otpd_provider_circuit_open{provider=\"twilio\"} 1"
    );
    assert!(otpd.log().contains("Twilio circuit opened"));
}

#[tokio::test]
async fn after_the_cooldown_a_failed_probe_reopens_and_a_good_one_closes() {
    let mock = MockTwilio::start(MockOptions::default());
    // Two failures open the circuit; the third answers the first probe. For sends only:
    // the status calls of until_half_open also ask Twilio (FetchAccount).
    mock.script_for(
        Operation::CreateMessage,
        std::iter::repeat_n(Fault::unavailable(), 3),
    );
    let sends = || mock.requests_of(Operation::CreateMessage).len();
    let otpd = faulty(&mock)
        .set("twilio", "breaker_failures = 2")
        .set("twilio", "breaker_cooldown = \"1s\"")
        .start();
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(503, "twilio_unavailable");
    assert_eq!(sends(), 2);

    until_half_open(&otpd).await;
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(503, "twilio_unavailable");
    assert_eq!(sends(), 3, "exactly one probe");
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(503, "twilio_circuit_open");
    assert_eq!(sends(), 3, "the failed probe re-opened it");
    assert!(otpd.log().contains("Twilio probe failed"));

    until_half_open(&otpd).await;
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(circuit(&otpd).await, "closed");
    assert_eq!(
        metric(&otpd, "otpd_provider_circuit_open").await,
        "otpd_provider_circuit_open{provider=\"twilio\"} 0"
    );
    let code = last_code(&mock, PHONE);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert!(otpd.log().contains("Twilio circuit closed"));
}
