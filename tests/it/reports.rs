//! The business report (issue 21): `GET /api/v1/messaging/report/` and `otpd report`
//! count what the daemon really did: codes sent and verified by country, purpose,
//! channel and provider, failures by Twilio's error code, the guard's blocks, the median
//! time to verify, and the cost of the SMS segments at the configured prices.

use crate::common::mock_twilio::magic;
use crate::common::outbox::{send_sms, wait_for_status};
use crate::common::{
    Daemon, MockOptions, MockTwilio, Setup, last_code, otpd_command, send_body, verify_body,
};
use serde_json::{Value, json};

const ES: [&str; 3] = ["+34600111301", "+34600111302", "+34600111303"];
const GB: &str = "+447400123456";
const PT: &str = "+351912345678";

async fn sent(otpd: &Daemon, phone: &str, purpose: &str) -> Value {
    let reply = otpd.send_otp(send_body(phone, purpose, None)).await;
    assert_eq!(reply.status, 200, "{phone}: {:?}", reply.json);
    reply.json
}

async fn verified(otpd: &Daemon, mock: &MockTwilio, phone: &str, purpose: &str) {
    let code = last_code(mock, phone);
    let reply = otpd
        .verify_otp(verify_body(phone, &code, purpose, None))
        .await;
    assert_eq!(reply.status, 200, "{phone}: {:?}", reply.json);
}

#[tokio::test]
async fn the_report_counts_what_was_sent_verified_refused_and_billed() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("guard", "deny_countries = [\"PT\"]")
        .set("messaging", "retry_delay = \"200ms\"")
        .raw("[reports]\ncurrency = \"EUR\"\nprices = { \"+34\" = 0.05, \"+44\" = 0.04 }")
        .start();
    for phone in ES {
        sent(&otpd, phone, "login").await;
    }
    verified(&otpd, &mock, ES[0], "login").await;
    verified(&otpd, &mock, ES[1], "login").await;
    sent(&otpd, GB, "registration").await;
    verified(&otpd, &mock, GB, "registration").await;
    // Refused by Twilio (21211) and by the guard: neither is a sent code.
    otpd.send_otp(send_body(magic::TO_INVALID, "login", None))
        .await
        .assert_error(502, "twilio_rejected");
    otpd.send_otp(send_body(PT, "login", None))
        .await
        .assert_error(422, "country_not_allowed");
    // A plain message of two segments is billed too.
    let reply = send_sms(&otpd, json!({"to": ES[2], "body": "x".repeat(200)})).await;
    let id = reply.json["message_id"].as_i64().unwrap();
    wait_for_status(&otpd, id, "sent").await;

    let reply = otpd.get("/api/v1/messaging/report/?since=1h").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let r = &reply.json;
    assert_eq!(
        r["codes"],
        json!({"sent": 4, "verified": 3, "conversion": 0.75}),
        "{r}"
    );
    assert_eq!(r["by_country"]["ES"]["sent"], 3, "{r}");
    assert_eq!(r["by_country"]["ES"]["verified"], 2, "{r}");
    assert_eq!(r["by_country"]["GB"]["conversion"], 1.0, "{r}");
    assert!(
        r["by_country"].get("PT").is_none(),
        "a blocked send is not sent: {r}"
    );
    assert_eq!(r["by_purpose"]["login"]["sent"], 3, "{r}");
    assert_eq!(r["by_channel"]["sms"]["sent"], 4, "{r}");
    assert_eq!(r["by_provider"]["twilio"]["verified"], 3, "{r}");
    assert!(
        r["median_seconds_to_verify"].as_f64().unwrap() >= 0.0,
        "{r}"
    );
    assert_eq!(
        r["failures"],
        json!([{"provider": "twilio", "error_code": 21211, "messages": 1}]),
        "{r}"
    );
    let blocks = r["guard_blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{r}");
    assert_eq!(blocks[0]["sends"], 1, "{r}");
    // Four code SMS of one segment and the message's two: 5 × 0.05 (ES) + 0.04 (GB).
    let cost = &r["cost"];
    assert_eq!(cost["currency"], "EUR");
    assert_eq!(cost["sms_segments"], 6, "{r}");
    assert!(
        (cost["estimated"].as_f64().unwrap() - 0.29).abs() < 1e-9,
        "{r}"
    );
    assert!(
        (cost["by_country"]["ES"].as_f64().unwrap() - 0.25).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(cost["unpriced_segments"], 0, "{r}");

    // A window before all of it is empty; a bad one is a 400.
    let later = otpd
        .get("/api/v1/messaging/report/?since=2099-01-01T00:00:00Z")
        .await;
    assert_eq!(later.json["codes"]["sent"], 0, "{:?}", later.json);
    assert_eq!(later.json["codes"]["conversion"], Value::Null);
    otpd.get("/api/v1/messaging/report/?since=soon")
        .await
        .assert_error(400, "invalid_query");

    // The same through the command line, as a table and as JSON.
    let run = |json: bool| {
        let mut cmd = otpd_command();
        cmd.args(["report", "--since", "1h", "--socket"])
            .arg(otpd.socket());
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let table = run(false);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("4 codes sent, 3 verified (75.0%)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ES ") && l.contains("66.7%")),
        "{text}"
    );
    assert!(
        text.contains("estimated cost: 0.29 EUR for 6 SMS segments"),
        "{text}"
    );
    let json: Value = serde_json::from_slice(&run(true).stdout).unwrap();
    assert_eq!(json["codes"]["verified"], 3);
}
