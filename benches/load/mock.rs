//! The mock Twilio: an in-process hyper server on 127.0.0.1 that accepts every message,
//! answers after a latency the bench sets per measurement, and keeps each number's last
//! code so verifies can use it. Lean on purpose: unlike the tests' mock it records no
//! request history, which would grow with every send of a run.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
pub const FROM_NUMBER: &str = "+15005550006";

pub struct MockState {
    pub latency_ms: AtomicU64,
    /// To -> the code of the last message to it, until taken.
    pub codes: Mutex<HashMap<String, String>>,
    messages: AtomicU64,
}

impl MockState {
    pub fn take_code(&self, to: &str) -> Option<String> {
        self.codes.lock().unwrap().remove(to)
    }
}

pub struct Mock {
    pub state: Arc<MockState>,
    pub port: u16,
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

fn json_response(status: StatusCode, value: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

async fn answer(
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

pub fn start() -> Mock {
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
                let service = service_fn(move |req| answer(s.clone(), req));
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
