//! Load benchmark for otpd: `cargo bench --bench load` (add `-- --quick`, `-- --json`, ...;
//! `-- --help` lists every flag). BENCHMARKS.md has what it measures and the figures.
//!
//! One run:
//! 1. starts `otpd` (the one `cargo bench` built, `--otpd-bin`, or with `--dist` the
//!    dist profile's, which the .deb ships) on temporary sockets and databases, its
//!    Twilio API base pointed at an in-process mock answering after a latency set per
//!    scenario (`mock`);
//! 2. measures the machine's ceiling for this shape of work: a minimal hyper server on a
//!    Unix socket, alone and with one SQLite WAL write per request (`ceilings`);
//! 3. drives otpd with N keep-alive connections (`client`, `drive`): `send`, `verify`,
//!    `verify-wrong` and `flow`, then numbers from many countries (`scenarios`);
//! 4. checks slow Twilio against concurrent verifies (`slow`), a 1M-row database against
//!    an empty one and start-up to READY=1 (`bigdb`);
//! 5. prints a table or one JSON object with the targets beside the figures (`targets`,
//!    `report`). Targets are reported, never asserted.
//!
//! otpd runs as one process per scenario group (scenario × mock latency; connection
//! counts ascending), restarted between groups on the same database and HMAC key; its
//! memory is read from /proc while it runs (`otpd`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::indexing_slicing,
    reason = "a measuring tool, not the daemon: it stops on what it did not expect"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the bench stamps its reports by the system's clock; the daemon's clock is its own"
)]

mod bigdb;
mod ceilings;
mod client;
mod drive;
mod mock;
mod otpd;
mod report;
mod scenarios;
mod server_view;
mod slow;
mod targets;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::client::{COUNTRIES, COUNTRIES_IN_USE, country_prefixes};
use crate::drive::{Ctx, Scenario};
use crate::scenarios::Bench;

/// otpd load benchmark. Flags go after `--`: `cargo bench --bench load -- --quick --json`.
#[derive(Parser, Debug, Clone)]
#[command(name = "load")]
pub struct Args {
    /// A ~35 s smoke run: short measurements, 100k instead of 1M rows.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the table (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Seconds measured per run [default: 2.5, 0.6 with --quick].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up before each measured window [default: 0.5, 0.15 with --quick].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Concurrent connections to report.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub conns: Vec<usize>,
    /// Mock Twilio answer latencies (ms) for the send and flow scenarios.
    #[arg(long, value_delimiter = ',', default_value = "0,300")]
    pub mock_latency_ms: Vec<u64>,
    /// Repeats of each measurement; the report shows medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Connections of the slow-Twilio send run (with the largest mock latency).
    #[arg(long, default_value_t = 256)]
    pub slow_conns: usize,
    /// Verifies per second (paced, on --mixed-verify-conns connections) during that run.
    #[arg(long, default_value_t = 200)]
    pub mixed_verify_rate: u64,
    /// Connections carrying those verifies.
    #[arg(long, default_value_t = 4)]
    pub mixed_verify_conns: usize,
    /// Rows of the large database [default: 1000000, 100000 with --quick].
    #[arg(long)]
    pub rows: Option<u64>,
    /// Connections of the empty-vs-large database verify comparison.
    #[arg(long, default_value_t = 16)]
    pub big_conns: usize,
    /// Start-ups timed per database [default: 5, 3 with --quick].
    #[arg(long)]
    pub startups: Option<usize>,
    /// Ceiling servers: plain, sqlite-thread, sqlite-blocking; and sqlite-batch (the
    /// writer thread committing all queued requests in one transaction), shown for
    /// reference only, never used as a ceiling [default: the first three; --quick: the
    /// first two].
    #[arg(long, value_delimiter = ',')]
    pub ceilings: Option<Vec<String>>,
    /// Parts to run: ceiling, fast (0 ms mock), countries (send and verify with numbers
    /// from --many-countries countries), slow (the other latencies), big (1M rows and
    /// start-up).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,fast,countries,slow,big"
    )]
    pub sections: Vec<String>,
    /// Scenarios to run in fast and slow: send, verify, verify-wrong, flow.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "send,verify-wrong,verify,flow"
    )]
    pub scenarios: Vec<String>,
    /// Phone numbers from this many countries in turn, one region per calling code (1:
    /// Spanish mobiles only). What a parse costs depends on how many countries' rules
    /// the phone-number library holds at once.
    #[arg(long, default_value_t = 1)]
    pub countries: usize,
    /// Countries of the `countries` section: `send` and `verify` at the largest
    /// connection count, with a mock at 0 ms, numbers from this many countries in turn.
    #[arg(long, default_value_t = 40)]
    pub many_countries: usize,
    /// otpd's log level (its log goes to a file in the temporary directory).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Benchmark what the .deb ships: run `cargo build --profile dist --bin otpd`
    /// first and use target/dist/otpd (by default the otpd that `cargo bench` built
    /// with the release profile is used).
    #[arg(long, conflicts_with = "otpd_bin")]
    pub dist: bool,
    /// Benchmark this otpd binary instead of the one cargo built (A/B experiments).
    #[arg(long)]
    pub otpd_bin: Option<PathBuf>,
    /// Keep the temporary directories (databases, logs) and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Record each timed run of otpd (and the ceiling servers) with `perf record` into
    /// this directory; OTPD_BENCH_PERF_ARGS overrides "-F 999 -g", and
    /// OTPD_BENCH_PERF_CMD the whole command ({pid}, {out}).
    #[arg(long)]
    pub perf: Option<PathBuf>,

    /// Internal: serve a ceiling (plain, sqlite-thread or sqlite-blocking) and nothing else.
    #[arg(long, hide = true)]
    pub ceiling_server: Option<String>,
    #[arg(long, hide = true)]
    pub socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub db: Option<PathBuf>,
    /// Passed by `cargo bench` to harness = false benches.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// The measurement settings, with --quick's defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub duration: Duration,
    pub warmup: Duration,
    pub conns: Vec<usize>,
    pub latencies: Vec<u64>,
    pub repeat: usize,
    pub rows: u64,
    pub startups: usize,
}

