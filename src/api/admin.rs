//! The operator's endpoints: status, the audit trail, purge, the health probe, the
//! Prometheus text, and the OpenAPI description of this API.
//!
//! Read-side only, apart from purge; knows the report shapes the service hands back and
//! nothing of how errors become statuses (error.rs).

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::body::Query;
use super::error::Failure;
use super::{Answer, Api, json_response, rfc3339};
use crate::store::AuditRow;
use crate::types::PhoneNumber;

/// The API's description, served as written (the file is checked to be JSON by a test).
const OPENAPI: &str = include_str!("../../docs/openapi.json");

#[derive(Serialize)]
struct Status<'a> {
    enabled: bool,
    provider: Option<&'static str>,
    provider_reachable: Option<bool>,
    provider_circuit: Option<&'static str>,
    provider_credentials: Option<&'static str>,
    dev_mode: bool,
    test_phone_configured: bool,
    purposes: &'a [String],
    otp_length: usize,
    otp_ttl_seconds: u64,
    limiter_keys: usize,
    codes: BTreeMap<&'a str, i64>,
    messages: BTreeMap<&'a str, i64>,
    version: &'static str,
    /// Only with a shared store (PostgreSQL): the instances running on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<Instance<'a>>,
    /// Only when the instances' settings differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    instances_warning: Option<&'static str>,
}

#[derive(Serialize)]
struct Instance<'a> {
    name: &'a str,
    last_seen: String,
    version: &'a str,
    settings: &'a str,
}

#[derive(Serialize)]
struct AuditTrail<'a> {
    events: Vec<AuditEvent<'a>>,
}

#[derive(Serialize)]
struct AuditEvent<'a> {
    id: i64,
    at: String,
    otp_id: Option<i64>,
    event: &'a str,
    phone: Option<&'a str>,
    purpose: Option<&'a str>,
    user_id: Option<&'a str>,
    detail: Option<&'a str>,
    peer: Option<Peer>,
}

#[derive(Serialize)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: Option<i32>,
}

#[derive(Serialize)]
struct Purged {
    deleted: Deleted,
}

#[derive(Serialize)]
struct Deleted {
    codes: u64,
    messages: u64,
    audit: u64,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

pub(super) async fn status(api: &Api, now: SystemTime) -> Result<Answer, Failure> {
    let s = api.reports.status(now).await?;
    let status = Status {
        enabled: s.provider.is_some(),
        provider: s.provider,
        provider_reachable: s.provider_reachable,
        provider_circuit: s.provider_circuit,
        provider_credentials: s.provider_credentials,
        dev_mode: s.dev_mode,
        test_phone_configured: s.test_phone_configured,
        purposes: &s.purposes,
        otp_length: s.otp_length,
        otp_ttl_seconds: s.otp_ttl.as_secs(),
        limiter_keys: s.limiter_keys,
        codes: counts(&s.counts.codes),
        messages: counts(&s.counts.messages),
        version: env!("CARGO_PKG_VERSION"),
        instances: s
            .instances
            .iter()
            .map(|i| Instance {
                name: &i.name,
                last_seen: super::rfc3339(i.last_seen),
                version: &i.version,
                settings: &i.settings,
            })
            .collect(),
        instances_warning: s
            .instances
            .windows(2)
            .any(|w| w.first().map(|a| &a.settings) != w.get(1).map(|b| &b.settings))
            .then_some(
                "the instances sharing the store run with different limits, purposes, \
                 code settings or test numbers",
            ),
    };
    Ok(json_response(StatusCode::OK, &status))
}

/// Counts by state, keyed by the state's name.
fn counts(rows: &[(String, i64)]) -> BTreeMap<&str, i64> {
    rows.iter().map(|(k, n)| (k.as_str(), *n)).collect()
}

pub(super) async fn audit(
    api: &Api,
    req: &Request<Incoming>,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let query = Query::parse(req.uri().query());
    let region = api.default_region;
    let phone = query
        .get("phone")
        .map(|p| PhoneNumber::parse_in(p, region))
        .transpose()?;
    let rows = api
        .reports
        .audit_since(query.since(now)?, phone.as_ref(), query.limit()?)
        .await?;
    let trail = AuditTrail {
        events: rows.iter().map(AuditEvent::from).collect(),
    };
    Ok(json_response(StatusCode::OK, &trail))
}

impl<'a> From<&'a AuditRow> for AuditEvent<'a> {
    fn from(a: &'a AuditRow) -> Self {
        AuditEvent {
            id: a.id,
            at: rfc3339(a.at),
            otp_id: a.otp_id,
            event: &a.event,
            phone: a.phone.as_deref(),
            purpose: a.purpose.as_deref(),
            user_id: a.user_id.as_deref(),
            detail: a.detail.as_deref(),
            peer: a.caller.map(|c| Peer {
                uid: c.uid,
                gid: c.gid,
                pid: c.pid,
            }),
        }
    }
}

pub(super) async fn purge(api: &Api, now: SystemTime) -> Result<Answer, Failure> {
    let purged = api.reports.purge(now).await?;
    let answer = Purged {
        deleted: Deleted {
            codes: purged.otps,
            messages: purged.messages,
            audit: purged.audit,
        },
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// Also HEAD's answer: hyper sends these headers and drops the body.
pub(super) async fn healthz(api: &Api) -> Result<Answer, Failure> {
    api.reports.ping().await?;
    Ok(json_response(StatusCode::OK, &Health { status: "ok" }))
}

pub(super) fn metrics(api: &Api) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(api.prometheus.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub(super) fn openapi() -> Answer {
    let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use http_body_util::BodyExt;

    #[test]
    fn the_openapi_route_answers_its_document_as_json() {
        let response = openapi();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response
            .into_body()
            .collect()
            .now_or_never()
            .unwrap()
            .unwrap()
            .to_bytes();
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    }
}
