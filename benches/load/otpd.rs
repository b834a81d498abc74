//! The processes the bench runs: otpd itself (its config, start-up timed to READY=1 on a
//! NOTIFY_SOCKET the bench owns, its memory read from /proc while it runs, a clean
//! SIGTERM stop), and `perf record` beside a measured run.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mock::{ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER};
use crate::progress;

/// A process's resident memory from /proc/PID/status, in KiB: the total (VmRSS) and its
/// peak (VmHWM), the anonymous part (RssAnon: heap and stacks, the process's own memory)
/// and the file-backed part (RssFile: mapped code and data, shared and reclaimable).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
}

impl Mem {
    pub fn of(pid: u32) -> Option<Mem> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        Some(Mem {
            rss: kib("VmRSS")?,
            hwm: kib("VmHWM")?,
            anon: kib("RssAnon")?,
            file: kib("RssFile")?,
        })
    }
}

/// The most RssAnon and RssFile seen so far. The kernel keeps a high-water mark of the
/// total only (VmHWM), so a thread samples the two parts while otpd runs.
#[derive(Default)]
struct Peaks {
    anon: AtomicU64,
    file: AtomicU64,
    stop: AtomicBool,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn sample(pid: u32, peaks: Arc<Peaks>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !peaks.stop.load(Ordering::Relaxed) {
            let Some(mem) = Mem::of(pid) else { return };
            peaks.anon.fetch_max(mem.anon, Ordering::Relaxed);
            peaks.file.fetch_max(mem.file, Ordering::Relaxed);
            std::thread::sleep(SAMPLE_EVERY);
        }
    })
}

/// A running otpd.
pub struct Otpd {
    child: Child,
    dir: PathBuf,
    /// Spawn to READY=1.
    pub ready: Duration,
    peaks: Arc<Peaks>,
    sampler: Option<JoinHandle<()>>,
}

/// Peak memory of one otpd process so far, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeakMem {
    /// VmHWM: the peak of the total.
    pub rss: Option<u64>,
    pub anon: Option<u64>,
    pub file: Option<u64>,
}

impl Otpd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("otpd.sock")
    }

    pub fn mem(&self) -> Option<Mem> {
        Mem::of(self.pid())
    }

    /// Cumulative since the start: none of these can be reset.
    pub fn peaks(&self) -> PeakMem {
        let now = self.mem();
        let max = |seen: &AtomicU64, now: Option<u64>| {
            Some(seen.load(Ordering::Relaxed).max(now.unwrap_or(0))).filter(|k| *k > 0)
        };
        PeakMem {
            rss: now.map(|m| m.hwm),
            anon: max(&self.peaks.anon, now.map(|m| m.anon)),
            file: max(&self.peaks.file, now.map(|m| m.file)),
        }
    }

    /// SIGTERM and a clean exit (it drains, checkpoints and removes its socket).
    pub fn stop(mut self) {
        self.peaks.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
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

/// otpd's config in `dir`: generous limits, so the load measures the daemon's work
/// rather than its refusals, and Twilio at the mock.
pub fn write_config(dir: &Path, mock_port: u16, log_level: &str) {
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
pub fn start(bin: &Path, dir: &Path) -> Otpd {
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
    let peaks = Arc::new(Peaks::default());
    let sampler = Some(sample(child.id(), peaks.clone()));
    Otpd {
        child,
        dir: dir.to_owned(),
        ready,
        peaks,
        sampler,
    }
}

/// `perf record` attached to one process for one measured run, stopped on drop.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn start(dir: Option<&PathBuf>, pid: u32, name: &str) -> Perf {
        let Some(dir) = dir else { return Perf(None) };
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join(format!("{name}.data"));
        // OTPD_BENCH_PERF_CMD replaces the whole command ({pid} and {out} are filled in),
        // e.g. "strace -f -T -e trace=fsync -o {out} -p {pid}".
        let fill = |w: &str| {
            w.replace("{pid}", &pid.to_string())
                .replace("{out}", &out.display().to_string())
        };
        let words: Vec<String> = match std::env::var("OTPD_BENCH_PERF_CMD") {
            Ok(cmd) => cmd.split_whitespace().map(fill).collect(),
            Err(_) => {
                let extra =
                    std::env::var("OTPD_BENCH_PERF_ARGS").unwrap_or_else(|_| "-F 999 -g".into());
                let extra: Vec<&str> = extra.split_whitespace().collect();
                [
                    &["perf", "record"][..],
                    &extra,
                    &["-p", "{pid}", "-o", "{out}"],
                ]
                .concat()
                .into_iter()
                .map(fill)
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
