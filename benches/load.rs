//! Load benchmark for otpd: `cargo bench --bench load` (add `-- --quick`, `-- --json`, ...;
//! `-- --help` lists every flag). See BENCHMARKS.md for what it measures and the figures.
//!
//! One run:
//! 1. builds the release `otpd` and starts it on temporary sockets and databases, with its
//!    Twilio API base pointed at an in-process mock whose answer latency is set per
//!    scenario (0 ms, and a realistic 300 ms);
//! 2. measures the machine's ceiling for this shape of work: a minimal hyper server on a
//!    Unix socket answering a small JSON body, and the same server doing one SQLite WAL
//!    (synchronous = NORMAL) write transaction per request, both in a child process (this
//!    executable re-run with a hidden flag), like otpd;
//! 3. drives otpd with N concurrent keep-alive HTTP/1.1 connections (hyper's client
//!    `conn::http1` over tokio's UnixStream, one task per connection, requests back to
//!    back), unique phone numbers and generous limits: `send`, `verify` (correct codes
//!    read from the mock), `verify-wrong` and `flow` (send then verify);
//! 4. checks slow Twilio (300 ms, 256 connections) against concurrent verifies, a 1M-row
//!    database against an empty one, and start-up to READY=1 (sd_notify);
//! 5. prints a table (or one JSON object with `--json`) with the targets beside the
//!    figures. Targets are reported, never asserted.
//!
//! otpd runs as one process per scenario group (scenario × mock latency; connection
//! counts ascending), restarted between groups on the same database and HMAC key. Its
//! peak RSS (VmHWM) is read after each measurement and is cumulative within the group,
//! untimed pre-sends included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
const FROM_NUMBER: &str = "+15005550006";
const SEND_PATH: &str = "/api/v1/messaging/send-otp/";
const VERIFY_PATH: &str = "/api/v1/messaging/verify-otp/";
const PURPOSE: &str = "login";
/// Phone numbers of the synthetic rows of the large database start here, far above the
/// ones the load uses.
const SYNTHETIC_PHONES: u64 = 50_000_000;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// otpd load benchmark. Flags go after `--`: `cargo bench --bench load -- --quick --json`.
#[derive(Parser, Debug, Clone)]
#[command(name = "load")]
struct Args {
    /// A ~30 s smoke run: short measurements, 100k instead of 1M rows.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Seconds measured per run [default: 2.5, 0.6 with --quick].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up before each measured window [default: 0.5, 0.15 with --quick].
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent connections to report.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    conns: Vec<usize>,
    /// Mock Twilio answer latencies (ms) for the send and flow scenarios.
    #[arg(long, value_delimiter = ',', default_value = "0,300")]
    mock_latency_ms: Vec<u64>,
    /// Repeats of each measurement; the report shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Connections of the slow-Twilio send run (with the largest mock latency).
    #[arg(long, default_value_t = 256)]
    slow_conns: usize,
    /// Verifies per second (paced, on --mixed-verify-conns connections) during that run.
    #[arg(long, default_value_t = 200)]
    mixed_verify_rate: u64,
    /// Connections carrying those verifies.
    #[arg(long, default_value_t = 4)]
    mixed_verify_conns: usize,
    /// Rows of the large database [default: 1000000, 100000 with --quick].
    #[arg(long)]
    rows: Option<u64>,
    /// Connections of the empty-vs-large database verify comparison.
    #[arg(long, default_value_t = 16)]
    big_conns: usize,
    /// Start-ups timed per database [default: 5, 3 with --quick].
    #[arg(long)]
    startups: Option<usize>,
    /// Ceiling servers: plain, sqlite-thread, sqlite-blocking; and sqlite-batch (the
    /// writer thread committing all queued requests in one transaction), shown for
    /// reference only, never used as a ceiling [default: the first three; --quick: the
    /// first two].
    #[arg(long, value_delimiter = ',')]
    ceilings: Option<Vec<String>>,
    /// Parts to run: ceiling, fast (0 ms mock), countries (send and verify with numbers
    /// from --many-countries countries), slow (the other latencies), big (1M rows and
    /// start-up).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,fast,countries,slow,big"
    )]
    sections: Vec<String>,
    /// Scenarios to run in fast and slow: send, verify, verify-wrong, flow.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "send,verify-wrong,verify,flow"
    )]
    scenarios: Vec<String>,
    /// Phone numbers from this many countries in turn, one region per calling code (1:
    /// Spanish mobiles only). What a parse costs depends on how many countries' rules
    /// the phone-number library holds at once.
    #[arg(long, default_value_t = 1)]
    countries: usize,
    /// Countries of the `countries` section: `send` and `verify` at the largest
    /// connection count, with a mock at 0 ms, numbers from this many countries in turn.
    #[arg(long, default_value_t = 40)]
    many_countries: usize,
    /// otpd's log level (its log goes to a file in the temporary directory).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Run `cargo build --release --bin otpd` first (by default the otpd that `cargo
    /// bench` built for this bench is used: the bench profile inherits release, and a
    /// second build under the release profile would cost a full LTO build after each change).
    #[arg(long)]
    cargo_build: bool,
    /// Benchmark this otpd binary instead of the one cargo built (A/B experiments).
    #[arg(long)]
    otpd_bin: Option<PathBuf>,
    /// Keep the temporary directories (databases, logs) and print where they are.
    #[arg(long)]
    keep: bool,
    /// Record each timed run of otpd (and the ceiling servers) with `perf record` into
    /// this directory; OTPD_BENCH_PERF_ARGS overrides "-F 999 -g", and
    /// OTPD_BENCH_PERF_CMD the whole command ({pid}, {out}).
    #[arg(long)]
    perf: Option<PathBuf>,

    /// Internal: serve a ceiling (plain, sqlite-thread or sqlite-blocking) and nothing else.
    #[arg(long, hide = true)]
    ceiling_server: Option<String>,
    #[arg(long, hide = true)]
    socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    db: Option<PathBuf>,
    /// Passed by `cargo bench` to harness = false benches.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    duration: Duration,
    warmup: Duration,
    conns: Vec<usize>,
    latencies: Vec<u64>,
    repeat: usize,
    rows: u64,
    startups: usize,
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

    fn window(&self) -> Duration {
        self.warmup + self.duration
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// One measured run.
struct RunStats {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    /// The measured window actually covered (shorter if the code pool ran out).
    elapsed: Duration,
    exhausted: bool,
    error_samples: Vec<String>,
}

impl RunStats {
    fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return f64::NAN;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A table row: the median of `repeat` runs.
#[derive(Clone, Debug)]
struct Row {
    scenario: String,
    conns: usize,
    mock_ms: Option<u64>,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    requests: u64,
    errors: u64,
    /// VmHWM of otpd after this run (KiB), cumulative within its group.
    rss_peak_kib: Option<u64>,
    /// Throughput over the matching ceiling (the SQLite-write one at the same conns).
    ratio: Option<f64>,
    target: Option<String>,
    pass: Option<bool>,
    note: String,
}

impl Row {
    fn add_note(&mut self, note: &str) {
        if note.is_empty() {
            return;
        }
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(scenario: &str, conns: usize, mock_ms: Option<u64>, runs: &[RunStats]) -> Row {
    let mut notes = Vec::new();
    if runs.iter().any(|r| r.exhausted) {
        notes.push("code pool ran out: shorter window".to_owned());
    }
    for r in runs {
        for s in &r.error_samples {
            if notes.len() < 3 {
                notes.push(s.clone());
            }
        }
    }
    Row {
        scenario: scenario.to_owned(),
        conns,
        mock_ms,
        rps: median(runs.iter().map(RunStats::rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.ms(0.5)).collect()),
        p99_ms: median(runs.iter().map(|r| r.ms(0.99)).collect()),
        p999_ms: median(runs.iter().map(|r| r.ms(0.999)).collect()),
        requests: runs.iter().map(|r| r.count).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        rss_peak_kib: None,
        ratio: None,
        target: None,
        pass: None,
        note: notes.join("; "),
    }
}

#[derive(Clone, Debug)]
struct Target {
    name: String,
    measured: String,
    goal: String,
    pass: Option<bool>,
}

#[derive(Default, Debug, Clone)]
struct Startup {
    label: String,
    rows: u64,
    ms: Vec<f64>,
    idle_rss_kib: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_total_kib": mem_kib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = out(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

// ---------------------------------------------------------------------------------------
// The mock Twilio (in process, on 127.0.0.1)
// ---------------------------------------------------------------------------------------

struct MockState {
    latency_ms: AtomicU64,
    /// To -> the code of the last message to it, until taken.
    codes: Mutex<HashMap<String, String>>,
    messages: AtomicU64,
}

impl MockState {
    fn take_code(&self, to: &str) -> Option<String> {
        self.codes.lock().unwrap().remove(to)
    }
}

struct Mock {
    state: Arc<MockState>,
    port: u16,
    _runtime: Runtime,
}

/// The first run of 4 or more digits: the code ("Your verification code is 123456. ...").
fn code_in(body: &str) -> Option<String> {
    let mut run = String::new();
    for c in body.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else if run.len() >= 4 {
            break;
        } else {
            run.clear();
        }
    }
    (run.len() >= 4).then_some(run)
}

async fn mock_answer(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    // Never blocks a thread: the latency is a timer.
    let latency = state.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let json_response = |status: StatusCode, value: Value| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .unwrap()
    };
    let expected = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
    if method != Method::POST || path != expected {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            json!({"code": 20404, "message": "not found", "status": 404}),
        ));
    }
    let mut to = String::new();
    let mut text = String::new();
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "To" => to = v.into_owned(),
            "Body" => text = v.into_owned(),
            _ => {}
        }
    }
    let Some(code) = code_in(&text) else {
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            json!({"code": 21602, "message": "no code in the body", "status": 400}),
        ));
    };
    state.codes.lock().unwrap().insert(to.clone(), code);
    let n = state.messages.fetch_add(1, Ordering::Relaxed);
    Ok(json_response(
        StatusCode::CREATED,
        json!({
            "sid": format!("SM{n:032x}"),
            "status": "queued",
            "to": to,
            "from": FROM_NUMBER,
            "account_sid": ACCOUNT_SID,
            "num_segments": "1",
            "direction": "outbound-api",
        }),
    ))
}

