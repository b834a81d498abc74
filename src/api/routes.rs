//! The route table: which path names which route and the one method it takes, and the
//! request metrics of each route, registered once when the [`Api`](super::Api) is built.
//!
//! Knows paths, methods and metric labels; nothing of bodies, handlers or errors beyond
//! "not allowed".

use std::time::Duration;

use hyper::{Method, StatusCode};
use metrics::{Counter, Histogram};

use super::error::Failure;
use super::paths;
use crate::telemetry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    SendOtp,
    VerifyOtp,
    TestTwilio,
    Status,
    Messages,
    SendSms,
    Message(i64),
    StatusCallback,
    Audit,
    Report,
    Purge,
    Health,
    Metrics,
    OpenApi,
}

impl Route {
    /// The route `path` names and the one method it takes. Paths match the backend's
    /// existing API; the trailing slash is optional.
    pub(super) fn find(path: &str) -> Option<(Route, &'static str)> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some(id) = path
            .strip_prefix(paths::MESSAGES)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            // Positive decimal ids only: "+1", "-1" and "1e3" name no message.
            let id = id
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0 && id.bytes().all(|b| b.is_ascii_digit()))?;
            return Some((Route::Message(id), "GET"));
        }
        Some(match path {
            paths::SEND_OTP => (Route::SendOtp, "POST"),
            paths::VERIFY_OTP => (Route::VerifyOtp, "POST"),
            paths::TEST_TWILIO => (Route::TestTwilio, "GET"),
            paths::STATUS => (Route::Status, "GET"),
            paths::MESSAGES => (Route::Messages, "GET"),
            paths::SEND_SMS => (Route::SendSms, "POST"),
            paths::STATUS_CALLBACK => (Route::StatusCallback, "POST"),
            paths::AUDIT => (Route::Audit, "GET"),
            paths::REPORT => (Route::Report, "GET"),
            paths::PURGE => (Route::Purge, "POST"),
            paths::OPENAPI => (Route::OpenApi, "GET"),
            paths::HEALTHZ => (Route::Health, "GET"),
            paths::METRICS => (Route::Metrics, "GET"),
            _ => return None,
        })
    }
}

/// A route takes its one method. HEAD /healthz also answers, as GET does (hyper sends
/// the headers without the body), for probes that only look at the status; no other
/// route takes HEAD, as a HEAD on test-twilio would still send a message.
pub(super) fn check_method(
    route: Route,
    allow: &'static str,
    method: &Method,
) -> Result<(), Failure> {
    if method.as_str() == allow || (route == Route::Health && *method == Method::HEAD) {
        return Ok(());
    }
    Err(Failure::MethodNotAllowed {
        method: method.clone(),
        allow,
    })
}

/// The request metrics of every route, registered once when the Api is built, so that
/// counting a request does not look its series up by name.
pub(super) struct RequestMetrics {
    send_otp: RouteMetrics,
    verify_otp: RouteMetrics,
    test_twilio: RouteMetrics,
    status: RouteMetrics,
    messages: RouteMetrics,
    send_sms: RouteMetrics,
    message: RouteMetrics,
    status_callback: RouteMetrics,
    audit: RouteMetrics,
    report: RouteMetrics,
    purge: RouteMetrics,
    healthz: RouteMetrics,
    metrics: RouteMetrics,
    openapi: RouteMetrics,
    /// Paths that name no route.
    unknown: RouteMetrics,
}

impl RequestMetrics {
    pub(super) fn new() -> Self {
        use StatusCode as S;
        let route = RouteMetrics::new;
        RequestMetrics {
            send_otp: route("send_otp", S::OK),
            verify_otp: route("verify_otp", S::OK),
            test_twilio: route("test_twilio", S::OK),
            status: route("status", S::OK),
            messages: route("messages", S::OK),
            send_sms: route("send_sms", S::ACCEPTED),
            message: route("message", S::OK),
            status_callback: route("status_callback", S::OK),
            audit: route("audit", S::OK),
            report: route("report", S::OK),
            purge: route("purge", S::OK),
            healthz: route("healthz", S::OK),
            metrics: route("metrics", S::OK),
            openapi: route("openapi", S::OK),
            unknown: route("unknown", S::NOT_FOUND),
        }
    }

