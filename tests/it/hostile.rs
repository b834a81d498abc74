//! Hostile callers on the socket: trickled headers and bodies are cut off, the connection
//! cap holds, odd input gets a 4xx JSON answer while the daemon keeps serving, and
//! numbers typed in any usual format (national ones with `otp.default_region`) are
//! normalized to one E.164 number.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common::*;
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
        // Huge but under the body cap: a 15 000-character number, and a number too big
        // for any integer type where a user id goes.
        (
            send,
            json!({"phone_number": "1".repeat(15_000), "purpose": "login"})
                .to_string()
                .into_bytes(),
            "invalid_phone_number",
        ),
        (
            send,
            format!(
                "{{\"phone_number\":\"{PHONE}\",\"purpose\":\"login\",\"user_id\":{}}}",
                "9".repeat(5000)
            )
            .into_bytes(),
            "invalid_json", // serde_json: "number out of range"
        ),
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

#[tokio::test]
async fn numbers_in_every_format_people_type_normalize_to_one_e164_number() {
    let otpd = Setup::new()
        .dev()
        .set("otp", "default_region = \"ES\"")
        .start();
    // Sends to the same number however it is typed: each supersedes the last.
    for typed in [
        "600 11 12 22",
        "600-111-222",
        "600.111.222",
        "(600) 111 222",
        "+34 600 11 12 22",
        "0034 600 111 222",
        "(0034) 600-111-222",
        // The country code without its +: libphonenumber drops it when what remains
        // is a valid national number.
        "34 600 11 12 22",
    ] {
        let reply = otpd.send_otp(send_body(typed, "login", None)).await;
        assert_eq!(reply.status, 200, "{typed}: {:?}", reply.json);
        let sent = otpd.outbox().last().unwrap().clone();
        assert_eq!(sent["to"], PHONE, "{typed}");
    }
    // The code sent last verifies when the number is typed in yet another format.
    let code = code_in(otpd.outbox().last().unwrap()["body"].as_str().unwrap());
    let reply = otpd
        .verify_otp(verify_body("600111222", &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    // The audit filter reads numbers the same way.
    let audit = otpd
        .get("/api/v1/messaging/audit/?phone=600%2011%2012%2022")
        .await;
    assert_eq!(audit.status, 200, "{:?}", audit.json);
    assert_eq!(audit.json["events"][0]["event"], "verified");
    // Another country's numbers still need their country code; nonsense is refused.
    let reply = otpd
        .send_otp(send_body("+1 (415) 555-0100", "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    for bad in [
        "415 555 0100",
        "6001112",
        "+34 600 111 222 3",
        "+",
        "0 600 111 222",
    ] {
        otpd.send_otp(send_body(bad, "login", None))
            .await
            .assert_error(400, "invalid_phone_number");
    }
}

#[tokio::test]
async fn without_a_default_region_national_numbers_are_refused_and_00_is_international() {
    let otpd = Setup::new().dev().start();
    let reply = otpd
        .send_otp(send_body("600 11 12 22", "login", None))
        .await;
    reply.assert_error(400, "invalid_phone_number");
    assert!(
        reply.json["details"]
            .as_str()
            .unwrap()
            .contains("international format"),
        "{:?}",
        reply.json
    );
    let reply = otpd
        .send_otp(send_body("0034 600 111 222", "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(otpd.outbox().last().unwrap()["to"], PHONE);
}

#[tokio::test]
async fn lookalike_digits_are_refused_in_numbers_and_codes_never_converted() {
    let otpd = Setup::new().dev().start();
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    let code = code_in(otpd.outbox().last().unwrap()["body"].as_str().unwrap());
    // The issued code, written in fullwidth and Arabic-Indic digits.
    let fullwidth: String = code
        .chars()
        .map(|c| char::from_u32(0xFF10 + (c as u32 - '0' as u32)).unwrap())
        .collect();
    let arabic: String = code
        .chars()
        .map(|c| char::from_u32(0x0660 + (c as u32 - '0' as u32)).unwrap())
        .collect();
    for lookalike in [&fullwidth, &arabic] {
        otpd.verify_otp(verify_body(PHONE, lookalike, "login", None))
            .await
            .assert_error(400, "invalid_otp_code");
    }
    for phone in [
        "＋３４６００１１１２２２",
        "+34６00111222",
        "+34 600\u{00a0}111 222",
    ] {
        otpd.send_otp(send_body(phone, "login", None))
            .await
            .assert_error(400, "invalid_phone_number");
    }
    // Refused input cost no attempt: the real code still verifies.
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

#[test]
fn a_default_region_that_is_not_a_country_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for region in ["Spain", "es", "XX"] {
        std::fs::write(&config, format!("[otp]\ndefault_region = \"{region}\"\n")).unwrap();
        let out = check_config(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{region}: {stderr}");
        assert!(stderr.contains("otp.default_region"), "{stderr}");
    }
}

/// Reads until the daemon closes the connection or `limit` passes; returns what it
/// sent and whether it closed.
fn read_until_closed(mut stream: UnixStream, limit: Duration) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut closed = false;
    while started.elapsed() < limit {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_so_they_cannot_hold_the_slots() {
    // Two slots: callers that connect and say nothing, or keep a connection idle after
    // their request, must not lock everyone else out.
    let otpd = Setup::new()
        .dev()
        .set("server", "request_timeout = \"1s\"")
        .set("server", "max_connections = 2")
        .start();
    let silent = UnixStream::connect(otpd.socket()).unwrap();
    let mut idle = UnixStream::connect(otpd.socket()).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let silent = std::thread::spawn(move || read_until_closed(silent, Duration::from_secs(8)));
    let (answer, closed) = read_until_closed(idle, Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection stayed open");
    let (answer, closed) = silent.join().unwrap();
    assert!(
        closed && answer.is_empty(),
        "a silent connection stayed open: {answer:?}"
    );
    // A body the route never reads is not waited for either.
    let mut unread = UnixStream::connect(otpd.socket()).unwrap();
    unread
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        .unwrap();
    let (answer, closed) = read_until_closed(unread, Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 200") && closed, "{answer}");
    assert_eq!(otpd.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431_and_the_connection_closed() {
    let otpd = Setup::new().dev().start();
    let socket = otpd.socket();
    // 2 MB of one header: hyper's read buffer cap (about 400 KB) refuses it before any
    // route runs, so the answer is hyper's own (431, empty body), not otpd's JSON.
    let answer = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(socket).unwrap();
        let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 2_000_000));
        req.extend(b"\r\n\r\n");
        let _ = stream.write_all(&req); // the daemon hangs up mid-write
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .join()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    assert_eq!(otpd.get("/healthz").await.status, 200);
}
