//! otpd under systemd, through the real binary: sd_notify (READY, RELOADING, STOPPING),
//! SIGHUP reloads (new limits and templates applied, a broken file rejected), socket
//! activation (LISTEN_FDS), and the structured log fields on the stderr fallback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::notify::NotifySocket;
use crate::common::*;
use hyper::Method;

fn limited(setup: Setup, notify: &NotifySocket) -> Daemon {
    setup
        .dev()
        .set("limits", "send_per_phone = \"1/1h\"")
        .set("limits", "verify_per_phone = \"1/1h\"")
        .env("NOTIFY_SOCKET", notify.path())
        .start()
}

/// Rewrites the daemon's config file with `setup`, sends SIGHUP and waits until otpd
/// says READY=1 again; returns the RELOADING message.
fn reload(otpd: &Daemon, setup: Option<&Setup>, notify: &NotifySocket) -> String {
    if let Some(setup) = setup {
        setup.write_config(otpd.dir.path());
    }
    otpd.signal("HUP");
    let reloading = notify.wait_for("RELOADING=1");
    let ready = notify.next();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "after RELOADING=1 came {ready:?}"
    );
    reloading
}

#[tokio::test]
async fn systemd_is_told_ready_reloading_and_stopping() {
    let notify = NotifySocket::new();
    let mut otpd = limited(Setup::new(), &notify);
    notify.wait_for("READY=1");
    // READY=1 means the socket answers and the store is open.
    assert_eq!(otpd.get("/healthz").await.status, 200);

    let reloading = reload(&otpd, None, &notify);
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 without MONOTONIC_USEC: {reloading:?}"
    );

    otpd.signal("TERM");
    notify.wait_for("STOPPING=1");
    assert!(otpd.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn the_watchdog_is_pinged_when_systemd_sets_one() {
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let config = Setup::new().dev().write_config(dir.path());
    // systemd names the pid the watchdog is for; a shell that execs otpd knows it.
    let mut child = clean_command("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\""])
        .arg(otpd_bin())
        .arg(&config)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "200000")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(&mut child);
    notify.wait_for("READY=1");
    notify.wait_for("WATCHDOG=1");
}

