//! A mock of the part of Twilio's 2010-04-01 REST API that otpd uses, on 127.0.0.1, for
//! integration tests. It follows Twilio's own OpenAPI description (the vendored part in
//! `tests/twilio/`) and Twilio's documented behaviour with test credentials.
//!
//! | operation | request | module |
//! |---|---|---|
//! | CreateMessage | `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` | [`messages`] |
//! | ListMessage | `GET /2010-04-01/Accounts/{AccountSid}/Messages.json` | [`list`] |
//! | FetchAccount | `GET /2010-04-01/Accounts/{Sid}.json` | [`routes`] |
//! | CreateCall | `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` | [`calls`] |
//!
//! Every request is first judged the same way ([`routes`]): a path outside `/2010-04-01`
//! → 404 (20404) without authentication; then HTTP Basic auth as `(account_sid,
//! auth_token)` or, when configured, the API key, with the path naming that account →
//! else 401 (20003); then a path the mock does not serve → 404, a method it does not
//! serve → 405 (20004). Errors carry Twilio's JSON (`code`, `message`, `more_info`,
//! `status`).
//!
//! What the mock records is what Twilio would hold: [`MockTwilio::messages`] and
//! [`MockTwilio::calls`] are the resources it created (201), and ListMessage answers
//! from those. A created message is taken as sent at once: the list shows it `sent`,
//! with `date_sent` its creation time.
//!
//! Faults ([`faults`]): [`MockTwilio::script`] queues misbehaviours that the next
//! requests get instead of (or, for a slow body, on top of) the normal answer;
//! [`MockTwilio::script_for`] queues them for one operation only, so a test can fail
//! FetchAccount while messages keep flowing. [`MockTwilio::set_down`] takes Twilio off
//! the network (connections refused) and back, keeping what it recorded ([`listen`]).

mod calls;
mod faults;
mod list;
mod listen;
mod messages;
mod routes;
mod rules;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

pub use calls::{CREATE_CALL_FIELDS, RecordedCall};
pub use faults::Fault;
pub use list::LIST_MESSAGE_PARAMETERS;
pub use messages::{CREATE_MESSAGE_FIELDS, MESSAGE_PROPERTIES, RecordedMessage};
pub use routes::Operation;
pub use rules::{magic, segments};
pub use wire::RecordedRequest;

/// The only API version the mock serves.
pub const API_VERSION: &str = "2010-04-01";
/// Account SID used by [`MockOptions::default`] (fixed test value).
pub const DEFAULT_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Auth token used by [`MockOptions::default`] (fixed test value).
pub const DEFAULT_AUTH_TOKEN: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
/// API key SID set by [`MockOptions::with_api_key`] (fixed test value).
pub const TEST_API_KEY_SID: &str = "SK00112233445566778899aabbccddeeff";
/// API key secret set by [`MockOptions::with_api_key`] (fixed test value).
pub const TEST_API_KEY_SECRET: &str = "mockTwilioApiKeySecret0123456789";
/// Twilio's WhatsApp Sandbox sender, the one WhatsApp sender every account has.
pub const WHATSAPP_SANDBOX: &str = "+14155238886";

/// Configuration of a [`MockTwilio`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockOptions {
    /// The account SID (`AC` + 32 hex); Basic-auth username and the `{AccountSid}` in paths.
    pub account_sid: String,
    /// The auth token (Basic-auth password for `account_sid`).
    pub auth_token: String,
    /// Optional API key SID (`SK…`), accepted as Basic-auth username with `api_key_secret`.
    pub api_key_sid: Option<String>,
    /// Secret of the API key.
    pub api_key_secret: Option<String>,
    /// A Main key may read the Account resource; a Standard key (Twilio's default, and
    /// the only kind its API creates) may not: FetchAccount answers it 401 (20003).
    pub api_key_is_main: bool,
    /// The Account resource's `status`: `active`, `suspended` or `closed`.
    pub account_status: String,
    /// Initial delay before each answer (see [`MockTwilio::set_latency`]).
    pub latency: Duration,
    /// Numbers registered as this account's WhatsApp senders; any other
    /// `From: whatsapp:…` gets 63007.
    pub whatsapp_senders: Vec<String>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            account_sid: DEFAULT_ACCOUNT_SID.to_owned(),
            auth_token: DEFAULT_AUTH_TOKEN.to_owned(),
            api_key_sid: None,
            api_key_secret: None,
            api_key_is_main: false,
            account_status: "active".to_owned(),
            latency: Duration::ZERO,
            whatsapp_senders: vec![WHATSAPP_SANDBOX.to_owned()],
        }
    }
}

impl MockOptions {
    /// These options plus the fixed Standard API key ([`TEST_API_KEY_SID`],
    /// [`TEST_API_KEY_SECRET`]).
    pub fn with_api_key(mut self) -> Self {
        self.api_key_sid = Some(TEST_API_KEY_SID.to_owned());
        self.api_key_secret = Some(TEST_API_KEY_SECRET.to_owned());
        self
    }

    /// These options plus the fixed API key, as a Main key.
    pub fn with_main_api_key(self) -> Self {
        MockOptions {
            api_key_is_main: true,
            ..self.with_api_key()
        }
    }
}

#[derive(Default)]
struct State {
    latency: Duration,
    hang: bool,
    faults: faults::Queues,
    requests: Vec<RecordedRequest>,
    messages: Vec<messages::Stored>,
    calls: Vec<RecordedCall>,
}

