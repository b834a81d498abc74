//! MMS: `media_urls` on send-sms through the real binary. The URLs reach Twilio as
//! `MediaUrl` fields in order, are stored with the message (they survive a crash before
//! the send), show in `GET /messages/{id}`, land in the development outbox, and take part
//! in the idempotency key's request; bad ones are refused before anything is queued.

use serde_json::{Value, json};

use crate::common::outbox::{message, send_sms, wait_for_status};
use crate::common::{MockOptions, MockTwilio, Setup};

const TO: &str = "+34600111222";
const CAT: &str = "https://cdn.example.com/cat.png";
const DOG: &str = "https://cdn.example.com/dogs/dog one.jpg";
const DOG_SENT: &str = "https://cdn.example.com/dogs/dog%20one.jpg";

#[tokio::test]
async fn media_urls_reach_twilio_in_order_and_are_shown_with_the_message() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = Setup::new().twilio(&mock).start();

    let reply = send_sms(
        &daemon,
        json!({"to": TO, "body": "Your receipt", "media_urls": [CAT, DOG]}),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let m = wait_for_status(&daemon, id, "sent").await;

    let requests = mock.requests();
    let sent: Vec<_> = requests
        .iter()
        .filter(|r| r.field("Body") == Some("Your receipt"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].fields("MediaUrl"), [CAT, DOG_SENT]);
    // Twilio names a message with media MM…; otpd keeps the SID it was given.
    assert!(m["sid"].as_str().unwrap().starts_with("MM"), "{m}");
    assert_eq!(m["media_urls"], json!([CAT, DOG_SENT]));

    let text = send_sms(&daemon, json!({"to": TO, "body": "plain"})).await;
    let text_id = text.json["message_id"].as_i64().unwrap();
    let m = wait_for_status(&daemon, text_id, "sent").await;
    assert!(m.get("media_urls").is_none(), "a text shows no media: {m}");
    let plain = mock
        .requests()
        .into_iter()
        .find(|r| r.field("Body") == Some("plain"))
        .unwrap();
    assert!(plain.fields("MediaUrl").is_empty());
}

#[tokio::test]
async fn media_urls_a_provider_cannot_fetch_are_refused_and_nothing_is_queued() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = Setup::new().twilio(&mock).start();

    let eleven: Vec<&str> = vec![CAT; 11];
    for (media, details) in [
        (
            json!(["http://cdn.example.com/a.png"]),
            "media_urls[0]: not https",
        ),
        (
            json!([CAT, "cat.png"]),
            "media_urls[1]: not an absolute URL",
        ),
        (
            json!(["https://user:secret@cdn.example.com/a.png"]),
            "media_urls[0]: carries a user name or password",
        ),
        (json!(eleven), "11 media_urls: at most 10 per message"),
    ] {
        let reply = send_sms(&daemon, json!({"to": TO, "body": "x", "media_urls": media})).await;
        reply.assert_error(400, "invalid_media_url");
        assert_eq!(reply.json["details"], details);
    }
    for wrong_type in [json!("https://cdn.example.com/a.png"), json!([1])] {
        let reply = send_sms(
            &daemon,
            json!({"to": TO, "body": "x", "media_urls": wrong_type}),
        )
        .await;
        reply.assert_error(400, "invalid_request");
    }
    let listed = daemon.get("/api/v1/messaging/messages/").await;
    assert_eq!(listed.json["messages"], json!([]), "{:?}", listed.json);
    // The credentials in the refused URL were not written anywhere.
    let log = daemon.log();
    assert!(!log.contains("user:secret"), "{log}");
}

#[tokio::test]
async fn the_media_is_stored_with_the_message_and_sent_after_a_crash() {
    let mock = MockTwilio::start(MockOptions::default());
    mock.set_down(true);
    let mut daemon = Setup::new()
        .twilio(&mock)
        .set("messaging", "retry_delay = \"200ms\"")
        .start();
    let reply = send_sms(
        &daemon,
        json!({"to": TO, "body": "after the crash", "media_urls": [CAT]}),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    daemon.kill_9();
    mock.set_down(false);
    let daemon = daemon.start_again();

    let m = wait_for_status(&daemon, id, "sent").await;
    assert_eq!(m["media_urls"], json!([CAT]));
    let sent: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.field("Body") == Some("after the crash"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].fields("MediaUrl"), [CAT]);
}

#[tokio::test]
async fn the_development_outbox_records_the_media() {
    let daemon = Setup::new().dev().start();
    let reply = send_sms(
        &daemon,
        json!({"to": TO, "body": "dev mms", "media_urls": [CAT]}),
    )
    .await;
    let id = reply.json["message_id"].as_i64().unwrap();
    wait_for_status(&daemon, id, "sent").await;
    let lines: Vec<Value> = daemon.outbox();
    let line = lines.iter().find(|l| l["body"] == "dev mms").unwrap();
    assert_eq!(line["media_urls"], json!([CAT]));
    let text = send_sms(&daemon, json!({"to": TO, "body": "dev text"})).await;
    wait_for_status(&daemon, text.json["message_id"].as_i64().unwrap(), "sent").await;
    let lines = daemon.outbox();
    let line = lines.iter().find(|l| l["body"] == "dev text").unwrap();
    assert!(line.get("media_urls").is_none(), "{line}");
}

#[tokio::test]
async fn an_idempotency_key_reused_with_other_media_is_a_conflict() {
    let mock = MockTwilio::start(MockOptions::default());
    let daemon = Setup::new().twilio(&mock).start();
    let first = json!({"to": TO, "body": "b", "media_urls": [CAT], "idempotency_key": "k1"});
    let reply = send_sms(&daemon, first.clone()).await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let again = send_sms(&daemon, first).await;
    assert_eq!(again.json["replayed"], true, "{:?}", again.json);
    let other = send_sms(
        &daemon,
        json!({"to": TO, "body": "b", "media_urls": [DOG], "idempotency_key": "k1"}),
    )
    .await;
    other.assert_error(409, "idempotency_key_reused");
    let none = send_sms(
        &daemon,
        json!({"to": TO, "body": "b", "idempotency_key": "k1"}),
    )
    .await;
    none.assert_error(409, "idempotency_key_reused");
    let id = reply.json["message_id"].as_i64().unwrap();
    assert_eq!(message(&daemon, id).await["media_urls"], json!([CAT]));
}

/// Twilio's description is the contract for the wire form: `MediaUrl` is an array of
/// URIs in a form body with no `encoding` entry, so OpenAPI's default for it (style
/// `form`, explode) is one repeated field per URL, which is what otpd sends above.
#[test]
fn twilios_description_makes_media_url_a_repeated_field_of_uris() {
    let path = crate::common::prism::twilio_spec_path();
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let create = &spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"];
    let form = &create["requestBody"]["content"]["application/x-www-form-urlencoded"];
    let media = &form["schema"]["properties"]["MediaUrl"];
    assert_eq!(media["type"], "array", "{media}");
    assert_eq!(media["items"]["type"], "string");
    assert_eq!(media["items"]["format"], "uri");
    assert!(form["encoding"]["MediaUrl"].is_null(), "{form}");
}
