//! Channels through the real binary and the mock Twilio: WhatsApp addressing for OTPs and
//! plain messages, the configured fallback order when Twilio refuses a channel, outages
//! that must not switch channels, and the errors for a channel otpd cannot use.

use crate::common::mock_twilio::{Fault, WHATSAPP_SANDBOX, magic};
use crate::common::outbox::wait_for_status;
use crate::common::{
    Daemon, MockOptions, MockTwilio, Setup, check_config, last_code, send_body, verify_body,
};
use serde_json::json;

const PHONE: &str = "+34600111222";
const WA_PHONE: &str = "whatsapp:+34600111222";

fn whatsapp(mock: &MockTwilio, sender: &str) -> Setup {
    Setup::new()
        .twilio(mock)
        .set("twilio", &format!("whatsapp_from = \"{sender}\""))
}

async fn audit_events(daemon: &Daemon) -> Vec<String> {
    let reply = daemon.get("/api/v1/messaging/audit/?since=1h").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_whatsapp_code_goes_to_whatsapp_addresses_and_verifies() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp(&mock, WHATSAPP_SANDBOX).start();

    let mut body = send_body(PHONE, "login", None);
    body["channel"] = json!("whatsapp");
    let reply = otpd.send_otp(body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["channel"], "whatsapp");

    let sent = mock.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, WA_PHONE);
    assert_eq!(
        sent[0].from.as_deref(),
        Some(format!("whatsapp:{WHATSAPP_SANDBOX}").as_str())
    );
    let code = last_code(&mock, WA_PHONE);
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    let messages = otpd.get("/api/v1/messaging/messages/?since=1h").await;
    assert_eq!(messages.json["messages"][0]["channel"], "whatsapp");

    // SMS stays the default when the request names no channel.
    let reply = otpd.send_otp(send_body(PHONE, "registration", None)).await;
    assert_eq!(reply.json["channel"], "sms");
    assert_eq!(mock.messages().last().unwrap().to, PHONE);
}

#[tokio::test]
async fn a_refused_channel_falls_back_to_the_next_in_the_configured_order() {
    let mock = MockTwilio::start(MockOptions::default());
    // Not one of the account's WhatsApp senders: Twilio refuses it with 63007.
    let otpd = whatsapp(&mock, magic::FROM_VALID)
        .set("messaging", "channels = [\"whatsapp\", \"sms\"]")
        .start();

    let reply = otpd.send_otp(send_body(PHONE, "login", Some("42"))).await;
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.json, otpd.log());
    assert_eq!(reply.json["channel"], "sms");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "one refused WhatsApp request, one SMS");
    assert_eq!(requests[0].field("To"), Some(WA_PHONE));
    assert_eq!(requests[0].status, 400);
    assert_eq!(requests[1].field("To"), Some(PHONE));
    assert_eq!(requests[1].status, 201);

    // The refusal is on record, and the code (carried by SMS) verifies.
    assert!(
        audit_events(&otpd)
            .await
            .contains(&"channel_fallback".to_owned())
    );
    let messages = otpd.get("/api/v1/messaging/messages/?since=1h").await;
    let rows = messages.json["messages"].as_array().unwrap();
    let channels: Vec<(&str, &str)> = rows
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(channels.contains(&("whatsapp", "failed")), "{channels:?}");
    assert!(channels.contains(&("sms", "queued")), "{channels:?}");
    let code = last_code(&mock, PHONE);
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", Some("42")))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    // The outbox follows the same order: the message ends up sent by SMS, and its
    // history says why.
    let reply = otpd
        .post(
            "/api/v1/messaging/send-sms/",
            &json!({"to": PHONE, "body": "Your table is ready"}),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let message = wait_for_status(&otpd, id, "sent").await;
    assert_eq!(message["channel"], "sms");
    let history = message["history"].to_string();
    assert!(history.contains("63007"), "{history}");
    assert!(history.contains("trying sms"), "{history}");
    let tries: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r.field("Body") == Some("Your table is ready"))
        .map(|r| format!("{} {}", r.field("To").unwrap(), r.status))
        .collect();
    assert_eq!(tries, [format!("{WA_PHONE} 400"), format!("{PHONE} 201")]);

    // A channel named in the request is the only one tried.
    let mut body = send_body("+34600111333", "login", None);
    body["channel"] = json!("whatsapp");
    let before = mock.requests().len();
    let reply = otpd.send_otp(body).await;
    reply.assert_error(502, "twilio_rejected");
    assert_eq!(reply.json["twilio_code"], 63007);
    assert_eq!(mock.requests().len(), before + 1);
}

