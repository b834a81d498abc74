//! How fast `otpd report` is on a year of data (issue 21): a database of `--rows` codes
//! (10 million by default) sent evenly over 365 days, each with its message, and the
//! report over the last 1, 7, 30 and 365 days through the store's own query. The
//! baseline, measured in the same run, is the 7-day report on a database holding only
//! those 7 days: the ratio says what the year of history costs a week's report.
//!
//! `cargo bench --bench report` (about 4 GB of disk in a temporary directory, a few
//! minutes); `-- --rows 1000000` for a quicker run. Prints figures; asserts nothing.
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a measuring tool, not the daemon: it stops on what it did not expect"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the rows are dated by the system's clock, as the daemon's store reads them"
)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use otpd::config::StoreConfig;
use otpd::store::{SCHEMA_VERSION, Store, create_at_version};

const DAY_MS: i64 = 24 * 3600 * 1000;
const COUNTRIES: [&str; 5] = ["+346", "+447", "+336", "+491", "+1202"];
const PURPOSES: [&str; 3] = ["login", "registration", "password_reset"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `rows` codes spread over the last `days` days, each with the message that carried it.
fn populate(path: &Path, rows: u64, days: i64) {
    create_at_version(path, SCHEMA_VERSION).expect("create the schema");
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .expect("pragmas");
    let now = now_ms();
    let span = days * DAY_MS;
    let tx = conn.transaction().expect("begin");
    {
        let mut code = tx
            .prepare(
                "INSERT INTO otps (phone, purpose, code_hash, state, max_attempts, test_number,
                                   created_at, expires_at, verified_at)
                 VALUES (?1, ?2, x'00', ?3, 5, 0, ?4, ?5, ?6)",
            )
            .expect("prepare");
        let mut message = tx
            .prepare(
                "INSERT INTO messages (otp_id, created_at, to_number, provider, sid, status,
                                       attempts, channel)
                 VALUES (?1, ?2, ?3, 'twilio', ?4, ?5, 1, 'sms')",
            )
            .expect("prepare");
        for i in 0..rows {
            let phone = format!("{}{:08}", COUNTRIES[(i % 5) as usize], i % 100_000_000);
            let created = now - span + (i as i64 * span / rows.max(1) as i64);
            let (state, verified) = match i % 10 {
                0..=7 => ("verified", Some(created + 20_000 + (i % 60) as i64 * 1000)),
                8 => ("expired", None),
                _ => ("superseded", None),
            };
            code.execute(rusqlite::params![
                phone,
                PURPOSES[(i % 3) as usize],
                state,
                created,
                created + 600_000,
                verified
            ])
            .expect("insert code");
            let id = tx.last_insert_rowid();
            let status = if i % 50 == 0 {
                "undelivered"
            } else {
                "delivered"
            };
            message
                .execute(rusqlite::params![
                    id,
                    created,
                    phone,
                    format!("SM{i:032x}"),
                    status
                ])
                .expect("insert message");
        }
    }
    tx.commit().expect("commit");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn time_report(store: &Store, days: u64) -> (Duration, i64) {
    let mut times = Vec::new();
    let mut sent = 0;
    for _ in 0..3 {
        let since = SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        let started = Instant::now();
        let rows = store.report_rows(since).await.expect("report");
        times.push(started.elapsed());
        sent = rows.codes.iter().map(|g| g.sent).sum();
    }
    (median(times), sent)
}

async fn open(path: &Path) -> Store {
    Store::open(&StoreConfig {
        path: path.to_owned(),
        busy_timeout: Duration::from_secs(5),
        max_size: None,
        backend: otpd::config::Backend::Sqlite,
    })
    .await
    .expect("open the store")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let week_rows = rows * 7 / 365;

    let started = Instant::now();
    let year = dir.path().join("year.db");
    populate(&year, rows, 365);
    eprintln!(
        "{rows} codes over 365 days in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let week = dir.path().join("week.db");
    populate(&week, week_rows, 7);

    let baseline_store = open(&week).await;
    let (baseline, baseline_sent) = time_report(&baseline_store, 7).await;
    baseline_store.close();
    let store = open(&year).await;
    println!("report over the last N days (median of 3), {rows} codes over a year:");
    println!(
        "{:>6} {:>12} {:>10} {:>10}",
        "days", "codes sent", "ms", "x week-db"
    );
    for days in [1, 7, 30, 365] {
        let (took, sent) = time_report(&store, days).await;
        println!(
            "{days:>6} {sent:>12} {:>10.1} {:>10.2}",
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    println!(
        "baseline: the 7-day report on a database of those 7 days only ({baseline_sent} codes): {:.1} ms",
        baseline.as_secs_f64() * 1000.0
    );
    store.close();
}
