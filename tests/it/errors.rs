//! Bad input and provider failures: each gives its JSON error with a stable code.

use std::time::{Duration, Instant};

use crate::common::*;
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_their_stable_codes() {
    let otpd = Setup::new().dev().start();
    let send = "/api/v1/messaging/send-otp/";
    let verify = "/api/v1/messaging/verify-otp/";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (send, b"{\"phone_number\": ".to_vec(), 400, "invalid_json"),
        (send, b"not json".to_vec(), 400, "invalid_json"),
        (send, vec![0xff, 0xfe, b'{'], 400, "invalid_json"),
        (send, b"".to_vec(), 400, "invalid_json"),
        (
            send,
            br#"{"purpose":"login"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            send,
            br#"{"phone_number":34600111222,"purpose":"login"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            send,
            br#"{"phone_number":"600111222","purpose":"login"}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            send,
            br#"{"phone_number":"+34 6OO 111 222","purpose":"login"}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            send,
            br#"{"phone_number":"+999123456","purpose":"login"}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            send,
            br#"{"phone_number":"+34600111222","purpose":"party"}"#.to_vec(),
            400,
            "invalid_purpose",
        ),
        (
            send,
            br#"{"phone_number":"+34600111222","purpose":"login","user_id":""}"#.to_vec(),
            400,
            "invalid_user_id",
        ),
        (
            verify,
            br#"{"phone_number":"+34600111222","purpose":"login","otp_code":"12a456"}"#.to_vec(),
            400,
            "invalid_otp_code",
        ),
        (
            verify,
            br#"{"phone_number":"+34600111222","purpose":"login","otp_code":"12"}"#.to_vec(),
            400,
            "invalid_otp_code",
        ),
        (
            verify,
            br#"{"phone_number":"+34600111222","purpose":"login"}"#.to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = otpd.post_raw(path, body.clone()).await;
        assert_eq!(
            (reply.status.as_u16(), reply.code()),
            (status, code),
            "{} -> {:?}",
            String::from_utf8_lossy(&body),
            reply.json
        );
        reply.assert_error(status, code);
    }
    let purposes = otpd.post(send, &send_body(PHONE, "party", None)).await;
    assert!(
        purposes.json["details"]
            .as_str()
            .unwrap()
            .contains("registration, login")
    );
    assert!(otpd.outbox().is_empty(), "no bad request sent anything");
}

#[tokio::test]
async fn oversize_bodies_unknown_routes_and_wrong_methods_get_json_errors() {
    let otpd = Setup::new()
        .dev()
        .set("server", "max_body_bytes = 1024")
        .start();
    let big = json!({"phone_number": PHONE, "purpose": "login", "padding": "x".repeat(2000)});
    let reply = otpd.post("/api/v1/messaging/send-otp/", &big).await;
    reply.assert_error(413, "body_too_large");

    let reply = otpd.get("/api/v1/messaging/nope/").await;
    reply.assert_error(404, "not_found");
    let reply = otpd.get("/").await;
    reply.assert_error(404, "not_found");

    let reply = otpd.get("/api/v1/messaging/send-otp/").await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers.get("allow").unwrap(), "POST");
    let reply = request(&otpd.socket(), Method::DELETE, "/healthz", None).await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers.get("allow").unwrap(), "GET");

    // Unknown fields are ignored, so a backend can forward its request unchanged.
    let extra = json!({"phone_number": PHONE, "purpose": "login", "source": "web"});
    assert_eq!(
        otpd.post("/api/v1/messaging/send-otp", &extra).await.status,
        200
    );
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn twilio_test_numbers_map_to_502_with_twilios_code() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().sqlite_only().twilio(&mock).start();
    for (to, code) in [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ] {
        let reply = otpd.send_otp(send_body(to, "login", None)).await;
        reply.assert_error(502, "twilio_rejected");
        assert_eq!(reply.json["twilio_code"], code, "{to}: {:?}", reply.json);
        let details = reply.json["details"].as_str().unwrap();
        assert!(details.contains(&code.to_string()), "{details}");
    }
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let failed: i64 = conn
        .query_row(
            "SELECT count(*) FROM messages WHERE status = 'failed' AND error_code IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 5);
}

#[tokio::test]
async fn a_bad_from_number_and_bad_credentials_are_502() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "from_number = \"+15005550001\"")
        .start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 21212);

    let account = mock.options().account_sid.clone();
    let otpd = Setup::new()
        .twilio_at(&mock.base_url(), &account, &"f".repeat(32))
        .start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 20003);
    assert!(
        !otpd.log().contains(&"f".repeat(32)),
        "the token reached the log"
    );
}

#[tokio::test]
async fn an_unreachable_twilio_is_503_within_the_timeout() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_hang(true);
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "timeout = \"1s\"")
        .set("twilio", "send_deadline = \"1500ms\"")
        .start();
    let started = Instant::now();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    let took = started.elapsed();
    reply.assert_error(503, "twilio_unavailable");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Nothing listens on a closed port: refused at once, also 503.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = mock.options();
    let otpd = Setup::new()
        .twilio_at(&base, &o.account_sid, &o.auth_token)
        .set("twilio", "send_deadline = \"500ms\"")
        .start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "twilio_unavailable");
}

#[tokio::test]
async fn without_a_provider_sends_are_503_and_status_says_disabled() {
    let otpd = Setup::new().start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "provider_not_configured");
    let reply = otpd.get("/api/v1/messaging/test-twilio/").await;
    reply.assert_error(503, "test_phone_not_configured");
    let status = otpd.get("/api/v1/messaging/status/").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json["enabled"], false);
    assert_eq!(status.json["provider"], serde_json::Value::Null);
    let health = otpd.get("/healthz").await;
    assert_eq!(
        (health.status.as_u16(), &health.json),
        (200, &json!({"status": "ok"}))
    );
}

#[tokio::test]
async fn test_twilio_reports_twilios_refusal() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", "test_phone_number = \"+15005550009\"")
        .start();
    let reply = otpd.get("/api/v1/messaging/test-twilio/").await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 21614);
}

/// A server on 127.0.0.1 that answers every request with `status` and `body`.
fn canned_twilio(status: &str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let status = status.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[tokio::test]
async fn twilio_overload_and_server_errors_are_503_and_odd_refusals_502() {
    let o = MockOptions::default();
    let error = r#"{"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}"#;
    for (status, body, want_status, want_code) in [
        ("429 Too Many Requests", error, 503, "twilio_unavailable"),
        (
            "500 Internal Server Error",
            "oops",
            503,
            "twilio_unavailable",
        ),
        ("503 Service Unavailable", "", 503, "twilio_unavailable"),
        (
            "400 Bad Request",
            "<html>not json</html>",
            502,
            "twilio_rejected",
        ),
        (
            "201 Created",
            "{\"no_sid\": true}",
            503,
            "twilio_unavailable",
        ),
    ] {
        let base = canned_twilio(status, body);
        // A short deadline: the retries of twilio_faults.rs are not the point here.
        let otpd = Setup::new()
            .twilio_at(&base, &o.account_sid, &o.auth_token)
            .set("twilio", "send_deadline = \"500ms\"")
            .start();
        let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
        reply.assert_error(want_status, want_code);
        assert!(
            reply.json["details"].as_str().is_some(),
            "{status}: {:?}",
            reply.json
        );
    }
}
