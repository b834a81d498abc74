//! The API's paths, in one place for the router, the CLI client and the tests. Written
//! without the trailing slash: the router takes a path with or without it, and the
//! backend's documented form (`/api/v1/messaging/send-otp/`) has one.
//!
//! Knows nothing of methods, handlers or bodies.

pub const SEND_OTP: &str = "/api/v1/messaging/send-otp";
pub const VERIFY_OTP: &str = "/api/v1/messaging/verify-otp";
pub const TEST_TWILIO: &str = "/api/v1/messaging/test-twilio";
pub const STATUS: &str = "/api/v1/messaging/status";
pub const SEND_SMS: &str = "/api/v1/messaging/send-sms";
/// The message list; one message is `MESSAGES/{id}` ([`message`]).
pub const MESSAGES: &str = "/api/v1/messaging/messages";
pub const STATUS_CALLBACK: &str = "/api/v1/messaging/twilio/status-callback";
pub const AUDIT: &str = "/api/v1/messaging/audit";
pub const REPORT: &str = "/api/v1/messaging/report";
pub const PURGE: &str = "/api/v1/messaging/purge";
pub const OPENAPI: &str = "/api/v1/openapi.json";
pub const HEALTHZ: &str = "/healthz";
pub const METRICS: &str = "/metrics";

/// The path of one message.
pub fn message(id: i64) -> String {
    format!("{MESSAGES}/{id}")
}
