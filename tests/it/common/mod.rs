//! The test harness: the real `otpd` binary on a temporary socket and database, a mock
//! Twilio on 127.0.0.1 (or Prism), and a real HTTP client (hyperlocal) over the socket.
//!
//! With `OTPD_TEST_POSTGRES_URL` set (a libpq URL of a throwaway database), every
//! daemon uses `store.backend = "postgres"` in a schema of its own, named after its
//! directory (a restart in the same directory finds its data again); tests about the
//! SQLite file mark their setup [`Setup::sqlite_only`].

pub mod audit;
pub mod install_lock;
pub mod mock_twilio;
pub mod notify;
pub mod outbox;
pub mod prism;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector, Uri};
use serde_json::Value;

pub use mock_twilio::{MockOptions, MockTwilio};

/// The magic From number Twilio's test credentials accept.
pub const TWILIO_FROM: &str = "+15005550006";
pub const PHONE: &str = "+34600111222";

/// The daemon's offset file in development mode (src/clock.rs) and where the tests keep it.
pub const DEV_CLOCK_FILE: &str = "OTPD_DEV_CLOCK_FILE";
const CLOCK_OFFSET_FILE: &str = "clock-offset";

/// A daemon configuration, built up by a test and written to a file in a temp dir.
#[derive(Clone)]
pub struct Setup {
    sections: BTreeMap<String, Vec<String>>,
    raw: Vec<String>,
    env: Vec<(String, String)>,
    sqlite_only: bool,
}

/// The PostgreSQL server the suite runs against, if any (`.ci/run` starts one).
pub fn postgres_url() -> Option<String> {
    std::env::var("OTPD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A schema name per daemon directory: stable across restarts in that directory.
pub fn schema_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("t_{:016x}", h.finish())
}

impl Setup {
    /// Limits generous enough that only tests about limits meet them.
    pub fn new() -> Self {
        Setup {
            sections: BTreeMap::new(),
            raw: Vec::new(),
            env: Vec::new(),
            sqlite_only: false,
        }
        .set("limits", "send_per_phone = \"1000/1m\"")
        .set("limits", "send_per_user = \"1000/1m\"")
        .set("limits", "verify_per_phone = \"1000/1m\"")
        .set("limits", "send_global = \"1000/1s\"")
    }

    /// Points the daemon at `mock` with its account credentials and the magic From.
    pub fn twilio(self, mock: &MockTwilio) -> Self {
        let o = mock.options();
        self.twilio_at(&mock.base_url(), &o.account_sid, &o.auth_token)
    }

    pub fn twilio_at(self, base: &str, account_sid: &str, auth_token: &str) -> Self {
        self.set("twilio", &format!("api_base = \"{base}\""))
            .set("twilio", &format!("account_sid = \"{account_sid}\""))
            .set("twilio", &format!("auth_token = \"{auth_token}\""))
            .set("twilio", &format!("from_number = \"{TWILIO_FROM}\""))
            .set("twilio", "timeout = \"2s\"")
    }

    /// Development mode: messages go to `outbox.jsonl` in the daemon's directory.
    pub fn dev(self) -> Self {
        self.set("dev", "enabled = true")
    }

    /// Adds `line` (e.g. `ttl = "1s"`) to `[section]`; a later line for the same key wins.
    pub fn set(mut self, section: &str, line: &str) -> Self {
        let lines = self.sections.entry(section.to_owned()).or_default();
        let key = line.split('=').next().unwrap_or("").trim().to_owned();
        lines.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
        lines.push(line.to_owned());
        self
    }

    /// Raw TOML appended after the sections (arrays of tables).
    pub fn raw(mut self, text: &str) -> Self {
        self.raw.push(text.to_owned());
        self
    }

    /// Development mode with a clock the test moves ([`Daemon::move_clock`]) instead of
    /// sleeping. The offset file is `clock-offset` in the daemon's directory, its
    /// working directory; only development mode honours it.
    pub fn moved_clock(self) -> Self {
        self.dev().env(DEV_CLOCK_FILE, CLOCK_OFFSET_FILE)
    }

    /// The test is about the SQLite file (it reads or breaks it): SQLite whatever
    /// `OTPD_TEST_POSTGRES_URL` says.
    pub fn sqlite_only(mut self) -> Self {
        self.sqlite_only = true;
        self
    }

    /// Whether the daemon this starts uses PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        !self.sqlite_only && postgres_url().is_some()
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn config_text(&self, dir: &Path) -> String {
        // Paths inside the daemon's temp dir first, so a test's own lines win.
        let mut merged = Setup {
            sections: BTreeMap::new(),
            raw: Vec::new(),
            env: Vec::new(),
            sqlite_only: false,
        }
        .set(
            "server",
            &format!("socket_path = \"{}\"", dir.join("otpd.sock").display()),
        )
        .set(
            "store",
            &format!("path = \"{}\"", dir.join("otpd.db").display()),
        )
        .set(
            "dev",
            &format!("outbox_path = \"{}\"", dir.join("outbox.jsonl").display()),
        );
        if let Some(url) = postgres_url().filter(|_| !self.sqlite_only) {
            merged = merged
                .set("store", "backend = \"postgres\"")
                .set("store.postgres", &format!("url = \"{url}\""))
                .set(
                    "store.postgres",
                    &format!("schema = \"{}\"", schema_for(dir)),
                )
                .set("store.postgres", "instance = \"test\"");
        }
        for (section, lines) in &self.sections {
            for line in lines {
                merged = merged.set(section, line);
            }
        }
        let mut text = String::new();
        for (section, lines) in &merged.sections {
            text.push_str(&format!("[{section}]\n{}\n\n", lines.join("\n")));
        }
        for raw in &self.raw {
            text.push_str(raw);
            text.push('\n');
        }
        text
    }

    /// Writes this configuration to `dir/config.toml` (paths inside `dir`) and returns its path.
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        let config = dir.join("config.toml");
        std::fs::write(&config, self.config_text(dir)).unwrap();
        config
    }

    pub fn start(self) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Daemon::spawn(self, dir)
    }

    /// Starts on `dir` as prepared by the test (a database left by an older otpd, ...).
    pub fn start_in(self, dir: tempfile::TempDir) -> Daemon {
        Daemon::spawn(self, dir)
    }
}

