//! The cost guard against SMS pumping, through the real daemon and the mock Twilio:
//! each rule refuses with its own code before Twilio is called, blocked and would-be
//! blocked sends are audited and counted, and the store-backed rules survive restarts.

use crate::common::*;
use serde_json::Value;

const ES_1: &str = "+34600111201";
const ES_2: &str = "+34600111202";
const ES_3: &str = "+34600111203";
const ES_OTHER_RANGE: &str = "+34611222333";
const PT: &str = "+351912345678";
const GB: &str = "+447400123456";

async fn send(otpd: &Daemon, phone: &str) -> Reply {
    otpd.send_otp(send_body(phone, "registration", Some("42")))
        .await
}

async fn sent_ok(otpd: &Daemon, phone: &str) {
    let reply = send(otpd, phone).await;
    assert_eq!(reply.status, 200, "{phone}: {:?}", reply.json);
}

/// Audit events for `phone`, newest first.
async fn audit(otpd: &Daemon, phone: &str) -> Vec<Value> {
    let path = format!(
        "/api/v1/messaging/audit/?phone={}",
        phone.replace('+', "%2B")
    );
    let reply = otpd.get(&path).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["events"].as_array().unwrap().clone()
}

/// The `detail` (rule) of each audit event named `event` for `phone`.
async fn guard_events(otpd: &Daemon, phone: &str, event: &str) -> Vec<String> {
    audit(otpd, phone)
        .await
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect()
}

/// The value of `otpd_guard_blocked_total{rule,outcome}`, 0 when absent.
async fn guard_metric(otpd: &Daemon, rule: &str, outcome: &str) -> u64 {
    let text = String::from_utf8(otpd.get("/metrics").await.raw.to_vec()).unwrap();
    let labels = [format!("rule=\"{rule}\""), format!("outcome=\"{outcome}\"")];
    text.lines()
        .filter(|l| l.starts_with("otpd_guard_blocked_total{"))
        .find(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

fn sent_to(mock: &MockTwilio, phone: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.field("To") == Some(phone))
        .count()
}

#[tokio::test]
async fn a_country_off_the_allow_list_is_refused_before_twilio_and_audited() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "allow_countries = [\"ES\", \"pt\"]")
        .start();
    sent_ok(&otpd, ES_1).await;
    sent_ok(&otpd, PT).await;

    let refused = send(&otpd, GB).await;
    refused.assert_error(422, "country_not_allowed");
    assert_eq!(refused.json["country"], "GB");
    assert_eq!(refused.json["rule"], "country");
    assert_eq!(sent_to(&mock, GB), 0, "Twilio must not see a refused send");
    assert_eq!(mock.requests().len(), 2);

    let events = audit(&otpd, GB).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "guard_blocked");
    assert_eq!(events[0]["detail"], "country");
    assert_eq!(events[0]["purpose"], "registration");
    assert_eq!(events[0]["user_id"], "42");
    assert!(events[0]["peer"]["uid"].is_number(), "{events:?}");
    assert_eq!(guard_metric(&otpd, "country", "blocked").await, 1);
    // The number itself never reaches the log, only its mask.
    assert!(!otpd.log().contains(GB), "{}", otpd.log());
}

#[tokio::test]
async fn a_denied_country_is_refused_but_test_numbers_are_exempt() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "deny_countries = [\"ES\"]")
        .raw("[[otp.test_numbers]]\npattern = \"+34600999*\"\ncode = \"123456\"\nuntil = \"2999-01-01\"")
        .start();
    send(&otpd, ES_1)
        .await
        .assert_error(422, "country_not_allowed");
    sent_ok(&otpd, PT).await;
    // A test number sends no SMS and costs nothing: the guard does not apply.
    sent_ok(&otpd, "+34600999001").await;
    let verified = otpd
        .verify_otp(verify_body(
            "+34600999001",
            "123456",
            "registration",
            Some("42"),
        ))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(mock.requests().len(), 1, "only the PT message was sent");
    assert_eq!(
        guard_events(&otpd, ES_1, "guard_blocked").await,
        ["country"]
    );
}

