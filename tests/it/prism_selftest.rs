//! Prism plumbing's own test: Prism starts on the Twilio spec, accepts a valid
//! CreateMessage, rejects one that breaks the contract, and stops on drop; and the
//! request shapes the mock Twilio serves checked against the same spec.

use crate::common::prism::{Prism, twilio_spec_path};
use crate::common::{MockOptions, MockTwilio};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn messages_url(prism: &Prism) -> String {
    format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        prism.base_url()
    )
}

async fn post(
    prism: &Prism,
    form: &[(&str, &str)],
    auth: bool,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new().post(messages_url(prism)).form(form);
    if auth {
        request = request.basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN));
    }
    let response = request.send().await.expect("request to Prism");
    let status = response.status();
    let text = response.text().await.expect("Prism's answer");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("Prism answered {status} with non-JSON ({e}): {text}"));
    (status, body)
}

#[tokio::test]
async fn prism_checks_create_message_against_the_twilio_spec() {
    let prism = tokio::task::spawn_blocking(|| Prism::start(&twilio_spec_path()))
        .await
        .expect("Prism::start");
    let port = prism.port();

    let (status, body) = post(
        &prism,
        &[
            ("To", "+34600111222"),
            ("From", "+15005550006"),
            ("Body", "Your code: 123456"),
        ],
        true,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED,
        "valid create: {body}\n{}",
        prism.request_log()
    );
    let sid = body["sid"].as_str().expect("sid in the 201 body");
    assert!(
        sid.len() == 34 && sid.starts_with("SM"),
        "sid {sid:?} in {body}"
    );
    assert_eq!(body["status"], "queued", "{body}");

    let (status, body) = post(
        &prism,
        &[
            ("To", "+34600111222"),
            ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ("Body", "Your code: 123456"),
        ],
        true,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED,
        "messaging service: {body}"
    );

    let (status, body) = post(
        &prism,
        &[("From", "+15005550006"), ("Body", "Your code: 123456")],
        true,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "missing To: {body}"
    );
    assert!(
        body.to_string().contains("required property 'To'"),
        "missing To: {body}"
    );
    assert!(
        prism.log_shows(
            "Request body must have required property 'To'",
            std::time::Duration::from_secs(10)
        ),
        "{}",
        prism.request_log()
    );

    let (status, body) = post(
        &prism,
        &[
            ("To", "+34600111222"),
            ("From", "+15005550006"),
            ("Body", "x"),
        ],
        false,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "no auth: {body}");

    tokio::task::spawn_blocking(move || drop(prism))
        .await
        .expect("drop Prism");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "Prism still listens on {port} after drop"
    );
}

/// Prism's verdict on a request: a 2xx, or its 500 for a spec example that breaks the
/// spec's own response schema (ListMessage's relative URIs are not `format: uri`), means
/// the request was valid; a 4xx of its own means it was not.
fn prism_finds_valid(status: u16, body: &serde_json::Value) -> bool {
    let violations = body["validation"].as_array();
    match status {
        200..=299 => true,
        500 => violations.is_some_and(|v| v.iter().all(|v| v["location"][0] == "response")),
        _ => false,
    }
}

/// One request to `base` (Prism or the mock) as the mock's account.
async fn send_as_account(
    base: &str,
    method: reqwest::Method,
    rest: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let url = format!("{base}/2010-04-01/Accounts/{ACCOUNT_SID}{rest}");
    let mut request = reqwest::Client::new()
        .request(method.clone(), url)
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN));
    if method == reqwest::Method::POST {
        request = request.form(form);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("answer");
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// What is sent, how, with which form; whether Twilio's description finds it valid, and
/// whether the mock accepts it.
type Shape<'a> = (
    &'a str,
    reqwest::Method,
    String,
    Vec<(&'a str, &'a str)>,
    bool,
    bool,
);

