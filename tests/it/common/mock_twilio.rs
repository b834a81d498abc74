//! A mock of Twilio's Programmable Messaging REST API for integration tests.
//!
//! It implements exactly one operation, `CreateMessage`
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), following Twilio's own
//! OpenAPI description (`twilio_api_v2010.json`, schema `api.v2010.account.message`) and
//! Twilio's documented test-credential behaviour (magic numbers and error codes).
//!
//! Order of checks for every request:
//!
//! 1. Paths outside `/2010-04-01` → 404 (code 20404), without authentication.
//! 2. HTTP Basic auth must be `(account_sid, auth_token)` or, when configured,
//!    `(api_key_sid, api_key_secret)`; a path under `/2010-04-01/Accounts/{Sid}` must name the
//!    configured `account_sid` (also with API-key auth) → otherwise 401 (code 20003) with
//!    `WWW-Authenticate: Basic realm="Twilio API"`.
//! 3. Any path other than `.../Accounts/{AccountSid}/Messages.json` → 404 (code 20404).
//! 4. Any method other than `POST` → 405 (code 20004 "Method not allowed", `Allow: POST`).
//! 5. `Content-Type` must be `application/x-www-form-urlencoded` → else 400 (code 21604,
//!    see [`check_create`]).
//! 6. Every form field must be a `CreateMessage` field of the spec (PascalCase, exact case) →
//!    else 400 (code 20001, see [`check_create`]).
//! 7. Required fields: `To` (21604), `From` or `MessagingServiceSid` (21603), `Body` or
//!    `MediaUrl` or `ContentSid` (21602). Empty values count as missing.
//! 8. Magic test numbers (see [`magic`]) and format checks of `From`, `To`,
//!    `MessagingServiceSid`, `To` == `From` (21266) and the 1600-character body limit (21617);
//!    `From` and `To` on different channels (`whatsapp:` on one only) → 21910, and a
//!    `whatsapp:` From that is not one of the account's WhatsApp senders → 63007.
//! 9. 201 with a full `api.v2010.account.message` resource.
//!
//! Unlike Twilio with test credentials, `From` numbers other than the magic ones are accepted
//! (as with live credentials and an owned number), and `MessagingServiceSid` is supported.
//!
//! Faults: [`MockTwilio::script`] queues [`Fault`]s that the next requests get instead of
//! (or, for a slow body, on top of) the normal answer: 500/503/429 with Twilio's error
//! JSON and an optional `Retry-After`, a hang, a connection reset, a slow body. Each
//! request consumes one fault at arrival; with the queue empty the mock behaves normally.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

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

/// The form fields of `CreateMessage` (`CreateMessageRequest`) in the spec, in spec order.
/// Names are PascalCase and matched case-sensitively. `MediaUrl` and `PersistentAction` are
/// arrays (the field may repeat); all others are scalars.
pub const CREATE_MESSAGE_FIELDS: [&str; 25] = [
    "To",
    "StatusCallback",
    "ApplicationSid",
    "MaxPrice",
    "ProvideFeedback",
    "Attempt",
    "ValidityPeriod",
    "ForceDelivery",
    "ContentRetention",
    "AddressRetention",
    "SmartEncoded",
    "PersistentAction",
    "TrafficType",
    "ShortenUrls",
    "ScheduleType",
    "SendAt",
    "SendAsMms",
    "ContentVariables",
    "RiskCheck",
    "From",
    "FallbackFrom",
    "MessagingServiceSid",
    "Body",
    "MediaUrl",
    "ContentSid",
];

/// The properties of the `api.v2010.account.message` schema (snake_case); the mock's 201
/// body has exactly these keys.
pub const MESSAGE_PROPERTIES: [&str; 20] = [
    "account_sid",
    "api_version",
    "body",
    "date_created",
    "date_sent",
    "date_updated",
    "direction",
    "error_code",
    "error_message",
    "from",
    "messaging_service_sid",
    "num_media",
    "num_segments",
    "price",
    "price_unit",
    "sid",
    "status",
    "subresource_uris",
    "to",
    "uri",
];

