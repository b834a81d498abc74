//! The audit trail as the tests read it: `GET /audit/` over the last hour, oldest first.

use super::Daemon;

/// The audit events (for `phone`, or all), oldest first, as (event, detail).
pub async fn audit_trail(otpd: &Daemon, phone: Option<&str>) -> Vec<(String, String)> {
    let mut path = "/api/v1/messaging/audit/?since=1h".to_owned();
    if let Some(phone) = phone {
        path.push_str(&format!("&phone={}", phone.replace('+', "%2B")));
    }
    let reply = otpd.get(&path).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let mut events: Vec<(String, String)> = reply.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // The endpoint answers newest first.
    events.reverse();
    events
}
