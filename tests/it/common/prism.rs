//! Prism (Stoplight's OpenAPI mock server) as a stand-in Twilio for contract tests.
//!
//! Prism serves Twilio's own OpenAPI description and checks every request against it:
//! a request that breaks the contract gets a `401` (no usable Basic credentials), `415`
//! (not form-encoded), `422` (a missing or malformed field, or a bad `AccountSid` in the
//! path) or `404` (a path the spec does not have), each with an
//! `application/problem+json` body that says why. A valid `CreateMessage` gets `201` with
//! the spec's first example (`"sid": "SMaaaa…"`, `"status": "queued"`), whatever was sent.
//!
//! Prism is pinned in `tests/prism/package-lock.json` and installed with `npm ci` on first
//! use (node >= 18.20.1 and npm must be on `PATH`).
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::install_lock::InstallLock;

/// How long Prism may take to answer after it is started: generous, because node starts
/// slowly on a machine busy with builds.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for another test process's `npm ci` (about 12 s with a cold cache).
const INSTALL_LOCK_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts at a free port: one can be taken between picking it and Prism binding it.
const PORT_ATTEMPTS: u32 = 3;
/// The npm package, as named in `tests/prism/package.json`.
const PRISM_PACKAGE: &str = "@stoplight/prism-cli";

/// Runs the command given as arguments in the background and kills it when this shell's
/// standard input (a pipe from the test process) closes, so that Prism does not outlive a
/// test process that is killed without running `Drop`. Exits with the command's status.
const WATCHDOG: &str = r#"exec 3<&0
"$@" 3<&- &
p=$!
{ read -r _ <&3; kill "$p" 2>/dev/null; } &
w=$!
wait "$p"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// A running `prism mock` on 127.0.0.1; killed, with its child processes, on drop.
pub struct Prism {
    child: Child,
    /// Held open for the watchdog in [`WATCHDOG`]; closing it stops Prism.
    stdin: Option<ChildStdin>,
    port: u16,
    output: Arc<Mutex<String>>,
}

