//! Sending codes: what reaches Twilio, what the caller gets, what is stored and logged.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_code_sent_through_twilio_verifies_once() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();

    let sent = otpd
        .send_otp(send_body(PHONE, "registration", Some("42")))
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    assert_eq!(sent.json["message"], "OTP sent successfully");
    let otp_id = sent.json["otp_id"].as_i64().expect("otp_id is a number");
    let expires_at = sent.json["expires_at"].as_str().unwrap();
    let expires = humantime::parse_rfc3339(expires_at).expect("expires_at is RFC 3339");
    let ttl = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ttl.as_secs() > 590 && ttl.as_secs() <= 600, "{ttl:?}");

    let code = last_code(&mock, PHONE);
    assert_eq!(code.len(), 6);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "registration", Some("42")))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(
        verified.json,
        json!({"message": "OTP verified successfully", "verified": true, "otp_id": otp_id})
    );
}

#[tokio::test]
async fn twilio_gets_a_form_post_with_basic_auth_and_the_templated_body() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set(
            "otp",
            "message_template = \"{code} is your {purpose} code, valid {minutes} min\"",
        )
        .set("otp", "ttl = \"5m\"")
        .set("otp", "length = 8")
        .start();
    let sent = otpd
        .send_otp(send_body("+34 600 11 12 22", "login", None))
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);

    let request = mock.requests().pop().unwrap();
    let o = mock.options();
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{}/Messages.json", o.account_sid)
    );
    assert_eq!(
        request.basic_auth(),
        Some((o.account_sid.clone(), o.auth_token.clone()))
    );
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.field("To"),
        Some(PHONE),
        "the number reaches Twilio in E.164"
    );
    assert_eq!(request.field("From"), Some(TWILIO_FROM));
    let body = request.field("Body").unwrap();
    let code = code_in(body);
    assert_eq!(code.len(), 8);
    assert_eq!(body, format!("{code} is your login code, valid 5 min"));
}

#[tokio::test]
async fn an_api_key_and_a_messaging_service_are_used_when_configured() {
    let mock = MockTwilio::start(MockOptions::default().with_api_key());
    let o = mock.options().clone();
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "auth_token = \"\"")
        .set(
            "twilio",
            &format!("api_key_sid = \"{}\"", o.api_key_sid.clone().unwrap()),
        )
        .set(
            "twilio",
            &format!("api_key_secret = \"{}\"", o.api_key_secret.clone().unwrap()),
        )
        .set(
            "twilio",
            &format!("messaging_service_sid = \"MG{}\"", "a".repeat(32)),
        )
        .start();
    let sent = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    let request = mock.requests().pop().unwrap();
    assert_eq!(
        request.basic_auth(),
        Some((o.api_key_sid.unwrap(), o.api_key_secret.unwrap()))
    );
    assert!(
        request.path.contains(&o.account_sid),
        "the Account SID stays in the path"
    );
    assert_eq!(
        request.field("MessagingServiceSid"),
        Some(format!("MG{}", "a".repeat(32)).as_str())
    );
    assert_eq!(request.field("From"), None);
}

#[tokio::test]
async fn credentials_come_from_the_backends_environment_variables() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let otpd = Setup::new()
        .set("twilio", &format!("api_base = \"{}\"", mock.base_url()))
        .env("TWILIO_ACCOUNT_SID", &o.account_sid)
        .env("TWILIO_AUTH_TOKEN", &o.auth_token)
        .env("TWILIO_PHONE_NUMBER", TWILIO_FROM)
        .env("TEST_PHONE_NUMBER", "+34600999888")
        .start();
    let status = otpd.get("/api/v1/messaging/status/").await;
    assert_eq!(status.json["enabled"], true);
    assert_eq!(status.json["provider"], "twilio");
    let test = otpd.get("/api/v1/messaging/test-twilio/").await;
    assert_eq!(test.status, 200, "{:?}", test.json);
    let sid = &mock.messages()[0].sid;
    assert_eq!(mock.messages()[0].to, "+34600999888");
    assert_eq!(
        test.json["message"],
        format!("Test message sent successfully with SID: {sid}")
    );
}

