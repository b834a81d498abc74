//! The large database and start-up: start-ups timed to READY=1 on an empty database and
//! on one holding a week of a busy deployment's codes, and verify on each, so that a
//! table scan or a slow migration shows as a ratio between the two.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::drive::Scenario;
use crate::otpd::{self, Mem, Perf};
use crate::report::{Row, summarize};
use crate::scenarios::Bench;
use crate::server_view::server_side;
use crate::{now_ms, progress};

/// Phone numbers of the synthetic rows start here, far above the ones the load uses.
const SYNTHETIC_PHONES: u64 = 50_000_000;

#[derive(Default, Debug, Clone)]
pub struct Startup {
    pub label: String,
    pub rows: u64,
    pub ms: Vec<f64>,
    /// One second after the last start-up.
    pub idle: Option<Mem>,
}

impl Bench {
    /// Times `--startups` start-ups (spawn -> READY=1) on `dir`.
    fn startups(&mut self, label: &str, dir: &Path, rows: u64) -> Startup {
        let mut out = Startup {
            label: label.to_owned(),
            rows,
            ..Startup::default()
        };
        for i in 0..self.s.startups {
            let otpd = otpd::start(&self.bin, dir);
            out.ms.push(otpd.ready.as_secs_f64() * 1000.0);
            if i + 1 == self.s.startups {
                std::thread::sleep(Duration::from_secs(1));
                out.idle = otpd.mem();
            }
            otpd.stop();
        }
        progress(&format!(
            "start-up to READY ({label}): {:?} ms",
            out.ms
                .iter()
                .map(|m| (m * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        ));
        out
    }

    /// Verify at `--big-conns` on the database in `dir` (codes pre-sent first).
    fn verify_on(&mut self, dir: &Path, label: &str) -> Row {
        self.set_latency(0);
        let otpd = otpd::start(&self.bin, dir);
        let socket = otpd.socket();
        let conns = self.args.big_conns;
        progress(&format!("verify x{conns} on the {label} database"));
        let mut runs = Vec::new();
        let mut server = String::new();
        for _ in 0..self.s.repeat {
            self.ensure_pool(&socket, self.pool_for(conns));
            let _perf = Perf::start(
                self.perf_dir(),
                otpd.pid(),
                &format!("verify-{conns}-{}", label.replace(' ', "-")),
            );
            let before = self.scrape(&socket);
            runs.push(self.closed(&socket, Some(Scenario::Verify), conns));
            server = server_side(&before, &self.scrape(&socket), Scenario::Verify);
        }
        let mut row = summarize(&format!("verify ({label} db)"), conns, Some(0), &runs);
        row.add_note(&server);
        row.peak = otpd.peaks();
        row.ratio = self.ratio(conns, row.rps);
        otpd.stop();
        row
    }

    pub fn big(&mut self) {
        // The pool must hold codes of the database under test only.
        self.ctx.clear();

        let empty = self.config_dir("otpd-bench-empty-");
        let s = self.startups("empty db", &empty, 0);
        self.startups.push(s);
        let empty_row = self.verify_on(&empty, "empty");
        self.ctx.clear();

        let big = self.config_dir("otpd-bench-big-");
        // Once, so that otpd creates and migrates the schema; then stop it.
        otpd::start(&self.bin, &big).stop();
        let t = Instant::now();
        populate(&big.join("otpd.db"), self.s.rows);
        progress(&format!(
            "inserted {} rows in {:.1} s",
            self.s.rows,
            t.elapsed().as_secs_f64()
        ));
        let label = format!("{} rows", self.s.rows);
        let s = self.startups(&format!("{label} db"), &big, self.s.rows);
        self.startups.push(s);
        let big_row = self.verify_on(&big, &label);
        self.ctx.clear();
        self.rows.push(empty_row);
        self.rows.push(big_row);
    }
}

/// Fills `otps` with `rows` codes of the last week (three per phone, all purposes, mostly
/// finished), in one transaction, as a busy deployment would hold within retention.
fn populate(db: &Path, rows: u64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    let now = now_ms();
    let week = 7 * 24 * 3600 * 1000_i64;
    let ttl = 10 * 60 * 1000_i64;
    let purposes = ["registration", "login", "password_reset", "two_factor"];
    // xorshift64: cheap, reproducible variety for hashes, states and attempts.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO otps (phone, purpose, user_id, code_hash, state, attempts,
                                   max_attempts, test_number, created_at, expires_at, verified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 5, 0, ?7, ?8, ?9)",
            )
            .unwrap();
        let mut hash = [0u8; 32];
        for i in 0..rows {
            for chunk in hash.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            let phone = format!("+346{:08}", SYNTHETIC_PHONES + i / 3);
            let created = now - week + (i as i64 * week / rows.max(1) as i64);
            let expires = created + ttl;
            let (state, verified) = if expires > now {
                ("sent", None)
            } else {
                match x % 20 {
                    0..=11 => ("verified", Some(created + 30_000)),
                    12..=16 => ("expired", None),
                    17..=18 => ("superseded", None),
                    _ => ("failed", None),
                }
            };
            insert
                .execute(rusqlite::params![
                    phone,
                    purposes[(i % 4) as usize],
                    (x % 1_000_000).to_string(),
                    hash.as_slice(),
                    state,
                    (x % 3) as i64,
                    created,
                    expires,
                    verified
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}
