//! Self-tests of the mock Twilio (`common/mock_twilio/`): the behaviour the daemon's
//! tests rely on and that Prism does not check (auth, Twilio's error codes, magic
//! numbers, what is recorded and listed, faults), and its field lists against Twilio's
//! description. Whether each request shape is valid against that description is
//! `prism_selftest.rs`'s job.

mod create_message;
mod other_operations;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

use crate::common::mock_twilio::{
    CREATE_CALL_FIELDS, CREATE_MESSAGE_FIELDS, Fault, LIST_MESSAGE_PARAMETERS, MESSAGE_PROPERTIES,
    MockOptions, MockTwilio, magic,
};
use crate::common::prism::twilio_spec_path;

const TO: &str = "+15558675310";
const BODY: &str = "Your verification code is 123456";
const SMS: [(&str, &str); 3] = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One request with Basic credentials `auth` and, if given, a form body.
async fn call(
    method: Method,
    url: &str,
    auth: Option<(&str, &str)>,
    form: Option<&[(&str, &str)]>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client().request(method, url);
    if let Some((user, pass)) = auth {
        request = request.basic_auth(user, Some(pass));
    }
    if let Some(form) = form {
        request = request.form(form);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let json = resp.json::<Value>().await.unwrap();
    (status, headers, json)
}

/// The account's own credentials.
fn owner(mock: &MockTwilio) -> (String, String) {
    let o = mock.options();
    (o.account_sid.clone(), o.auth_token.clone())
}

/// POST a form with the account's own credentials to `url`.
async fn post_as_owner(mock: &MockTwilio, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let (user, pass) = owner(mock);
    let (status, _, json) = call(Method::POST, url, Some((&user, &pass)), Some(form)).await;
    (status, json)
}

/// CreateMessage with the account's own credentials.
async fn send(mock: &MockTwilio, form: &[(&str, &str)]) -> (u16, Value) {
    post_as_owner(mock, &mock.messages_url(), form).await
}

/// GET `url` with the account's own credentials.
async fn get_as_owner(mock: &MockTwilio, url: &str) -> (u16, Value) {
    let (user, pass) = owner(mock);
    let (status, _, json) = call(Method::GET, url, Some((&user, &pass)), None).await;
    (status, json)
}

fn assert_error(status: u16, json: &Value, want_status: u16, want_code: u64) {
    assert_eq!(status, want_status, "{json}");
    assert_eq!(json["code"], want_code, "{json}");
    assert_eq!(json["status"], want_status, "{json}");
    assert_eq!(
        json["more_info"],
        format!("https://www.twilio.com/docs/errors/{want_code}")
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Twilio's date format, `Thu, 24 Aug 2023 05:01:45 +0000`, read back by a parser.
fn is_rfc2822(s: &str) -> bool {
    s.ends_with(" +0000")
        && jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(s)
            .is_ok()
}

/// The keys of a spec object (`properties` of a schema, or a parameter list's names).
fn keys(value: &Value) -> BTreeSet<&str> {
    match value {
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        Value::Array(items) => items.iter().filter_map(|p| p["name"].as_str()).collect(),
        _ => panic!("not an object or a list: {value}"),
    }
}

/// Keeps the mock honest against Twilio's OpenAPI description (the vendored part, or
/// `$OTPD_TWILIO_SPEC`): the fields and parameters it accepts are the spec's.
#[test]
fn field_lists_match_the_twilio_openapi_spec() {
    let path = twilio_spec_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec: Value = serde_json::from_str(&text).unwrap();
    let paths = &spec["paths"];
    let form = |op: &Value| {
        op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
            .clone()
    };
    let set = |list: &[&'static str]| list.iter().copied().collect::<BTreeSet<_>>();

    let create = &paths["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"];
    assert_eq!(create["operationId"], "CreateMessage");
    assert_eq!(keys(&form(create)), set(&CREATE_MESSAGE_FIELDS));
    let list = &paths["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["get"];
    assert_eq!(list["operationId"], "ListMessage");
    let mut params = keys(&list["parameters"]);
    params.remove("AccountSid");
    assert_eq!(params, set(&LIST_MESSAGE_PARAMETERS));
    let calls = &paths["/2010-04-01/Accounts/{AccountSid}/Calls.json"]["post"];
    assert_eq!(calls["operationId"], "CreateCall");
    assert_eq!(keys(&form(calls)), set(&CREATE_CALL_FIELDS));
    let fetch = &paths["/2010-04-01/Accounts/{Sid}.json"]["get"];
    assert_eq!(fetch["operationId"], "FetchAccount");

    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        keys(&schemas["api.v2010.account.message"]["properties"]),
        set(&MESSAGE_PROPERTIES)
    );
    let enum_of = |name: &str| -> Vec<String> {
        let values = schemas[name]["enum"].as_array().unwrap();
        values
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    for (schema, value) in [
        ("message_enum_status", "queued"),
        ("message_enum_status", "accepted"),
        ("message_enum_status", "sent"),
        ("message_enum_direction", "outbound-api"),
        ("call_enum_status", "queued"),
        ("account_enum_status", "active"),
    ] {
        assert!(
            enum_of(schema).iter().any(|v| v == value),
            "{schema}: {value}"
        );
    }
}

#[tokio::test]
async fn set_latency_delays_answers() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_latency(Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(send(&mock, &SMS).await.0, 201);
    assert!(started.elapsed() >= Duration::from_millis(400));

    mock.set_latency(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(send(&mock, &SMS).await.0, 201);
    assert!(started.elapsed() < Duration::from_millis(400));

    // A client that gives up earlier times out; the message was still created.
    mock.set_latency(Duration::from_millis(800));
    let (user, pass) = owner(&mock);
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&user, Some(&pass))
        .form(&SMS)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(mock.messages().len(), 3);

    // Latency from the options applies from the start.
    let slow = MockTwilio::start(MockOptions {
        latency: Duration::from_millis(300),
        ..MockOptions::default()
    });
    let started = Instant::now();
    assert_eq!(send(&slow, &SMS).await.0, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn set_hang_never_answers_and_drop_closes_hung_connections() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    mock.set_hang(true);
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&user, Some(&pass))
        .form(&SMS)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let requests = mock.requests();
    assert_eq!((requests.len(), requests[0].status), (1, 0));
    assert_eq!(requests[0].field("To"), Some(TO));
    assert!(mock.messages().is_empty());

    mock.set_hang(false);
    assert_eq!(send(&mock, &SMS).await.0, 201);

    mock.set_hang(true);
    let url = mock.messages_url();
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .basic_auth(&user, Some(&pass))
            .form(&SMS)
            .send()
            .await
    });
    while mock.requests().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    drop(mock);
    assert!(started.elapsed() < Duration::from_secs(2));
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        result.is_err(),
        "hung request must fail once the mock is dropped"
    );
}

/// A plain `#[test]` with no runtime: raw HTTP/1.1 over a std TCP stream.
#[test]
fn works_from_sync_test_and_drop_stops_server() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(!mock.base_url().ends_with('/'));
    let body = format!(
        "To={}&From={}&Body=hi",
        TO.replace('+', "%2B"),
        magic::FROM_VALID.replace('+', "%2B")
    );
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let request = format!(
        "POST /2010-04-01/Accounts/{user}/Messages.json HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        mock.addr(),
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(mock.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(mock.messages()[0].to, TO);
    assert_eq!(mock.messages()[0].body, "hi");

    let addr = mock.addr();
    drop(mock);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn scripted_faults_answer_the_next_requests_in_order_then_normal_service_resumes() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    mock.script([
        Fault::internal_error(),
        Fault::unavailable(),
        Fault::too_many_requests(7),
        Fault::error(
            503,
            20503,
            "Service Unavailable",
            Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        ),
    ]);
    for (want_status, want_code, want_retry_after) in [
        (500, 20500, None),
        (503, 20503, None),
        (429, 20429, Some("7")),
        (503, 20503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
    ] {
        let (status, headers, json) = call(
            Method::POST,
            &mock.messages_url(),
            Some((&user, &pass)),
            Some(&SMS),
        )
        .await;
        assert_error(status, &json, want_status, want_code);
        assert_eq!(
            headers.get("retry-after").map(|v| v.to_str().unwrap()),
            want_retry_after
        );
    }
    assert_eq!(mock.faults_left(), 0);
    assert!(mock.messages().is_empty(), "a fault creates no message");
    assert_eq!(send(&mock, &SMS).await.0, 201);
    let requests = mock.requests();
    assert_eq!(requests.len(), 5);
    assert!(requests[..4].iter().all(|r| r.fault.is_some()));
    assert!(requests[4].fault.is_none());
    assert!(
        requests
            .windows(2)
            .all(|w| w[0].received_at <= w[1].received_at)
    );
}

/// What `request` ends in: the innermost error's text.
async fn root_error(request: reqwest::RequestBuilder) -> String {
    let err = request.send().await.unwrap_err();
    let mut root: &dyn std::error::Error = &err;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

#[tokio::test]
async fn a_scripted_reset_closes_the_connection_without_an_answer() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    mock.script([Fault::Reset]);
    let request = client()
        .post(mock.messages_url())
        .basic_auth(&user, Some(&pass))
        .form(&SMS);
    let root = root_error(request).await;
    assert!(root.contains("reset"), "{root}");
    let requests = mock.requests();
    assert_eq!((requests.len(), requests[0].status), (1, 0));
    assert!(mock.messages().is_empty());
}

#[tokio::test]
async fn a_scripted_slow_body_creates_the_message_and_delivers_the_rest_late() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    mock.script([Fault::SlowBody(Duration::from_millis(300))]);
    let response = client()
        .post(mock.messages_url())
        .basic_auth(&user, Some(&pass))
        .form(&SMS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The headers came at once and the message exists; the body is still on its way.
    assert_eq!(mock.messages().len(), 1);
    let started = Instant::now();
    let json: Value = response.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(json["sid"], mock.messages()[0].sid.as_str());
}

#[tokio::test]
async fn a_scripted_hang_holds_one_request_and_the_next_is_served() {
    let mock = MockTwilio::start(MockOptions::default());
    let (user, pass) = owner(&mock);
    mock.script([Fault::Hang]);
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&user, Some(&pass))
        .form(&SMS)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(send(&mock, &SMS).await.0, 201);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[0].status, requests[0].fault.clone()),
        (0, Some(Fault::Hang))
    );
    assert_eq!(
        mock.messages().len(),
        1,
        "a hung request creates no message"
    );
}