#[tokio::test]
async fn the_per_country_limit_trips_at_the_configured_count() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "per_country = \"3/1h\"")
        .start();
    for phone in [ES_1, ES_2, ES_3] {
        sent_ok(&otpd, phone).await;
    }
    let limited = send(&otpd, ES_OTHER_RANGE).await;
    limited.assert_error(429, "country_rate_limited");
    assert_eq!(limited.json["country"], "ES");
    // 3 per hour gives one back every 20 minutes.
    let wait = limited.retry_after().expect("Retry-After");
    assert!((1..=1200).contains(&wait), "Retry-After {wait}");
    assert_eq!(sent_to(&mock, ES_OTHER_RANGE), 0);
    // Other countries have their own allowance.
    sent_ok(&otpd, PT).await;
    assert_eq!(
        guard_events(&otpd, ES_OTHER_RANGE, "guard_blocked").await,
        ["per_country"]
    );
    assert_eq!(guard_metric(&otpd, "per_country", "blocked").await, 1);
}

#[tokio::test]
async fn the_per_prefix_limit_trips_at_the_configured_count() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "per_prefix = \"2/1h\"")
        .set("guard", "prefix_digits = 7")
        .start();
    // +34 6001112 is the prefix of all three.
    sent_ok(&otpd, ES_1).await;
    sent_ok(&otpd, ES_2).await;
    let limited = send(&otpd, ES_3).await;
    limited.assert_error(429, "prefix_rate_limited");
    let wait = limited.retry_after().expect("Retry-After");
    assert!((1..=1800).contains(&wait), "Retry-After {wait}");
    assert_eq!(sent_to(&mock, ES_3), 0);
    // Another range of the same country is not affected.
    sent_ok(&otpd, ES_OTHER_RANGE).await;
    assert_eq!(
        guard_events(&otpd, ES_3, "guard_blocked").await,
        ["per_prefix"]
    );
}

#[tokio::test]
async fn the_daily_cap_counts_every_message_and_survives_a_restart() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "test_phone_number = \"+34600999888\"")
        .set("guard", "daily_message_cap = 3")
        .start();
    sent_ok(&otpd, ES_1).await;
    sent_ok(&otpd, PT).await;
    // The test message costs money too.
    let test = otpd.get("/api/v1/messaging/test-twilio/").await;
    assert_eq!(test.status, 200, "{:?}", test.json);

    let capped = send(&otpd, ES_2).await;
    capped.assert_error(503, "daily_cap_reached");
    let wait = capped.retry_after().expect("Retry-After");
    assert!((1..=86_400).contains(&wait), "until UTC midnight: {wait}");
    assert_eq!(mock.requests().len(), 3);

    // The count is rebuilt from the messages table: a restart does not reset it.
    let otpd = otpd.restart();
    send(&otpd, ES_3)
        .await
        .assert_error(503, "daily_cap_reached");
    otpd.get("/api/v1/messaging/test-twilio/")
        .await
        .assert_error(503, "daily_cap_reached");
    assert_eq!(mock.requests().len(), 3, "nothing left after the cap");
    assert_eq!(
        guard_events(&otpd, ES_3, "guard_blocked").await,
        ["daily_message_cap"]
    );
    assert_eq!(
        guard_events(&otpd, "+34600999888", "guard_blocked").await,
        ["daily_message_cap"]
    );
}

#[tokio::test]
async fn the_unverified_budget_trips_per_country_and_verifying_frees_it() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "unverified_per_country = 3")
        .set("guard", "unverified_window = \"1h\"")
        .start();
    for phone in [ES_1, ES_2, ES_3] {
        sent_ok(&otpd, phone).await;
    }
    let exhausted = send(&otpd, ES_OTHER_RANGE).await;
    exhausted.assert_error(429, "unverified_budget_exhausted");
    assert_eq!(exhausted.json["country"], "ES");
    let wait = exhausted.retry_after().expect("Retry-After");
    assert!(
        (3500..=3600).contains(&wait),
        "when the oldest leaves: {wait}"
    );
    assert_eq!(sent_to(&mock, ES_OTHER_RANGE), 0);
    // Budgets are per country.
    sent_ok(&otpd, PT).await;

    // Counted in the store, so a restart does not forget it.
    let otpd = otpd.restart();
    send(&otpd, ES_OTHER_RANGE)
        .await
        .assert_error(429, "unverified_budget_exhausted");

    // A verified code is no longer unverified: it frees one place.
    let code = last_code(&mock, ES_2);
    let verified = otpd
        .verify_otp(verify_body(ES_2, &code, "registration", Some("42")))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    sent_ok(&otpd, ES_OTHER_RANGE).await;
    send(&otpd, ES_2)
        .await
        .assert_error(429, "unverified_budget_exhausted");
    assert_eq!(
        guard_events(&otpd, ES_OTHER_RANGE, "guard_blocked").await,
        ["unverified_per_country", "unverified_per_country"]
    );
}