struct Shared {
    opts: MockOptions,
    state: Mutex<State>,
    started: jiff::Timestamp,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// 32 lowercase hex digits, the random part of a SID.
fn hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `t` as Twilio writes dates, RFC 2822 in GMT: `Thu, 24 Aug 2023 05:01:45 +0000`.
fn rfc2822(t: jiff::Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// A running mock Twilio server on `127.0.0.1`, served from its own thread and tokio runtime.
/// Dropping it stops the server and closes every connection (including hung ones).
pub struct MockTwilio {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    control: tokio::sync::mpsc::UnboundedSender<listen::Control>,
    down: std::sync::atomic::AtomicBool,
    thread: Option<JoinHandle<()>>,
}

impl MockTwilio {
    /// Binds `127.0.0.1:0` and starts serving on a dedicated thread with its own runtime, so
    /// it works from plain `#[test]`s and from any `#[tokio::test]` flavor.
    pub fn start(opts: MockOptions) -> MockTwilio {
        let std_listener = listen::bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = std_listener.local_addr().expect("mock Twilio: local_addr");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("mock Twilio: build tokio runtime");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).expect("mock Twilio: tokio listener")
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                latency: opts.latency,
                ..State::default()
            }),
            opts,
            started: jiff::Timestamp::now(),
        });
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("mock-twilio-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(listen::serve(
                    listener,
                    server_shared,
                    shutdown_rx,
                    control_rx,
                ));
                // Dropping the runtime here cancels every connection task, hung ones included.
                drop(runtime);
            })
            .expect("mock Twilio: spawn server thread");
        MockTwilio {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            control,
            down: std::sync::atomic::AtomicBool::new(false),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Full URL of `/2010-04-01/Accounts/{AccountSid}{rest}` for the configured account.
    pub fn account_url(&self, rest: &str) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}{rest}",
            self.base_url(),
            self.shared.opts.account_sid
        )
    }

    /// Full URL of the Messages list (CreateMessage, ListMessage).
    pub fn messages_url(&self) -> String {
        self.account_url("/Messages.json")
    }

    /// The options the mock was started with (latency is the initial one).
    pub fn options(&self) -> &MockOptions {
        &self.shared.opts
    }

    /// Every request received so far, in arrival order, including rejected and hung ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// The messages created (201), in order.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        let state = self.shared.state();
        state.messages.iter().map(|m| m.record.clone()).collect()
    }

    /// The calls created (201), in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.state().calls.clone()
    }

    /// Forgets all recorded requests, messages and calls.
    pub fn clear(&self) {
        let mut state = self.shared.state();
        state.requests.clear();
        state.messages.clear();
        state.calls.clear();
    }

    /// Delay before answering each request that arrives from now on. The request is judged and
    /// recorded (and a resource created) when it arrives; only the answer waits.
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// While true, requests that arrive are read and recorded with `status: 0` but never
    /// answered (nothing is created) until the mock is dropped.
    pub fn set_hang(&self, hang: bool) {
        self.shared.state().hang = hang;
    }

    /// Queues faults for the next requests of any operation, one each, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.state().faults.any.extend(faults);
    }

    /// Queues faults for the next requests of `operation` only; they come before any
    /// queued with [`MockTwilio::script`].
    pub fn script_for(&self, operation: Operation, faults: impl IntoIterator<Item = Fault>) {
        let mut state = self.shared.state();
        state.faults.queue(operation).extend(faults);
    }

    /// Down: the port is closed (connections are refused, open ones are shut) until
    /// `set_down(false)` binds it again; what the mock recorded stays. Returns once done.
    pub fn set_down(&self, down: bool) {
        if self.down.swap(down, std::sync::atomic::Ordering::SeqCst) == down {
            return;
        }
        let (done, acked) = std::sync::mpsc::channel();
        let asked = match down {
            true => listen::Control::Down(done),
            false => listen::Control::Up(listen::bind(self.addr), done),
        };
        if self.control.send(asked).is_ok() {
            let _ = acked.recv();
        }
    }

    /// Drops every fault still queued.
    pub fn unscript(&self) {
        self.shared.state().faults = faults::Queues::default();
    }

    /// Faults queued and not yet consumed, for any operation.
    pub fn faults_left(&self) -> usize {
        self.shared.state().faults.len()
    }
}

impl Drop for MockTwilio {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for MockTwilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTwilio")
            .field("addr", &self.addr)
            .field("account_sid", &self.shared.opts.account_sid)
            .finish_non_exhaustive()
    }
}

/// What the mock created in answer to one request.
enum Created {
    Message(messages::Stored),
    Call(RecordedCall),
}

/// What the mock answers to one request.
struct Outcome {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Value,
    created: Option<Created>,
}

impl Outcome {
    fn ok(status: StatusCode, body: Value, created: Option<Created>) -> Outcome {
        Outcome {
            status,
            headers: Vec::new(),
            body,
            created,
        }
    }

    /// A Twilio-style error: `{"code","message","more_info","status"}`.
    fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Outcome {
        let body = json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        });
        Outcome::ok(status, body, None)
    }

    fn bad_request(code: u32, message: impl Into<String>) -> Outcome {
        Outcome::error(StatusCode::BAD_REQUEST, code, message)
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Outcome {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}
