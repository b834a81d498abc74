//! The machine's ceilings for this shape of work, measured in the same run as otpd so
//! that its figures can be read as ratios: minimal hyper servers on a Unix socket in a
//! child process (this executable re-run with `--ceiling-server KIND`), answering a small
//! JSON body, alone (`plain`) or after one SQLite WAL write transaction per request on a
//! writer thread (`sqlite-thread`, otpd's design) or through `spawn_blocking`
//! (`sqlite-blocking`). `sqlite-batch` (queued requests share one transaction) is shown
//! for reference and never used as a ceiling.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::otpd::Perf;
use crate::report::{RunStats, summarize};
use crate::scenarios::Bench;
use crate::{now_ms, progress};

const ANSWER: &[u8] =
    br#"{"message":"OTP sent successfully","otp_id":1,"expires_at":"2025-01-01T00:00:00Z"}"#;

type Job = (u64, oneshot::Sender<bool>);

fn open_db(path: &Path) -> rusqlite::Connection {
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

/// Rows `ns` in one write transaction: one row is what "one SQLite WAL write per
/// request" means here, several are a group commit.
fn write(conn: &mut rusqlite::Connection, ns: &[u64]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for &n in ns {
        tx.prepare_cached(
            "INSERT INTO t (phone, purpose, code_hash, created_at) VALUES (?1, 'login', ?2, ?3)",
        )?
        .execute(rusqlite::params![
            format!("+346{n:08}"),
            [n as u8; 32].as_slice(),
            now_ms()
        ])?;
    }
    tx.commit()
}

enum Writer {
    Plain,
    /// One dedicated writer thread fed by a channel (otpd's design).
    Thread(mpsc::Sender<Job>),
    /// `spawn_blocking` per request, the connection behind a mutex.
    Blocking(Arc<Mutex<rusqlite::Connection>>),
}

/// A writer thread committing up to `batch` queued requests per transaction.
fn writer_thread(db: &Path, batch: usize) -> Writer {
    let mut conn = open_db(db);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let ns: Vec<u64> = jobs.iter().map(|(n, _)| *n).collect();
            let ok = write(&mut conn, &ns).is_ok();
            for (_, reply) in jobs {
                let _ = reply.send(ok);
            }
        }
    });
    Writer::Thread(tx)
}

async fn answer(writer: &Writer, n: u64, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let _ = req.into_body().collect().await;
    let ok = match writer {
        Writer::Plain => true,
        Writer::Thread(tx) => {
            let (reply, answer) = oneshot::channel();
            tx.send((n, reply)).is_ok() && answer.await.unwrap_or(false)
        }
        Writer::Blocking(conn) => {
            let conn = conn.clone();
            tokio::task::spawn_blocking(move || write(&mut conn.lock().unwrap(), &[n]).is_ok())
                .await
                .unwrap_or(false)
        }
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(ANSWER)))
        .unwrap()
}

/// The child process: serves ceiling `kind` on `socket` until killed.
pub fn serve(kind: &str, socket: &Path, db: &Path) {
    let writer = Arc::new(match kind {
        "plain" => Writer::Plain,
        "sqlite-thread" => writer_thread(db, 1),
        "sqlite-blocking" => Writer::Blocking(Arc::new(Mutex::new(open_db(db)))),
        "sqlite-batch" => writer_thread(db, 512),
        other => panic!("unknown ceiling {other}"),
    });
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
                    async move { Ok::<_, Infallible>(answer(&writer, n, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A running ceiling server, killed on drop.
struct Ceiling {
    child: Child,
    socket: PathBuf,
}

fn start(kind: &str, dir: &Path) -> Ceiling {
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

fn describe(kind: &str) -> &'static str {
    match kind {
        "plain" => "hyper, small JSON answer",
        "sqlite-thread" => "+1 WAL write tx, writer thread",
        "sqlite-batch" => "writer thread, queued requests share one tx (reference only)",
        _ => "+1 WAL write tx, spawn_blocking+Mutex",
    }
}

impl Bench {
    /// Every ceiling at every connection count; the best SQLite-write figure at each
    /// count is what otpd's rows are divided by.
    pub fn ceilings(&mut self) {
        let dir = self.tempdir("otpd-bench-ceiling-");
        // --quick skips spawn_blocking, which loses clearly to the writer thread here.
        let kinds = self.args.ceilings.clone().unwrap_or_else(|| {
            let all = ["plain", "sqlite-thread", "sqlite-blocking"];
            let n = if self.s.quick { 2 } else { 3 };
            all[..n].iter().map(|k| k.to_string()).collect()
        });
        for kind in &kinds {
            let kind = kind.as_str();
            let server = start(kind, &dir);
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
                row.add_note(describe(kind));
                self.rows.push(row);
            }
        }
    }
}