#[tokio::test]
async fn an_outage_does_not_switch_channels() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp(&mock, WHATSAPP_SANDBOX)
        .set("messaging", "channels = [\"whatsapp\", \"sms\"]")
        .set("twilio", "send_deadline = \"1s\"")
        .set("twilio", "retry_backoff = \"10ms\"")
        .set("twilio", "breaker_failures = 100")
        .start();
    mock.script((0..200).map(|_| Fault::unavailable()));

    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    reply.assert_error(503, "twilio_unavailable");
    let requests = mock.requests();
    assert!(requests.len() >= 2, "retried: {}", requests.len());
    assert!(
        requests.iter().all(|r| r.field("To") == Some(WA_PHONE)),
        "an outage must not fall back to SMS"
    );
}

#[tokio::test]
async fn channels_otpd_cannot_use_are_refused_clearly() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new().twilio(&mock).start();

    let mut body = send_body(PHONE, "login", None);
    body["channel"] = json!("whatsapp");
    let reply = otpd.send_otp(body).await;
    reply.assert_error(503, "channel_not_configured");
    let reply = otpd
        .post(
            "/api/v1/messaging/send-sms/",
            &json!({"to": PHONE, "body": "hi", "channel": "whatsapp"}),
        )
        .await;
    reply.assert_error(503, "channel_not_configured");

    let mut body = send_body(PHONE, "login", None);
    body["channel"] = json!("fax");
    otpd.send_otp(body)
        .await
        .assert_error(400, "invalid_channel");
    assert!(mock.requests().is_empty(), "nothing reached Twilio");

    // Configuration errors, each naming its key: a fallback order naming WhatsApp
    // without a sender, a channel listed twice, a WhatsApp sender that is no number.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let credentials = format!(
        "[twilio]\naccount_sid = \"{}\"\nauth_token = \"{}\"\nfrom_number = \"{}\"\n",
        mock.options().account_sid,
        mock.options().auth_token,
        magic::FROM_VALID
    );
    for (config, says) in [
        (
            format!("{credentials}[messaging]\nchannels = [\"whatsapp\", \"sms\"]\n"),
            "messaging.channels",
        ),
        (
            "[messaging]\nchannels = [\"sms\", \"sms\"]\n".to_owned(),
            "listed twice",
        ),
        (
            format!("{credentials}whatsapp_from = \"not a number\"\n"),
            "twilio.whatsapp_from",
        ),
    ] {
        std::fs::write(&path, config).unwrap();
        let out = check_config(&path);
        assert!(!out.status.success(), "{says}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[tokio::test]
async fn a_messaging_service_sends_whatsapp_without_a_whatsapp_number() {
    let mock = MockTwilio::start(MockOptions::default());
    let service = "MG0123456789abcdef0123456789abcdef";
    let otpd = Setup::new()
        .twilio(&mock)
        .set("twilio", &format!("messaging_service_sid = \"{service}\""))
        .set("messaging", "channels = [\"whatsapp\"]")
        .start();
    let reply = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["channel"], "whatsapp");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].field("To"), Some(WA_PHONE));
    assert_eq!(requests[0].field("MessagingServiceSid"), Some(service));
    assert_eq!(requests[0].field("From"), None);
}

#[tokio::test]
async fn whatsapp_messages_from_the_outbox_use_whatsapp_addresses() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = whatsapp(&mock, WHATSAPP_SANDBOX).start();
    let reply = otpd
        .post(
            "/api/v1/messaging/send-sms/",
            &json!({"to": PHONE, "body": "See you at 8", "channel": "whatsapp"}),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["message_id"].as_i64().unwrap();
    let message = wait_for_status(&otpd, id, "sent").await;
    assert_eq!(message["channel"], "whatsapp");
    let sent = mock.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, WA_PHONE);
    assert_eq!(message["sid"], sent[0].sid.as_str());
}
