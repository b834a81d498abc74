//! The command-line client: `otpd send-otp`, `status`, `messages`, ... talk to a running
//! daemon over its socket, exactly as the backend does, and print a human table or the
//! daemon's JSON. Knows the API's paths and JSON, nothing of the daemon's insides.

pub mod args;
mod reach;
mod report;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};
use serde_json::{Value, json};

/// Exit codes scripts can rely on (docs/api.md, "Command-line client", and the man page).
pub mod exit {
    pub const OK: u8 = 0;
    /// The daemon refused the request (4xx other than 429): wrong code, bad input, ...
    pub const REFUSED: u8 = 1;
    /// A rate or attempt limit (429).
    pub const LIMITED: u8 = 3;
    /// The daemon or its SMS provider is unavailable (5xx other than a refusal): worth
    /// retrying later.
    pub const UNAVAILABLE: u8 = 4;
    /// The SMS provider answered and refused the message (502 `twilio_rejected`): the
    /// same request will be refused again, so it is not "unavailable".
    pub const PROVIDER_REJECTED: u8 = 5;
    /// Nothing answers on the socket: no socket, or nobody listening (EX_UNAVAILABLE).
    pub const NO_DAEMON: u8 = 69;
    /// The socket is there but the caller may not open it (EX_NOPERM).
    pub const NO_PERMISSION: u8 = 77;
}

/// One client command, already parsed by clap in main.
pub enum Call {
    SendOtp {
        phone: String,
        purpose: String,
        user: Option<String>,
    },
    VerifyOtp {
        phone: String,
        code: String,
        purpose: String,
        user: Option<String>,
    },
    TestTwilio,
    Status,
    Messages {
        since: String,
        limit: u32,
    },
    Audit {
        phone: Option<String>,
        since: String,
        limit: u32,
    },
    Report {
        since: String,
    },
    Purge,
}

impl Call {
    fn request(&self) -> (Method, String, Option<Value>) {
        let query = |pairs: &[(&str, Option<&str>)]| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            q.finish()
        };
        match self {
            Call::SendOtp {
                phone,
                purpose,
                user,
            } => (
                Method::POST,
                "/api/v1/messaging/send-otp/".into(),
                Some(json!({"phone_number": phone, "purpose": purpose, "user_id": user})),
            ),
            Call::VerifyOtp {
                phone,
                code,
                purpose,
                user,
            } => (
                Method::POST,
                "/api/v1/messaging/verify-otp/".into(),
                Some(
                    json!({"phone_number": phone, "otp_code": code, "purpose": purpose, "user_id": user}),
                ),
            ),
            Call::TestTwilio => (Method::GET, "/api/v1/messaging/test-twilio/".into(), None),
            Call::Status => (Method::GET, "/api/v1/messaging/status/".into(), None),
            Call::Report { since } => (
                Method::GET,
                format!(
                    "/api/v1/messaging/report/?{}",
                    query(&[("since", Some(since))])
                ),
                None,
            ),
            Call::Messages { since, limit } => (
                Method::GET,
                format!(
                    "/api/v1/messaging/messages/?{}",
                    query(&[("since", Some(since)), ("limit", Some(&limit.to_string()))])
                ),
                None,
            ),
            Call::Audit {
                phone,
                since,
                limit,
            } => (
                Method::GET,
                format!(
                    "/api/v1/messaging/audit/?{}",
                    query(&[
                        ("phone", phone.as_deref()),
                        ("since", Some(since)),
                        ("limit", Some(&limit.to_string()))
                    ])
                ),
                None,
            ),
            Call::Purge => (Method::POST, "/api/v1/messaging/purge/".into(), None),
        }
    }
}