#[tokio::test]
async fn a_new_code_supersedes_the_previous_one() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    otpd.send_otp(send_body(PHONE, "login", None)).await;
    let first = last_code(&mock, PHONE);
    otpd.send_otp(send_body(PHONE, "login", None)).await;
    let second = last_code(&mock, PHONE);

    if first != second {
        let old = otpd
            .verify_otp(verify_body(PHONE, &first, "login", None))
            .await;
        old.assert_error(400, "invalid_otp");
    }
    let new = otpd
        .verify_otp(verify_body(PHONE, &second, "login", None))
        .await;
    assert_eq!(new.status, 200, "{:?}", new.json);
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn codes_are_stored_only_as_keyed_hashes_and_never_logged() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().sqlite_only().twilio(&mock).start();
    let mut codes = Vec::new();
    for purpose in ["registration", "login", "password_reset"] {
        let sent = otpd.send_otp(send_body(PHONE, purpose, Some("42"))).await;
        assert_eq!(sent.status, 200);
        codes.push(last_code(&mock, PHONE));
    }
    let wrong_code = wrong(&codes[1]);
    otpd.verify_otp(verify_body(PHONE, &wrong_code, "login", Some("42")))
        .await;
    otpd.verify_otp(verify_body(PHONE, &codes[0], "registration", Some("42")))
        .await;
    let mut otpd = otpd;
    assert!(otpd.stop().success());

    // Every byte of the database, WAL folded in at shutdown.
    let db = std::fs::read(otpd.db_path()).unwrap();
    let db_text = String::from_utf8_lossy(&db);
    for code in codes.iter().chain([&wrong_code]) {
        assert!(
            !db_text.contains(code.as_str()),
            "code {code} is in the database file"
        );
    }
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let hash_len: i64 = conn
        .query_row("SELECT length(code_hash) FROM otps LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(hash_len, 32, "HMAC-SHA256 output");
    let events: Vec<String> = conn
        .prepare("SELECT event FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for event in ["generated", "sent", "failed_attempt", "verified"] {
        assert!(
            events.iter().any(|e| e == event),
            "no {event} in {events:?}"
        );
    }
    let sids: i64 = conn
        .query_row(
            "SELECT count(*) FROM messages WHERE sid LIKE 'SM%' AND status = 'queued'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sids, 3);

    let log = otpd.log();
    assert!(
        log.contains("+34*****222"),
        "log lines use the masked number:\n{log}"
    );
    for secret in codes
        .iter()
        .chain([&wrong_code, &mock.options().auth_token])
    {
        assert!(
            !log.contains(secret.as_str()),
            "log contains {secret}:\n{log}"
        );
    }
    assert!(
        !log.contains(PHONE) && !log.contains("600111222"),
        "log contains the full number:\n{log}"
    );
}

#[tokio::test]
async fn test_numbers_get_the_fixed_code_without_an_sms_and_stay_limited() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_per_phone = \"2/1h\"")
        .raw("[[otp.test_numbers]]\npattern = \"+3460000*\"\ncode = \"424242\"\nuntil = \"2099-01-01\"")
        .raw("[[otp.test_numbers]]\npattern = \"+34611001111\"\ncode = \"111111\"\nuntil = \"2020-01-01\"")
        .start();

    let sent = otpd
        .send_otp(send_body("+34600000123", "login", None))
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    assert!(
        mock.requests().is_empty(),
        "a test number never reaches Twilio"
    );
    let ok = otpd
        .verify_otp(verify_body("+34600000123", "424242", "login", None))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    let log = otpd.log();
    assert!(log.contains("test number"), "{log}");
    assert!(
        !log.contains("424242") && !log.contains("+34600000123"),
        "{log}"
    );

    otpd.send_otp(send_body("+34600000123", "login", None))
        .await;
    let limited = otpd
        .send_otp(send_body("+34600000123", "login", None))
        .await;
    limited.assert_error(429, "rate_limited");

    // A pattern past its end date is an ordinary number again.
    let expired = otpd
        .send_otp(send_body("+34611001111", "login", None))
        .await;
    assert_eq!(expired.status, 200);
    assert_eq!(mock.messages().len(), 1);
    let fixed = otpd
        .verify_otp(verify_body("+34611001111", "111111", "login", None))
        .await;
    if last_code(&mock, "+34611001111") != "111111" {
        fixed.assert_error(400, "invalid_otp");
    }
}

#[tokio::test]
async fn development_mode_writes_the_outbox_and_says_so() {
    let otpd = Setup::new().dev().start();
    let sent = otpd.send_otp(send_body(PHONE, "registration", None)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    let outbox = otpd.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["to"], PHONE);
    let code = code_in(outbox[0]["body"].as_str().unwrap());
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "registration", None))
        .await;
    assert_eq!(verified.status, 200);
    assert!(!otpd.log().contains(&code), "{}", otpd.log());

    let status = otpd.get("/api/v1/messaging/status/").await;
    assert_eq!(status.json["provider"], "dev_outbox");
    assert_eq!(status.json["dev_mode"], true);
    assert!(otpd.log().contains("DEVELOPMENT MODE"), "{}", otpd.log());
}

#[test]
fn serve_dev_runs_with_no_config_file_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = otpd_command()
        .args(["serve", "--dev"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("otpd.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no socket in the current directory"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(request(
        &socket,
        hyper::Method::POST,
        "/api/v1/messaging/send-otp/",
        Some(send_body(PHONE, "login", None).to_string().into_bytes()),
    ));
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert!(dir.path().join("outbox.jsonl").exists());
    assert!(dir.path().join("otpd.db").exists());
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("hmac.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let _ = child.kill();
    let _ = child.wait();
}
