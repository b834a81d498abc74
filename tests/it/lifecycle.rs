//! Start-up, the socket file, check-config, and graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut otpd = Setup::new().dev().start();
    assert_eq!(mode(&otpd.socket()), 0o660, "default socket mode");
    let status = otpd.stop();
    assert!(status.success(), "{status}");
    assert!(!otpd.socket().exists(), "socket file left behind");
    assert!(otpd.log().contains("stopped"));
}

#[tokio::test]
async fn sigint_stops_too_and_the_socket_mode_is_configurable() {
    let mut otpd = Setup::new()
        .dev()
        .set("server", "socket_mode = \"0600\"")
        .start();
    assert_eq!(mode(&otpd.socket()), 0o600);
    otpd.signal("INT");
    assert!(otpd.wait_exit(Duration::from_secs(10)).success());
    assert!(!otpd.socket().exists());
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn an_in_flight_request_finishes_during_shutdown() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_latency(Duration::from_millis(1500));
    let otpd = std::sync::Arc::new(Setup::new().sqlite_only().twilio(&mock).start());
    let pending = {
        let otpd = otpd.clone();
        tokio::spawn(async move { otpd.send_otp(send_body(PHONE, "login", None)).await })
    };
    // Let the request reach the slow Twilio, then ask the daemon to stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached the mock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    otpd.signal("TERM");
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    let mut otpd = std::sync::Arc::into_inner(otpd).unwrap();
    assert!(otpd.wait_exit(Duration::from_secs(10)).success());
    // What the caller was told is what the database holds.
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let state: String = conn
        .query_row("SELECT state FROM otps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "sent");
}

#[tokio::test]
async fn a_stale_socket_from_a_crashed_run_is_replaced() {
    let mut otpd = Setup::new().dev().start();
    otpd.signal("KILL");
    otpd.wait_exit(Duration::from_secs(5));
    assert!(otpd.socket().exists(), "kill -9 leaves the socket file");
    let otpd = otpd.start_again();
    let reply = otpd.get("/healthz").await;
    assert_eq!(reply.status, 200);
}

/// `otpd serve` in development mode on `socket` with its own database; returns its exit
/// code and stderr.
fn serve_on(socket: &std::path::Path, dir: &std::path::Path) -> (Option<i32>, String) {
    let config = dir.join("config.toml");
    let text = format!(
        "[server]\nsocket_path = \"{}\"\n[store]\npath = \"{}\"\n[dev]\nenabled = true\n",
        socket.display(),
        dir.join("other.db").display()
    );
    std::fs::write(&config, text).unwrap();
    let output = otpd_command()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_live_socket_is_refused_and_a_non_socket_is_left_alone() {
    let first = Setup::new().dev().start();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_on(&first.socket(), dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("already listening"), "{stderr}");
    assert!(
        first.socket().exists(),
        "the live daemon's socket was removed"
    );

    let plain = dir.path().join("not-a-socket");
    std::fs::write(&plain, "data").unwrap();
    let (code, stderr) = serve_on(&plain, dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "data");
}

/// The socket is bound under a hidden name and linked into place once its mode is set, so
/// no one ever sees it with the umask's mode; a staging name left by a crash is replaced;
/// the longest accepted path works.
#[test]
fn the_socket_appears_with_its_configured_mode_and_no_staging_name_stays() {
    let dir = tempfile::tempdir().unwrap();
    // The longest path otpd accepts (`server.socket_path`: 106 bytes), so the hidden
    // name, one byte longer, is bound at the kernel's limit.
    let pad = 106 - dir.path().as_os_str().len() - "/".len() - "/otpd.sock".len();
    let sub = dir.path().join("d".repeat(pad));
    std::fs::create_dir(&sub).unwrap();
    let socket = sub.join("otpd.sock");
    assert_eq!(socket.as_os_str().len(), 106);
    let staging = sub.join(".otpd.sock");
    // What a crash between bind and link leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&staging).unwrap());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket_path = \"{}\"\nsocket_mode = \"0600\"\n[store]\npath = \"{}\"\n\
             [dev]\nenabled = true\n",
            socket.display(),
            dir.path().join("otpd.db").display()
        ),
    )
    .unwrap();
    let mut child = otpd_command()
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first sight of the file, polled as fast as stat allows: before the staging
    // name, the window between bind and chmod showed the umask's 0755 here.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Ok(meta) = std::fs::symlink_metadata(&socket) {
            break meta.permissions().mode() & 0o777;
        }
        assert!(Instant::now() < deadline, "otpd did not bind");
        assert!(child.try_wait().unwrap().is_none(), "otpd exited");
    };
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "otpd did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert_eq!(first, 0o600);
    assert!(status.success(), "{status}");
    assert!(!staging.exists(), "the staging name was left behind");
    assert!(!socket.exists(), "the socket was left behind");
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(
        &config,
        format!(
            "[twilio]\naccount_sid = \"AC{}\"\nauth_token = \"{token}\"\nfrom_number = \"+15005550006\"\n[otp]\nttl = \"5m\"\n",
            "0".repeat(32)
        ),
    )
    .unwrap();
    let output = check_config(&config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(!printed.contains(token), "{printed}");
    assert!(printed.contains("auth_token = \"********\""), "{printed}");
    assert!(printed.contains("ttl = \"5m\""), "{printed}");
    assert!(
        printed.contains("socket_path = \"/run/otpd/otpd.sock\""),
        "defaults are shown: {printed}"
    );
    // What it prints is itself a valid configuration.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, printed.as_bytes()).unwrap();
    let output = check_config(&again);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_config_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let too_long = format!("[server]\nsocket_path = \"/run/{}\"\n", "x".repeat(102));
    for (text, key) in [
        (too_long.as_str(), "server.socket_path"),
        (
            "[limits]\nsend_per_phone = \"lots\"\n",
            "limits.send_per_phone",
        ),
        ("[otp]\nlength = 12\n", "otp.length"),
        ("[server]\nsocket_mode = \"rw\"\n", "server.socket_mode"),
        ("[twilio]\naccount_sid = \"AC1\"\n", "twilio.account_sid"),
        ("[otp]\nttl = 10\n", "ttl"),
        ("[server]\nsocket_pth = \"x\"\n", "socket_pth"),
    ] {
        std::fs::write(&config, text).unwrap();
        for command in ["check-config", "serve"] {
            let output = otpd_command()
                .args([command, "--config"])
                .arg(&config)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(78), "{command} with {text}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(key), "{command} with {text}: {stderr}");
        }
    }
    let output = check_config(&dir.path().join("missing.toml"));
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

/// A file's unset paths are the production ones, so `--dev` with a file would quietly
/// serve on /run/otpd and /var/lib/otpd: refused, naming the explicit way.
#[test]
fn dev_with_a_config_file_is_refused_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[otp]\nlength = 6\n").unwrap();
    // check-config first: were the combination accepted again, serve would not return.
    for command in ["check-config", "serve"] {
        let output = otpd_command()
            .args([command, "--dev", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{command}: {stderr}");
        assert!(
            stderr.contains("--dev") && stderr.contains("[dev] enabled = true"),
            "{command}: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{command} printed a configuration"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["config.toml"], "nothing was created");
}
#[test]
fn config_toml_example_documents_exactly_the_defaults() {
    let check = |path: &std::path::Path| {
        let output = check_config(path);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    // Every key of the example is a real key (deny_unknown_fields) with its default value.
    assert_eq!(check(&example), check(&empty));
    let text = std::fs::read_to_string(&example).unwrap();
    for key in check(&empty)
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
    {
        assert!(
            text.contains(&format!("\n{key} = ")) || text.contains(&format!(".{key}]]")),
            "config.toml.example does not document {key}"
        );
    }
}

#[test]
fn the_configuration_reference_shows_every_key_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let output = check_config(&empty);
    let effective = String::from_utf8(output.stdout).unwrap();
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut section = "";
    let mut keys = 0;
    for line in effective.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some((key, value)) = line.split_once(" = ") {
            let row = format!("| `{section}.{key}` | `{value}` |");
            assert!(
                readme.contains(&row),
                "docs/configuration.md's key table lacks {row}"
            );
            keys += 1;
        }
    }
    assert!(keys > 30, "{effective}");
}
