//! otpd's own view of a measurement: its `/metrics` histograms of request and store
//! operation durations, read before and after and diffed, printed under the row.

use std::path::Path;

use crate::client::{call, connect, get};
use crate::drive::Scenario;

pub async fn metrics_text(socket: &Path) -> String {
    let Ok(mut conn) = connect(socket).await else {
        return String::new();
    };
    match call(&mut conn, get("/metrics")).await {
        Ok((_, body)) => String::from_utf8_lossy(&body).into_owned(),
        Err(_) => String::new(),
    }
}

/// The cumulative buckets (le, count) of histogram `metric` with `label="value"`.
fn buckets(text: &str, metric: &str, label: &str, value: &str) -> Vec<(f64, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return Vec::new();
    };
    let mut out: Vec<(f64, f64)> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get(label) == Some(value))
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => {
                Some(h.iter().map(|b| (b.less_than, b.count)).collect())
            }
            _ => None,
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// otpd's histogram of `metric{label=value}` over a measurement: the bucket bound (ms)
/// under which 99% fell, and the share above 5 ms.
fn view(before: &str, after: &str, metric: &str, label: &str, value: &str) -> Option<String> {
    let b = buckets(before, metric, label, value);
    let a = buckets(after, metric, label, value);
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            let old = b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let p99 = delta.iter().find(|(_, n)| *n >= 0.99 * total)?.0;
    let under_5ms = delta
        .iter()
        .find(|(le, _)| (*le - 0.005).abs() < 1e-9)
        .map_or(0.0, |(_, n)| *n);
    Some(format!(
        "{value} p99 <= {} ms, {:.1}% > 5 ms",
        if p99.is_finite() {
            format!("{}", p99 * 1000.0)
        } else {
            "inf".into()
        },
        100.0 * (total - under_5ms) / total
    ))
}

/// What otpd itself measured for a scenario's requests and store operations.
pub fn server_side(before: &str, after: &str, scenario: Scenario) -> String {
    const HTTP: &str = "otpd_http_request_duration_seconds";
    const STORE: &str = "otpd_store_operation_duration_seconds";
    let mut parts = Vec::new();
    let (routes, ops): (&[&str], &[&str]) = match scenario {
        Scenario::Send => (&["send_otp"], &["insert_code", "record_delivery"]),
        Scenario::Verify | Scenario::VerifyWrong => (&["verify_otp"], &["check_attempt"]),
        Scenario::Flow => (&["send_otp", "verify_otp"], &[]),
    };
    for r in routes {
        parts.extend(view(before, after, HTTP, "route", r));
    }
    for op in ops {
        parts.extend(view(before, after, STORE, "op", op));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("otpd-side: {}", parts.join("; "))
    }
}
