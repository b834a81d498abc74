//! What every backend writes the same way, so the two stores cannot drift apart: the
//! order of Twilio's statuses, the columns a delivery fills, the state and audit event
//! a delivery gives its code, and how media URLs are kept in one column. No SQL except
//! the one expression both dialects share.

use crate::store::types::Delivery;
use crate::types::Channel;

/// Twilio's statuses in the order a message (or a voice code's call) moves through
/// them. Callbacks can arrive out of order; the message keeps the furthest status and
/// the history keeps them all.
pub(crate) fn rank(status: &str) -> u8 {
    match status {
        "queued" | "accepted" | "scheduled" => 0,
        "sending" | "checking" | "initiated" | "ringing" => 1,
        "sent" | "delivered_to_outbox" | "in-progress" => 2,
        "delivered" | "undelivered" | "failed" | "canceled" | "unknown" => 3,
        "completed" | "busy" | "no-answer" => 3,
        "read" => 4,
        _ => 0,
    }
}

/// Statuses after which a WhatsApp message will not arrive.
pub(crate) fn will_not_arrive(status: &str) -> bool {
    matches!(status, "undelivered" | "failed")
}

/// A sent WhatsApp message keeps its body while a later channel may still carry it
/// (Twilio can report it undelivered afterwards); anything else drops it on leaving.
/// The same SQL in SQLite and PostgreSQL.
pub(crate) const KEEP_BODY_FOR_FALLBACK: &str =
    "CASE WHEN channel = 'whatsapp' AND fallback IS NOT NULL THEN body END";

/// Media URLs as one column: newline-separated (a parsed URL holds no newline), NULL
/// for none, so a text message's row is unchanged.
pub(crate) fn join_media(urls: &[String]) -> Option<String> {
    Some(urls.join("\n")).filter(|s| !s.is_empty())
}

pub(crate) fn split_media(column: Option<String>) -> Vec<String> {
    column.map_or_else(Vec::new, |s| s.split('\n').map(str::to_owned).collect())
}

/// The message row a delivery leaves; a test number's delivery leaves none.
pub(crate) struct DeliveryRow<'a> {
    pub provider: &'static str,
    pub sid: Option<&'a str>,
    pub status: &'a str,
    pub error_code: Option<i64>,
    pub error_message: Option<&'a str>,
    pub attempts: u32,
}

impl Delivery {
    pub(crate) fn row(&self) -> Option<DeliveryRow<'_>> {
        let row = |provider, sid, status, error_code, error_message, attempts| DeliveryRow {
            provider,
            sid,
            status,
            error_code,
            error_message,
            attempts,
        };
        Some(match self {
            Delivery::Sent {
                provider,
                sid,
                status,
                attempts,
                ..
            } => row(
                *provider,
                Some(sid.as_str()),
                status.as_str(),
                None,
                None,
                *attempts,
            ),
            Delivery::Failed {
                provider,
                error_code,
                error_message,
                attempts,
            } => row(
                *provider,
                None,
                "failed",
                *error_code,
                Some(error_message.as_str()),
                *attempts,
            ),
            Delivery::CircuitOpen {
                provider,
                error_message,
            } => row(
                *provider,
                None,
                "circuit_open",
                None,
                Some(error_message.as_str()),
                0,
            ),
            Delivery::Unknown {
                provider,
                error_message,
            } => row(
                *provider,
                None,
                "unknown",
                None,
                Some(error_message.as_str()),
                1,
            ),
            Delivery::Skipped => return None,
        })
    }

    /// The code's new state, its audit event and the event's detail. Only a sent (or
    /// test-number) code can ever be verified; a failed one is failed for good.
    pub(crate) fn code_outcome(&self) -> (&'static str, &'static str, Option<String>) {
        match self {
            Delivery::Sent { sid, attempts, .. } => (
                "sent",
                "sent",
                Some(match attempts {
                    0 | 1 => sid.clone(),
                    n => format!("{sid} (after {n} requests)"),
                }),
            ),
            Delivery::Skipped => ("sent", "sent", Some("test number: no SMS".to_owned())),
            Delivery::Failed {
                error_code,
                error_message,
                ..
            } => (
                "failed",
                "send_failed",
                Some(match error_code {
                    Some(code) => format!("{code}: {error_message}"),
                    None => error_message.clone(),
                }),
            ),
            Delivery::CircuitOpen { error_message, .. } => {
                ("failed", "circuit_open", Some(error_message.clone()))
            }
            Delivery::Unknown { error_message, .. } => {
                ("failed", "send_unknown", Some(error_message.clone()))
            }
        }
    }

    /// The audit detail of a channel that refused the code's message.
    pub(crate) fn refusal_detail(&self, channel: Channel) -> String {
        match self {
            Delivery::Failed {
                error_code: Some(code),
                error_message,
                ..
            } => format!("{channel} refused, {code}: {error_message}"),
            Delivery::Failed { error_message, .. } => format!("{channel} refused: {error_message}"),
            _ => format!("{channel} refused"),
        }
    }
}
