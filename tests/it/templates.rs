//! Template variables through send-sms, as the phone receives them: numbers keep the
//! text the caller wrote, and only strings and numbers are variables.

use std::time::{Duration, Instant};

use crate::common::*;

const SEND_SMS: &str = "/api/v1/messaging/send-sms/";

/// The body of the first message in the development outbox (polled: workers send it).
fn first_body(daemon: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(line) = daemon.outbox().first() {
            return line["body"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the outbox:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn numeric_variables_are_rendered_as_the_caller_wrote_them() {
    let daemon = Setup::new()
        .dev()
        .set(
            "templates.bill",
            "en = \"{amount} EUR for {count} items, {big} points, {small}, {name}\"",
        )
        .start();
    // Written by hand: a JSON serializer would already have turned 4.50 into 4.5.
    let body = br#"{"to": "+34600111222", "template": "bill",
        "variables": {"amount": 4.50, "count": -3, "big": 1e2, "small": 0.10E-3,
                      "name": "Jos\u00e9 \"J\""}}"#;
    let reply = daemon.post_raw(SEND_SMS, body.to_vec()).await;
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    assert_eq!(
        first_body(&daemon),
        "4.50 EUR for -3 items, 1e2 points, 0.10E-3, José \"J\""
    );

    for bad in [r#"true"#, r#"null"#, r#"[1]"#, r#"{"a": 1}"#] {
        let body = format!(
            r#"{{"to": "+34600111222", "template": "bill", "variables": {{"amount": {bad},
               "count": 1, "big": 1, "small": 1, "name": "x"}}}}"#
        );
        let reply = daemon.post_raw(SEND_SMS, body.into_bytes()).await;
        reply.assert_error(400, "invalid_request");
        let details = reply.json["details"].as_str().unwrap_or_default();
        assert!(details.contains("string or a number"), "{bad}: {details}");
    }
}