fn start_mock() -> Mock {
    // Its own runtime (one worker thread), so the load's tasks never delay its answers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mock-twilio")
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(MockState {
        latency_ms: AtomicU64::new(0),
        codes: Mutex::new(HashMap::new()),
        messages: AtomicU64::new(0),
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = state.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| mock_answer(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Mock {
        state,
        port,
        _runtime: runtime,
    }
}

// ---------------------------------------------------------------------------------------
// The ceilings: minimal hyper servers on a Unix socket (child process)
// ---------------------------------------------------------------------------------------

const CEILING_ANSWER: &[u8] =
    br#"{"message":"OTP sent successfully","otp_id":1,"expires_at":"2025-01-01T00:00:00Z"}"#;

fn ceiling_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS t (
             id         INTEGER PRIMARY KEY,
             phone      TEXT    NOT NULL,
             purpose    TEXT    NOT NULL,
             code_hash  BLOB    NOT NULL,
             created_at INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS t_by_phone ON t (phone, purpose, id);",
    )
    .unwrap();
    conn
}

/// One write transaction: what "one SQLite WAL write per request" means here.
fn ceiling_write(conn: &mut rusqlite::Connection, n: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO t (phone, purpose, code_hash, created_at) VALUES (?1, 'login', ?2, ?3)",
    )?
    .execute(rusqlite::params![
        format!("+346{n:08}"),
        [n as u8; 32].as_slice(),
        now_ms()
    ])?;
    tx.commit()
}

/// Group commit: every queued request's row in one transaction.
fn ceiling_write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[(u64, tokio::sync::oneshot::Sender<bool>)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (n, _) in batch {
        tx.prepare_cached(
            "INSERT INTO t (phone, purpose, code_hash, created_at) VALUES (?1, 'login', ?2, ?3)",
        )?
        .execute(rusqlite::params![
            format!("+346{n:08}"),
            [*n as u8; 32].as_slice(),
            now_ms()
        ])?;
    }
    tx.commit()
}

enum CeilingWriter {
    Plain,
    /// One dedicated writer thread fed by a channel (otpd's design).
    Thread(mpsc::Sender<(u64, tokio::sync::oneshot::Sender<bool>)>),
    /// `spawn_blocking` per request, the connection behind a mutex.
    Blocking(Arc<Mutex<rusqlite::Connection>>),
}

fn ceiling_main(kind: &str, socket: &Path, db: &Path) {
    let writer = match kind {
        "plain" => CeilingWriter::Plain,
        "sqlite-thread" => {
            let mut conn = ceiling_db(db);
            let (tx, rx) = mpsc::channel::<(u64, tokio::sync::oneshot::Sender<bool>)>();
            std::thread::spawn(move || {
                while let Ok((n, reply)) = rx.recv() {
                    let _ = reply.send(ceiling_write(&mut conn, n).is_ok());
                }
            });
            CeilingWriter::Thread(tx)
        }
        "sqlite-blocking" => CeilingWriter::Blocking(Arc::new(Mutex::new(ceiling_db(db)))),
        "sqlite-batch" => {
            let mut conn = ceiling_db(db);
            let (tx, rx) = mpsc::channel::<(u64, tokio::sync::oneshot::Sender<bool>)>();
            std::thread::spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 512 {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let ok = ceiling_write_batch(&mut conn, &batch).is_ok();
                    for (_, reply) in batch {
                        let _ = reply.send(ok);
                    }
                }
            });
            CeilingWriter::Thread(tx)
        }
        other => panic!("unknown ceiling {other}"),
    };
    let writer = Arc::new(writer);
    let counter = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let writer = writer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let writer = writer.clone();
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let _ = req.into_body().collect().await;
                        let ok = match &*writer {
                            CeilingWriter::Plain => true,
                            CeilingWriter::Thread(tx) => {
                                let (reply, answer) = tokio::sync::oneshot::channel();
                                let sent = tx.send((n, reply)).is_ok();
                                sent && answer.await.unwrap_or(false)
                            }
                            CeilingWriter::Blocking(conn) => {
                                let conn = conn.clone();
                                tokio::task::spawn_blocking(move || {
                                    ceiling_write(&mut conn.lock().unwrap(), n).is_ok()
                                })
                                .await
                                .unwrap_or(false)
                            }
                        };
                        let status = if ok {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header(CONTENT_TYPE, "application/json")
                                .body(Full::new(Bytes::from_static(CEILING_ANSWER)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// Load generation: one task per keep-alive connection
// ---------------------------------------------------------------------------------------

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(socket: &Path) -> std::io::Result<Conn> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connect_all(socket: &Path, n: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect(socket).await.expect("connect to the server socket"));
    }
    conns
}

fn post(path: &'static str, body: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A transport failure (the connection is unusable) or an unexpected answer.
enum CallError {
    Transport(String),
    Answer(String),
}

async fn call(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), CallError> {
    let transport = |e: hyper::Error| CallError::Transport(e.to_string());
    conn.ready().await.map_err(transport)?;
    let response = conn.send_request(req).await.map_err(transport)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(transport)?
        .to_bytes();
    Ok((status, body))
}

fn expect(
    answer: Result<(StatusCode, Bytes), CallError>,
    status: StatusCode,
    contains: &str,
) -> Result<Bytes, CallError> {
    let (got, body) = answer?;
    let text_ok = contains.is_empty()
        || body
            .windows(contains.len())
            .any(|w| w == contains.as_bytes());
    if got == status && text_ok {
        Ok(body)
    } else {
        let text = String::from_utf8_lossy(&body);
        Err(CallError::Answer(format!(
            "{got}: {}",
            text.chars().take(160).collect::<String>()
        )))
    }
}

static NEXT_PHONE: AtomicU64 = AtomicU64::new(1);

/// Mobile number prefixes of the most countries the run uses (`--countries`,
/// `--many-countries`), to which five digits are added.
static COUNTRIES: OnceLock<Vec<String>> = OnceLock::new();

/// How many of those prefixes numbers are drawn from now; 0 or 1: Spanish only.
static COUNTRIES_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// A unique valid mobile number: Spanish (+34 6 and eight digits), or of each country
/// in use in turn.
fn next_phone() -> String {
    let n = NEXT_PHONE.fetch_add(1, Ordering::Relaxed);
    let in_use = COUNTRIES_IN_USE.load(Ordering::Relaxed);
    match COUNTRIES.get().map(|p| &p[..in_use.min(p.len())]) {
        Some(prefixes) if prefixes.len() > 1 => {
            let count = prefixes.len() as u64;
            let prefix = &prefixes[(n % count) as usize];
            format!("{prefix}{:05}", n / count % 100_000)
        }
        _ => format!("+346{n:08}"),
    }
}

/// Mobile number prefixes of `n` countries, one region per calling code: each region's
/// example mobile number without its last five digits, kept if every tail tried gives
/// a number the library calls valid (otpd refuses the others).
fn country_prefixes(n: usize) -> Vec<String> {
    let db = &*phonenumber::metadata::DATABASE;
    let mut prefixes = Vec::new();
    for code in 1..=999u16 {
        let regions = db.by_code(&code).unwrap_or_default();
        let prefix = regions.iter().find_map(|region| {
            let example = region.descriptors().mobile()?.example()?;
            let prefix = format!("+{code}{}", example.get(..example.len().checked_sub(5)?)?);
            ["00000", "13579", "24680", "50505", "99999"]
                .iter()
                .all(|tail| {
                    phonenumber::parse(None, format!("{prefix}{tail}")).is_ok_and(|p| p.is_valid())
                })
                .then_some(prefix)
        });
        prefixes.extend(prefix);
        if prefixes.len() == n {
            break;
        }
    }
    prefixes
}

/// The backend's user id for a phone: its last eight digits (stable, so a verify can
/// give the same user the send gave).
fn user_of(phone: &str) -> &str {
    &phone[phone.len().saturating_sub(8)..]
}

fn send_request(phone: &str) -> Request<Full<Bytes>> {
    post(
        SEND_PATH,
        format!(
            r#"{{"phone_number":"{phone}","purpose":"{PURPOSE}","user_id":"{}"}}"#,
            user_of(phone)
        ),
    )
}

fn verify_request(phone: &str, code: &str) -> Request<Full<Bytes>> {
    post(
        VERIFY_PATH,
        format!(
            r#"{{"phone_number":"{phone}","purpose":"{PURPOSE}","user_id":"{}","otp_code":"{code}"}}"#,
            user_of(phone)
        ),
    )
}

fn wrong(code: &str) -> String {
    code.bytes()
        .map(|c| char::from(b'0' + (c - b'0' + 1) % 10))
        .collect()
}

/// A code sent and not yet verified.
struct Code {
    phone: String,
    code: String,
    wrong: u8,
    /// The last verify-wrong run that used it (unique phone per request within a run).
    run: u64,
}

/// What the load shares: the mock's codes, and a pool of codes ready to verify.
struct Ctx {
    mock: Arc<MockState>,
    pool: Mutex<VecDeque<Code>>,
    runs: AtomicU64,
}

impl Ctx {
    /// Moves every code the mock has seen into the verify pool.
    fn refill(&self) {
        let drained: Vec<(String, String)> = self.mock.codes.lock().unwrap().drain().collect();
        let mut pool = self.pool.lock().unwrap();
        pool.extend(drained.into_iter().map(|(phone, code)| Code {
            phone,
            code,
            wrong: 0,
            run: 0,
        }));
    }

    fn pool_len(&self) -> usize {
        self.pool.lock().unwrap().len()
    }

    fn take_for_verify(&self) -> Option<Code> {
        self.pool.lock().unwrap().pop_front()
    }

    /// A code not used by this run yet, with wrong attempts to spare (max_attempts is 5).
    fn take_for_wrong(&self, run: u64) -> Option<Code> {
        let mut pool = self.pool.lock().unwrap();
        loop {
            let code = pool.pop_front()?;
            if code.wrong >= 3 {
                continue;
            }
            if code.run == run {
                pool.push_front(code);
                return None;
            }
            return Some(code);
        }
    }

    fn put_back(&self, code: Code) {
        self.pool.lock().unwrap().push_back(code);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Send,
    Verify,
    VerifyWrong,
    Flow,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Send => "send",
            Scenario::Verify => "verify",
            Scenario::VerifyWrong => "verify-wrong",
            Scenario::Flow => "flow",
        }
    }

    fn parse(s: &str) -> Option<Scenario> {
        [
            Scenario::Send,
            Scenario::Verify,
            Scenario::VerifyWrong,
            Scenario::Flow,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

/// The request a ceiling run sends: the same size and shape as a send-otp.
fn ceiling_request() -> Request<Full<Bytes>> {
    send_request(&next_phone())
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

struct TaskStats {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    last_done: Option<Instant>,
    exhausted: bool,
    error_samples: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

impl TaskStats {
    fn new() -> Self {
        TaskStats {
            hist: histogram(),
            count: 0,
            errors: 0,
            last_done: None,
            exhausted: false,
            error_samples: Vec::new(),
        }
    }

    /// Counts a request that completed inside the measured window.
    fn record<T>(&mut self, w: &Window, t0: Instant, result: &Result<T, CallError>) {
        let t1 = Instant::now();
        if t1 < w.measure_from || t1 > w.end {
            return;
        }
        let us = t1.saturating_duration_since(t0).as_micros() as u64;
        let _ = self.hist.record(us.clamp(1, 120_000_000));
        self.count += 1;
        self.last_done = Some(t1);
        if let Err(e) = result {
            self.errors += 1;
            if self.error_samples.len() < 2 {
                self.error_samples.push(match e {
                    CallError::Transport(s) => format!("transport: {s}"),
                    CallError::Answer(s) => s.clone(),
                });
            }
        }
    }
}

fn merge(tasks: Vec<TaskStats>, w: &Window) -> RunStats {
    let mut hist = histogram();
    let mut out = RunStats {
        hist: histogram(),
        count: 0,
        errors: 0,
        elapsed: w.end - w.measure_from,
        exhausted: false,
        error_samples: Vec::new(),
    };
    let mut last = None::<Instant>;
    for t in tasks {
        hist.add(&t.hist).unwrap();
        out.count += t.count;
        out.errors += t.errors;
        out.exhausted |= t.exhausted;
        last = last.max(t.last_done);
        for s in t.error_samples {
            if out.error_samples.len() < 2 {
                out.error_samples.push(s);
            }
        }
    }
    if out.exhausted
        && let Some(last) = last
    {
        out.elapsed = last.saturating_duration_since(w.measure_from);
    }
    out.hist = hist;
    out
}

/// One connection's closed loop: requests back to back until the window ends.
async fn closed_task(
    ctx: Arc<Ctx>,
    socket: Arc<PathBuf>,
    mut conn: Conn,
    scenario: Option<Scenario>,
    run: u64,
    w: Window,
    begin_at: Option<Instant>,
) -> TaskStats {
    let mut st = TaskStats::new();
    if let Some(at) = begin_at {
        tokio::time::sleep_until(at.into()).await;
    }
    while Instant::now() < w.end {
        let broken = match scenario {
            None => {
                let t0 = Instant::now();
                let r = expect(call(&mut conn, ceiling_request()).await, StatusCode::OK, "");
                st.record(&w, t0, &r);
                matches!(r, Err(CallError::Transport(_)))
            }
            Some(Scenario::Send) => {
                let phone = next_phone();
                let t0 = Instant::now();
                let r = expect(
                    call(&mut conn, send_request(&phone)).await,
                    StatusCode::OK,
                    "otp_id",
                );
                st.record(&w, t0, &r);
                matches!(r, Err(CallError::Transport(_)))
            }
            Some(Scenario::Verify) => {
                let Some(code) = ctx.take_for_verify() else {
                    st.exhausted = true;
                    break;
                };
                let t0 = Instant::now();
                let r = expect(
                    call(&mut conn, verify_request(&code.phone, &code.code)).await,
                    StatusCode::OK,
                    "\"verified\":true",
                );
                st.record(&w, t0, &r);
                matches!(r, Err(CallError::Transport(_)))
            }
            Some(Scenario::VerifyWrong) => {
                let Some(mut code) = ctx.take_for_wrong(run) else {
                    st.exhausted = true;
                    break;
                };
                let t0 = Instant::now();
                let r = expect(
                    call(&mut conn, verify_request(&code.phone, &wrong(&code.code))).await,
                    StatusCode::BAD_REQUEST,
                    "invalid_otp",
                );
                st.record(&w, t0, &r);
                code.wrong += 1;
                code.run = run;
                ctx.put_back(code);
                matches!(r, Err(CallError::Transport(_)))
            }
            // One flow is one sample: a send, then a verify of the code it sent.
            Some(Scenario::Flow) => {
                let phone = next_phone();
                let t0 = Instant::now();
                let sent = expect(
                    call(&mut conn, send_request(&phone)).await,
                    StatusCode::OK,
                    "otp_id",
                );
                let r = match (sent, ctx.mock.take_code(&phone)) {
                    (Ok(_), Some(code)) => expect(
                        call(&mut conn, verify_request(&phone, &code)).await,
                        StatusCode::OK,
                        "\"verified\":true",
                    ),
                    (Ok(_), None) => Err(CallError::Answer("the mock got no code".into())),
                    (Err(e), _) => Err(e),
                };
                st.record(&w, t0, &r);
                matches!(r, Err(CallError::Transport(_)))
            }
        };
        if broken {
            match connect(&socket).await {
                Ok(c) => conn = c,
                Err(_) => break,
            }
        }
    }
    st
}

/// Paced verifies (open loop, latency measured from each request's scheduled time, so a
/// stalled server cannot hide its delay): `rate` per second over `conns` connections.
async fn paced_verify_task(
    ctx: Arc<Ctx>,
    mut conn: Conn,
    period: Duration,
    first: Instant,
    w: Window,
) -> TaskStats {
    let mut st = TaskStats::new();
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let scheduled = ticks.tick().await.into_std();
        if scheduled >= w.end {
            break;
        }
        let Some(code) = ctx.take_for_verify() else {
            st.exhausted = true;
            break;
        };
        let r = expect(
            call(&mut conn, verify_request(&code.phone, &code.code)).await,
            StatusCode::OK,
            "\"verified\":true",
        );
        st.record(&w, scheduled, &r);
        if matches!(r, Err(CallError::Transport(_))) {
            break;
        }
    }
    st
}

/// Sends `n` codes as fast as `conns` connections allow, outside any measurement, and
/// moves them into the verify pool.
async fn presend(ctx: Arc<Ctx>, socket: &Path, n: usize, conns: usize) -> u64 {
    let remaining = Arc::new(AtomicI64::new(n as i64));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut conn in connect_all(socket, conns.min(n.max(1))).await {
        let remaining = remaining.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let r = expect(
                    call(&mut conn, send_request(&next_phone())).await,
                    StatusCode::OK,
                    "otp_id",
                );
                match r {
                    Ok(_) => {}
                    Err(CallError::Transport(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(CallError::Answer(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.refill();
    errors.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// otpd's own view: /metrics histograms, diffed around a measurement
// ---------------------------------------------------------------------------------------

async fn metrics_text(socket: &Path) -> String {
    let Ok(mut conn) = connect(socket).await else {
        return String::new();
    };
    let req = Request::builder()
        .uri("/metrics")
        .header(HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    match call(&mut conn, req).await {
        Ok((_, body)) => String::from_utf8_lossy(&body).into_owned(),
        Err(_) => String::new(),
    }
}

/// The cumulative buckets (le, count) of `metric` with `label="value"`.
fn buckets(text: &str, metric: &str, label: &str, value: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{metric}_bucket{{");
    let want = format!("{label}=\"{value}\"");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, count)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == want) {
            continue;
        }
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
            .and_then(|v| {
                if v == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    v.parse().ok()
                }
            });
        if let (Some(le), Ok(count)) = (le, count.trim().parse::<f64>()) {
            out.push((le, count));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// otpd's histogram of `metric{label=value}` over a measurement: the bucket bound (ms)
/// under which 99% fell, and the share above 5 ms.
fn server_view(
    before: &str,
    after: &str,
    metric: &str,
    label: &str,
    value: &str,
) -> Option<String> {
    let b = buckets(before, metric, label, value);
    let a = buckets(after, metric, label, value);
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            let old = b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let p99 = delta.iter().find(|(_, n)| *n >= 0.99 * total)?.0;
    let under_5ms = delta
        .iter()
        .find(|(le, _)| (*le - 0.005).abs() < 1e-9)
        .map_or(0.0, |(_, n)| *n);
    Some(format!(
        "{value} p99 <= {} ms, {:.1}% > 5 ms",
        if p99.is_finite() {
            format!("{}", p99 * 1000.0)
        } else {
            "inf".into()
        },
        100.0 * (total - under_5ms) / total
    ))
}

/// What otpd itself measured for a scenario's requests and store operations.
fn server_side(before: &str, after: &str, scenario: Scenario) -> String {
    const HTTP: &str = "otpd_http_request_duration_seconds";
    const STORE: &str = "otpd_store_operation_duration_seconds";
    let mut parts = Vec::new();
    let (routes, ops): (&[&str], &[&str]) = match scenario {
        Scenario::Send => (&["send_otp"], &["insert_code", "record_delivery"]),
        Scenario::Verify => (&["verify_otp"], &["check_attempt"]),
        Scenario::VerifyWrong => (&["verify_otp"], &["check_attempt"]),
        Scenario::Flow => (&["send_otp", "verify_otp"], &[]),
    };
    for r in routes {
        parts.extend(server_view(before, after, HTTP, "route", r));
    }
    for op in ops {
        parts.extend(server_view(before, after, STORE, "op", op));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("otpd-side: {}", parts.join("; "))
    }
}

// ---------------------------------------------------------------------------------------
// Processes: otpd, the ceiling servers, perf
// ---------------------------------------------------------------------------------------

struct Otpd {
    child: Child,
    dir: PathBuf,
    ready: Duration,
}

impl Otpd {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("otpd.sock")
    }

    fn hwm_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM")
    }

    fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// SIGTERM and a clean exit (it drains, checkpoints and removes its socket).
    fn stop(mut self) {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        progress(&format!(
                            "  otpd exited with {status}; see {}/otpd.log",
                            self.dir.display()
                        ));
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    progress("  otpd did not stop within 30 s; killed");
                    return;
                }
            }
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn write_config(dir: &Path, mock_port: u16, log_level: &str) {
    let d = dir.display();
    let text = format!(
        r#"[server]
socket_path = "{d}/otpd.sock"
max_connections = 1024
log_level = "{log_level}"

[store]
path = "{d}/otpd.db"

[otp]
ttl = "1h"

[limits]
send_per_phone = "1000000/1s"
send_per_user = "1000000/1s"
verify_per_phone = "1000000/1s"
send_global = "1000000/1s"

[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{FROM_NUMBER}"
api_base = "http://127.0.0.1:{mock_port}"
timeout = "10s"
"#
    );
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

/// Starts otpd on `dir` (config already written) and times spawn -> READY=1 on a
/// NOTIFY_SOCKET datagram socket owned by the bench.
fn start_otpd(bin: &Path, dir: &Path) -> Otpd {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("otpd.log"))
        .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .current_dir(dir)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for var in [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_PHONE_NUMBER",
        "TEST_PHONE_NUMBER",
        "TWILIO_API_KEY_SID",
        "TWILIO_API_KEY_SECRET",
        "CREDENTIALS_DIRECTORY",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "RUST_LOG",
        "OTPD_LOG",
    ] {
        cmd.env_remove(var);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start otpd");
    let mut buf = [0u8; 4096];
    let deadline = started + Duration::from_secs(60);
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    break;
                }
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "otpd exited with {status} before READY:\n{}",
                        std::fs::read_to_string(dir.join("otpd.log")).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "otpd sent no READY=1 in 60 s");
            }
        }
    }
    let ready = started.elapsed();
    Otpd {
        child,
        dir: dir.to_owned(),
        ready,
    }
}

struct Ceiling {
    child: Child,
    socket: PathBuf,
}

fn start_ceiling(kind: &str, dir: &Path) -> Ceiling {
    let socket = dir.join(format!("{kind}.sock"));
    let db = dir.join(format!("{kind}.db"));
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--ceiling-server")
        .arg(kind)
        .arg("--socket")
        .arg(&socket)
        .arg("--db")
        .arg(&db)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the ceiling server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "ceiling server {kind} did not listen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ceiling { child, socket }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `perf record` attached to one process for one measured run.
struct Perf(Option<Child>);

impl Perf {
    fn start(dir: Option<&PathBuf>, pid: u32, name: &str) -> Perf {
        let Some(dir) = dir else { return Perf(None) };
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join(format!("{name}.data"));
        // OTPD_BENCH_PERF_CMD replaces the whole command ({pid} and {out} are filled in),
        // e.g. "strace -f -T -e trace=fsync -o {out} -p {pid}".
        let words: Vec<String> = match std::env::var("OTPD_BENCH_PERF_CMD") {
            Ok(cmd) => cmd
                .split_whitespace()
                .map(|w| {
                    w.replace("{pid}", &pid.to_string())
                        .replace("{out}", &out.display().to_string())
                })
                .collect(),
            Err(_) => {
                let extra =
                    std::env::var("OTPD_BENCH_PERF_ARGS").unwrap_or_else(|_| "-F 999 -g".into());
                ["perf", "record"]
                    .into_iter()
                    .map(String::from)
                    .chain(extra.split_whitespace().map(String::from))
                    .chain([
                        "-p".into(),
                        pid.to_string(),
                        "-o".into(),
                        out.display().to_string(),
                    ])
                    .collect()
            }
        };
        let child = Command::new(&words[0])
            .args(&words[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Perf(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            signal(child.id(), "INT");
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------

struct Bench {
    args: Args,
    s: Settings,
    rt: Runtime,
    mock: Mock,
    ctx: Arc<Ctx>,
    bin: PathBuf,
    rows: Vec<Row>,
    /// Best SQLite-write ceiling (req/s) per connection count, and the plain one.
    sqlite_ceiling: HashMap<usize, f64>,
    plain_ceiling: HashMap<usize, f64>,
    /// Measured verify rates, to size the code pool of the next verify run.
    verify_rate: HashMap<usize, f64>,
    startups: Vec<Startup>,
    idle_rss_kib: Option<u64>,
    extra: serde_json::Map<String, Value>,
    dirs: Vec<tempfile::TempDir>,
}

impl Bench {
    fn tempdir(&mut self, prefix: &str) -> PathBuf {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let path = dir.path().to_owned();
        self.dirs.push(dir);
        path
    }

    fn section(&self, name: &str) -> bool {
        self.args.sections.iter().any(|s| s == name)
    }

    fn scenarios(&self) -> Vec<Scenario> {
        self.args
            .scenarios
            .iter()
            .map(|s| Scenario::parse(s).unwrap_or_else(|| panic!("unknown scenario {s}")))
            .collect()
    }

    fn set_latency(&self, ms: u64) {
        self.mock.state.latency_ms.store(ms, Ordering::Relaxed);
    }

    fn scrape(&self, socket: &Path) -> String {
        self.rt.block_on(metrics_text(socket))
    }

    /// One closed-loop measurement.
    fn closed(&self, socket: &Path, scenario: Option<Scenario>, conns: usize) -> RunStats {
        let ctx = self.ctx.clone();
        let socket = Arc::new(socket.to_owned());
        let (warmup, duration) = (self.s.warmup, self.s.duration);
        let run = self.ctx.runs.fetch_add(1, Ordering::Relaxed) + 1;
        self.rt.block_on(async move {
            let connections = connect_all(&socket, conns).await;
            let start = Instant::now();
            let w = Window {
                measure_from: start + warmup,
                end: start + warmup + duration,
            };
            let tasks: Vec<_> = connections
                .into_iter()
                .map(|c| {
                    tokio::spawn(closed_task(
                        ctx.clone(),
                        socket.clone(),
                        c,
                        scenario,
                        run,
                        w,
                        None,
                    ))
                })
                .collect();
            let mut stats = Vec::new();
            for t in tasks {
                stats.push(t.await.unwrap());
            }
            merge(stats, &w)
        })
    }

    /// Makes sure the pool holds at least `n` codes (sent at 0 ms mock latency).
    fn ensure_pool(&self, socket: &Path, n: usize) {
        self.ctx.refill();
        let have = self.ctx.pool_len();
        if have >= n {
            return;
        }
        let latency = self.mock.state.latency_ms.swap(0, Ordering::Relaxed);
        let need = n - have;
        let t = Instant::now();
        let errors = self
            .rt
            .block_on(presend(self.ctx.clone(), socket, need, 64));
        progress(&format!(
            "  pre-sent {need} codes in {:.1} s{}",
            t.elapsed().as_secs_f64(),
            if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            }
        ));
        self.set_latency(latency);
    }

    /// How many codes a verify run at `conns` may use: the rate measured at these
    /// connections (by an earlier verify or verify-wrong run), else the rate at fewer
    /// connections scaled like the SQLite ceiling, else a share of that ceiling.
    fn pool_for(&self, conns: usize) -> usize {
        let ceiling = |c: usize| self.sqlite_ceiling.get(&c).copied();
        let guess = self
            .verify_rate
            .get(&conns)
            .copied()
            .or_else(|| {
                let (&c, &r) = self
                    .verify_rate
                    .iter()
                    .filter(|(c, _)| **c < conns)
                    .max_by_key(|(c, _)| **c)?;
                let scale = match (ceiling(conns), ceiling(c)) {
                    (Some(a), Some(b)) if b > 0.0 => a / b,
                    _ => 2.0,
                };
                Some(r * scale)
            })
            .or_else(|| ceiling(conns).map(|r| r * 0.5))
            .unwrap_or(5000.0);
        (guess * 1.15 * self.s.window().as_secs_f64()) as usize + 100
    }

    fn ratio(&self, conns: usize, rps: f64) -> Option<f64> {
        self.sqlite_ceiling.get(&conns).map(|c| rps / c)
    }

    fn perf_dir(&self) -> Option<&PathBuf> {
        self.args.perf.as_ref()
    }

    // -- ceilings -----------------------------------------------------------------------

    fn ceilings(&mut self) {
        let dir = self.tempdir("otpd-bench-ceiling-");
        // --quick skips spawn_blocking, which lost clearly to the writer thread here.
        let kinds = self.args.ceilings.clone().unwrap_or_else(|| {
            let all = ["plain", "sqlite-thread", "sqlite-blocking"];
            let n = if self.s.quick { 2 } else { 3 };
            all[..n].iter().map(|k| k.to_string()).collect()
        });
        for kind in &kinds {
            let kind = kind.as_str();
            let server = start_ceiling(kind, &dir);
            for &conns in &self.s.conns.clone() {
                progress(&format!("ceiling {kind} x{conns}"));
                let runs: Vec<RunStats> = (0..self.s.repeat)
                    .map(|_| {
                        let _perf = Perf::start(
                            self.perf_dir(),
                            server.child.id(),
                            &format!("ceiling-{kind}-{conns}"),
                        );
                        self.closed(&server.socket, None, conns)
                    })
                    .collect();
                let mut row = summarize(&format!("ceiling:{kind}"), conns, None, &runs);
                let best = match kind {
                    "plain" => Some(&mut self.plain_ceiling),
                    "sqlite-batch" => None,
                    _ => Some(&mut self.sqlite_ceiling),
                };
                if let Some(best) = best {
                    let slot = best.entry(conns).or_insert(0.0);
                    *slot = slot.max(row.rps);
                }
                row.note = [
                    row.note.clone(),
                    match kind {
                        "plain" => "hyper, small JSON answer".into(),
                        "sqlite-thread" => "+1 WAL write tx, writer thread".into(),
                        "sqlite-batch" => {
                            "writer thread, queued requests share one tx (reference only)".into()
                        }
                        _ => "+1 WAL write tx, spawn_blocking+Mutex".into(),
                    },
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
                self.rows.push(row);
            }
        }
    }

    // -- otpd ---------------------------------------------------------------------------

    /// The otpd data directory shared by the fast and slow sections.
    fn otpd_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.extra.get("otpd_dir").and_then(Value::as_str) {
            return PathBuf::from(dir);
        }
        let dir = self.tempdir("otpd-bench-");
        write_config(&dir, self.mock.port, &self.args.log_level.clone());
        self.extra
            .insert("otpd_dir".into(), Value::String(dir.display().to_string()));
        dir
    }

    /// One group: a fresh otpd process, then `scenario` at each connection count.
    fn group(&mut self, scenario: Scenario, latency: u64, conns_list: &[usize]) {
        self.group_as(scenario.name(), scenario, latency, conns_list);
    }

    /// A group whose rows are called `name` (the scenario, with what sets it apart).
    fn group_as(&mut self, name: &str, scenario: Scenario, latency: u64, conns_list: &[usize]) {
        let dir = self.otpd_dir();
        self.set_latency(0);
        let otpd = start_otpd(&self.bin, &dir);
        if self.idle_rss_kib.is_none() {
            std::thread::sleep(Duration::from_secs(1));
            self.idle_rss_kib = otpd.rss_kib();
            progress(&format!(
                "otpd idle RSS after start-up: {} KiB (ready in {:.1} ms)",
                self.idle_rss_kib.unwrap_or(0),
                otpd.ready.as_secs_f64() * 1000.0
            ));
        }
        let socket = otpd.socket();
        for &conns in conns_list {
            progress(&format!("{name} x{conns}, mock {latency} ms"));
            let mut runs = Vec::new();
            let mut server = String::new();
            let verifies = matches!(scenario, Scenario::Verify | Scenario::VerifyWrong);
            for _ in 0..self.s.repeat {
                let mut pool = self.pool_for(conns);
                let run = loop {
                    if verifies {
                        self.ensure_pool(&socket, pool);
                    }
                    let (run, side) = self.measure(&otpd, name, scenario, latency, conns);
                    server = side;
                    let more = if verifies {
                        self.pool_ran_short(&run, pool, conns)
                    } else {
                        None
                    };
                    match more {
                        Some(more) => pool = more,
                        None => break run,
                    }
                };
                runs.push(run);
            }
            let mut row = summarize(name, conns, Some(latency), &runs);
            row.add_note(&server);
            if verifies {
                let r = self.verify_rate.entry(conns).or_insert(0.0);
                *r = r.max(row.rps);
            }
            row.rss_peak_kib = otpd.hwm_kib();
            if latency == 0 {
                // A flow is two requests.
                let requests = if scenario == Scenario::Flow { 2.0 } else { 1.0 };
                row.ratio = self.ratio(conns, requests * row.rps);
            }
            self.rows.push(row);
        }
        otpd.stop();
    }

    /// One measured run of `scenario` on `otpd`, and otpd's own view of it (`/metrics`).
    fn measure(
        &mut self,
        otpd: &Otpd,
        name: &str,
        scenario: Scenario,
        latency: u64,
        conns: usize,
    ) -> (RunStats, String) {
        let socket = otpd.socket();
        self.set_latency(latency);
        let _perf = Perf::start(
            self.perf_dir(),
            otpd.pid(),
            &format!("{}-{conns}-{latency}ms", name.replace([' ', ','], "-")),
        );
        let before = self.scrape(&socket);
        let run = self.closed(&socket, Some(scenario), conns);
        let server = server_side(&before, &self.scrape(&socket), scenario);
        self.set_latency(0);
        (run, server)
    }

    /// With no ceiling or earlier verify measured, a verify run's pool of `pool` codes is
    /// a guess that can run out before the window is half over: then the pool to run
    /// again with, sized from how fast those codes went (at least the warm-up and the
    /// measured part, so their rate at least).
    fn pool_ran_short(&mut self, run: &RunStats, pool: usize, conns: usize) -> Option<usize> {
        let short = run.count == 0 || run.elapsed < self.s.duration / 2;
        if !run.exhausted || !short || pool > 1_000_000 {
            return None;
        }
        let measured = if run.count == 0 {
            Duration::ZERO
        } else {
            run.elapsed
        };
        let rate = self.verify_rate.entry(conns).or_insert(0.0);
        *rate = rate.max(pool as f64 / (self.s.warmup + measured).as_secs_f64());
        let more = self.pool_for(conns).max(pool * 2);
        progress(&format!(
            "  the code pool ran out early: again with {more} codes"
        ));
        Some(more)
    }

    /// `send` and `verify` at the largest connection count, numbers from
    /// `--many-countries` countries in turn: a parse's cost and the memory of the phone
    /// library's compiled rules grow with the countries in use, which Spanish numbers
    /// alone never show. Skipped when the whole run already spans countries.
    fn countries(&mut self, scenarios: &[Scenario]) {
        let n = self.many_countries();
        let Some(&conns) = self.s.conns.iter().max() else {
            return;
        };
        if n <= 1 || self.args.countries > 1 {
            return;
        }
        // The verify pool holds codes of these numbers only, and none of them after.
        let clear_pool = |ctx: &Ctx| {
            ctx.refill();
            ctx.pool.lock().unwrap().clear();
        };
        clear_pool(&self.ctx);
        COUNTRIES_IN_USE.store(n, Ordering::Relaxed);
        for &scenario in scenarios
            .iter()
            .filter(|s| matches!(s, Scenario::Send | Scenario::Verify))
        {
            let name = format!("{}, {n} countries", scenario.name());
            self.group_as(&name, scenario, 0, &[conns]);
        }
        COUNTRIES_IN_USE.store(self.args.countries, Ordering::Relaxed);
        clear_pool(&self.ctx);
    }

    /// How many countries the `countries` section draws from: those found, up to
    /// `--many-countries`.
    fn many_countries(&self) -> usize {
        self.args
            .many_countries
            .min(COUNTRIES.get().map_or(1, Vec::len))
    }

    /// Slow Twilio: sends on `slow_conns` connections while verifies are paced beside
    /// them; the verifies must not queue behind the sends.
    fn mixed(&mut self, latency: u64) {
        let dir = self.otpd_dir();
        self.set_latency(0);
        let otpd = start_otpd(&self.bin, &dir);
        let socket = otpd.socket();
        let conns = self.args.slow_conns;
        let vconns = self.args.mixed_verify_conns.max(1);
        let rate = self.args.mixed_verify_rate.max(1);
        progress(&format!(
            "send x{conns}, mock {latency} ms, with {rate} verifies/s on {vconns} connections"
        ));
        let mut send_runs = Vec::new();
        let mut verify_runs = Vec::new();
        let (mut send_server, mut verify_server) = (String::new(), String::new());
        for _ in 0..self.s.repeat {
            let need = (rate as f64 * self.s.window().as_secs_f64() * 1.2) as usize + 50;
            self.ensure_pool(&socket, need);
            self.set_latency(latency);
            let _perf = Perf::start(
                self.perf_dir(),
                otpd.pid(),
                &format!("mixed-{conns}-{latency}ms"),
            );
            let before = self.scrape(&socket);
            let ctx = self.ctx.clone();
            let sock = Arc::new(socket.clone());
            // The warm-up covers the staggered start and one full round of sends.
            let warmup = self.s.warmup.max(Duration::from_millis(2 * latency + 200));
            let duration = self.s.duration;
            let run = self.ctx.runs.fetch_add(1, Ordering::Relaxed) + 1;
            let (send, verify) = self.rt.block_on(async move {
                let senders = connect_all(&sock, conns).await;
                let verifiers = connect_all(&sock, vconns).await;
                let start = Instant::now();
                let w = Window {
                    measure_from: start + warmup,
                    end: start + warmup + duration,
                };
                // Independent callers: each send connection starts at its own phase of
                // the mock's latency, so the sends do not arrive in synchronized waves.
                let send_tasks: Vec<_> = senders
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let phase = Duration::from_millis(latency).mul_f64(i as f64 / conns as f64);
                        tokio::spawn(closed_task(
                            ctx.clone(),
                            sock.clone(),
                            c,
                            Some(Scenario::Send),
                            run,
                            w,
                            Some(start + phase),
                        ))
                    })
                    .collect();
                let period = Duration::from_secs_f64(vconns as f64 / rate as f64);
                let verify_tasks: Vec<_> = verifiers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let first = start + period.mul_f64(i as f64 / vconns as f64);
                        tokio::spawn(paced_verify_task(ctx.clone(), c, period, first, w))
                    })
                    .collect();
                let mut s = Vec::new();
                for t in send_tasks {
                    s.push(t.await.unwrap());
                }
                let mut v = Vec::new();
                for t in verify_tasks {
                    v.push(t.await.unwrap());
                }
                (merge(s, &w), merge(v, &w))
            });
            let after = self.scrape(&socket);
            send_server = server_side(&before, &after, Scenario::Send);
            verify_server = server_side(&before, &after, Scenario::Verify);
            self.set_latency(0);
            send_runs.push(send);
            verify_runs.push(verify);
        }
        let hwm = otpd.hwm_kib();
        let mut send = summarize("send", conns, Some(latency), &send_runs);
        send.rss_peak_kib = hwm;
        let mut verify = summarize(
            &format!("verify (paced {rate}/s during send x{conns})"),
            vconns,
            Some(latency),
            &verify_runs,
        );
        verify.rss_peak_kib = hwm;
        send.add_note(&send_server);
        verify.add_note(&verify_server);
        self.rows.push(send);
        self.rows.push(verify);
        otpd.stop();
    }

    // -- the large database and start-up ------------------------------------------------

    /// Times `n` start-ups (spawn -> READY=1) on `dir`; the idle RSS is read after the last.
    fn startups(&mut self, label: &str, dir: &Path, rows: u64) -> Startup {
        let mut out = Startup {
            label: label.to_owned(),
            rows,
            ..Startup::default()
        };
        for i in 0..self.s.startups {
            let otpd = start_otpd(&self.bin, dir);
            out.ms.push(otpd.ready.as_secs_f64() * 1000.0);
            if i + 1 == self.s.startups {
                std::thread::sleep(Duration::from_secs(1));
                out.idle_rss_kib = otpd.rss_kib();
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

    /// Verify at `big_conns` on the database in `dir` (codes pre-sent first).
    fn verify_on(&mut self, dir: &Path, label: &str) -> Row {
        self.set_latency(0);
        let otpd = start_otpd(&self.bin, dir);
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
        row.rss_peak_kib = otpd.hwm_kib();
        row.ratio = self.ratio(conns, row.rps);
        otpd.stop();
        row
    }

    fn big(&mut self) {
        // The pool must hold codes of the database under test only.
        self.ctx.refill();
        self.ctx.pool.lock().unwrap().clear();

        let empty = self.tempdir("otpd-bench-empty-");
        write_config(&empty, self.mock.port, &self.args.log_level.clone());
        let s = self.startups("empty db", &empty, 0);
        self.startups.push(s);
        let empty_row = self.verify_on(&empty, "empty");
        self.ctx.pool.lock().unwrap().clear();

        let big = self.tempdir("otpd-bench-big-");
        write_config(&big, self.mock.port, &self.args.log_level.clone());
        // Once, so that otpd creates and migrates the schema; then stop it.
        start_otpd(&self.bin, &big).stop();
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
        self.ctx.pool.lock().unwrap().clear();
        self.rows.push(empty_row);
        self.rows.push(big_row);
    }

    // -- targets and output -------------------------------------------------------------

    fn find(&self, scenario: &str, conns: usize, mock: Option<u64>) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.conns == conns && r.mock_ms == mock)
    }

    fn targets(&mut self) -> Vec<Target> {
        let mut t = Vec::new();
        // The targets are stated at 64 connections.
        let top = 64;
        let ceiling = self.sqlite_ceiling.get(&top).copied();
        let mark = |rows: &mut Vec<Row>, scenario: &str, conns, mock, goal: String, pass| {
            if let Some(r) = rows
                .iter_mut()
                .find(|r| r.scenario == scenario && r.conns == conns && r.mock_ms == mock)
            {
                r.target = Some(goal);
                r.pass = pass;
            }
        };
        // verify at 64 >= 60% and send (0 ms) >= 50% of the SQLite-write ceiling.
        for (scenario, share) in [("verify", 0.6), ("send", 0.5)] {
            let row = self.find(scenario, top, Some(0)).cloned();
            let goal = format!(">= {:.0}% of sqlite ceiling", share * 100.0);
            let (measured, pass) = match (&row, ceiling) {
                (Some(r), Some(c)) => (
                    format!("{:.0} req/s = {:.0}% of {:.0}", r.rps, 100.0 * r.rps / c, c),
                    Some(r.rps >= share * c),
                ),
                _ => ("not measured".into(), None),
            };
            mark(&mut self.rows, scenario, top, Some(0), goal.clone(), pass);
            t.push(Target {
                name: format!("{scenario} x{top}, mock 0 ms"),
                measured,
                goal,
                pass,
            });
        }
        // Slow Twilio.
        let slow = self.s.latencies.iter().copied().max().filter(|l| *l > 0);
        let sc = self.args.slow_conns;
        let send = slow.and_then(|l| self.find("send", sc, Some(l)).cloned());
        let pass = send.as_ref().map(|r| r.rps >= 600.0);
        if let (Some(l), Some(_)) = (slow, &send) {
            mark(&mut self.rows, "send", sc, Some(l), ">= 600/s".into(), pass);
        }
        t.push(Target {
            name: format!("send x{sc}, mock {} ms", slow.unwrap_or(0)),
            measured: send
                .as_ref()
                .map_or("not measured".into(), |r| format!("{:.0} req/s", r.rps)),
            goal: ">= 600 sends/s".into(),
            pass,
        });
        let vname = format!(
            "verify (paced {}/s during send x{sc})",
            self.args.mixed_verify_rate.max(1)
        );
        let verify = self.rows.iter().find(|r| r.scenario == vname).cloned();
        let pass = verify.as_ref().map(|r| r.p99_ms < 5.0 && r.errors == 0);
        if let Some(r) = &verify {
            mark(
                &mut self.rows,
                &vname,
                r.conns,
                r.mock_ms,
                "p99 < 5 ms".into(),
                pass,
            );
        }
        t.push(Target {
            name: "verify p99 during slow sends".into(),
            measured: verify
                .as_ref()
                .map_or("not measured".into(), |r| format!("p99 {:.2} ms", r.p99_ms)),
            goal: "< 5 ms".into(),
            pass,
        });
        // Memory.
        let peak = self.rows.iter().filter_map(|r| r.rss_peak_kib).max();
        t.push(Target {
            name: "otpd peak RSS, any scenario".into(),
            measured: peak.map_or("not measured".into(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            }),
            goal: "<= 40 MiB".into(),
            pass: peak.map(|k| k <= 40 * 1024),
        });
        t.push(Target {
            name: "otpd idle RSS after start-up".into(),
            measured: self.idle_rss_kib.map_or("not measured".into(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            }),
            goal: "<= 12 MiB".into(),
            pass: self.idle_rss_kib.map(|k| k <= 12 * 1024),
        });
        // The large database.
        let bc = self.args.big_conns;
        let empty = self.find("verify (empty db)", bc, Some(0)).cloned();
        let big = self
            .rows
            .iter()
            .find(|r| r.scenario.starts_with("verify (") && r.scenario.ends_with(" rows db)"))
            .cloned();
        let pass = match (&empty, &big) {
            (Some(e), Some(b)) => Some(b.p99_ms <= 1.5 * e.p99_ms),
            _ => None,
        };
        if let Some(b) = &big {
            mark(
                &mut self.rows,
                &b.scenario,
                bc,
                Some(0),
                "p99 <= 1.5x empty".into(),
                pass,
            );
        }
        t.push(Target {
            name: format!("verify x{bc} p99, {} rows vs empty", self.s.rows),
            measured: match (&empty, &big) {
                (Some(e), Some(b)) => format!(
                    "{:.2} ms vs {:.2} ms = {:.2}x",
                    b.p99_ms,
                    e.p99_ms,
                    b.p99_ms / e.p99_ms
                ),
                _ => "not measured".into(),
            },
            goal: "<= 1.5x".into(),
            pass,
        });
        let start = self.startups.iter().find(|s| s.rows > 0);
        let ms = start.map(|s| median(s.ms.clone()));
        t.push(Target {
            name: format!("start-up to READY, {} rows", self.s.rows),
            measured: ms.map_or("not measured".into(), |m| format!("{m:.1} ms (median)")),
            goal: "< 100 ms".into(),
            pass: ms.map(|m| m < 100.0),
        });
        if self.s.rows < 1_000_000 {
            for x in t.iter_mut().filter(|x| x.name.contains(" rows")) {
                x.goal.push_str(" (target is for 1M rows)");
            }
        }
        t
    }

    fn print_table(&self, targets: &[Target]) {
        println!();
        println!(
            "otpd load benchmark, commit {}, {} s windows after {} s warm-up, median of {} run(s){}{}",
            git_commit(),
            self.s.duration.as_secs_f64(),
            self.s.warmup.as_secs_f64(),
            self.s.repeat,
            if self.s.quick { ", QUICK" } else { "" },
            match COUNTRIES.get() {
                Some(p) if self.args.countries > 1 => {
                    format!(
                        ", numbers from {} countries",
                        self.args.countries.min(p.len())
                    )
                }
                _ => String::new(),
            }
        );
        let m = machine();
        println!(
            "machine: {} cores, {}, {:.1} GiB",
            m["nproc"],
            m["cpu"].as_str().unwrap_or(""),
            m["mem_total_kib"].as_f64().unwrap_or(0.0) / 1048576.0
        );
        println!();
        println!(
            "{:<44} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8} {:>6} {:>9} {:>6}  {:<30} result",
            "scenario",
            "conns",
            "mock",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "peak RSS",
            "xceil",
            "target",
        );
        for r in &self.rows {
            let rss = r
                .rss_peak_kib
                .map_or("-".into(), |k| format!("{:.1}M", k as f64 / 1024.0));
            let ratio = r.ratio.map_or("-".into(), |x| format!("{x:.2}"));
            let mock = r.mock_ms.map_or("-".into(), |m| format!("{m}ms"));
            let result = match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            println!(
                "{:<44} {:>5} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9} {:>6}  {:<30} {}",
                r.scenario,
                r.conns,
                mock,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.errors,
                rss,
                ratio,
                r.target.as_deref().unwrap_or(""),
                result
            );
            if !r.note.is_empty() && r.note.contains(':') && !r.scenario.starts_with("ceiling") {
                println!("    note: {}", r.note);
            }
        }
        println!();
        println!("xceil: req/s over the best SQLite-write ceiling at the same connection count.");
        println!(
            "peak RSS: otpd's VmHWM after the run; one otpd per scenario group, so it is \
             cumulative over that group's rows (connection counts ascending, pre-sends included)."
        );
        println!(
            "flow: req/s and latencies are per flow (a send, then a verify of its code: two \
             requests); xceil counts both requests."
        );
        for s in &self.startups {
            println!(
                "start-up to READY, {}: median {:.1} ms of {:?}; idle RSS {} KiB",
                s.label,
                median(s.ms.clone()),
                s.ms.iter()
                    .map(|m| (m * 10.0).round() / 10.0)
                    .collect::<Vec<_>>(),
                s.idle_rss_kib.unwrap_or(0)
            );
        }
        println!();
        println!("targets:");
        for t in targets {
            let result = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a",
            };
            println!(
                "  {result:<5} {:<44} {:<36} goal {}",
                t.name, t.measured, t.goal
            );
        }
    }

    fn to_json(&self, targets: &[Target], elapsed: Duration) -> Value {
        let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        json!({
            "commit": git_commit(),
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "machine": machine(),
            "settings": {
                "quick": self.s.quick,
                "duration_s": self.s.duration.as_secs_f64(),
                "warmup_s": self.s.warmup.as_secs_f64(),
                "repeat": self.s.repeat,
                "conns": self.s.conns,
                "mock_latency_ms": self.s.latencies,
                "slow_conns": self.args.slow_conns,
                "mixed_verify_rate": self.args.mixed_verify_rate,
                "mixed_verify_conns": self.args.mixed_verify_conns,
                "big_rows": self.s.rows,
                "big_conns": self.args.big_conns,
                "log_level": self.args.log_level,
                "countries": self.args.countries.min(COUNTRIES.get().map_or(1, Vec::len)),
                "many_countries": self.many_countries(),
            },
            "rows": self.rows.iter().map(|r| json!({
                "scenario": r.scenario,
                "conns": r.conns,
                "mock_ms": r.mock_ms,
                "rps": num(r.rps),
                "p50_ms": num(r.p50_ms),
                "p99_ms": num(r.p99_ms),
                "p999_ms": num(r.p999_ms),
                "requests": r.requests,
                "errors": r.errors,
                "otpd_peak_rss_kib": r.rss_peak_kib,
                "ratio_vs_sqlite_ceiling": r.ratio.map(num),
                "target": r.target,
                "pass": r.pass,
                "note": r.note,
            })).collect::<Vec<_>>(),
            "ceilings": {
                "plain": self.plain_ceiling.iter().map(|(c, r)| (c.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
                "sqlite_write_best": self.sqlite_ceiling.iter().map(|(c, r)| (c.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
            },
            "idle_rss_kib": self.idle_rss_kib,
            "startup": self.startups.iter().map(|s| json!({
                "label": s.label,
                "rows": s.rows,
                "ready_ms": s.ms,
                "median_ms": num(median(s.ms.clone())),
                "idle_rss_kib": s.idle_rss_kib,
            })).collect::<Vec<_>>(),
            "targets": targets.iter().map(|t| json!({
                "name": t.name,
                "measured": t.measured,
                "goal": t.goal,
                "pass": t.pass,
            })).collect::<Vec<_>>(),
            "elapsed_s": elapsed.as_secs_f64(),
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

fn build_otpd() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    progress("building: cargo build --release --bin otpd");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "otpd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --release --bin otpd failed");
}

/// `cargo bench` builds the package's binaries for its benches with the bench profile,
/// which inherits release (lto = "thin", codegen-units = 4): the same optimized otpd,
/// at the path `cargo build --release` uses (target/release/otpd).
fn otpd_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_otpd"))
}

static BEGUN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, stamped with the time since the bench started.
fn progress(line: &str) {
    let t = BEGUN.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {line}");
}

fn main() {
    let args = Args::parse();
    if let Some(kind) = &args.ceiling_server {
        let socket = args.socket.clone().expect("--socket");
        let db = args.db.clone().expect("--db");
        ceiling_main(kind, &socket, &db);
        return;
    }
    let begun = *BEGUN.get_or_init(Instant::now);
    if args.cargo_build {
        build_otpd();
    }
    let bin = args.otpd_bin.clone().unwrap_or_else(otpd_binary);
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
    let mock = start_mock();
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
        idle_rss_kib: None,
        extra: serde_json::Map::new(),
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
