//! Every rate limit answers 429 with a Retry-After in whole seconds and names itself.

use crate::common::*;

fn assert_limited(reply: &Reply, limit: &str, max_wait: u64) {
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.json["limit"], limit, "{:?}", reply.json);
    let wait = reply.retry_after().expect("Retry-After header");
    assert!(
        (1..=max_wait).contains(&wait),
        "Retry-After {wait} for {limit}"
    );
}

#[tokio::test]
async fn sends_per_phone_are_limited() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_per_phone = \"2/10m\"")
        .start();
    for _ in 0..2 {
        assert_eq!(
            otpd.send_otp(send_body(PHONE, "login", None)).await.status,
            200
        );
    }
    let limited = otpd.send_otp(send_body(PHONE, "registration", None)).await;
    // 2 per 10 minutes: one send comes back every 5 minutes.
    assert_limited(&limited, "send_per_phone", 300);
    assert!(limited.retry_after().unwrap() > 290);
    assert_eq!(
        mock.messages().len(),
        2,
        "a limited send never reaches Twilio"
    );
    // Another number is not affected.
    assert_eq!(
        otpd.send_otp(send_body("+34600111223", "login", None))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn sends_per_user_are_limited_across_numbers() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_per_user = \"3/1h\"")
        .start();
    for n in 0..3 {
        let reply = otpd
            .send_otp(send_body(&format!("+3460011122{n}"), "login", Some("42")))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let limited = otpd
        .send_otp(send_body("+34600111229", "login", Some("42")))
        .await;
    assert_limited(&limited, "send_per_user", 1200);
    assert_eq!(
        otpd.send_otp(send_body("+34600111229", "login", Some("43")))
            .await
            .status,
        200
    );
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn verify_attempts_per_phone_are_limited_across_codes() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .sqlite_only()
        .twilio(&mock)
        .set("limits", "verify_per_phone = \"3/1m\"")
        .start();
    otpd.send_otp(send_body(PHONE, "login", None)).await;
    let code = last_code(&mock, PHONE);
    for _ in 0..3 {
        let reply = otpd
            .verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
            .await;
        reply.assert_error(400, "invalid_otp");
    }
    let limited = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_limited(&limited, "verify_per_phone", 20);
    // The limited request did not count as an attempt on the code.
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let attempts: i64 = conn
        .query_row("SELECT attempts FROM otps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn the_global_send_ceiling_applies_to_everyone() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_global = \"3/1h\"")
        .start();
    for n in 0..3 {
        let reply = otpd
            .send_otp(send_body(&format!("+3460011123{n}"), "login", None))
            .await;
        assert_eq!(reply.status, 200);
    }
    let limited = otpd
        .send_otp(send_body("+34600111239", "login", None))
        .await;
    assert_limited(&limited, "send_global", 1200);
}

const SEND_SMS: &str = "/api/v1/messaging/send-sms/";

/// Issue 18: racers that all missed the idempotency lookup each spent a global token
/// before the insert noticed the key, so replays used up the ceiling.
// SQLite-only: it reads the database file.
#[tokio::test]
async fn a_hundred_parallel_replays_spend_one_global_token() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = std::sync::Arc::new(
        Setup::new()
            .sqlite_only()
            .twilio(&mock)
            .set("limits", "send_global = \"3/1h\"")
            .start(),
    );
    let same = serde_json::json!({"to": PHONE, "body": "Table for 2 at 21:00", "idempotency_key": "booking-7"});
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (otpd, same) = (otpd.clone(), same.clone());
        sends.spawn(async move { otpd.post(SEND_SMS, &same).await });
    }
    let (mut ids, mut fresh) = (std::collections::BTreeSet::new(), 0);
    while let Some(reply) = sends.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 202, "{:?}", reply.json);
        ids.insert(reply.json["message_id"].as_i64().unwrap());
        fresh += usize::from(reply.json["replayed"] == false);
    }
    assert_eq!(ids.len(), 1, "every reply names the one message: {ids:?}");
    assert_eq!(fresh, 1, "one reply created it, 99 replayed it");
    // The replays left the ceiling's other two sends to new messages.
    for n in 0..2 {
        let other = serde_json::json!({"to": PHONE, "body": format!("other {n}")});
        let reply = otpd.post(SEND_SMS, &other).await;
        assert_eq!(reply.status, 202, "{:?}", reply.json);
    }
    let over = serde_json::json!({"to": PHONE, "body": "one too many"});
    assert_limited(&otpd.post(SEND_SMS, &over).await, "send_global", 1200);
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let messages: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(messages, 3);
}

/// The same race for codes: parallel sends to one number spend the global ceiling only
/// for the sends the per-phone limit let through, and a flood of refusals is one log line.
#[tokio::test]
async fn parallel_sends_to_one_number_spend_only_what_is_accepted() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = std::sync::Arc::new(
        Setup::new()
            .twilio(&mock)
            .set("limits", "send_per_phone = \"3/1h\"")
            .set("limits", "send_global = \"10/1h\"")
            .start(),
    );
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let otpd = otpd.clone();
        sends.spawn(async move { otpd.send_otp(send_body(PHONE, "login", None)).await });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(reply) = sends.join_next().await {
        let reply = reply.unwrap();
        match reply.status.as_u16() {
            200 => accepted += 1,
            _ => {
                assert_limited(&reply, "send_per_phone", 1200);
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (3, 97));
    for n in 0..7 {
        let reply = otpd
            .send_otp(send_body(&format!("+3460011124{n}"), "login", None))
            .await;
        assert_eq!(reply.status, 200, "send {n}: {:?}", reply.json);
    }
    let over = otpd
        .send_otp(send_body("+34600111249", "login", None))
        .await;
    assert_limited(&over, "send_global", 1200);

    let metrics = String::from_utf8(otpd.get("/metrics").await.raw.to_vec()).unwrap();
    assert!(
        metrics.contains("otpd_rate_limited_total{limit=\"send_per_phone\"} 97"),
        "{metrics}"
    );
    let log = otpd.log();
    let lines = |limit: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("rate limit {limit} refused")))
            .count()
    };
    assert_eq!(
        lines("send_per_phone"),
        1,
        "one line per limit per minute:\n{log}"
    );
    assert_eq!(lines("send_global"), 1, "{log}");
    assert!(!log.contains(&PHONE[4..]), "no full number in the log");
}
