//! The `otpd` client commands against a running daemon: output, `--json`, exit codes.

use std::process::Output;

use crate::common::*;
use serde_json::Value;

fn cli(otpd: &Daemon, args: &[&str]) -> Output {
    otpd_command()
        .args(args)
        .arg("--socket")
        .arg(otpd.socket())
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn each_client_command_works_against_the_daemon() {
    let otpd = Setup::new()
        .dev()
        .set("twilio", "test_phone_number = \"+34600999888\"")
        .set("limits", "send_per_phone = \"1/1h\"")
        .start();

    let sent = cli(
        &otpd,
        &[
            "send-otp",
            "+34 600 11 12 22",
            "--purpose",
            "login",
            "--user",
            "42",
        ],
    );
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    assert!(
        stdout(&sent).starts_with("sent: otp 1 expires "),
        "{}",
        stdout(&sent)
    );
    let code = code_in(otpd.outbox()[0]["body"].as_str().unwrap());

    let wrong_code = cli(
        &otpd,
        &[
            "verify-otp",
            PHONE,
            &wrong(&code),
            "-p",
            "login",
            "-u",
            "42",
            "--json",
        ],
    );
    assert_eq!(wrong_code.status.code(), Some(1), "a wrong code exits 1");
    assert_eq!(json(&wrong_code)["code"], "invalid_otp");
    assert_eq!(json(&wrong_code)["attempts_remaining"], 4);

    let human = cli(
        &otpd,
        &[
            "verify-otp",
            PHONE,
            &wrong(&code),
            "-p",
            "login",
            "-u",
            "42",
        ],
    );
    assert!(
        String::from_utf8_lossy(&human.stderr).contains("invalid_otp"),
        "{human:?}"
    );

    let verified = cli(
        &otpd,
        &[
            "verify-otp",
            PHONE,
            &code,
            "-p",
            "login",
            "-u",
            "42",
            "--json",
        ],
    );
    assert_eq!(verified.status.code(), Some(0));
    assert_eq!(json(&verified)["verified"], true);

    let limited = cli(&otpd, &["send-otp", PHONE, "-p", "login", "--json"]);
    assert_eq!(limited.status.code(), Some(3), "a rate limit exits 3");
    assert_eq!(json(&limited)["code"], "rate_limited");

    let test = cli(&otpd, &["test-twilio"]);
    assert_eq!(test.status.code(), Some(0), "{test:?}");
    assert!(stdout(&test).contains("Test message sent successfully with SID: DEV"));

    let status = cli(&otpd, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let status = json(&status);
    assert_eq!(status["enabled"], true);
    assert_eq!(status["provider_reachable"], true);
    assert_eq!(status["codes"]["verified"], 1);
    assert_eq!(status["messages"]["delivered_to_outbox"], 2);
    let human = stdout(&cli(&otpd, &["status"]));
    assert!(
        human.contains("codes") && human.contains("verified=1"),
        "{human}"
    );

    let messages = json(&cli(&otpd, &["messages", "--since", "1h", "--json"]));
    let messages = messages["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["to"], PHONE);
    let table = stdout(&cli(&otpd, &["messages"]));
    assert!(
        table.starts_with("ID") && table.lines().count() == 3,
        "{table}"
    );

    let audit = json(&cli(&otpd, &["audit", "--phone", PHONE, "--json"]));
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "verified",
            "failed_attempt",
            "failed_attempt",
            "sent",
            "generated"
        ]
    );
    let other = json(&cli(&otpd, &["audit", "--phone", "+34600111223", "--json"]));
    assert_eq!(other["events"], serde_json::json!([]));

    let purge = cli(&otpd, &["purge"]);
    assert_eq!(purge.status.code(), Some(0));
    assert_eq!(
        stdout(&purge).trim(),
        "deleted 0 codes, 0 messages, 0 audit events"
    );

    let bad = cli(&otpd, &["messages", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_query"));
}

#[test]
fn exit_codes_tell_unavailable_from_unreachable() {
    let otpd = Setup::new().start();
    let no_provider = cli(&otpd, &["send-otp", PHONE, "-p", "login"]);
    assert_eq!(no_provider.status.code(), Some(4), "503 exits 4");
    assert!(String::from_utf8_lossy(&no_provider.stderr).contains("provider_not_configured"));

    let dir = tempfile::tempdir().unwrap();
    let nothing = otpd_command()
        .args(["status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(
        nothing.status.code(),
        Some(69),
        "no daemon exits 69 (EX_UNAVAILABLE)"
    );

    // OTPD_SOCKET is honoured.
    let via_env = otpd_command()
        .arg("status")
        .env("OTPD_SOCKET", otpd.socket())
        .output()
        .unwrap();
    assert_eq!(via_env.status.code(), Some(0));
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status_on(socket: &std::path::Path) -> Output {
    otpd_command()
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn no_socket_a_dead_socket_and_a_plain_file_each_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let none = status_on(&dir.path().join("none.sock"));
    assert_eq!(none.status.code(), Some(69), "{none:?}");
    assert!(
        stderr(&none).contains("no socket at") && stderr(&none).contains("not running"),
        "{}",
        stderr(&none)
    );

    // What a crashed daemon leaves: a socket file nobody listens on.
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let refused = status_on(&dead);
    assert_eq!(refused.status.code(), Some(69), "{refused:?}");
    assert!(
        stderr(&refused).contains("nothing listens on"),
        "{}",
        stderr(&refused)
    );

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let not_socket = status_on(&plain);
    assert_eq!(not_socket.status.code(), Some(69));
    assert!(
        stderr(&not_socket).contains("is not a socket"),
        "{}",
        stderr(&not_socket)
    );
}

/// The first thing hit after `adduser www-data otpd-clients`: the CLI must say it is a
/// permission problem, whose group it is, and when a new membership takes effect.
#[test]
fn permission_denied_names_the_socket_group_and_how_to_join_it() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root to run the client as another user (CI runs it)");
        return;
    }
    let otpd = Setup::new()
        .dev()
        .set("server", "socket_group = \"65534\"")
        .set("server", "socket_mode = \"0660\"")
        .start();
    let as_nobody = |gid: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
            .arg(otpd_bin())
            .args(["status", "--socket"])
            .arg(otpd.socket())
            .env_remove("OTPD_SOCKET")
            .output()
            .unwrap()
    };
    let outside = as_nobody("1");
    let message = stderr(&outside);
    assert_eq!(outside.status.code(), Some(77), "{message}");
    let group = nix::unistd::Group::from_gid(65534.into())
        .unwrap()
        .map_or("65534".to_owned(), |g| g.name);
    for needle in [
        "permission denied on",
        &format!("group {group}"),
        "mode 0660",
        &format!("adduser $USER {group}"),
        "next login",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    assert!(!message.contains("not running"), "{message}");

    // In the socket's group, the same call works: the advice was the fix.
    let member = as_nobody("65534");
    assert_eq!(member.status.code(), Some(0), "{}", stderr(&member));
}

#[test]
fn a_twilio_refusal_exits_5_and_an_unreachable_twilio_exits_4() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    let rejected = cli(
        &otpd,
        &["send-otp", mock_twilio::magic::TO_INVALID, "-p", "login"],
    );
    assert_eq!(rejected.status.code(), Some(5), "{rejected:?}");
    assert!(stderr(&rejected).contains("twilio_rejected"));

    let gone = MockTwilio::start(MockOptions::default());
    let base = gone.base_url();
    drop(gone);
    let o = mock.options();
    let otpd = Setup::new()
        .twilio_at(&base, &o.account_sid, &o.auth_token)
        .set("twilio", "send_deadline = \"1s\"")
        .start();
    let unavailable = cli(&otpd, &["send-otp", PHONE, "-p", "login"]);
    assert_eq!(unavailable.status.code(), Some(4), "{unavailable:?}");
    assert!(stderr(&unavailable).contains("twilio_unavailable"));
}