/// Every request shape the mock serves, as otpd will send it, is valid against Twilio's
/// description, and each shape the description refuses the mock refuses too. Where
/// Twilio is stricter or looser than its description, the row says so.
#[tokio::test]
async fn the_mocks_request_shapes_are_the_twilio_specs() {
    use reqwest::Method;
    let prism = tokio::task::spawn_blocking(|| Prism::start(&twilio_spec_path()))
        .await
        .expect("Prism::start");
    let mock = MockTwilio::start(MockOptions {
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: AUTH_TOKEN.to_owned(),
        ..MockOptions::default()
    });
    let sms = [
        ("To", "+34600111222"),
        ("From", "+15005550006"),
        ("Body", "Code 1"),
    ];
    let voice = [("To", "+34600111222"), ("From", "+15005550006")];
    let twiml = ("Twiml", "<Response><Say>1 2 3</Say></Response>");
    let callback = ("StatusCallback", "https://backend.example.com/cb");
    let url = ("Url", "https://backend.example.com/twiml");
    let list = "/Messages.json?To=%2B34600111222&From=%2B15005550006\
                &DateSent%3E=2019-06-11T22:05:25Z&PageSize=20&Page=0";
    let cases: Vec<Shape> = vec![
        (
            "CreateMessage",
            Method::POST,
            "/Messages.json".into(),
            sms.to_vec(),
            true,
            true,
        ),
        (
            "no To",
            Method::POST,
            "/Messages.json".into(),
            sms[1..].to_vec(),
            false,
            false,
        ),
        ("ListMessage", Method::GET, list.into(), vec![], true, true),
        (
            "at an instant",
            Method::GET,
            "/Messages.json?DateSent=2019-06-11T22:05:25Z".into(),
            vec![],
            true,
            true,
        ),
        (
            "PageSize 1001",
            Method::GET,
            "/Messages.json?PageSize=1001".into(),
            vec![],
            false,
            false,
        ),
        (
            "Page -1",
            Method::GET,
            "/Messages.json?Page=-1".into(),
            vec![],
            false,
            false,
        ),
        (
            "DateSent soon",
            Method::GET,
            "/Messages.json?DateSent=soon".into(),
            vec![],
            false,
            false,
        ),
        // Twilio documents a bare day; its description types DateSent as a date-time.
        (
            "on a day",
            Method::GET,
            "/Messages.json?DateSent=2019-06-11".into(),
            vec![],
            false,
            true,
        ),
        (
            "FetchAccount",
            Method::GET,
            ".json".into(),
            vec![],
            true,
            true,
        ),
        (
            "CreateCall",
            Method::POST,
            "/Calls.json".into(),
            [&voice[..], &[twiml, callback]].concat(),
            true,
            true,
        ),
        (
            "with a Url",
            Method::POST,
            "/Calls.json".into(),
            [&voice[..], &[url]].concat(),
            true,
            true,
        ),
        (
            "no From",
            Method::POST,
            "/Calls.json".into(),
            voice[..1].to_vec(),
            false,
            false,
        ),
        (
            "a bad Url",
            Method::POST,
            "/Calls.json".into(),
            [&voice[..], &[("Url", "notaurl")]].concat(),
            false,
            false,
        ),
        // Twilio needs to know what to play; its description makes all three optional.
        (
            "nothing to play",
            Method::POST,
            "/Calls.json".into(),
            voice.to_vec(),
            true,
            false,
        ),
    ];
    for (what, method, rest, form, spec_valid, mock_accepts) in cases {
        let (status, body) = send_as_account(&prism.base_url(), method.clone(), &rest, &form).await;
        assert_eq!(
            prism_finds_valid(status, &body),
            spec_valid,
            "{what}: Prism answered {status} {body}"
        );
        let (status, body) = send_as_account(&mock.base_url(), method, &rest, &form).await;
        assert_eq!(
            (200..300).contains(&status),
            mock_accepts,
            "{what}: the mock answered {status} {body}"
        );
    }
}