/// Twilio's magic test numbers, as documented for test credentials.
pub mod magic {
    /// `From` that passes all validation.
    pub const FROM_VALID: &str = "+15005550006";
    /// `From` that is invalid → 21212.
    pub const FROM_INVALID: &str = "+15005550001";
    /// `From` not owned by the account / not SMS-capable → 21606.
    pub const FROM_NOT_OWNED: &str = "+15005550007";
    /// `From` whose SMS queue is full → 21611.
    pub const FROM_QUEUE_FULL: &str = "+15005550008";
    /// `To` that is invalid → 21211.
    pub const TO_INVALID: &str = "+15005550001";
    /// `To` that Twilio cannot route to → 21612.
    pub const TO_UNROUTABLE: &str = "+15005550002";
    /// `To` lacking international permission → 21408.
    pub const TO_NO_INTERNATIONAL: &str = "+15005550003";
    /// `To` that is blocked / unsubscribed → 21610.
    pub const TO_UNSUBSCRIBED: &str = "+15005550004";
    /// `To` that cannot receive SMS → 21614.
    pub const TO_NOT_MOBILE: &str = "+15005550009";
}

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
            latency: Duration::ZERO,
            whatsapp_senders: vec![WHATSAPP_SANDBOX.to_owned()],
        }
    }
}

impl MockOptions {
    /// These options plus the fixed test API key ([`TEST_API_KEY_SID`], [`TEST_API_KEY_SECRET`]).
    pub fn with_api_key(mut self) -> Self {
        self.api_key_sid = Some(TEST_API_KEY_SID.to_owned());
        self.api_key_secret = Some(TEST_API_KEY_SECRET.to_owned());
        self
    }
}

/// One HTTP request the mock received (accepted or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// URI path without the query string.
    pub path: String,
    /// Raw `Authorization` header.
    pub authorization: Option<String>,
    /// Raw `Content-Type` header.
    pub content_type: Option<String>,
    /// Decoded form fields in order (empty unless the body was form-urlencoded).
    pub form: Vec<(String, String)>,
    /// Status answered; `0` when the request arrived while [`MockTwilio::set_hang`] was on.
    pub status: u16,
    /// Raw request body (lossy UTF-8).
    pub body: String,
    /// JSON body answered (empty when hung or reset).
    pub response_body: String,
    /// When the request (headers and body) had arrived.
    pub received_at: Instant,
    /// The scripted fault it got, if any.
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// First value of form field `name` (case-sensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of form field `name` (for the array fields `MediaUrl`, `PersistentAction`).
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Decoded Basic-auth `(username, password)`, if the header is well-formed.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        self.authorization.as_deref().and_then(parse_basic_auth)
    }

    /// The answered JSON, parsed (`None` when hung).
    pub fn response_json(&self) -> Option<Value> {
        serde_json::from_str(&self.response_body).ok()
    }
}

/// A message the mock accepted (answered 201).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMessage {
    /// `SM…` (or `MM…` when media was attached).
    pub sid: String,
    /// `To` as sent.
    pub to: String,
    /// `From` as sent, if any.
    pub from: Option<String>,
    /// `MessagingServiceSid` as sent, if any.
    pub messaging_service_sid: Option<String>,
    /// `Body` as sent (empty when only media/content was given).
    pub body: String,
    /// Status answered: `"queued"`, or `"accepted"` with a `MessagingServiceSid`.
    pub status: String,
}

/// A scripted misbehaviour for one request (see [`MockTwilio::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with Twilio's error JSON (`{"code","message","more_info","status"}`)
    /// and, if given, a `Retry-After` header (seconds or an HTTP-date). No message is created.
    Error {
        status: u16,
        code: u32,
        message: String,
        retry_after: Option<String>,
    },
    /// Read the request, never answer (until the mock is dropped). No message is created.
    Hang,
    /// Read the request, then reset the connection (TCP RST) without an answer. No message
    /// is created.
    Reset,
    /// Answer normally (a 201 creates the message) but send the body's first half, wait
    /// this long, then the rest: Twilio accepted, the client may give up reading.
    SlowBody(Duration),
}

impl Fault {
    /// 500 with Twilio's code 20500.
    pub fn internal_error() -> Fault {
        Fault::error(500, 20500, "Internal Server Error", None)
    }

    /// 503 with Twilio's code 20503.
    pub fn unavailable() -> Fault {
        Fault::error(503, 20503, "Service Unavailable", None)
    }

    /// 429 with Twilio's code 20429 and `Retry-After: seconds`.
    pub fn too_many_requests(retry_after_seconds: u64) -> Fault {
        Fault::error(
            429,
            20429,
            "Too Many Requests",
            Some(retry_after_seconds.to_string()),
        )
    }

    pub fn error(status: u16, code: u32, message: &str, retry_after: Option<String>) -> Fault {
        Fault::Error {
            status,
            code,
            message: message.to_owned(),
            retry_after,
        }
    }
}