impl Prism {
    /// Installs Prism from `tests/prism/package-lock.json` with `npm ci` if it is missing,
    /// starts `prism mock SPEC --host 127.0.0.1 --port PORT --errors` on a free port and
    /// waits until it answers HTTP.
    ///
    /// Panics (failing the test) with Prism's or npm's output if any of that fails.
    #[allow(
        clippy::panic,
        reason = "a Prism that cannot be started is a test failure, reported with its output"
    )]
    pub fn start(spec: &Path) -> Prism {
        if !spec.is_file() {
            panic!(
                "OpenAPI spec {} not found (set OTPD_TWILIO_SPEC to its path)",
                spec.display()
            );
        }
        let bin = ensure_installed();
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut prism = spawn(&bin, spec, port);
            match prism.wait_ready(READY_TIMEOUT) {
                Ok(()) => return prism,
                Err(failure) => {
                    let output = prism.output();
                    drop(prism);
                    let port_taken = output.contains("EADDRINUSE");
                    if port_taken && attempt < PORT_ATTEMPTS {
                        attempt += 1;
                        continue;
                    }
                    panic!(
                        "Prism ({}) serving {} on 127.0.0.1:{port} {failure}; its output:\n{output}",
                        bin.display(),
                        spec.display()
                    );
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash; Prism serves the spec's paths
    /// at the root (the spec's `servers` entry, `https://api.twilio.com`, plays no part).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port Prism listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything Prism printed so far (stdout and stderr, line by line), including the
    /// list of routes it prints at start-up.
    pub fn output(&self) -> String {
        lock(&self.output).clone()
    }

    /// What Prism printed after it started listening: one block of lines per request, with
    /// its `[VALIDATOR]` verdicts (`✖  error     Request body must have required property 'To'`).
    pub fn request_log(&self) -> String {
        let output = self.output();
        match output.find("Prism is listening on") {
            Some(at) => output[at..]
                .split_once('\n')
                .map_or(String::new(), |(_, rest)| rest.to_owned()),
            None => String::new(),
        }
    }

    /// Waits until `needle` shows in the request log, or `timeout` passes; true if it did.
    /// Prism's output is read by a thread, so a verdict can land after its HTTP answer.
    pub fn log_shows(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.request_log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until Prism answers an HTTP request, it exits, or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Let the reader threads collect the last lines.
                    thread::sleep(Duration::from_millis(200));
                    return Err(format!("exited ({}) before answering", describe(status)));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("could not be waited for: {e}")),
            }
            if probe(self.port) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!("did not answer within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        // Collect the whole tree before killing anything: orphans lose their parent link.
        let mut pids = descendants(self.child.id());
        pids.retain(|&pid| pid != self.child.id());
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pids.iter().map(u32::to_string))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin.take();
        // SIGKILL takes effect asynchronously, and node's listening socket closes only when
        // its last thread is gone (some 30 ms after its main thread): wait for both.
        let deadline = Instant::now() + Duration::from_secs(5);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while Instant::now() < deadline
            && (pids.iter().any(|&pid| is_running(pid))
                || TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok())
        {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` is alive and not a zombie (one that has exited has closed its sockets).
fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Path of the Twilio spec: `$OTPD_TWILIO_SPEC` if set, else the part of Twilio's
/// description vendored in `tests/twilio/` (its README says where it came from).
pub fn twilio_spec_path() -> PathBuf {
    match std::env::var_os("OTPD_TWILIO_SPEC") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/twilio/twilio_api_v2010.subset.json")
        }
    }
}

/// `tests/prism` in this crate: package.json, package-lock.json and node_modules.
fn prism_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prism")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    }
}

/// Starts Prism behind [`WATCHDOG`], its output collected by two threads.
#[allow(
    clippy::panic,
    reason = "a Prism that cannot be started is a test failure"
)]
fn spawn(bin: &Path, spec: &Path, port: u16) -> Prism {
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("prism-watchdog")
        .arg(bin)
        .arg("mock")
        .arg(spec)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--errors",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start {}: {e}", bin.display()),
    };
    let output = Arc::new(Mutex::new(String::new()));
    if let Some(stdout) = child.stdout.take() {
        collect(stdout, Arc::clone(&output));
    }
    if let Some(stderr) = child.stderr.take() {
        collect(stderr, Arc::clone(&output));
    }
    let stdin = child.stdin.take();
    Prism {
        child,
        stdin,
        port,
        output,
    }
}

/// Appends what `pipe` gives, line by line, to `into`, until it closes.
fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => lock(&into).push_str(&String::from_utf8_lossy(&line)),
            }
        }
    });
}

/// A port that was free a moment ago.
#[allow(clippy::panic, reason = "no free port on loopback is a test failure")]
fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no free port on 127.0.0.1: {e}"),
    }
}

/// Whether Prism answers on `port`: any answer of its own (the probe path is not in the
/// spec, so it answers 404 with a Prism problem document) means its routes are loaded.
fn probe(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request =
        "GET /__otpd_prism_probe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.") && answer.contains("stoplight.io/prism")
}

/// Pids of `root` and all its descendants, from /proc (empty elsewhere).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = vec![root];
    let mut queue = VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if !found.contains(&child) {
                found.push(child);
                queue.push_back(child);
            }
        }
    }
    found
}

/// Serialises installs between the threads of one test process.
static INSTALL: Mutex<()> = Mutex::new(());

/// Returns `tests/prism/node_modules/.bin/prism`, first running `npm ci` in `tests/prism`
/// if it is missing or not the version pinned in package.json. A lock file in
/// `tests/prism` keeps concurrent test processes from installing over each other.
#[allow(
    clippy::panic,
    reason = "a Prism that cannot be installed is a test failure, reported with npm's output"
)]
fn ensure_installed() -> PathBuf {
    let dir = prism_dir();
    let bin = dir.join("node_modules/.bin/prism");
    let _threads = lock(&INSTALL);
    let _processes = InstallLock::acquire_within(INSTALL_LOCK_TIMEOUT, &dir.join(".install.lock"));
    let pinned = pinned_version(&dir);
    if bin.is_file() && installed_version(&dir).as_deref() == Some(pinned.as_str()) {
        return bin;
    }
    let result = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output();
    let output = match result {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "npm not found on PATH: the Prism contract tests need node >= 18.20.1 and npm \
             to install {PRISM_PACKAGE} {pinned} into {}",
            dir.display()
        ),
        Err(e) => panic!("cannot run npm ci in {}: {e}", dir.display()),
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        panic!(
            "`npm ci` in {} failed ({}):\n{printed}",
            dir.display(),
            describe(output.status)
        );
    }
    if !bin.is_file() || installed_version(&dir).as_deref() != Some(pinned.as_str()) {
        panic!(
            "`npm ci` in {} succeeded but did not install {PRISM_PACKAGE} {pinned} with {}:\n{printed}",
            dir.display(),
            bin.display()
        );
    }
    bin
}

/// The version of Prism that tests/prism/package.json pins.
#[allow(
    clippy::panic,
    reason = "a broken tests/prism/package.json is a test failure"
)]
fn pinned_version(dir: &Path) -> String {
    let path = dir.join("package.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    match json["dependencies"][PRISM_PACKAGE].as_str() {
        Some(version) => version.to_owned(),
        None => panic!("{} has no dependency on {PRISM_PACKAGE}", path.display()),
    }
}

/// The version of Prism in tests/prism/node_modules, if any.
fn installed_version(dir: &Path) -> Option<String> {
    let path = dir
        .join("node_modules")
        .join(PRISM_PACKAGE)
        .join("package.json");
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    json["version"].as_str().map(str::to_owned)
}
