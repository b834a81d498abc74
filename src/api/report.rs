//! `GET /api/v1/messaging/report/?since=7d`: the business report as JSON, for the CLI's
//! `otpd report` and for dashboards. Knows the report's shape, nothing of its counting.

use std::collections::BTreeMap;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;

use super::body::Query;
use super::error::Failure;
use super::{Answer, Api, json_response, rfc3339};
use crate::reports::{Group, Report};

#[derive(Serialize)]
struct Answered<'a> {
    since: String,
    until: String,
    codes: Counted,
    median_seconds_to_verify: Option<f64>,
    by_country: BTreeMap<&'a str, Counted>,
    by_purpose: BTreeMap<&'a str, Counted>,
    by_channel: BTreeMap<&'a str, Counted>,
    by_provider: BTreeMap<&'a str, Counted>,
    failures: Vec<Failed<'a>>,
    guard_blocks: Vec<Blocked<'a>>,
    cost: Cost<'a>,
}

#[derive(Serialize)]
struct Counted {
    sent: i64,
    verified: i64,
    /// Verified over sent, `null` when nothing was sent.
    conversion: Option<f64>,
}

#[derive(Serialize)]
struct Failed<'a> {
    provider: &'a str,
    error_code: Option<i64>,
    messages: i64,
}

#[derive(Serialize)]
struct Blocked<'a> {
    rule: &'a str,
    sends: i64,
}

#[derive(Serialize)]
struct Cost<'a> {
    currency: &'a str,
    estimated: f64,
    sms_segments: i64,
    by_country: &'a BTreeMap<String, f64>,
    unpriced_segments: i64,
    unpriced_messages: i64,
}

impl From<&Group> for Counted {
    fn from(g: &Group) -> Self {
        Counted {
            sent: g.sent,
            verified: g.verified,
            conversion: g.conversion(),
        }
    }
}

fn counted(groups: &BTreeMap<String, Group>) -> BTreeMap<&str, Counted> {
    groups.iter().map(|(k, g)| (k.as_str(), g.into())).collect()
}

pub(super) async fn report(
    api: &Api,
    req: &Request<Incoming>,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let since = Query::parse(req.uri().query()).since_or(now, "7d")?;
    let r: Report = api.reports.report(since, now).await?;
    let answer = Answered {
        since: rfc3339(r.since),
        until: rfc3339(r.until),
        codes: (&r.codes).into(),
        median_seconds_to_verify: r.median_seconds_to_verify,
        by_country: counted(&r.by_country),
        by_purpose: counted(&r.by_purpose),
        by_channel: counted(&r.by_channel),
        by_provider: counted(&r.by_provider),
        failures: r
            .failures
            .iter()
            .map(|(provider, error_code, messages)| Failed {
                provider,
                error_code: *error_code,
                messages: *messages,
            })
            .collect(),
        guard_blocks: r
            .guard_blocks
            .iter()
            .map(|(rule, sends)| Blocked {
                rule,
                sends: *sends,
            })
            .collect(),
        cost: Cost {
            currency: &r.cost.currency,
            estimated: r.cost.estimated,
            sms_segments: r.cost.segments,
            by_country: &r.cost.by_country,
            unpriced_segments: r.cost.unpriced_segments,
            unpriced_messages: r.cost.unpriced_messages,
        },
    };
    Ok(json_response(StatusCode::OK, &answer))
}