#[derive(Default)]
struct State {
    latency: Duration,
    hang: bool,
    faults: std::collections::VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    messages: Vec<RecordedMessage>,
}

struct Shared {
    opts: MockOptions,
    state: Mutex<State>,
    seq: AtomicU64,
    seed: u64,
    hasher: RandomState,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 32 lowercase hex digits, unique per mock: the low half is a bijection of a counter.
    fn unique_hex32(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let high = self.hasher.hash_one(n);
        let low = splitmix64(n.wrapping_add(self.seed));
        format!("{high:016x}{low:016x}")
    }
}

/// The finaliser of SplitMix64: a bijection on `u64`.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A running mock Twilio server on `127.0.0.1`, served from its own thread and tokio runtime.
/// Dropping it stops the server and closes every connection (including hung ones).
pub struct MockTwilio {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockTwilio {
    /// Binds `127.0.0.1:0` and starts serving on a dedicated thread with its own runtime, so
    /// it works from plain `#[test]`s and from any `#[tokio::test]` flavor.
    #[allow(
        clippy::expect_used,
        reason = "a test fixture that cannot bind or spawn must fail the test loudly"
    )]
    pub fn start(opts: MockOptions) -> MockTwilio {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("mock Twilio: bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("mock Twilio: set_nonblocking");
        let addr = std_listener.local_addr().expect("mock Twilio: local_addr");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("mock Twilio: build tokio runtime");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).expect("mock Twilio: tokio listener")
        };
        let hasher = RandomState::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                latency: opts.latency,
                ..State::default()
            }),
            seq: AtomicU64::new(0),
            seed: hasher.hash_one("seed"),
            hasher,
            opts,
        });
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("mock-twilio-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, server_shared, shutdown_rx));
                // Dropping the runtime here cancels every connection task, hung ones included.
                drop(runtime);
            })
            .expect("mock Twilio: spawn server thread");
        MockTwilio {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
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

    /// Full URL of the `CreateMessage` endpoint for the configured account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Messages.json",
            self.base_url(),
            self.shared.opts.account_sid
        )
    }

    /// The options the mock was started with (latency is the initial one).
    pub fn options(&self) -> &MockOptions {
        &self.shared.opts
    }

    /// Every request received so far, in arrival order, including rejected and hung ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// Only the accepted (201) message creations, in order.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        self.shared.state().messages.clone()
    }

    /// Forgets all recorded requests and messages.
    pub fn clear(&self) {
        let mut state = self.shared.state();
        state.requests.clear();
        state.messages.clear();
    }

    /// Delay before answering each request that arrives from now on. The request is judged and
    /// recorded (and a message created) when it arrives; only the answer waits.
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// While true, requests that arrive are read and recorded with `status: 0` but never
    /// answered (no message is created) until the mock is dropped.
    pub fn set_hang(&self, hang: bool) {
        self.shared.state().hang = hang;
    }

    /// Queues faults for the next requests, one each, in order (after any still queued).
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.state().faults.extend(faults);
    }

    /// Faults queued and not yet consumed.
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

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // A second handle on the socket, for Fault::Reset: hyper owns the stream.
                let Ok(handle) = stream_handle(&stream) else { continue };
                let handle = Arc::new(handle);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle_request(Arc::clone(&shared), Arc::clone(&handle), req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// What the mock answers to one request.
struct Outcome {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Value,
    message: Option<RecordedMessage>,
}

impl Outcome {
    /// A Twilio-style error: `{"code","message","more_info","status"}`.
    fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            headers: Vec::new(),
            body: json!({
                "code": code,
                "message": message.into(),
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status.as_u16(),
            }),
            message: None,
        }
    }

    fn bad_request(code: u32, message: impl Into<String>) -> Outcome {
        Outcome::error(StatusCode::BAD_REQUEST, code, message)
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Outcome {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

/// A duplicate of the connection's socket (not registered with tokio).
fn stream_handle(stream: &tokio::net::TcpStream) -> std::io::Result<socket2::Socket> {
    socket2::SockRef::from(stream).try_clone()
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Why the mock answered nothing: hyper then closes the connection.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection reset")
    }
}

impl std::error::Error for Reset {}

async fn handle_request(
    shared: Arc<Shared>,
    socket: Arc<socket2::Socket>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Reset> {
    let fault = shared.state().faults.pop_front();
    let (mut record, is_form, method) = read_request(req).await;
    record.fault.clone_from(&fault);
    match fault {
        Some(Fault::Hang) => {
            shared.state().requests.push(record);
            // Never answer; the task is cancelled when the mock's runtime is dropped.
            match std::future::pending::<Infallible>().await {}
        }
        Some(Fault::Reset) => {
            shared.state().requests.push(record);
            // SO_LINGER 0: closing the last handle sends RST instead of FIN.
            let _ = socket.set_linger(Some(Duration::ZERO));
            Err(Reset)
        }
        Some(Fault::Error {
            status,
            code,
            message,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut outcome = Outcome::error(status, code, message);
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                outcome.headers.push((header::RETRY_AFTER, value));
            }
            Ok(answer(&shared, record, outcome, None).await)
        }
        Some(Fault::SlowBody(pause)) => {
            let outcome = evaluate(&shared, &method, &record, is_form);
            Ok(answer(&shared, record, outcome, Some(pause)).await)
        }
        None => handle(shared, record, is_form, method)
            .await
            .map_err(|e| match e {}),
    }
}

/// Reads and records what arrived (status 0 until answered).
async fn read_request(req: Request<Incoming>) -> (RecordedRequest, bool, Method) {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let header_text = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let authorization = header_text(header::AUTHORIZATION);
    let content_type = header_text(header::CONTENT_TYPE);
    let raw = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let is_form = content_type.as_deref().is_some_and(is_form_content_type);
    let form: Vec<(String, String)> = if is_form {
        form_urlencoded::parse(&raw).into_owned().collect()
    } else {
        Vec::new()
    };
    let record = RecordedRequest {
        method: method.to_string(),
        path,
        authorization,
        content_type,
        form,
        status: 0,
        body: String::from_utf8_lossy(&raw).into_owned(),
        response_body: String::new(),
        received_at: Instant::now(),
        fault: None,
    };
    (record, is_form, method)
}

async fn handle(
    shared: Arc<Shared>,
    record: RecordedRequest,
    is_form: bool,
    method: Method,
) -> Result<Response<Body>, Infallible> {
    let hang = shared.state().hang;
    if hang {
        shared.state().requests.push(record);
        // Never answer; the task is cancelled when the mock's runtime is dropped.
        match std::future::pending::<Infallible>().await {}
    }
    let outcome = evaluate(&shared, &method, &record, is_form);
    Ok(answer(&shared, record, outcome, None).await)
}

/// Records the request with its outcome, then answers after the configured latency; with
/// `slow`, half the body goes at once and the rest after that pause.
async fn answer(
    shared: &Shared,
    mut record: RecordedRequest,
    outcome: Outcome,
    slow: Option<Duration>,
) -> Response<Body> {
    let body = outcome.body.to_string();
    record.status = outcome.status.as_u16();
    record.response_body.clone_from(&body);
    let latency = {
        let mut state = shared.state();
        state.requests.push(record);
        if let Some(message) = outcome.message {
            state.messages.push(message);
        }
        state.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let body = Bytes::from(body);
    let length = body.len();
    let body: Body = match slow {
        None => Full::new(body).boxed_unsync(),
        Some(pause) => {
            let (first, rest) = (body.slice(..length / 2), body.slice(length / 2..));
            let parts = futures_util::stream::unfold(0u8, move |part| {
                let (first, rest) = (first.clone(), rest.clone());
                async move {
                    let data = match part {
                        0 => first,
                        1 => {
                            tokio::time::sleep(pause).await;
                            rest
                        }
                        _ => return None,
                    };
                    Some((Ok::<_, Infallible>(Frame::data(data)), part + 1))
                }
            });
            StreamBody::new(parts).boxed_unsync()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = outcome.status;
    // The full length up front, as Twilio sends it: the client waits for every byte.
    if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, value);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(request_id) = HeaderValue::from_str(&format!("RQ{}", shared.unique_hex32())) {
        headers.insert(HeaderName::from_static("twilio-request-id"), request_id);
    }
    for (name, value) in outcome.headers {
        headers.insert(name, value);
    }
    response
}

fn is_form_content_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn parse_basic_auth(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn credentials_ok(opts: &MockOptions, authorization: Option<&str>) -> bool {
    let Some((user, pass)) = authorization.and_then(parse_basic_auth) else {
        return false;
    };
    if user == opts.account_sid && pass == opts.auth_token {
        return true;
    }
    matches!(
        (&opts.api_key_sid, &opts.api_key_secret),
        (Some(sid), Some(secret)) if &user == sid && &pass == secret
    )
}

fn evaluate(shared: &Shared, method: &Method, req: &RecordedRequest, is_form: bool) -> Outcome {
    let opts = &shared.opts;
    let path = req.path.as_str();
    let not_found = || {
        Outcome::error(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    };

    let Some(api_path) = path.strip_prefix("/2010-04-01") else {
        return not_found();
    };
    // The account named in the path must be the authenticated one (API keys belong to it).
    let path_account_ok = match api_path.strip_prefix("/Accounts/") {
        Some(rest) => {
            let segment = rest.split('/').next().unwrap_or_default();
            segment.strip_suffix(".json").unwrap_or(segment) == opts.account_sid
        }
        None => true,
    };
    if !credentials_ok(opts, req.authorization.as_deref()) || !path_account_ok {
        return Outcome::error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
            .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"Twilio API\"");
    }
    if api_path != format!("/Accounts/{}/Messages.json", opts.account_sid) {
        return not_found();
    }
    if method != Method::POST {
        return Outcome::error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
            .with_header(header::ALLOW, "POST");
    }
    check_create(shared, req, is_form)
}

fn check_create(shared: &Shared, req: &RecordedRequest, is_form: bool) -> Outcome {
    if !is_form {
        // Twilio only reads form-encoded parameters; with any other body it sees no `To`
        // and answers 21604. The mock uses that code and says why in the message.
        return Outcome::bad_request(
            21604,
            format!(
                "A 'To' phone number is required. (mock Twilio: Content-Type must be \
                 application/x-www-form-urlencoded, got {})",
                req.content_type.as_deref().unwrap_or("none")
            ),
        );
    }
    // Twilio merely warns (20001 "Unknown parameters") and ignores unknown fields; the mock
    // rejects them with that code so typos in what the daemon sends fail loudly.
    let mut unknown: Vec<&str> = Vec::new();
    for (name, _) in &req.form {
        if !CREATE_MESSAGE_FIELDS.contains(&name.as_str()) && !unknown.contains(&name.as_str()) {
            unknown.push(name);
        }
    }
    if !unknown.is_empty() {
        return Outcome::bad_request(
            20001,
            format!(
                "Unknown parameters: {} (mock Twilio: CreateMessage fields are case-sensitive: {})",
                unknown.join(", "),
                CREATE_MESSAGE_FIELDS.join(", ")
            ),
        );
    }

    let field = |name: &str| req.field(name).filter(|v| !v.is_empty());
    let media: Vec<&str> = req
        .fields("MediaUrl")
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    let Some(to) = field("To") else {
        return Outcome::bad_request(21604, "A 'To' phone number is required.");
    };
    let from = field("From");
    let service = field("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return Outcome::bad_request(21603, "A 'From' phone number is required.");
    }
    let body = field("Body");
    if body.is_none() && media.is_empty() && field("ContentSid").is_none() {
        return Outcome::bad_request(21602, "Message body is required.");
    }

    if let Some(from) = from {
        match from {
            magic::FROM_INVALID => return invalid_from(from),
            magic::FROM_NOT_OWNED => {
                return Outcome::bad_request(
                    21606,
                    format!(
                        "The 'From' phone number provided ({from}) is not a valid \
                         message-capable Twilio phone number for this destination/account."
                    ),
                );
            }
            magic::FROM_QUEUE_FULL => {
                return Outcome::bad_request(
                    21611,
                    "This 'From' number has exceeded the maximum number of queued messages",
                );
            }
            _ if !is_valid_sender(from) => return invalid_from(from),
            _ => {}
        }
    }
    // Both addresses on one channel (21910), and a WhatsApp From must be one of the
    // account's WhatsApp senders (63007).
    if let Some(from) = from {
        if channel_of(from) != channel_of(to) {
            return Outcome::bad_request(
                21910,
                "Invalid From and To pair. From and To should be of the same channel",
            );
        }
        if let Some(number) = from.strip_prefix("whatsapp:")
            && !shared.opts.whatsapp_senders.iter().any(|s| s == number)
        {
            return Outcome::bad_request(
                63007,
                "Twilio could not find a Channel with the specified From address",
            );
        }
    }
    if let Some(sid) = service.filter(|sid| !is_sid(sid, "MG")) {
        return Outcome::bad_request(
            21701,
            format!("The Messaging Service Sid {sid} is invalid."),
        );
    }
    match to {
        magic::TO_INVALID => return invalid_to(to),
        magic::TO_UNROUTABLE => {
            return Outcome::bad_request(
                21612,
                format!(
                    "The 'To' phone number: {to}, is not currently reachable using the \
                     'From' phone number: {} via SMS.",
                    from.unwrap_or("(messaging service)")
                ),
            );
        }
        magic::TO_NO_INTERNATIONAL => {
            return Outcome::bad_request(
                21408,
                format!(
                    "Permission to send an SMS has not been enabled for the region indicated \
                     by the 'To' number: {to}."
                ),
            );
        }
        magic::TO_UNSUBSCRIBED => {
            return Outcome::bad_request(21610, "Attempt to send to unsubscribed recipient");
        }
        magic::TO_NOT_MOBILE => {
            return Outcome::bad_request(
                21614,
                format!("'To' number {to} is not a valid mobile number"),
            );
        }
        _ if !is_phone_address(to) => return invalid_to(to),
        _ => {}
    }
    if from == Some(to) {
        return Outcome::bad_request(21266, "'To' and 'From' number cannot be the same");
    }
    let body = body.unwrap_or_default();
    if body.chars().count() > 1600 {
        return Outcome::bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }

    created(shared, to, from, service, body, media.len())
}

fn invalid_to(to: &str) -> Outcome {
    Outcome::bad_request(
        21211,
        format!("The 'To' number {to} is not a valid phone number."),
    )
}

fn invalid_from(from: &str) -> Outcome {
    Outcome::bad_request(
        21212,
        format!(
            "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric \
             sender ID."
        ),
    )
}

fn created(
    shared: &Shared,
    to: &str,
    from: Option<&str>,
    service: Option<&str>,
    body: &str,
    num_media: usize,
) -> Outcome {
    let account = &shared.opts.account_sid;
    let prefix = if num_media > 0 { "MM" } else { "SM" };
    let sid = format!("{prefix}{}", shared.unique_hex32());
    // The status enum (message_enum_status) has "accepted" for Messaging Service sends.
    let status = if service.is_some() {
        "accepted"
    } else {
        "queued"
    };
    // Spec: "For messages sent via a Messaging Service, num_segments is initially 0, since a
    // sender hasn't yet been assigned."
    let num_segments = if service.is_some() && from.is_none() {
        0
    } else {
        segments(body)
    };
    let now = rfc2822_now();
    let uri_base = format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}");
    let resource = json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": num_media.to_string(),
        "num_segments": num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{uri_base}/Media.json") },
        "to": to,
        "uri": format!("{uri_base}.json"),
    });
    Outcome {
        status: StatusCode::CREATED,
        headers: Vec::new(),
        body: resource,
        message: Some(RecordedMessage {
            sid,
            to: to.to_owned(),
            from: from.map(str::to_owned),
            messaging_service_sid: service.map(str::to_owned),
            body: body.to_owned(),
            status: status.to_owned(),
        }),
    }
}

/// `+` and 2–15 digits, not starting with 0 (E.164).
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The channel prefix of an address (`whatsapp` in `whatsapp:+1…`); `None` for SMS.
fn channel_of(address: &str) -> Option<&str> {
    address.split_once(':').map(|(channel, _)| channel)
}

/// E.164, optionally behind a channel prefix such as `whatsapp:`.
fn is_phone_address(s: &str) -> bool {
    match s.split_once(':') {
        Some((channel, number)) => {
            !channel.is_empty()
                && channel.bytes().all(|b| b.is_ascii_lowercase())
                && is_e164(number)
        }
        None => is_e164(s),
    }
}

/// A phone address, a short code (5–6 digits) or an alphanumeric sender ID (≤ 11 of
/// letters, digits and spaces, with at least one letter).
fn is_valid_sender(s: &str) -> bool {
    let short_code = (5..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic());
    is_phone_address(s) || short_code || alphanumeric
}

/// `prefix` + 32 hex digits.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// SMS segments for `body`: GSM-7 (160, or 153 per part; extension characters count twice)
/// or else UCS-2 (70, or 67 per part, in UTF-16 units). At least 1.
pub fn segments(body: &str) -> usize {
    let gsm_units: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, part) = match gsm_units {
        Some(units) => (units, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

/// Current time as RFC 2822 in GMT, e.g. `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn rfc2822_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc2822(secs)
}

/// `secs` since the Unix epoch as RFC 2822 in GMT.
pub fn rfc2822(secs: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant), for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = WEEKDAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month_name = MONTHS.get((month - 1) as usize).copied().unwrap_or("Jan");
    format!("{weekday}, {day:02} {month_name} {year} {hour:02}:{minute:02}:{second:02} +0000")
}
