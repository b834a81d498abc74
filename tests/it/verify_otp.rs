//! Verifying codes: single use, binding, expiry, the attempt cap, races and restarts.

use std::time::Duration;

use crate::common::*;

async fn sent_code(otpd: &Daemon, mock: &MockTwilio, purpose: &str, user: Option<&str>) -> String {
    let sent = otpd.send_otp(send_body(PHONE, purpose, user)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    last_code(mock, PHONE)
}

#[tokio::test]
async fn a_used_code_cannot_verify_again() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let code = sent_code(&otpd, &mock, "login", None).await;
    assert_eq!(
        otpd.verify_otp(verify_body(PHONE, &code, "login", None))
            .await
            .status,
        200
    );
    let again = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    again.assert_error(400, "otp_already_used");
    assert_eq!(again.json["verified"], false);
}

#[tokio::test]
async fn a_code_is_bound_to_its_purpose_and_user() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let code = sent_code(&otpd, &mock, "login", Some("42")).await;

    let other_purpose = otpd
        .verify_otp(verify_body(PHONE, &code, "registration", Some("42")))
        .await;
    other_purpose.assert_error(400, "otp_not_found");
    let other_user = otpd
        .verify_otp(verify_body(PHONE, &code, "login", Some("43")))
        .await;
    other_user.assert_error(400, "invalid_otp");
    let no_user = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    no_user.assert_error(400, "invalid_otp");
    let other_phone = otpd
        .verify_otp(verify_body("+34600111223", &code, "login", Some("42")))
        .await;
    other_phone.assert_error(400, "otp_not_found");

    // Integer user ids (as Django sends them) are the same user.
    let json_number = serde_json::json!({"phone_number": PHONE, "otp_code": code, "purpose": "login", "user_id": 42});
    let right = otpd.verify_otp(json_number).await;
    assert_eq!(right.status, 200, "{:?}", right.json);
}

#[tokio::test]
async fn an_expired_code_fails() {
    let otpd = Setup::new()
        .moved_clock()
        .set("otp", "ttl = \"1m\"")
        .start();
    let sent = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    let code = code_in(otpd.outbox()[0]["body"].as_str().unwrap());
    assert!(
        otpd.log()
            .contains("the clock is moved by the seconds written in"),
        "{}",
        otpd.log()
    );
    // Just before the end of its life it is still a live code: only wrong.
    otpd.move_clock(Duration::from_secs(50));
    let before = otpd
        .verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
        .await;
    before.assert_error(400, "invalid_otp");
    otpd.move_clock(Duration::from_secs(20));
    let late = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    late.assert_error(400, "otp_expired");
    let again = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    again.assert_error(400, "otp_expired");
}

/// The clock file is a development tool: a daemon that may deliver to real phones
/// says it ignores it, and its codes live by the system's clock.
#[tokio::test]
async fn the_clock_file_is_ignored_outside_development_mode() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .env(DEV_CLOCK_FILE, "clock-offset")
        .set("otp", "ttl = \"1m\"")
        .start();
    assert!(
        otpd.log().contains(
            "OTPD_DEV_CLOCK_FILE is ignored: it moves the clock in development mode only"
        ),
        "{}",
        otpd.log()
    );
    let code = sent_code(&otpd, &mock, "login", None).await;
    otpd.move_clock(Duration::from_secs(3600));
    let right = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(right.status, 200, "{:?}", right.json);
}

