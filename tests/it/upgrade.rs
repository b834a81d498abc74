//! Upgrades: today's binary started on a database that an older otpd left behind.
//! SQLite-only (`Setup::sqlite_only`): the old databases are SQLite files.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{Setup, code_in, send_body, verify_body};
use rusqlite::Connection;

const PHONE: &str = "+34600111222";

#[tokio::test]
async fn a_version_7_database_is_upgraded_in_place_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpd.db");
    otpd::store::create_at_version(&db, 7).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old = Connection::open(&db).unwrap();
    old.execute_batch(&format!(
        "INSERT INTO otps (id, phone, purpose, user_id, code_hash, state, attempts,
                           max_attempts, test_number, created_at, expires_at, verified_at,
                           country)
         VALUES (1, '{PHONE}', 'login', 'u1', x'0102', 'verified', 1, 5, 0, {now}, {now},
                 {now}, 'ES'),
                (2, '{PHONE}', 'registration', NULL, x'0304', 'sent', 0, 5, 0, {now},
                 {expires}, NULL, 'ES');
         INSERT INTO messages (otp_id, created_at, to_number, provider, status)
         VALUES (1, {now}, '{PHONE}', 'twilio', 'sent');
         INSERT INTO audit (at, otp_id, event, phone) VALUES ({now}, 1, 'verified', '{PHONE}');",
        expires = now + 600_000,
    ))
    .unwrap();
    drop(old);

    let otpd = Setup::new().sqlite_only().dev().start_in(dir);
    let upgraded = format!(
        "database schema upgraded from version 7 to {}",
        otpd::store::SCHEMA_VERSION
    );
    assert!(otpd.log().contains(&upgraded), "{}", otpd.log());

    // The old rows are served.
    let status = otpd.get("/api/v1/messaging/status/").await;
    assert_eq!(status.status, 200, "{:?}", status.json);
    assert_eq!(status.json["codes"]["verified"], 1, "{:?}", status.json);
    assert_eq!(status.json["codes"]["sent"], 1, "{:?}", status.json);
    let audit = otpd
        .get(&format!(
            "/api/v1/messaging/audit/?phone=%2B{}&since=1h",
            &PHONE[1..]
        ))
        .await;
    assert_eq!(audit.status, 200, "{:?}", audit.json);
    let events = audit.json["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["otp_id"] == 1 && e["event"] == "verified"),
        "{events:?}"
    );

    // And the upgraded file takes new codes: the old pending one is superseded.
    let sent = otpd.send_otp(send_body(PHONE, "registration", None)).await;
    assert_eq!(sent.status, 200, "{:?}\n{}", sent.json, otpd.log());
    let body = otpd.outbox().last().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_owned();
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code_in(&body), "registration", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    let status = otpd.get("/api/v1/messaging/status/").await;
    assert_eq!(status.json["codes"]["superseded"], 1, "{:?}", status.json);
    assert_eq!(status.json["codes"]["verified"], 2, "{:?}", status.json);

    // The schema is today's, with its references intact.
    let mut otpd = otpd;
    assert!(otpd.stop().success());
    let conn = Connection::open(otpd.db_path()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(usize::try_from(version), Ok(otpd::store::SCHEMA_VERSION));
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0);
}

/// Readiness: the socket appears only once the database is migrated, so a caller that
/// can connect is served at once. Another connection holds the write lock, so the
/// migration waits (within `store.busy_timeout`); all that time there must be no
/// socket to connect to. (Bound first, as otpd once did, the socket shows at once.)
#[tokio::test]
async fn the_socket_appears_only_after_the_migration_has_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpd.db");
    let socket = dir.path().join("otpd.sock");
    otpd::store::create_at_version(&db, 7).unwrap();
    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let setup = Setup::new()
        .sqlite_only()
        .dev()
        .set("store", "busy_timeout = \"60s\"");
    let starting = std::thread::spawn(move || setup.start_in(dir));
    // A bounded look while the lock is held: long enough for an early bind to show.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        assert!(
            !socket.exists(),
            "the socket exists while the migration waits for the lock"
        );
        assert!(!starting.is_finished(), "otpd gave up waiting for the lock");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    let otpd = starting.join().unwrap();
    let upgraded = format!(
        "database schema upgraded from version 7 to {}",
        otpd::store::SCHEMA_VERSION
    );
    assert!(otpd.log().contains(&upgraded), "{}", otpd.log());
    let health = otpd.get("/healthz").await;
    assert_eq!(health.status, 200, "{:?}", health.json);
}
