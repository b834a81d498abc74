//! Prism plumbing's own test: Prism starts on the Twilio spec, accepts a valid
//! CreateMessage, rejects one that breaks the contract, and stops on drop.

use crate::common::prism::{Prism, twilio_spec_path};

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
