//! Socket access control: owner and group from the config, a uid/gid allow-list that
//! answers 403, and the caller's credentials in the audit trail. Needs root (to chown
//! and to run a client under another uid); CI runs as root.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("SKIPPED: socket access tests need root (CI runs them)");
    }
    root
}

/// curl over the socket as uid/gid 65534, returning (HTTP status, JSON body).
fn curl_as_nobody(otpd: &Daemon, args: &[&str]) -> (u16, Value) {
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--unix-socket")
        .arg(otpd.socket())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("{output:?}"));
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_socket_gets_the_configured_owner_group_and_mode() {
    if !running_as_root() {
        return;
    }
    let otpd = Setup::new()
        .dev()
        .set("server", "socket_user = \"nobody\"")
        .set("server", &format!("socket_group = \"{NOBODY}\""))
        .set("server", "socket_mode = \"0640\"")
        .start();
    let meta = std::fs::metadata(otpd.socket()).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (NOBODY, NOBODY, 0o640)
    );
}

#[tokio::test]
async fn callers_off_the_allow_list_get_403_and_the_audit_names_the_caller() {
    if !running_as_root() {
        return;
    }
    let otpd = Setup::new()
        .dev()
        .set("server", "socket_mode = \"0666\"")
        .set("server", &format!("allowed_uids = [{NOBODY}]"))
        .start();

    // Root is not on the list: refused before anything happens.
    let refused = otpd.send_otp(send_body(PHONE, "login", None)).await;
    refused.assert_error(403, "forbidden");
    assert!(otpd.outbox().is_empty());
    assert!(
        otpd.log()
            .contains("refused a caller not on the allow-list: uid 0"),
        "{}",
        otpd.log()
    );

    let body = r#"{"phone_number":"+34600111222","purpose":"login","user_id":"7"}"#;
    let (status, json) = curl_as_nobody(
        &otpd,
        &["-d", body, "http://localhost/api/v1/messaging/send-otp/"],
    );
    assert_eq!(status, 200, "{json}");
    let (status, json) = curl_as_nobody(
        &otpd,
        &["http://localhost/api/v1/messaging/audit/?since=1h"],
    );
    assert_eq!(status, 200, "{json}");
    let events = json["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for event in events {
        assert_eq!(event["peer"]["uid"], NOBODY, "{event}");
        assert_eq!(event["peer"]["gid"], NOBODY, "{event}");
        assert!(event["peer"]["pid"].as_i64().unwrap() > 0, "{event}");
    }
}

#[tokio::test]
async fn an_unknown_socket_user_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[server]\nsocket_group = \"no-such-group-otpd\"\n").unwrap();
    let output = check_config(&config);
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("server.socket_group"));
}