/// Runs `call` against the daemon on `socket`, prints the answer, returns the exit code.
pub fn run(socket: &Path, call: &Call, as_json: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("otpd: cannot start the async runtime: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let (method, path, body) = call.request();
    let answer = runtime.block_on(request(socket.to_owned(), method, path, body));
    let (status, value) = match answer {
        Ok(answer) => answer,
        Err(Failed::Connect(e)) => {
            let why = reach::explain(socket, reach::io_cause(&*e), &e.to_string());
            eprintln!("otpd: {}", why.message);
            return why.code;
        }
        Err(Failed::Exchange(e)) => {
            eprintln!(
                "otpd: no answer from the daemon on {}: {e}",
                socket.display()
            );
            return exit::NO_DAEMON;
        }
    };
    let code = match (status, value.get("code").and_then(|c| c.as_str())) {
        (200..=299, _) => exit::OK,
        (429, _) => exit::LIMITED,
        (502, Some("twilio_rejected")) => exit::PROVIDER_REJECTED,
        (500..=599, _) => exit::UNAVAILABLE,
        _ => exit::REFUSED,
    };
    if as_json {
        println!("{value}");
    } else if code == exit::OK {
        print_human(call, &value);
    } else {
        let field = |key| value.get(key).and_then(Value::as_str);
        let details = field("details")
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        eprintln!(
            "otpd: {} ({}){details}",
            field("error").unwrap_or("error"),
            field("code").unwrap_or("unknown")
        );
    }
    code
}

/// Why a request got no answer: the connection itself (told apart in reach.rs), or the
/// exchange after it.
enum Failed {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Exchange(String),
}

async fn request(
    socket: PathBuf,
    method: Method,
    path: String,
    body: Option<Value>,
) -> Result<(u16, Value), Failed> {
    let client: Client<UnixConnector, Full<Bytes>> = Client::unix();
    let uri: hyper::Uri = hyperlocal::Uri::new(socket, &path).into();
    let mut builder = Request::builder().method(method).uri(uri);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failed::Exchange(e.to_string()))?;
    let response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            Failed::Connect(Box::new(e))
        } else {
            Failed::Exchange(e.to_string())
        }
    })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failed::Exchange(e.to_string()))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes)}));
    Ok((status, value))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligned columns, headers first.
pub(super) fn table(headers: &[&str], keys: &[&str], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            keys.iter()
                .map(|k| text(row.get(*k).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |cell| cell.chars().count()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<String>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

fn print_human(call: &Call, v: &Value) {
    match call {
        Call::SendOtp { .. } => println!(
            "sent: otp {} expires {}",
            text(&v["otp_id"]),
            text(&v["expires_at"])
        ),
        Call::VerifyOtp { .. } => println!("verified: otp {}", text(&v["otp_id"])),
        Call::Purge => {
            let d = &v["deleted"];
            println!(
                "deleted {} codes, {} messages, {} audit events",
                text(&d["codes"]),
                text(&d["messages"]),
                text(&d["audit"])
            );
        }
        Call::TestTwilio => println!("{}", text(&v["message"])),
        Call::Status => {
            let Some(fields) = v.as_object() else { return };
            for (key, value) in fields {
                match value {
                    Value::Object(counts) => {
                        let parts: Vec<String> =
                            counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                        println!(
                            "{key:<22}{}",
                            if parts.is_empty() {
                                "-".to_owned()
                            } else {
                                parts.join(" ")
                            }
                        );
                    }
                    Value::Array(items) => {
                        println!(
                            "{key:<22}{}",
                            items.iter().map(text).collect::<Vec<_>>().join(", ")
                        )
                    }
                    other => println!("{key:<22}{}", text(other)),
                }
            }
        }
        Call::Messages { .. } => {
            let rows = v["messages"].as_array().cloned().unwrap_or_default();
            println!(
                "{}",
                table(
                    &[
                        "ID", "OTP", "CREATED", "TO", "PROVIDER", "SID", "STATUS", "ERROR",
                        "REQUESTS"
                    ],
                    &[
                        "id",
                        "otp_id",
                        "created_at",
                        "to",
                        "provider",
                        "sid",
                        "status",
                        "error_code",
                        "attempts"
                    ],
                    &rows
                )
            );
        }
        Call::Report { .. } => report::print(v),
        Call::Audit { .. } => {
            let rows = v["events"].as_array().cloned().unwrap_or_default();
            println!(
                "{}",
                table(
                    &["AT", "OTP", "EVENT", "PHONE", "PURPOSE", "USER", "DETAIL"],
                    &[
                        "at", "otp_id", "event", "phone", "purpose", "user_id", "detail"
                    ],
                    &rows
                )
            );
        }
    }
}