#[tokio::test]
async fn record_mode_sends_everything_and_audits_what_it_would_block() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "mode = \"record\"")
        .set("guard", "deny_countries = [\"ES\"]")
        .set("guard", "per_country = \"1/1h\"")
        .set("guard", "per_prefix = \"1/1h\"")
        .set("guard", "daily_message_cap = 1")
        .set("guard", "unverified_per_country = 1")
        .start();
    sent_ok(&otpd, ES_1).await;
    sent_ok(&otpd, ES_2).await;
    assert_eq!(sent_to(&mock, ES_1), 1);
    assert_eq!(sent_to(&mock, ES_2), 1);

    // The first send broke only the deny-list; the second broke every rule.
    assert_eq!(
        guard_events(&otpd, ES_1, "guard_would_block").await,
        ["country"]
    );
    let mut second = guard_events(&otpd, ES_2, "guard_would_block").await;
    second.sort();
    assert_eq!(
        second,
        [
            "country",
            "daily_message_cap",
            "per_country",
            "per_prefix",
            "unverified_per_country"
        ]
    );
    assert!(guard_events(&otpd, ES_2, "guard_blocked").await.is_empty());
    assert_eq!(guard_metric(&otpd, "country", "would_block").await, 2);
    assert_eq!(guard_metric(&otpd, "per_prefix", "would_block").await, 1);
    assert_eq!(guard_metric(&otpd, "country", "blocked").await, 0);

    // The codes it let through work as usual.
    let code = last_code(&mock, ES_2);
    let verified = otpd
        .verify_otp(verify_body(ES_2, &code, "registration", Some("42")))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
}

#[test]
fn bad_guard_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for (text, key) in [
        ("[guard]\nmode = \"audit\"", "guard.mode"),
        (
            "[guard]\nallow_countries = [\"UK\"]",
            "guard.allow_countries",
        ),
        (
            "[guard]\ndeny_countries = [\"Spain\"]",
            "guard.deny_countries",
        ),
        ("[guard]\nper_country = \"lots\"", "guard.per_country"),
        ("[guard]\nper_prefix = \"5/1w\"", "guard.per_prefix"),
        ("[guard]\nprefix_digits = 0", "guard.prefix_digits"),
        (
            "[guard]\nunverified_window = \"soon\"",
            "guard.unverified_window",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = check_config(&config);
        assert_eq!(output.status.code(), Some(78), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}

#[tokio::test]
async fn plain_messages_obey_the_country_lists_and_share_the_daily_cap() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "deny_countries = [\"GB\"]")
        .set("guard", "daily_message_cap = 3")
        // Pumping rules are for codes: they must not refuse the backend's own messages.
        .set("guard", "per_prefix = \"1/1h\"")
        .start();
    let sms =
        |to: &str, body: &str| serde_json::json!({"to": to, "body": body, "idempotency_key": body});

    let refused = otpd
        .post("/api/v1/messaging/send-sms/", &sms(GB, "hello"))
        .await;
    refused.assert_error(422, "country_not_allowed");
    assert_eq!(refused.json["rule"], "country");
    assert_eq!(guard_events(&otpd, GB, "guard_blocked").await, ["country"]);

    // One code and two messages to one number range fill the cap of 3 ...
    sent_ok(&otpd, ES_1).await;
    for body in ["first", "second"] {
        let reply = otpd
            .post("/api/v1/messaging/send-sms/", &sms(ES_2, body))
            .await;
        assert_eq!(reply.status, 202, "{:?}", reply.json);
    }
    // ... so the next message, and the next code, are over it.
    otpd.post("/api/v1/messaging/send-sms/", &sms(ES_3, "third"))
        .await
        .assert_error(503, "daily_cap_reached");
    send(&otpd, ES_OTHER_RANGE)
        .await
        .assert_error(503, "daily_cap_reached");
    assert_eq!(
        guard_events(&otpd, ES_3, "guard_blocked").await,
        ["daily_message_cap"]
    );
    // A replay of an accepted message sends nothing, so the cap does not refuse it.
    let replay = otpd
        .post("/api/v1/messaging/send-sms/", &sms(ES_2, "second"))
        .await;
    assert_eq!(replay.status, 202, "{:?}", replay.json);
    assert_eq!(replay.json["replayed"], true);
    assert_eq!(sent_to(&mock, GB), 0);
}
