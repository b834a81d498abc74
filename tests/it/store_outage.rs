//! PostgreSQL going away and coming back while otpd runs: sends and verifies answer 503
//! `store_unavailable` with `Retry-After` within the configured timeouts (never a
//! hang, never a code texted that could not be stored), `/healthz` says so, and the
//! daemon serves again by itself once the database is back. The daemon reaches the
//! server through a TCP relay the test cuts and restores. The systemd watchdog keeps
//! being pinged meanwhile: a shared database being away is no reason for systemd to
//! restart every host's otpd at once. PostgreSQL only: ignored
//! unless run with `OTPD_TEST_POSTGRES_URL` and `--include-ignored`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::common::notify::NotifySocket;
use crate::common::*;

/// A relay from 127.0.0.1 to the test server's Unix socket; `cut` drops every relayed
/// connection and refuses new ones until `restore`.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// The server's socket, from the test URL's `host=DIR` (and `port=`, default 5432).
fn server_socket(url: &str) -> PathBuf {
    let value = |key: &str| {
        url.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let dir = value("host").expect("OTPD_TEST_POSTGRES_URL names host=DIR");
    let port = value("port").unwrap_or_else(|| "5432".into());
    PathBuf::from(dir).join(format!(".s.PGSQL.{port}"))
}

impl Relay {
    async fn start(target: PathBuf) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (d, l) = (down.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused at once
                }
                let target = target.clone();
                l.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut server) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Relay { port, down, links }
    }

    async fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

// Two workers: the relay must keep serving while the harness blocks on the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn postgres_away_answers_503_in_time_and_the_daemon_recovers_by_itself() {
    let url = postgres_url().expect("OTPD_TEST_POSTGRES_URL");
    let relay = Relay::start(server_socket(&url)).await;
    let user = url
        .split_whitespace()
        .filter(|kv| kv.starts_with("user=") || kv.starts_with("dbname="))
        .collect::<Vec<_>>()
        .join(" ");
    let mock = MockTwilio::start(MockOptions::default());
    let notify = NotifySocket::new();
    let otpd = Setup::new()
        .twilio(&mock)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000")
        .set(
            "store.postgres",
            &format!("url = \"host=127.0.0.1 port={} {user}\"", relay.port),
        )
        .set("store.postgres", "connect_timeout = \"1s\"")
        .set("store.postgres", "statement_timeout = \"1s\"")
        .start();
    assert!(otpd.setup.on_postgres());
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    let code = last_code(&mock, PHONE);

    relay.cut().await;
    let sent_before = mock.messages().len();
    let started = Instant::now();
    let send = otpd.send_otp(send_body(PHONE, "login", None)).await;
    send.assert_error(503, "store_unavailable");
    assert!(send.retry_after().is_some(), "{send:?}");
    let verify = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    verify.assert_error(503, "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered within the timeouts, took {:?}",
        started.elapsed()
    );
    assert_eq!(otpd.get("/healthz").await.status, 503);
    // Pings every 200 ms; before, each waited on the database and none came.
    notify.count_within("WATCHDOG=1", Duration::from_millis(50));
    let pings = notify.count_within("WATCHDOG=1", Duration::from_millis(1500));
    assert!(pings >= 3, "{pings} watchdog pings in 1.5 s of outage");
    assert_eq!(
        mock.messages().len(),
        sent_before,
        "nothing texted that was not stored"
    );

    relay.restore();
    // The pool reconnects by itself: the code sent before the outage still verifies.
    let deadline = Instant::now() + Duration::from_secs(10);
    let verified = loop {
        let reply = otpd
            .verify_otp(verify_body(PHONE, &code, "login", None))
            .await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(verified.status, 200, "{verified:?}");
}
