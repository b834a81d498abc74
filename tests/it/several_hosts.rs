//! Several hosts, one shared PostgreSQL store: two daemons (instances "a" and "b", each
//! on its own socket) in one schema with one HMAC key and one mock Twilio. Each test is
//! a rule that would break with a store per host. PostgreSQL only: ignored unless run
//! with `OTPD_TEST_POSTGRES_URL` and `--include-ignored` (as `.ci/run` does).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::common::outbox::{SEND_SMS, wait_for};
use crate::common::*;

/// Two (or more) daemons sharing one schema and one key; the key's directory lives as
/// long as they do.
struct Hosts {
    daemons: Vec<Daemon>,
    _key_dir: tempfile::TempDir,
}

/// A fresh schema per test, and the HMAC key every host of it shares.
fn shared(mock: &MockTwilio) -> (Setup, tempfile::TempDir) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "h_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("hmac.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let url = postgres_url().expect("OTPD_TEST_POSTGRES_URL: these tests need PostgreSQL");
    let setup = Setup::new()
        .twilio(mock)
        .set("store", "backend = \"postgres\"")
        .set("store.postgres", &format!("url = \"{url}\""))
        .set("store.postgres", &format!("schema = \"{schema}\""))
        .set("otp", &format!("hmac_key_file = \"{}\"", key.display()));
    (setup, key_dir)
}

fn instance(setup: &Setup, name: &str) -> Setup {
    setup
        .clone()
        .set("store.postgres", &format!("instance = \"{name}\""))
}

