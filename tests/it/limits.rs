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

#[tokio::test]
async fn verify_attempts_per_phone_are_limited_across_codes() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
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