impl Settings {
    fn from(args: &Args) -> Settings {
        let secs = |v: Option<f64>, normal: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if args.quick { quick } else { normal }))
        };
        let mut conns = args.conns.clone();
        conns.sort_unstable();
        conns.dedup();
        Settings {
            quick: args.quick,
            duration: secs(args.duration, 2.5, 0.6),
            warmup: secs(args.warmup, 0.5, 0.15),
            conns,
            latencies: args.mock_latency_ms.clone(),
            repeat: args.repeat.max(1),
            rows: args
                .rows
                .unwrap_or(if args.quick { 100_000 } else { 1_000_000 }),
            startups: args
                .startups
                .unwrap_or(if args.quick { 3 } else { 5 })
                .max(1),
        }
    }

    pub fn window(&self) -> Duration {
        self.warmup + self.duration
    }
}

static BEGUN: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr, stamped with the time since the bench started.
pub fn progress(line: &str) {
    let t = BEGUN.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {line}");
}

/// The otpd to measure: `cargo bench` builds the package's binaries for its benches
/// with the bench profile, which inherits release, at target/release/otpd; the package
/// profile's sits beside it in target/dist/.
fn otpd_binary(args: &Args) -> PathBuf {
    if let Some(bin) = &args.otpd_bin {
        return bin.clone();
    }
    let release = PathBuf::from(env!("CARGO_BIN_EXE_otpd"));
    if !args.dist {
        return release;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    progress("building: cargo build --profile dist --bin otpd");
    let status = Command::new(cargo)
        .args(["build", "--locked", "--profile", "dist", "--bin", "otpd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --profile dist failed");
    let target_dir = release.parent().and_then(|p| p.parent()).unwrap();
    target_dir.join("dist").join("otpd")
}

fn main() {
    let args = Args::parse();
    if let Some(kind) = &args.ceiling_server {
        let socket = args.socket.clone().expect("--socket");
        let db = args.db.clone().expect("--db");
        ceilings::serve(kind, &socket, &db);
        return;
    }
    let begun = *BEGUN.get_or_init(Instant::now);
    let bin = otpd_binary(&args);
    assert!(bin.exists(), "{} does not exist", bin.display());
    let s = Settings::from(&args);
    let most = args
        .countries
        .max(if args.sections.iter().any(|s| s == "countries") {
            args.many_countries
        } else {
            1
        });
    if most > 1 {
        let prefixes = country_prefixes(most);
        progress(&format!(
            "numbers from up to {} countries: {}",
            prefixes.len(),
            prefixes.join(" ")
        ));
        COUNTRIES.get_or_init(|| prefixes);
    }
    COUNTRIES_IN_USE.store(args.countries, Ordering::Relaxed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
        .unwrap();
    let mock = mock::start();
    let ctx = Arc::new(Ctx {
        mock: mock.state.clone(),
        pool: Mutex::new(VecDeque::new()),
        runs: AtomicU64::new(0),
    });
    let mut bench = Bench {
        args: args.clone(),
        s: s.clone(),
        rt,
        mock,
        ctx,
        bin,
        rows: Vec::new(),
        sqlite_ceiling: HashMap::new(),
        plain_ceiling: HashMap::new(),
        verify_rate: HashMap::new(),
        startups: Vec::new(),
        idle: None,
        otpd_dir: None,
        dirs: Vec::new(),
    };

    if bench.section("ceiling") {
        bench.ceilings();
    }
    let scenarios = bench.scenarios();
    let conns = s.conns.clone();
    if bench.section("fast") && s.latencies.contains(&0) {
        for &scenario in &scenarios {
            bench.group(scenario, 0, &conns);
        }
    }
    if bench.section("countries") && s.latencies.contains(&0) {
        bench.countries(&scenarios);
    }
    if bench.section("slow") {
        for &latency in s.latencies.iter().filter(|l| **l > 0) {
            for &scenario in &scenarios {
                if matches!(scenario, Scenario::Send | Scenario::Flow) {
                    bench.group(scenario, latency, &conns);
                }
            }
        }
        if let Some(&latency) = s.latencies.iter().filter(|l| **l > 0).max() {
            bench.mixed(latency);
        }
    }
    if bench.section("big") {
        bench.big();
    }

    let targets = bench.targets();
    if args.json {
        let value = bench.to_json(&targets, begun.elapsed());
        println!("{}", serde_json::to_string_pretty(&value).unwrap());
    } else {
        bench.print_table(&targets);
        println!("\n(total {:.0} s)", begun.elapsed().as_secs_f64());
    }
    if args.keep {
        for dir in std::mem::take(&mut bench.dirs) {
            progress(&format!("kept {}", dir.keep().display()));
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
