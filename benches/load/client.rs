//! The caller's side: keep-alive HTTP/1.1 connections over the Unix socket (hyper's
//! `client::conn::http1` over tokio's UnixStream), the requests a backend sends, and the
//! phone numbers they use.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

const SEND_PATH: &str = "/api/v1/messaging/send-otp/";
const VERIFY_PATH: &str = "/api/v1/messaging/verify-otp/";
const PURPOSE: &str = "login";

pub type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(socket: &Path) -> std::io::Result<Conn> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

pub async fn connect_all(socket: &Path, n: usize) -> Vec<Conn> {
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

pub fn get(path: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header(HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A transport failure (the connection is unusable) or an unexpected answer.
pub enum CallError {
    Transport(String),
    Answer(String),
}

pub async fn call(
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

/// The answer if it has `status` and a body containing `contains`.
pub fn expect(
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
pub static COUNTRIES: OnceLock<Vec<String>> = OnceLock::new();

/// How many of those prefixes numbers are drawn from now; 0 or 1: Spanish only.
pub static COUNTRIES_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// A unique valid mobile number: Spanish (+34 6 and eight digits), or of each country
/// in use in turn.
pub fn next_phone() -> String {
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
pub fn country_prefixes(n: usize) -> Vec<String> {
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

pub fn send_request(phone: &str) -> Request<Full<Bytes>> {
    post(
        SEND_PATH,
        format!(
            r#"{{"phone_number":"{phone}","purpose":"{PURPOSE}","user_id":"{}"}}"#,
            user_of(phone)
        ),
    )
}

pub fn verify_request(phone: &str, code: &str) -> Request<Full<Bytes>> {
    post(
        VERIFY_PATH,
        format!(
            r#"{{"phone_number":"{phone}","purpose":"{PURPOSE}","user_id":"{}","otp_code":"{code}"}}"#,
            user_of(phone)
        ),
    )
}

/// A code of the same length that is not `code`.
pub fn wrong(code: &str) -> String {
    code.bytes()
        .map(|c| char::from(b'0' + (c - b'0' + 1) % 10))
        .collect()
}
