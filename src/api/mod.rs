//! The HTTP API v1, the edge between the socket and the services. This file owns the
//! request's way through: the caller allow-list, the route and method check (the table
//! is `routes`), the dispatch to a handler, and the per-request metrics and log line.
//!
//! The handlers parse request values into `types` at the edge, so the services below
//! never see HTTP: `otp` (codes), `messages` (plain SMS and Twilio's callbacks), `admin`
//! (status, audit, purge, health, metrics, OpenAPI); `body` reads what they share. Every
//! error becomes a status and a stable code in one place, `error` (the README's error
//! table). This file knows no body shapes and no error codes.

mod admin;
mod body;
mod error;
mod messages;
mod otp;
pub mod paths;
mod report;
mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::messaging::MessagingService;
use crate::otp::OtpService;
use crate::reports::Reports;
use crate::types::{Caller, Region};
use error::Failure;
use routes::{RequestMetrics, Route, check_method};

#[cfg(test)]
pub(crate) use otp::parse;

/// Every answer, errors included.
type Answer = Response<Full<Bytes>>;

pub struct Api {
    service: Arc<OtpService>,
    messaging: Arc<MessagingService>,
    reports: Arc<Reports>,
    max_body_bytes: usize,
    body_timeout: Duration,
    prometheus: PrometheusHandle,
    requests: RequestMetrics,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    clock: Clock,
    /// The edge's parse rules, from `[otp]`: the purposes a request may name, and where
    /// numbers without a country code are read from (`otp.default_region`).
    purposes: Vec<String>,
    default_region: Option<Region>,
}

impl Api {
    pub fn new(
        service: Arc<OtpService>,
        messaging: Arc<MessagingService>,
        reports: Arc<Reports>,
        config: &Config,
        metrics: PrometheusHandle,
    ) -> Self {
        let server = &config.server;
        Api {
            service,
            messaging,
            reports,
            max_body_bytes: server.max_body_bytes,
            body_timeout: server.request_timeout,
            prometheus: metrics,
            requests: RequestMetrics::new(),
            allowed_uids: server.allowed_uids.clone(),
            allowed_gids: server.allowed_gids.clone(),
            clock: config.clock.clone(),
            purposes: config.otp.purposes.clone(),
            default_region: config.otp.default_region,
        }
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.prometheus
    }

    /// With no allow-list, the socket's mode and group are the whole access control.
    fn allows(&self, caller: Caller) -> bool {
        (self.allowed_uids.is_empty() && self.allowed_gids.is_empty())
            || self.allowed_uids.contains(&caller.uid)
            || self.allowed_gids.contains(&caller.gid)
    }

    /// hyper's service function: never fails, every problem is a JSON answer.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let found = Route::find(req.uri().path());
        // Only the debug line below needs the path after `req` is consumed: no copy
        // per request when it is off.
        let path = log::log_enabled!(log::Level::Debug).then(|| req.uri().path().to_owned());
        let answer = match found {
            _ if !self.allows(caller) => Err(Failure::Forbidden(caller)),
            None => Err(Failure::NotFound),
            Some((route, allow)) => match check_method(route, allow, &method) {
                Ok(()) => self.dispatch(route, req, caller).await,
                Err(failure) => Err(failure),
            },
        };
        let response = answer.unwrap_or_else(Failure::into_response);
        let elapsed = started.elapsed();
        self.requests
            .of(found.map(|(route, _)| route))
            .record(response.status(), elapsed);
        log::debug!(
            "{method} {} -> {} in {elapsed:?} (uid {} gid {} pid {:?})",
            path.as_deref().unwrap_or_default(),
            response.status().as_u16(),
            caller.uid,
            caller.gid,
            caller.pid
        );
        Ok(response)
    }

    async fn dispatch(
        &self,
        route: Route,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Answer, Failure> {
        // The clock is read here, once per request; everything below takes `now`.
        let now = self.clock.now();
        match route {
            Route::SendOtp => otp::send(self, req, caller, now).await,
            Route::VerifyOtp => otp::verify(self, req, caller, now).await,
            Route::TestTwilio => otp::test_twilio(self, now).await,
            Route::SendSms => messages::send_sms(self, req, caller, now).await,
            Route::Messages => messages::list(self, &req, now).await,
            Route::Message(id) => messages::one(self, id).await,
            Route::StatusCallback => messages::status_callback(self, req, caller, now).await,
            Route::Status => admin::status(self, now).await,
            Route::Audit => admin::audit(self, &req, now).await,
            Route::Report => report::report(self, &req, now).await,
            Route::Purge => admin::purge(self, now).await,
            Route::Health => admin::healthz(self).await,
            Route::Metrics => Ok(admin::metrics(self)),
            Route::OpenApi => Ok(admin::openapi()),
        }
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
