//! The store's domain types: what the services hand to the store and get back, the same
//! for every backend. Nothing here knows SQL, a database crate, HTTP or an HMAC key:
//! phones are E.164 strings, codes are keyed hashes, times are `SystemTime`s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::Caller;

// The audit trail and the reports.

/// A send the cost guard refused (or, in record mode, would have refused).
pub struct GuardEvent {
    pub at: SystemTime,
    /// `guard_blocked` or `guard_would_block`.
    pub event: &'static str,
    pub phone: String,
    pub purpose: Option<String>,
    pub user_id: Option<String>,
    /// The rule's name.
    pub detail: &'static str,
    pub caller: Option<Caller>,
}

#[derive(Debug)]
pub struct AuditRow {
    pub id: i64,
    pub at: SystemTime,
    pub otp_id: Option<i64>,
    pub event: String,
    pub phone: Option<String>,
    pub purpose: Option<String>,
    pub user_id: Option<String>,
    pub detail: Option<String>,
    /// Who made the request (absent on rows from before migration 3).
    pub caller: Option<Caller>,
}

#[derive(Debug)]
pub struct Counts {
    pub codes: Vec<(String, i64)>,
    pub messages: Vec<(String, i64)>,
}

/// Rows older than these are deleted by [`Store::purge`].
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub codes_before: SystemTime,
    pub messages_before: SystemTime,
    pub audit_before: SystemTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub otps: u64,
    pub messages: u64,
    pub audit: u64,
}

// Status callbacks.

/// What a report did besides joining the history.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterReport {
    Nothing,
    /// An outbox message queued again, on `channel`.
    Requeued {
        channel: String,
    },
    /// A code whose message never arrived; the service sends it on `channels`.
    ResendCode(CodeResend),
}

/// A code to re-issue on the next channels: what its first message was sent with.
#[derive(Debug, PartialEq, Eq)]
pub struct CodeResend {
    pub otp_id: i64,
    pub phone: String,
    pub purpose: String,
    pub user_id: Option<String>,
    pub locale: Option<String>,
    /// Comma-separated, in order.
    pub channels: String,
    /// "whatsapp reported failed (63003)", for the history and the audit.
    pub reason: String,
}

// Codes.

/// A code to insert; `code_hash` is already keyed, the store never sees a code.
pub struct NewCode {
    pub caller: Caller,
    pub phone: String,
    pub purpose: String,
    pub user_id: Option<String>,
    pub code_hash: Vec<u8>,
    pub max_attempts: u32,
    pub test_number: bool,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// Destination region ("ES", "001"), for the cost guard's unverified budget.
    pub country: Option<String>,
}

/// How one verify attempt for (phone, purpose) ended.
#[derive(Debug)]
pub enum Attempt {
    /// The attempt was counted, the code matched and is now used.
    Verified {
        id: i64,
    },
    /// The attempt was counted and the code (or the user) did not match.
    Wrong {
        id: i64,
        attempts_remaining: u32,
    },
    /// No code was ever sent for this phone and purpose (or its SMS failed).
    NoCode,
    Used,
    Expired,
    /// Every attempt is spent; the code is dead until it expires or is superseded.
    Exhausted {
        expires_at: SystemTime,
    },
}

// Messages and their status history.

/// How a message left (or did not leave) otpd; `attempts` counts provider requests.
pub enum Delivery {
    Sent {
        provider: &'static str,
        sid: String,
        status: String,
        attempts: u32,
        /// Sent on WhatsApp with channels left: what a later failure report re-sends with.
        fallback: Option<Fallback>,
    },
    Failed {
        provider: &'static str,
        error_code: Option<i64>,
        error_message: String,
        attempts: u32,
    },
    /// Not attempted: the provider's circuit breaker is open.
    CircuitOpen {
        provider: &'static str,
        error_message: String,
    },
    /// A configured test number: no message, the code is usable at once.
    Skipped,
    /// Whether it left could not be decided in time (otpd stopped mid-send and the
    /// provider could not be asked): the code can never verify.
    Unknown {
        provider: &'static str,
        error_message: String,
    },
}

/// The channels left after a WhatsApp send (comma-separated, in order) and the code's
/// locale, kept so that Twilio reporting the message undelivered can re-send it.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub channels: String,
    pub locale: Option<String>,
}

/// A message in the listing of recent ones.
#[derive(Debug)]
pub struct MessageRow {
    pub id: i64,
    pub otp_id: Option<i64>,
    pub created_at: SystemTime,
    pub to: String,
    pub channel: String,
    pub provider: String,
    pub sid: Option<String>,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// Provider requests it took; `None` on rows from before migration 4.
    pub attempts: Option<u32>,
}

/// One message and its status history.
#[derive(Debug)]
pub struct MessageDetail {
    pub id: i64,
    pub otp_id: Option<i64>,
    pub kind: String,
    pub channel: String,
    pub to: String,
    pub user_id: Option<String>,
    pub status: String,
    pub sid: Option<String>,
    pub segments: Option<u32>,
    pub created_at: SystemTime,
    pub send_at: Option<SystemTime>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// An MMS's attachment URLs; empty for a text.
    pub media: Vec<String>,
    pub history: Vec<StatusEvent>,
}

