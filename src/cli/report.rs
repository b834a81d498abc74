//! `otpd report` as tables: the totals, then one table per grouping, failures, guard
//! blocks and the cost estimate. Reads the daemon's JSON only.

use serde_json::{Value, json};

use super::table;

/// `{"ES": {"sent":…}, …}` as rows with the key first, most sent first.
fn rows(groups: &Value, key: &str) -> Vec<Value> {
    let mut rows: Vec<Value> = groups
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, g)| {
                    json!({
                        key: k,
                        "sent": g["sent"],
                        "verified": g["verified"],
                        "conversion": percent(&g["conversion"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by_key(|r| std::cmp::Reverse(r["sent"].as_i64().unwrap_or(0)));
    rows
}

fn percent(v: &Value) -> Value {
    v.as_f64()
        .map_or(json!("-"), |f| json!(format!("{:.1}%", f * 100.0)))
}

pub(super) fn print(v: &Value) {
    let codes = &v["codes"];
    println!(
        "{} to {}: {} codes sent, {} verified ({}), median {} s to verify",
        v["since"].as_str().unwrap_or("?"),
        v["until"].as_str().unwrap_or("?"),
        codes["sent"],
        codes["verified"],
        percent(&codes["conversion"]).as_str().unwrap_or("-"),
        v["median_seconds_to_verify"]
            .as_f64()
            .map_or("-".to_owned(), |s| format!("{s:.0}")),
    );
    for (title, field, key) in [
        ("COUNTRY", "by_country", "country"),
        ("PURPOSE", "by_purpose", "purpose"),
        ("CHANNEL", "by_channel", "channel"),
        ("PROVIDER", "by_provider", "provider"),
    ] {
        println!(
            "\n{}",
            table(
                &[title, "SENT", "VERIFIED", "CONVERSION"],
                &[key, "sent", "verified", "conversion"],
                &rows(&v[field], key)
            )
        );
    }
    let failures = v["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        println!(
            "\n{}",
            table(
                &["PROVIDER", "ERROR", "FAILED"],
                &["provider", "error_code", "messages"],
                &failures
            )
        );
    }
    let blocks = v["guard_blocks"].as_array().cloned().unwrap_or_default();
    if !blocks.is_empty() {
        println!(
            "\n{}",
            table(&["GUARD RULE", "BLOCKED"], &["rule", "sends"], &blocks)
        );
    }
    let cost = &v["cost"];
    println!(
        "\nestimated cost: {:.2} {} for {} SMS segments ({} segments without a price, {} WhatsApp messages and calls not estimated)",
        cost["estimated"].as_f64().unwrap_or(0.0),
        cost["currency"].as_str().unwrap_or(""),
        cost["sms_segments"],
        cost["unpriced_segments"],
        cost["unpriced_messages"],
    );
}
