//! SQLite faults the daemon meets in production: another process holding the write
//! lock, a full database (store.max_size, and a real full file system), and a database
//! otpd cannot write. Each gives a clear JSON error with its own code, and the daemon
//! picks up again by itself once the condition clears.
//! SQLite-only (`Setup::sqlite_only`): every test here breaks or reads the database file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn phone(i: u32) -> String {
    format!("+3460011{:04}", i % 10_000)
}

#[tokio::test]
async fn a_write_lock_held_by_another_process_is_503_store_busy_until_released() {
    let otpd = Setup::new()
        .sqlite_only()
        .dev()
        .set("store", "busy_timeout = \"200ms\"")
        .start();
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );

    // A backup script or an operator's sqlite3 shell taking the write lock.
    let other = rusqlite::Connection::open(otpd.db_path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "store_busy");
    assert_eq!(reply.retry_after(), Some(1));
    let reply = otpd
        .verify_otp(verify_body(PHONE, "123456", "login", None))
        .await;
    reply.assert_error(503, "store_busy");
    // Readers are not blocked by a writer in WAL mode.
    assert_eq!(otpd.get("/healthz").await.status, 200);

    other.execute_batch("ROLLBACK").unwrap();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let code = code_in(otpd.outbox().last().unwrap()["body"].as_str().unwrap());
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert!(!otpd.log().contains("panicked"));
}

/// Sends to distinct numbers until the daemon answers something other than 200;
/// returns that answer and how many sends succeeded.
async fn send_until_refused(otpd: &Daemon, limit: u32) -> (Reply, u32) {
    for i in 0..limit {
        let reply = otpd.send_otp(send_body(&phone(i), "login", None)).await;
        if reply.status != 200 {
            return (reply, i);
        }
    }
    panic!("{limit} sends all succeeded: the store never filled");
}

#[tokio::test]
async fn a_full_store_is_507_store_full_and_a_purge_makes_room_again() {
    // Retention keeps nothing, so a purge can free every row once the codes expire.
    let otpd = Setup::new()
        .sqlite_only()
        .dev()
        .set("store", "max_size = \"96KiB\"")
        .set("otp", "ttl = \"1s\"")
        .set("retention", "codes = \"0s\"")
        .set("retention", "messages = \"0s\"")
        .set("retention", "audit = \"0s\"")
        .start();
    let (reply, sent) = send_until_refused(&otpd, 5000).await;
    reply.assert_error(507, "store_full");
    assert_eq!(reply.retry_after(), Some(60));
    assert!(sent > 0, "the schema alone filled the store");
    // Reads still answer, and the database never grew past the cap.
    assert_eq!(otpd.get("/healthz").await.status, 200);
    assert_eq!(
        otpd.get("/api/v1/messaging/status/").await.status,
        200,
        "status reads the store"
    );
    let pages: i64 = rusqlite::Connection::open(otpd.db_path())
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    assert!(pages * 4096 <= 96 * 1024, "{pages} pages");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let purged = otpd
        .post("/api/v1/messaging/purge/", &serde_json::json!({}))
        .await;
    assert_eq!(purged.status, 200, "{:?}", purged.json);
    assert!(purged.json["deleted"]["codes"].as_u64().unwrap() > 0);

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert!(!otpd.log().contains("panicked"));
}

#[test]
fn a_too_small_max_size_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for (value, why) in [
        ("\"1KiB\"", "at least 64KiB"),
        ("\"lots\"", "is not a size"),
    ] {
        std::fs::write(&config, format!("[store]\nmax_size = {value}\n")).unwrap();
        let out = check_config(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(
            stderr.contains("store.max_size") && stderr.contains(why),
            "{stderr}"
        );
    }
}

/// A tmpfs mount, unmounted on drop (after the daemon using it has been dropped).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with a note) where the test may not mount: not root, or no CAP_SYS_ADMIN.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(at.to_owned())),
            _ => {
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_file_system_is_507_store_full_and_freeing_space_clears_it() {
    let outer = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&outer.path().join("fs"), "2m") else {
        return;
    };
    // The database on the small file system; socket, key and outbox stay outside it.
    let db = fs.0.join("otpd.db");
    let otpd = Setup::new()
        .sqlite_only()
        .dev()
        .set("store", &format!("path = \"{}\"", db.display()))
        .set(
            "otp",
            &format!(
                "hmac_key_file = \"{}\"",
                outer.path().join("hmac.key").display()
            ),
        )
        .start();
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    // Fill the file system but for a few pages, as a runaway log would.
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(16 * 1024)).unwrap();
    }
    let (reply, _) = send_until_refused(&otpd, 5000).await;
    reply.assert_error(507, "store_full");
    assert_eq!(otpd.get("/healthz").await.status, 200);

    std::fs::remove_file(&filler).unwrap();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let code = code_in(otpd.outbox().last().unwrap()["body"].as_str().unwrap());
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert!(!otpd.log().contains("panicked"));
    drop(otpd);
    drop(fs);
}

/// `otpd serve` as uid/gid 65534 with `config`; returns the child.
fn spawn_as_nobody(config: &Path) -> std::process::Child {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(otpd_bin())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

#[tokio::test]
async fn a_database_otpd_cannot_write_stops_the_start_with_a_message_naming_it() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root to run the daemon as another user (CI runs it)");
        return;
    }
    // A database created by root (say, `otpd serve` run by hand), then the service
    // started as its own unprivileged user.
    let mut first = Setup::new().sqlite_only().dev().start();
    assert!(first.stop().success());
    let data = first.dir.path().to_owned();
    let db = first.db_path();
    // Everything but the database where the unprivileged daemon may write.
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = run.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket_path = \"{run}/otpd.sock\"\n[store]\npath = \"{db}\"\n\
             [otp]\nhmac_key_file = \"{run}/hmac.key\"\n[dev]\nenabled = true\n\
             outbox_path = \"{run}/outbox.jsonl\"\n",
            run = run.path().display(),
            db = db.display()
        ),
    )
    .unwrap();
    let fails_naming_the_file = |why: &str| {
        let out = spawn_as_nobody(&config).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}: {stderr}");
        assert!(
            stderr.contains(&db.display().to_string()) && !stderr.contains("panicked"),
            "{why}: {stderr}"
        );
        stderr.into_owned()
    };
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for side in ["otpd.db-wal", "otpd.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }

    // The file is readable but not writable.
    chmod(&data, 0o777);
    chmod(&db, 0o644);
    let stderr = fails_naming_the_file("read-only file");
    assert!(stderr.contains("is read-only"), "{stderr}");

    // The file is writable but its directory is not: WAL cannot create its files.
    chmod(&data, 0o755);
    chmod(&db, 0o666);
    let stderr = fails_naming_the_file("read-only directory");
    assert!(stderr.contains("is read-only"), "{stderr}");

    // Once the sysadmin gives the files to the service's user, it starts.
    std::os::unix::fs::chown(&data, Some(65534), None).unwrap();
    std::os::unix::fs::chown(&db, Some(65534), None).unwrap();
    let mut child = spawn_as_nobody(&config);
    let socket = run.path().join("otpd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "otpd exited");
        assert!(Instant::now() < deadline, "otpd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = request(
        &socket,
        hyper::Method::POST,
        "/api/v1/messaging/send-otp/",
        Some(send_body(PHONE, "login", None).to_string().into_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn store_fault_codes_are_in_the_api_reference_error_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    for row in [
        "| 503 | `store_busy` |",
        "| 507 | `store_full` |",
        "| 503 | `store_read_only` |",
    ] {
        assert!(readme.contains(row), "docs/api.md lacks {row}");
    }
}