/// One status a message passed through.
#[derive(Debug)]
pub struct StatusEvent {
    pub at: SystemTime,
    pub status: String,
    pub error_code: Option<i64>,
    pub detail: Option<String>,
}

// The outbox.

/// A message to queue; `request_hash` fingerprints what the caller asked for, so a
/// reused idempotency key with a different request is refused instead of replayed.
pub struct NewOutgoing {
    pub to: String,
    pub body: String,
    pub channel: String,
    /// Channels to try next, in order, comma-separated.
    pub fallback: Option<String>,
    pub user_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub send_at: SystemTime,
    pub segments: u32,
    /// The attachments' URLs (an MMS), in order; empty for a text.
    pub media: Vec<String>,
    pub now: SystemTime,
    /// Idempotency keys older than this are forgotten (24 h before `now`).
    pub replay_since: SystemTime,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    New {
        id: i64,
    },
    /// The same key and request within the window: the first message, not a new one.
    Replayed {
        id: i64,
        status: String,
    },
    /// The same key with a different request.
    KeyConflict {
        id: i64,
    },
}

impl Enqueued {
    /// An earlier message with the caller's key: the same request, or a conflict.
    pub fn replay(id: i64, first_hash: &str, request_hash: &str, status: String) -> Self {
        if first_hash == request_hash {
            Enqueued::Replayed { id, status }
        } else {
            Enqueued::KeyConflict { id }
        }
    }
}

/// A message a worker now owns (status `sending`).
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub to: String,
    pub body: String,
    pub channel: String,
    pub fallback: Option<String>,
    pub attempts: u32,
    pub media: Vec<String>,
}

/// How a worker's send ended.
#[derive(Clone)]
pub enum Outcome {
    Sent {
        provider: &'static str,
        sid: String,
    },
    Failed {
        error_code: Option<i64>,
        error_message: String,
    },
    /// Twilio refused the channel: queued again at once on `next`, with fresh attempts.
    Fallback {
        next: String,
        rest: Option<String>,
        reason: String,
    },
    /// Known not sent (refused at connect, or an error answer): back to `queued`, due
    /// again at `at`. `counted: false` gives the attempt back: no request was made
    /// (open circuit).
    Retry {
        at: SystemTime,
        reason: String,
        counted: bool,
    },
    /// The request may have reached the provider: `checking`, asked about at `check_at`
    /// before anything is sent again.
    Unconfirmed {
        reason: String,
        check_at: SystemTime,
    },
}

// Sends that may or may not have reached the provider.

/// An outbox message whose last attempt may have reached the provider.
#[derive(Debug)]
pub struct Unconfirmed {
    pub id: i64,
    pub to: String,
    pub channel: String,
    pub body: String,
    /// When that attempt began: the provider's list is read from there.
    pub attempted_at: SystemTime,
}

/// How a check of an [`Unconfirmed`] message ended.
pub enum Checked {
    /// The provider holds it: sent, with the provider's SID and status.
    Found {
        provider: &'static str,
        sid: String,
        status: String,
    },
    /// The provider answered that it holds no such message: queued, due now.
    NotThere { detail: String },
    /// The provider could not be asked: still `checking`, asked again at `at`.
    Later { detail: String, at: SystemTime },
    /// Not decided in time: `unknown`, never sent again.
    Unknown { detail: String },
}

/// A code an earlier run left `pending`: its message may or may not have left.
#[derive(Debug)]
pub struct PendingCode {
    pub id: i64,
    pub phone: String,
    pub purpose: String,
    pub code_hash: Vec<u8>,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
}

// The report.

/// Sent codes of one (destination prefix, purpose, channel, provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGroup {
    /// The first three digits after the `+`: the country code is in there.
    pub prefix: String,
    pub purpose: String,
    pub channel: String,
    pub provider: String,
    pub sent: i64,
    pub verified: i64,
}

/// Messages a provider took, by destination prefix (up to five digits) and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billed {
    pub prefix: String,
    pub channel: String,
    pub messages: i64,
    pub segments: i64,
}

#[derive(Debug, Default)]
pub struct ReportRows {
    pub codes: Vec<CodeGroup>,
    pub median_seconds_to_verify: Option<f64>,
    /// (provider, its error code, messages).
    pub failures: Vec<(String, Option<i64>, i64)>,
    /// (rule, blocked sends).
    pub guard_blocks: Vec<(String, i64)>,
    pub billed: Vec<Billed>,
}

// Instances sharing a store.

/// An otpd that shares the store, as its last heartbeat left it.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub name: String,
    pub last_seen: SystemTime,
    pub version: String,
    /// A fingerprint of the settings that must match across hosts.
    pub settings: String,
}

// Shared limits.

/// One shared limit to take a cell from: "burst per burst × interval", as governor's
/// quota, under a key every host spells the same (`sp:+34600111222`, `g`).
#[derive(Debug, Clone)]
pub struct LimitCheck {
    pub key: String,
    pub interval: std::time::Duration,
    pub burst: u32,
}

/// Times are stored as milliseconds since the epoch by every backend, so the mapping
/// of a row is shared.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
