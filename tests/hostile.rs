//! Hostile callers on the socket: trickled headers and bodies are cut off, the connection
//! cap holds, and odd input gets a 4xx JSON answer while the daemon keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Writes `bytes` one at a time, 200 ms apart, until the daemon hangs up or `limit` passes;
/// returns what it answered and how long it took.
fn trickle(otpd: &Daemon, bytes: &[u8], limit: Duration) -> (String, Duration) {
    let mut stream = UnixStream::connect(otpd.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in bytes.iter().cycle() {
        if started.elapsed() > limit || stream.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {} // nothing yet
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_caller_trickling_headers_is_cut_off() {
    let otpd = Setup::new()
        .dev()
        .set("server", "request_timeout = \"1s\"")
        .start();
    let (_, took) = trickle(
        &otpd,
        b"POST /api/v1/messaging/send-otp/ HTTP/1.1\r\nX-Slow: aaaaaaaa",
        Duration::from_secs(10),
    );
    assert!(
        took < Duration::from_secs(5),
        "the connection stayed open {took:?}"
    );
    assert_eq!(otpd.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_caller_trickling_a_body_gets_408() {
    let otpd = Setup::new()
        .dev()
        .set("server", "request_timeout = \"1s\"")
        .start();
    // Headers complete, then a body that never finishes arriving.
    let mut stream = UnixStream::connect(otpd.socket()).unwrap();
    stream
        .write_all(b"POST /api/v1/messaging/send-otp/ HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"phone")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let started = Instant::now();
    let _ = stream.read_to_string(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(4), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn the_connection_cap_holds_extra_callers_back_until_a_slot_frees() {
    let otpd = Setup::new()
        .dev()
        .set("server", "max_connections = 2")
        .start();
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(otpd.socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let waiting = {
        let socket = otpd.socket();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut stream = UnixStream::connect(socket).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            (answer, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    drop(idle);
    let (answer, took) = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(600),
        "served before a slot was free ({took:?})"
    );
}

#[tokio::test]
async fn odd_input_gets_a_clear_4xx_and_the_daemon_keeps_serving() {
    let otpd = Setup::new().dev().start();
    let send = "/api/v1/messaging/send-otp/";
    let verify = "/api/v1/messaging/verify-otp/";
    // 5000 levels (the most a 16 KiB body holds) in a field otpd ignores are skipped
    // without recursion, leaving the missing field; where a string belongs, the wrong type.
    let deep = format!("{{\"padding\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let deep_typed = format!(
        "{{\"phone_number\":{}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (send, deep.into_bytes(), "invalid_request"),
        (send, deep_typed.into_bytes(), "invalid_request"),
        (
            send,
            json!({"phone_number": "+34600\u{0}111222", "purpose": "login"})
                .to_string()
                .into_bytes(),
            "invalid_phone_number",
        ),
        (
            send,
            json!({"phone_number": "+34600\n111222", "purpose": "login"})
                .to_string()
                .into_bytes(),
            "invalid_phone_number",
        ),
        // Arabic-Indic and fullwidth digits look like digits and are not.
        (
            send,
            json!({"phone_number": "+٣٤٦٠٠١١١٢٢٢", "purpose": "login"})
                .to_string()
                .into_bytes(),
            "invalid_phone_number",
        ),
        (
            verify,
            json!({"phone_number": PHONE, "purpose": "login", "otp_code": "１２３４５６"})
                .to_string()
                .into_bytes(),
            "invalid_otp_code",
        ),
        (
            send,
            json!({"phone_number": PHONE, "purpose": "login\u{202e}"})
                .to_string()
                .into_bytes(),
            "invalid_purpose",
        ),
        (
            send,
            json!({"phone_number": PHONE, "purpose": "login", "user_id": "4\u{1b}[2J"})
                .to_string()
                .into_bytes(),
            "invalid_user_id",
        ),
        (
            send,
            json!({"phone_number": PHONE, "purpose": "login", "user_id": 1e300})
                .to_string()
                .into_bytes(),
            "invalid_request",
        ),
        (send, b"\xc3\x28".to_vec(), "invalid_json"),
    ];
    for (path, body, code) in cases {
        let reply = otpd.post_raw(path, body).await;
        reply.assert_error(400, code);
    }
    // Spaces, dashes, dots and brackets are how people type numbers: normalized.
    for typed in ["+34 600-111.222", "+34 (600) 111 222"] {
        let reply = otpd.send_otp(send_body(typed, "login", None)).await;
        assert_eq!(reply.status, 200, "{typed}: {:?}", reply.json);
    }
    assert_eq!(otpd.get("/healthz").await.status, 200);
    assert!(!otpd.log().contains("panicked"), "{}", otpd.log());
}
