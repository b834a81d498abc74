//! What every handler reads from a request: the body, capped in size and time, parsed as
//! JSON with "not JSON" told apart from "wrong fields"; the query string of the read
//! endpoints; and the `user_id` field as backends send it.
//!
//! Knows nothing of routes or of what a body means.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Api;
use super::error::Failure;
use crate::types::{InvalidInput, UserId};

impl Api {
    /// Reads a size-capped body within the request timeout and parses it as JSON.
    pub(super) async fn json_body<T: DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, Failure> {
        parse_json(&self.body_bytes(req).await?)
    }

    /// Reads a size-capped body within the request timeout.
    pub(super) async fn body_bytes(&self, req: Request<Incoming>) -> Result<Bytes, Failure> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(Failure::BodyTooLarge(self.max_body_bytes));
        }
        let body = Limited::new(req.into_body(), self.max_body_bytes);
        let collected = tokio::time::timeout(self.body_timeout, body.collect())
            .await
            .map_err(|_| Failure::BodyTimeout)?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(Failure::BodyTooLarge(self.max_body_bytes)),
            Err(_) => Err(Failure::BodyUnreadable),
        }
    }
}

/// Pure, so that the property tests (src/properties.rs) drive exactly the path a
/// request takes, with any bytes.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Failure::InvalidRequest(e),
        _ => Failure::InvalidJson(e),
    })
}

/// The query string of the read endpoints: `since` (a duration back from now, "1h",
/// or an RFC 3339 time), `limit` (1-1000, default 100) and filters such as `phone`.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn since(&self, now: SystemTime) -> Result<SystemTime, Failure> {
        self.since_or(now, "24h")
    }

    /// `since`, or `default` ago when the query has none.
    pub(super) fn since_or(&self, now: SystemTime, default: &str) -> Result<SystemTime, Failure> {
        let text = self.get("since").unwrap_or(default);
        if let Ok(ago) = humantime::parse_duration(text) {
            return Ok(now.checked_sub(ago).unwrap_or(UNIX_EPOCH));
        }
        humantime::parse_rfc3339_weak(text).map_err(|_| {
            Failure::InvalidQuery(format!(
                "since={text:?} is neither a duration (1h) nor an RFC 3339 time"
            ))
        })
    }

    pub(super) fn limit(&self) -> Result<u32, Failure> {
        match self.get("limit") {
            None => Ok(100),
            Some(text) => text
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    Failure::InvalidQuery(format!("limit={text:?} is not a number from 1 to 1000"))
                }),
        }
    }
}

/// Django user ids are integers; accept `42` as well as `"42"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum UserIdField {
    Text(String),
    Number(i64),
}

impl UserIdField {
    pub(super) fn parse(field: Option<UserIdField>) -> Result<Option<UserId>, InvalidInput> {
        match field {
            None => Ok(None),
            Some(UserIdField::Text(s)) => UserId::parse(&s).map(Some),
            Some(UserIdField::Number(n)) => UserId::parse(&n.to_string()).map(Some),
        }
    }
}
