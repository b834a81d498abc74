//! `/status/` and `otpd status` tell whether Twilio accepts the credentials, from a free
//! read (FetchAccount, or ListMessage for an API key) that is cached; and check-config
//! warns when no provider is configured.

use crate::common::mock_twilio::{
    DEFAULT_AUTH_TOKEN, Operation, RecordedRequest, TEST_API_KEY_SECRET, TEST_API_KEY_SID,
};
use crate::common::*;

const STATUS: &str = "/api/v1/messaging/status/";

async fn credentials(otpd: &Daemon) -> serde_json::Value {
    let reply = otpd.get(STATUS).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["provider_credentials"].clone()
}

fn asked(mock: &MockTwilio, operation: Operation) -> Vec<RecordedRequest> {
    mock.requests_of(operation)
}

#[tokio::test]
async fn accepted_credentials_are_asked_once_for_two_status_calls() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();
    assert_eq!(credentials(&otpd).await, "accepted");
    assert_eq!(credentials(&otpd).await, "accepted");
    let fetched = asked(&mock, Operation::FetchAccount);
    assert_eq!(fetched.len(), 1, "cached: {:?}", mock.requests());
    assert_eq!(
        fetched[0].basic_auth(),
        Some((
            mock.options().account_sid.clone(),
            DEFAULT_AUTH_TOKEN.to_owned()
        ))
    );
    assert!(mock.messages().is_empty(), "the check sent a message");

    let human = otpd_command()
        .args(["status", "--socket"])
        .arg(otpd.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("provider_credentials") && l.ends_with("accepted")),
        "{text}"
    );
    assert_eq!(asked(&mock, Operation::FetchAccount).len(), 1);
    // FetchAccount's answer carries the auth token: never logged.
    assert!(!otpd.log().contains(DEFAULT_AUTH_TOKEN), "{}", otpd.log());
    assert!(otpd.log().contains("Twilio accepts the credentials"));
}

#[tokio::test]
async fn a_wrong_token_is_rejected_and_that_answer_is_cached_too() {
    let mock = MockTwilio::start(MockOptions::default());
    let account = mock.options().account_sid.clone();
    let otpd = Setup::new()
        .twilio_at(&mock.base_url(), &account, &"f".repeat(32))
        .start();
    assert_eq!(credentials(&otpd).await, "rejected");
    assert_eq!(credentials(&otpd).await, "rejected");
    assert_eq!(asked(&mock, Operation::FetchAccount).len(), 1);
    assert!(
        otpd.log().contains("Twilio REJECTS the credentials"),
        "{}",
        otpd.log()
    );
    assert!(
        !otpd.log().contains(&"f".repeat(32)),
        "the token reached the log"
    );
}

#[tokio::test]
async fn an_unreachable_twilio_is_unknown_not_rejected() {
    let gone = MockTwilio::start(MockOptions::default());
    let (base, account) = (gone.base_url(), gone.options().account_sid.clone());
    drop(gone);
    let otpd = Setup::new()
        .twilio_at(&base, &account, DEFAULT_AUTH_TOKEN)
        .start();
    assert_eq!(credentials(&otpd).await, "unknown");
    assert!(
        otpd.log()
            .contains("cannot check the credentials with Twilio"),
        "{}",
        otpd.log()
    );
}

/// Twilio refuses Standard API keys the Account resource (the mock too): a key is
/// checked with an empty ListMessage page instead, so a working key is not "rejected".
#[tokio::test]
async fn an_api_key_is_checked_with_a_message_list_not_the_account() {
    let mock = MockTwilio::start(MockOptions::default().with_api_key());
    let with_key = |secret: &str| {
        Setup::new()
            .twilio(&mock)
            .set("twilio", &format!("api_key_sid = \"{TEST_API_KEY_SID}\""))
            .set("twilio", &format!("api_key_secret = \"{secret}\""))
            .start()
    };
    let otpd = with_key(TEST_API_KEY_SECRET);
    assert_eq!(credentials(&otpd).await, "accepted");
    assert!(asked(&mock, Operation::FetchAccount).is_empty());
    let listed = asked(&mock, Operation::ListMessage);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, 200);
    assert_eq!(listed[0].basic_auth().unwrap().0, TEST_API_KEY_SID);
    assert_eq!(
        listed[0].response_json().unwrap()["messages"],
        serde_json::json!([]),
        "the check brought messages back"
    );

    let wrong = with_key(&"0".repeat(32));
    assert_eq!(credentials(&wrong).await, "rejected");
}

#[tokio::test]
async fn without_credentials_there_is_nothing_to_check() {
    let dev = Setup::new().dev().start();
    assert_eq!(credentials(&dev).await, serde_json::Value::Null);
    let none = Setup::new().start();
    assert_eq!(credentials(&none).await, serde_json::Value::Null);
}

#[test]
fn check_config_warns_loudly_when_no_provider_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let output = check_config(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a warning, not a failure: {stderr}"
    );
    assert!(
        stderr.contains("WARNING: no SMS provider is configured"),
        "{stderr}"
    );
    assert!(!output.stdout.is_empty());

    std::fs::write(&config, "[dev]\nenabled = true\n").unwrap();
    let dev = check_config(&config);
    assert!(
        dev.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
}
