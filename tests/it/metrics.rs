//! `GET /metrics`: Prometheus text that a Prometheus parser reads, with counters that
//! match the traffic sent.

use crate::common::*;
use prometheus_parse::{Sample, Scrape, Value};

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(matching.len(), 1, "{name}{labels:?}: {matching:?}");
    match &matching[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_per_phone = \"1/1h\"")
        .start();

    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
    otpd.send_otp(send_body("+15005550001", "login", None))
        .await
        .assert_error(502, "twilio_rejected");
    let code = last_code(&mock, PHONE);
    otpd.verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
        .await
        .assert_error(400, "invalid_otp");
    assert_eq!(
        otpd.verify_otp(verify_body(PHONE, &code, "login", None))
            .await
            .status,
        200
    );
    otpd.get("/nope").await.assert_error(404, "not_found");

    let reply = otpd.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(reply.raw.to_vec()).unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    let requests = "otpd_http_requests_total";
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("route", "send_otp"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("route", "send_otp"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("route", "send_otp"), ("status", "502")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("route", "verify_otp"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("route", "unknown"), ("status", "404")]
        ),
        1.0
    );
    let events = "otpd_otp_events_total";
    assert_eq!(value(&scrape, events, &[("event", "sent")]), 1.0);
    assert_eq!(value(&scrape, events, &[("event", "send_failed")]), 1.0);
    assert_eq!(value(&scrape, events, &[("event", "wrong_code")]), 1.0);
    assert_eq!(value(&scrape, events, &[("event", "verified")]), 1.0);
    assert_eq!(
        value(
            &scrape,
            "otpd_rate_limited_total",
            &[("limit", "send_per_phone")]
        ),
        1.0
    );
    let provider = "otpd_provider_requests_total";
    assert_eq!(
        value(
            &scrape,
            provider,
            &[("provider", "twilio"), ("outcome", "accepted")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            provider,
            &[("provider", "twilio"), ("outcome", "rejected")]
        ),
        1.0
    );
    // Histograms: every send_otp request was timed, and the store ops behind them.
    assert_eq!(
        value(
            &scrape,
            "otpd_http_request_duration_seconds",
            &[("route", "send_otp")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &scrape,
            "otpd_provider_request_duration_seconds",
            &[("provider", "twilio")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &scrape,
            "otpd_store_operation_duration_seconds",
            &[("op", "check_attempt")]
        ),
        2.0
    );
    // This request's own connection is open while the text is rendered.
    assert!(value(&scrape, "otpd_open_connections", &[]) >= 1.0);
    // Nothing secret in the text.
    assert!(!text.contains(&code) && !text.contains(PHONE));
}
