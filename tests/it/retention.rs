//! The retention job deletes what has outlived `[retention]` and nothing else. Time is
//! moved through the daemon's development clock, not slept.

use std::time::Duration;

use crate::common::*;

fn count(otpd: &Daemon, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn retention(setup: Setup, interval: &str) -> Setup {
    setup
        .moved_clock()
        .set("otp", "ttl = \"1m\"")
        .set("retention", "codes = \"1h\"")
        .set("retention", "messages = \"2h\"")
        .set("retention", "audit = \"2h\"")
        .set("retention", &format!("interval = \"{interval}\""))
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn purge_shrinks_the_database_to_the_retained_rows() {
    let otpd = retention(Setup::new().sqlite_only(), "1h").start();
    for n in 0..3 {
        let reply = otpd
            .send_otp(send_body(&format!("+3460011130{n}"), "login", None))
            .await;
        assert_eq!(reply.status, 200);
    }
    otpd.move_clock(Duration::from_secs(3 * 3600));
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (
            count(&otpd, "otps"),
            count(&otpd, "messages"),
            count(&otpd, "audit")
        ),
        (4, 4, 8)
    );

    let purged = otpd
        .post("/api/v1/messaging/purge/", &serde_json::json!({}))
        .await;
    assert_eq!(purged.status, 200, "{:?}", purged.json);
    assert_eq!(
        purged.json["deleted"],
        serde_json::json!({"codes": 3, "messages": 3, "audit": 6})
    );
    // The fresh code, its message and its two events are kept, and it still verifies.
    assert_eq!(
        (
            count(&otpd, "otps"),
            count(&otpd, "messages"),
            count(&otpd, "audit")
        ),
        (1, 1, 2)
    );
    let code = code_in(otpd.outbox()[3]["body"].as_str().unwrap());
    assert_eq!(
        otpd.verify_otp(verify_body(PHONE, &code, "login", None))
            .await
            .status,
        200
    );
}

// SQLite-only: it reads the database file.
#[tokio::test]
async fn the_retention_job_runs_on_its_own() {
    let otpd = retention(Setup::new().sqlite_only(), "1s").start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200);
    otpd.move_clock(Duration::from_secs(3 * 3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&otpd, "otps") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never deleted the old code"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!((count(&otpd, "messages"), count(&otpd, "audit")), (0, 0));
    assert!(
        otpd.log().contains("retention: deleted 1 codes"),
        "{}",
        otpd.log()
    );
}