#[tokio::test]
async fn no_watchdog_pings_unless_systemd_asks() {
    let notify = NotifySocket::new();
    let mut otpd = limited(Setup::new(), &notify);
    notify.wait_for("READY=1");
    otpd.signal("TERM");
    // Everything otpd said between READY=1 and STOPPING=1: no WATCHDOG=1.
    let mut said = Vec::new();
    loop {
        let message = notify.next();
        let stopping = message.lines().any(|l| l == "STOPPING=1");
        said.push(message);
        if stopping {
            break;
        }
    }
    assert!(!said.iter().any(|m| m.contains("WATCHDOG=1")), "{said:?}");
    assert!(otpd.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn sighup_applies_new_limits_and_templates_and_keeps_unchanged_limits() {
    let notify = NotifySocket::new();
    let setup = Setup::new().dev();
    let otpd = limited(setup.clone(), &notify);
    notify.wait_for("READY=1");

    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
    let wrong = otpd
        .verify_otp(verify_body(PHONE, "000000", "login", None))
        .await;
    assert_eq!(wrong.status, 400, "{:?}", wrong.json);
    otpd.verify_otp(verify_body(PHONE, "000000", "login", None))
        .await
        .assert_error(429, "rate_limited");

    let changed = setup
        .set("limits", "send_per_phone = \"3/1h\"")
        .set("limits", "verify_per_phone = \"1/1h\"")
        .set(
            "otp",
            "message_template = \"Reloaded: {code} ({minutes} min)\"",
        )
        .set("otp", "purposes = [\"login\", \"signup\"]");
    reload(&otpd, Some(&changed), &notify);

    // The changed limit has its new quota: three more sends, then 429.
    for _ in 0..3 {
        let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
    // The unchanged limit kept this phone's state across the reload.
    otpd.verify_otp(verify_body(PHONE, "000000", "login", None))
        .await
        .assert_error(429, "rate_limited");
    // The new purposes: one added, one gone.
    let reply = otpd
        .send_otp(send_body("+34600111223", "signup", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    otpd.send_otp(send_body("+34600111224", "registration", None))
        .await
        .assert_error(400, "invalid_purpose");
    // The new template is used.
    let outbox = otpd.outbox();
    let last = outbox.last().unwrap()["body"].as_str().unwrap().to_owned();
    assert!(last.starts_with("Reloaded: "), "{last}");
    assert!(outbox[0]["body"].as_str().unwrap().starts_with("Your"));
    assert!(otpd.log().contains("configuration reloaded"));
}

#[tokio::test]
async fn sighup_moves_sends_to_twilio_with_new_credentials_and_new_outbox_workers() {
    let mock = MockTwilio::start(MockOptions::default());
    let notify = NotifySocket::new();
    let otpd = Setup::new()
        .dev()
        .env("NOTIFY_SOCKET", notify.path())
        .start();
    notify.wait_for("READY=1");
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    assert_eq!(otpd.outbox().len(), 1);

    reload(&otpd, Some(&Setup::new().twilio(&mock)), &notify);
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "the code did not go to Twilio");
    assert_eq!(requests[0].field("To"), Some(PHONE));

    // A plain SMS goes through the outbox workers: the new set sends it, once, to Twilio.
    let body = "Reloaded workers send this.";
    let reply = otpd
        .post(
            "/api/v1/messaging/send-sms/",
            &serde_json::json!({"to": PHONE, "body": body}),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = otpd.get(&format!("/api/v1/messaging/messages/{id}")).await;
        if m.json["status"] == "sent" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never sent: {:?}\n{}",
            m.json,
            otpd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = mock
        .requests()
        .iter()
        .filter(|r| r.field("Body") == Some(body))
        .count();
    assert_eq!(sent, 1);
    assert_eq!(
        otpd.outbox().len(),
        1,
        "the old dev outbox got a message after the reload"
    );
}

#[tokio::test]
async fn a_broken_config_is_rejected_on_sighup_and_the_old_one_keeps_serving() {
    let notify = NotifySocket::new();
    let otpd = limited(Setup::new(), &notify);
    notify.wait_for("READY=1");
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );

    std::fs::write(otpd.config_path(), "[limits\nsend_per_phone = ").unwrap();
    reload(&otpd, None, &notify);
    let log = otpd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("reload rejected")),
        "no error logged:\n{log}"
    );
    // Still the old configuration: same limit, same state.
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(
        otpd.send_otp(send_body("+34600111223", "login", None))
            .await
            .status,
        200
    );

    // A file that parses but fails validation is rejected the same way.
    let invalid = Setup::new()
        .dev()
        .set("limits", "send_per_phone = \"lots\"");
    reload(&otpd, Some(&invalid), &notify);
    assert!(otpd.log().contains("send_per_phone"));
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_reload_says_what_needs_a_restart() {
    let notify = NotifySocket::new();
    let setup = Setup::new().dev();
    let otpd = limited(setup.clone(), &notify);
    notify.wait_for("READY=1");
    let moved = setup.set("server", "socket_mode = \"0600\"");
    reload(&otpd, Some(&moved), &notify);
    assert!(
        otpd.log()
            .contains("server.socket_mode changed: needs restart")
    );
    // Still not applied at the next reload, so still said.
    reload(&otpd, None, &notify);
    assert_eq!(
        otpd.log()
            .matches("server.socket_mode changed: needs restart")
            .count(),
        2
    );
    // The socket itself is untouched and still serves.
    assert_eq!(otpd.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn serves_on_a_socket_passed_by_systemd() {
    let Some(activate) = which("systemd-socket-activate") else {
        eprintln!(
            "SKIPPED serves_on_a_socket_passed_by_systemd: systemd-socket-activate not installed (apt-get install systemd)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The config names another path: otpd must serve the passed socket, not bind its own.
    let config = Setup::new().dev().write_config(dir.path());
    let passed = dir.path().join("activated.sock");
    let log = std::fs::File::create(dir.path().join("otpd.log")).unwrap();
    let mut child = clean_command(activate)
        .arg("--listen")
        .arg(&passed)
        .arg(otpd_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = KillOnDrop(&mut child);
    wait_for_path(&passed);

    let reply = request(&passed, Method::GET, "/healthz", None).await;
    assert_eq!(reply.status, 200);
    let body = serde_json::to_vec(&send_body(PHONE, "login", None)).unwrap();
    let reply = request(
        &passed,
        Method::POST,
        "/api/v1/messaging/send-otp/",
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let log = std::fs::read_to_string(dir.path().join("otpd.log")).unwrap();
    assert!(log.contains("using the socket passed by systemd"), "{log}");
    assert!(
        !dir.path().join("otpd.sock").exists(),
        "otpd bound its own socket"
    );

    let pid = child.0.id();
    Command::new("kill").arg(pid.to_string()).status().unwrap();
    let status = wait_child(&mut *child.0);
    assert!(status.success(), "{status}");
    // The socket belongs to systemd: otpd leaves the file in place.
    assert!(passed.exists(), "otpd removed the passed socket");
}

#[tokio::test]
async fn otp_log_lines_carry_structured_fields_on_stderr() {
    let otpd = Setup::new().dev().start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200);
    let id = reply.json["otp_id"].as_i64().unwrap();
    let log = otpd.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("otp {id} for")))
        .unwrap_or_else(|| panic!("no send line:\n{log}"));
    // The journal gets these as OTP_ID=, PURPOSE=, PHONE= (systemd-journal-logger
    // uppercases keys); stderr shows them as key=value.
    assert!(line.contains(&format!("otp_id={id}")), "{line}");
    assert!(line.contains("purpose=login"), "{line}");
    assert!(line.contains("phone=+34*****222"), "{line}");
    assert!(!log.contains(PHONE), "a full phone number reached the log");
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_child(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "otpd did not exit within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn twilio_log_lines_carry_the_sid_and_the_error_code() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let sid = mock.messages()[0].sid.clone();
    let log = otpd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("sent via twilio") && l.contains(&format!("twilio_sid={sid}"))),
        "{log}"
    );

    // Twilio's magic invalid From: every message is rejected with 21212.
    let rejecting = Setup::new()
        .twilio(&mock)
        .set("twilio", "from_number = \"+15005550001\"")
        .start();
    let reply = rejecting.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 502, "{:?}", reply.json);
    let log = rejecting.log();
    assert!(
        log.lines()
            .any(|l| l.contains("not sent") && l.contains("error_code=21212")),
        "{log}"
    );
    assert!(!log.contains(PHONE), "a full phone number reached the log");
}