    pub(super) fn of(&self, route: Option<Route>) -> &RouteMetrics {
        match route {
            Some(Route::SendOtp) => &self.send_otp,
            Some(Route::VerifyOtp) => &self.verify_otp,
            Some(Route::TestTwilio) => &self.test_twilio,
            Some(Route::Status) => &self.status,
            Some(Route::Messages) => &self.messages,
            Some(Route::SendSms) => &self.send_sms,
            Some(Route::Message(_)) => &self.message,
            Some(Route::StatusCallback) => &self.status_callback,
            Some(Route::Audit) => &self.audit,
            Some(Route::Report) => &self.report,
            Some(Route::Purge) => &self.purge,
            Some(Route::Health) => &self.healthz,
            Some(Route::Metrics) => &self.metrics,
            Some(Route::OpenApi) => &self.openapi,
            None => &self.unknown,
        }
    }
}

/// One route's `route` label, the counter of its usual answer, and its durations. Other
/// statuses are counted through the registry: they are the rare case.
pub(super) struct RouteMetrics {
    name: &'static str,
    usual: StatusCode,
    answered: Counter,
    duration: Histogram,
}

impl RouteMetrics {
    fn new(name: &'static str, usual: StatusCode) -> Self {
        RouteMetrics {
            name,
            usual,
            answered: metrics::counter!(
                telemetry::HTTP_REQUESTS, "route" => name, "status" => status_label(usual)
            ),
            duration: metrics::histogram!(telemetry::HTTP_DURATION, "route" => name),
        }
    }

    pub(super) fn record(&self, status: StatusCode, elapsed: Duration) {
        if status == self.usual {
            self.answered.increment(1);
        } else {
            metrics::counter!(
                telemetry::HTTP_REQUESTS, "route" => self.name, "status" => status_label(status)
            )
            .increment(1);
        }
        self.duration.record(elapsed);
    }
}

/// The `status` label: the usual codes as static strings, so counting a request
/// allocates nothing.
fn status_label(status: StatusCode) -> metrics::SharedString {
    let known = match status.as_u16() {
        200 => "200",
        202 => "202",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => return status.as_str().to_owned().into(),
    };
    known.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_codes() {
        for code in [
            200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 502, 503, 507,
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(status).as_ref(), status.as_str());
        }
    }

    #[test]
    fn paths_name_routes_with_or_without_the_trailing_slash() {
        assert_eq!(
            Route::find("/api/v1/messaging/send-otp/"),
            Some((Route::SendOtp, "POST"))
        );
        assert_eq!(Route::find(paths::SEND_OTP), Some((Route::SendOtp, "POST")));
        assert_eq!(
            Route::find("/api/v1/openapi.json"),
            Some((Route::OpenApi, "GET"))
        );
        assert_eq!(
            Route::find(&paths::message(42)),
            Some((Route::Message(42), "GET"))
        );
        for no_message in ["+1", "1e3", "0", "-1"] {
            let path = format!("{}/{no_message}", paths::MESSAGES);
            assert_eq!(Route::find(&path), None, "{path}");
        }
        assert_eq!(Route::find("/api/v1/messaging/nope"), None);
    }

    #[test]
    fn head_healthz_answers_like_get_and_no_other_route_takes_head() {
        let (route, allow) = Route::find("/healthz").unwrap();
        assert!(check_method(route, allow, &Method::GET).is_ok());
        assert!(check_method(route, allow, &Method::HEAD).is_ok());
        match check_method(route, allow, &Method::DELETE) {
            Err(Failure::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "GET"),
            other => panic!("{other:?}"),
        }
        let (route, allow) = Route::find(paths::TEST_TWILIO).unwrap();
        assert!(check_method(route, allow, &Method::HEAD).is_err());
    }
}
