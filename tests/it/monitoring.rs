//! The shipped monitoring (`packaging/monitoring/`): every series and label the alerting
//! rules and the Grafana dashboard read is one the real daemon exports, after traffic
//! that makes each of them appear. (`promtool test rules` checks what the rules decide,
//! in `.ci/run`; this checks they watch series that exist.)

use std::collections::{BTreeMap, BTreeSet};

use crate::common::mock_twilio::{Fault, Operation};
use crate::common::*;
use prometheus_parse::Scrape;

const RULES: &str = include_str!("../../packaging/monitoring/otpd.rules.yml");
const DASHBOARD: &str = include_str!("../../packaging/monitoring/otpd-dashboard.json");
/// Labels Prometheus adds or histograms carry, not otpd's own.
const NOT_OTPDS: [&str; 3] = ["instance", "job", "le"];

/// The `otpd_*` names and the labels grouped `by (...)` or matched `{label=...}` in a text.
fn read(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let name = regex::Regex::new(r"\botpd_[a-z_]+").unwrap();
    let by = regex::Regex::new(r"by \(([^)]*)\)").unwrap();
    let matcher = regex::Regex::new(r#"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)\s*\\?""#).unwrap();
    let names = name
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect();
    let mut labels: BTreeSet<String> = by
        .captures_iter(text)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    labels.extend(matcher.captures_iter(text).map(|c| c[1].to_owned()));
    labels.retain(|l| !NOT_OTPDS.contains(&l.as_str()));
    (names, labels)
}

#[tokio::test]
async fn the_alert_rules_and_the_dashboard_read_only_series_otpd_exports() {
    let mock = MockTwilio::start(MockOptions::default());
    let otpd = Setup::new()
        .twilio(&mock)
        .set("limits", "send_per_phone = \"1/1h\"")
        .set("limits", "max_keys = 2")
        .set("guard", "deny_countries = [\"PT\"]")
        .start();
    // A retried send (provider retries), then a code verified (events, countries).
    mock.script_for(Operation::CreateMessage, [Fault::internal_error()]);
    let sent = otpd.send_otp(send_body(PHONE, "login", None)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    let code = last_code(&mock, PHONE);
    let verified = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    // A rate limit, the guard, and a limiter full of keys.
    otpd.send_otp(send_body(PHONE, "login", None))
        .await
        .assert_error(429, "rate_limited");
    otpd.send_otp(send_body("+351912345678", "login", None))
        .await
        .assert_error(422, "country_not_allowed");
    for phone in ["+34600111333", "+34600111444", "+34600111555"] {
        otpd.send_otp(send_body(phone, "login", None)).await;
    }

    let reply = otpd.get("/metrics").await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.raw.to_vec()).unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sample in &scrape.samples {
        let labels = exported.entry(sample.metric.clone()).or_default();
        labels.extend(sample.labels.keys().cloned());
    }
    // The parser folds histograms into one family; PromQL names their buckets.
    for family in exported.clone().keys() {
        if text.contains(&format!("{family}_bucket{{")) {
            exported.insert(format!("{family}_bucket"), exported[family].clone());
        }
    }
    let all_labels: BTreeSet<&String> = exported.values().flatten().collect();

    assert_eq!(
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "otpd_otp_country_total")
            .map(|s| (
                s.labels.get("event").unwrap(),
                s.labels.get("country").unwrap()
            ))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([("sent", "ES"), ("verified", "ES")]),
        "{text}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "{}",
            panel["title"]
        );
    }
    for (file, text) in [
        ("otpd.rules.yml", RULES),
        ("otpd-dashboard.json", DASHBOARD),
    ] {
        let (names, labels) = read(text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in &names {
            assert!(
                exported.contains_key(name),
                "{file} reads {name}, which otpd does not export: {:?}",
                exported.keys()
            );
        }
        for label in &labels {
            assert!(
                all_labels.contains(label),
                "{file} reads the label {label}, which no otpd series has: {all_labels:?}"
            );
        }
    }
}