#[tokio::test]
async fn the_fifth_wrong_attempt_kills_the_code() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let code = sent_code(&otpd, &mock, "login", None).await;
    let bad = wrong(&code);
    for remaining in (0..5).rev() {
        let reply = otpd
            .verify_otp(verify_body(PHONE, &bad, "login", None))
            .await;
        reply.assert_error(400, "invalid_otp");
        assert_eq!(reply.json["attempts_remaining"], remaining);
        assert_eq!(reply.json["verified"], false);
    }
    let dead = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    dead.assert_error(429, "too_many_attempts");
    let wait = dead.retry_after().expect("Retry-After");
    assert!((1..=600).contains(&wait), "{wait}");

    // A new code starts a new count.
    let fresh = sent_code(&otpd, &mock, "login", None).await;
    assert_eq!(
        otpd.verify_otp(verify_body(PHONE, &fresh, "login", None))
            .await
            .status,
        200
    );
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn fifty_parallel_wrong_guesses_never_verify_or_count_past_the_cap() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = std::sync::Arc::new(Setup::new().sqlite_only().twilio(&mock).start());
    let code = sent_code(&otpd, &mock, "login", None).await;

    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        let otpd = otpd.clone();
        // Forty-nine distinct wrong codes and, last, the right one: it must lose too
        // once five wrong guesses have landed.
        let guess = if n == 49 {
            code.clone()
        } else {
            format!("{:06}", (code.parse::<u32>().unwrap() + 1 + n) % 1_000_000)
        };
        guesses.spawn(async move {
            otpd.verify_otp(verify_body(PHONE, &guess, "login", None))
                .await
        });
    }
    let (mut wrong, mut refused, mut verified, mut used) = (0, 0, 0, 0);
    while let Some(reply) = guesses.join_next().await {
        let reply = reply.unwrap();
        match (reply.status.as_u16(), reply.code()) {
            (400, "invalid_otp") => wrong += 1,
            (429, "too_many_attempts") => refused += 1,
            (200, _) => verified += 1,
            (400, "otp_already_used") => used += 1,
            other => panic!("unexpected answer {other:?}: {:?}", reply.json),
        }
    }
    // Every counted attempt answered invalid_otp or verified; together at most the cap.
    assert!(
        wrong + verified <= 5,
        "{wrong} wrong + {verified} right attempts counted, the cap is 5"
    );
    assert!(verified <= 1);
    assert_eq!(wrong + refused + verified + used, 50);
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let attempts: i64 = conn
        .query_row("SELECT attempts FROM otps", [], |r| r.get(0))
        .unwrap();
    assert!(attempts <= 5, "attempts column is {attempts}");
    let state: String = conn
        .query_row("SELECT state FROM otps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state == "verified", verified == 1);
}

#[tokio::test]
async fn parallel_right_guesses_verify_exactly_once() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = std::sync::Arc::new(Setup::new().twilio(&mock).start());
    let code = sent_code(&otpd, &mock, "login", None).await;
    let mut guesses = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (otpd, code) = (otpd.clone(), code.clone());
        guesses.spawn(async move {
            otpd.verify_otp(verify_body(PHONE, &code, "login", None))
                .await
        });
    }
    let mut verified = 0;
    while let Some(reply) = guesses.join_next().await {
        let reply = reply.unwrap();
        if reply.status == 200 {
            verified += 1;
        } else {
            reply.assert_error(400, "otp_already_used");
        }
    }
    assert_eq!(verified, 1);
}

#[tokio::test]
async fn a_pending_code_stays_verifiable_across_a_restart() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let code = sent_code(&otpd, &mock, "login", Some("7")).await;
    let bad = otpd
        .verify_otp(verify_body(PHONE, &wrong(&code), "login", Some("7")))
        .await;
    assert_eq!(bad.json["attempts_remaining"], 4);

    let otpd = otpd.restart();
    // The attempt counter survived too.
    let bad = otpd
        .verify_otp(verify_body(PHONE, &wrong(&code), "login", Some("7")))
        .await;
    assert_eq!(bad.json["attempts_remaining"], 3);
    let ok = otpd
        .verify_otp(verify_body(PHONE, &code, "login", Some("7")))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn a_code_whose_sms_failed_can_never_verify() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().sqlite_only().twilio(&mock).start();
    // Twilio refuses this number, so the caller never gets a code; nothing may verify.
    let failed = otpd
        .send_otp(send_body("+15005550002", "login", None))
        .await;
    failed.assert_error(502, "twilio_rejected");
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let state: String = conn
        .query_row("SELECT state FROM otps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "failed");
    let attempt = otpd
        .verify_otp(verify_body("+15005550002", "123456", "login", None))
        .await;
    attempt.assert_error(400, "otp_not_found");
}