fn two_hosts(mock: &MockTwilio, adjust: impl Fn(Setup) -> Setup) -> Hosts {
    let (setup, key_dir) = shared(mock);
    let setup = adjust(setup);
    let daemons = ["a", "b"]
        .iter()
        .map(|name| instance(&setup, name).start())
        .collect();
    Hosts {
        daemons,
        _key_dir: key_dir,
    }
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn a_code_sent_through_one_host_verifies_once_through_another() {
    let mock = MockTwilio::start(MockOptions::default());
    let hosts = two_hosts(&mock, |s| s);
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    let sent = a.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    let code = last_code(&mock, PHONE);
    let verified = b.verify_otp(verify_body(PHONE, &code, "login", None)).await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(verified.json["otp_id"], sent.json["otp_id"]);
    a.verify_otp(verify_body(PHONE, &code, "login", None))
        .await
        .assert_error(400, "otp_already_used");
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn wrong_guesses_through_both_hosts_stop_at_the_one_cap() {
    let mock = MockTwilio::start(MockOptions::default());
    let hosts = two_hosts(&mock, |s| s.set("otp", "max_attempts = 5"));
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    assert_eq!(
        a.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    let code = last_code(&mock, PHONE);
    // 20 wrong guesses at once, alternating hosts: exactly 5 are counted.
    let guesses = (0..20).map(|i| {
        let host = if i % 2 == 0 { a } else { b };
        host.verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
    });
    let replies = futures_util::future::join_all(guesses).await;
    let counted = replies
        .iter()
        .filter(|r| r.json["code"] == "invalid_otp")
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.json["code"] == "too_many_attempts")
        .count();
    assert_eq!((counted, refused), (5, 15), "{replies:?}");
    // The right code is dead on both hosts now.
    for host in [a, b] {
        host.verify_otp(verify_body(PHONE, &code, "login", None))
            .await
            .assert_error(429, "too_many_attempts");
    }
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn a_send_limit_of_three_allows_three_in_total_not_per_host() {
    let mock = MockTwilio::start(MockOptions::default());
    let hosts = two_hosts(&mock, |s| s.set("limits", "send_per_phone = \"3/1h\""));
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    for host in [a, a, b] {
        let sent = host.send_otp(send_body(PHONE, "login", None)).await;
        assert_eq!(sent.status, 200, "{:?}", sent.json);
    }
    for host in [a, b] {
        let refused = host.send_otp(send_body(PHONE, "login", None)).await;
        refused.assert_error(429, "rate_limited");
        assert!(refused.retry_after().is_some_and(|s| s > 0), "{refused:?}");
    }
    assert_eq!(mock.messages().len(), 3);
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn one_idempotency_key_through_both_hosts_at_once_sends_one_message() {
    let mock = MockTwilio::start(MockOptions::default());
    let hosts = two_hosts(&mock, |s| s);
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    let body = json!({"to": PHONE, "body": "Your order shipped", "idempotency_key": "order-9"});
    let (first, second) = tokio::join!(a.post(SEND_SMS, &body), b.post(SEND_SMS, &body));
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(second.status, 202, "{second:?}");
    assert_eq!(first.json["message_id"], second.json["message_id"]);
    let replayed = [&first, &second]
        .iter()
        .filter(|r| r.json["replayed"] == true)
        .count();
    assert_eq!(replayed, 1, "{first:?} {second:?}");
    let id = first.json["message_id"].as_i64().unwrap();
    wait_for(a, id, Duration::from_secs(10), "sent", |m| {
        m["status"] == "sent"
    })
    .await;
    assert_eq!(mock.messages().len(), 1);
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn outbox_messages_queued_on_both_hosts_are_each_sent_exactly_once() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_latency(Duration::from_millis(20));
    let hosts = two_hosts(&mock, |s| s);
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    let mut ids = Vec::new();
    for i in 0..60 {
        let host = if i % 2 == 0 { a } else { b };
        let body = json!({"to": PHONE, "body": format!("message {i}")});
        let queued = host.post(SEND_SMS, &body).await;
        assert_eq!(queued.status, 202, "{queued:?}");
        ids.push(queued.json["message_id"].as_i64().unwrap());
    }
    for id in &ids {
        wait_for(b, *id, Duration::from_secs(30), "sent", |m| {
            m["status"] == "sent"
        })
        .await;
    }
    let mut bodies: Vec<String> = mock.messages().into_iter().map(|m| m.body).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..60).map(|i| format!("message {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "each message reached Twilio exactly once");
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn a_host_with_another_hmac_key_refuses_to_start() {
    let mock = MockTwilio::start(MockOptions::default());
    let (setup, _key_dir) = shared(&mock);
    let _a = instance(&setup, "a").start();
    let other_key = tempfile::tempdir().unwrap();
    let key = other_key.path().join("hmac.key");
    std::fs::write(&key, format!("{}\n", "cd".repeat(32))).unwrap();
    let c = instance(&setup, "c").set("otp", &format!("hmac_key_file = \"{}\"", key.display()));
    let dir = tempfile::tempdir().unwrap();
    let config = c.write_config(dir.path());
    let output = otpd_command()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("otp.hmac_key differs"), "{stderr}");
    assert!(
        !stderr.contains(&"cd".repeat(32)),
        "the key is never printed"
    );
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn status_lists_the_instances_and_warns_when_their_settings_differ() {
    const STATUS: &str = "/api/v1/messaging/status/";
    let mock = MockTwilio::start(MockOptions::default());
    let (setup, _key_dir) = shared(&mock);
    let a = instance(&setup, "a").start();
    let b = instance(&setup, "b").start();
    let names = |s: &serde_json::Value| -> Vec<String> {
        s["instances"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|i| i["name"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let status = b.get(STATUS).await;
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(names(&status.json), ["a", "b"], "{:?}", status.json);
    assert!(
        status.json.get("instances_warning").is_none(),
        "{:?}",
        status.json
    );

    let _c = instance(&setup, "c")
        .set("limits", "send_per_phone = \"2/1h\"")
        .start();
    let status = a.get(STATUS).await;
    assert_eq!(names(&status.json), ["a", "b", "c"], "{:?}", status.json);
    let warning = status.json["instances_warning"]
        .as_str()
        .unwrap_or_default();
    assert!(warning.contains("different limits"), "{:?}", status.json);
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn a_status_callback_posted_to_one_host_updates_a_message_the_other_sent() {
    use crate::common::outbox::{CALLBACK_URL, callback, message};
    let mock = MockTwilio::start(MockOptions::default());
    let hosts = two_hosts(&mock, |s| {
        s.set(
            "twilio",
            &format!("status_callback_url = \"{CALLBACK_URL}\""),
        )
        .set("messaging", "retry_delay = \"200ms\"")
    });
    let [a, b] = &hosts.daemons[..] else {
        unreachable!()
    };
    let reply = a
        .post(SEND_SMS, &json!({"to": PHONE, "body": "Table at 8"}))
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let sent = wait_for(a, id, Duration::from_secs(10), "sent", |m| {
        m["status"] == "sent"
    })
    .await;
    let sid = sent["sid"].as_str().unwrap().to_owned();
    let reply = callback(
        b,
        &[("MessageSid", &sid), ("MessageStatus", "delivered")],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["message_id"], id);
    // Either host now reads it delivered, with the report in its history.
    for host in [a, b] {
        let m = message(host, id).await;
        assert_eq!(m["status"], "delivered", "{m}");
        assert!(m["history"].to_string().contains("status callback"), "{m}");
    }
}