/// A running `otpd serve`; killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub setup: Setup,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The binary under test, built by cargo for integration tests.
pub fn otpd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_otpd")
}

/// A `Command` for the binary with none of the host's Twilio/otpd variables.
pub fn otpd_command() -> Command {
    clean_command(otpd_bin())
}

/// A `Command` for `program` with none of the host's Twilio/otpd/systemd variables.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_PHONE_NUMBER",
        "TEST_PHONE_NUMBER",
        "TWILIO_API_KEY_SID",
        "TWILIO_API_KEY_SECRET",
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "LISTEN_PID",
        "WATCHDOG_USEC",
        "RUST_LOG",
        DEV_CLOCK_FILE,
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `otpd check-config --config PATH`, run to completion.
pub fn check_config(path: &Path) -> std::process::Output {
    otpd_command()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

impl Daemon {
    fn spawn(setup: Setup, dir: tempfile::TempDir) -> Daemon {
        let config = setup.write_config(dir.path());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("otpd.log"))
            .unwrap();
        let mut cmd = match setup.env.iter().any(|(k, _)| k == "WATCHDOG_USEC") {
            // systemd names the pid its watchdog is for; a shell that execs otpd knows it.
            true => {
                let mut sh = clean_command("sh");
                sh.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
                    .arg(otpd_bin());
                sh
            }
            false => otpd_command(),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            // Debug level, so the log checks cover every line otpd can write.
            .env("OTPD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start otpd");
        let mut daemon = Daemon {
            setup,
            dir,
            child: Some(child),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "otpd exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("otpd did not listen within 20 s:\n{}", self.log());
    }

    /// The daemon's config file (what SIGHUP re-reads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("otpd.sock")
    }

    pub fn db_path(&self) -> PathBuf {
        assert!(
            !self.setup.on_postgres(),
            "this test reads the SQLite file: mark its Setup sqlite_only()"
        );
        self.dir.path().join("otpd.db")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otpd.log")).unwrap_or_default()
    }

    pub fn outbox(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Moves the daemon's clock `by` forward (see [`Setup::moved_clock`]); the next
    /// reading of its clock sees it. Written aside and renamed, so a reading never sees
    /// half a number.
    pub fn move_clock(&self, by: Duration) {
        let path = self.dir.path().join(CLOCK_OFFSET_FILE);
        let before: f64 = std::fs::read_to_string(&path)
            .map(|text| text.trim().parse().unwrap())
            .unwrap_or(0.0);
        let aside = self.dir.path().join("clock-offset.new");
        std::fs::write(&aside, format!("{}\n", before + by.as_secs_f64())).unwrap();
        std::fs::rename(&aside, &path).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(15))
    }

    /// SIGKILL: the crash case, with no chance to flush, checkpoint or clean up.
    pub fn kill_9(&mut self) {
        let child = self.child.as_mut().unwrap();
        child.kill().unwrap();
        self.wait_exit(Duration::from_secs(10));
    }

    /// Stops (SIGTERM) and starts again on the same directory, database and key.
    pub fn restart(mut self) -> Daemon {
        let status = self.stop();
        assert!(
            status.success(),
            "otpd exited with {status}:\n{}",
            self.log()
        );
        self.start_again()
    }

    /// Starts a new daemon on this one's directory, after this one has exited.
    pub fn start_again(mut self) -> Daemon {
        assert!(self.child.is_none(), "the daemon is still running");
        let setup = self.setup.clone();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Daemon::spawn(setup, dir)
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(&self.socket(), Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        request(
            &self.socket(),
            Method::POST,
            path,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        request(&self.socket(), Method::POST, path, Some(body)).await
    }

    pub async fn send_otp(&self, body: Value) -> Reply {
        self.post("/api/v1/messaging/send-otp/", &body).await
    }

    pub async fn verify_otp(&self, body: Value) -> Reply {
        self.post("/api/v1/messaging/verify-otp/", &body).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response as the caller sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub json: Value,
    pub raw: Bytes,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.headers.get("retry-after").map(|v| {
            v.to_str()
                .unwrap()
                .parse()
                .expect("Retry-After is whole seconds")
        })
    }

    /// Asserts the documented error shape and returns the stable code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.json);
        assert_eq!(self.code(), code, "{:?}", self.json);
        assert!(
            self.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{:?}",
            self.json
        );
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/json")
        );
    }
}

/// One request over the Unix socket with hyperlocal's client.
pub async fn request(socket: &Path, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
    try_request(socket, method, path, body)
        .await
        .expect("request over the socket")
}

/// Like [`request`], but a daemon that is gone (killed mid-request) is an `Err`, not a
/// panic: the caller saw no answer.
pub async fn try_request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Reply, String> {
    let json = [("content-type", "application/json")];
    let headers: &[(&str, &str)] = if body.is_some() { &json } else { &[] };
    try_request_with(socket, method, path, headers, body).await
}

/// One request with the caller's own headers (e.g. a form body and a signature).
pub async fn request_with(
    socket: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    try_request_with(socket, method, path, headers, body)
        .await
        .expect("request over the socket")
}

async fn try_request_with(
    socket: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply, String> {
    let client: Client<UnixConnector, Full<Bytes>> = Client::unix();
    let mut builder = Request::builder()
        .method(method)
        .uri(hyper::Uri::from(Uri::new(socket, path)));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = client.request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        json,
        raw,
    })
}

/// The first run of 4+ digits in an SMS body: the code.
pub fn code_in(body: &str) -> String {
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
    assert!(run.len() >= 4, "no code in {body:?}");
    run
}

/// The code of the last message the mock accepted for `to`.
pub fn last_code(mock: &MockTwilio, to: &str) -> String {
    let message = mock
        .messages()
        .into_iter()
        .rev()
        .find(|m| m.to == to)
        .unwrap_or_else(|| panic!("the mock received no message for {to}"));
    code_in(&message.body)
}

/// A code of the same length that is not `code`.
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

pub fn send_body(phone: &str, purpose: &str, user: Option<&str>) -> Value {
    let mut body = serde_json::json!({"phone_number": phone, "purpose": purpose});
    if let Some(user) = user {
        body["user_id"] = user.into();
    }
    body
}

pub fn verify_body(phone: &str, code: &str, purpose: &str, user: Option<&str>) -> Value {
    let mut body = send_body(phone, purpose, user);
    body["otp_code"] = code.into();
    body
}
