//! CreateCall (`POST .../Calls.json`), for voice codes: the form must be form-encoded and
//! hold only CreateCall fields (else 20001, as for messages); `To` (21201) and `From`
//! (21213) E.164 numbers (21211, 21212; the magic numbers of [`super::magic`] that apply:
//! an invalid `To` or `From`, and an unverified `From`, 21210); what to do when the call
//! is answered, one of `Url`, `Twiml` or `ApplicationSid` (21205), a `Url` being an
//! absolute http(s) URL (21205). A 201 answers with the `api.v2010.account.call`
//! resource, `queued`. The mock places no call: it records it.

use hyper::StatusCode;
use serde_json::json;

use super::rules::{is_e164, magic};
use super::{API_VERSION, Created, Outcome, RecordedRequest, Shared, hex32, rfc2822};

/// The form fields of CreateCall (`CreateCallRequest`) in the spec, in spec order.
pub const CREATE_CALL_FIELDS: [&str; 36] = [
    "To",
    "From",
    "Method",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackEvent",
    "StatusCallbackMethod",
    "SendDigits",
    "Timeout",
    "Record",
    "RecordingChannels",
    "RecordingStatusCallback",
    "RecordingStatusCallbackMethod",
    "SipAuthUsername",
    "SipAuthPassword",
    "MachineDetection",
    "MachineDetectionTimeout",
    "RecordingStatusCallbackEvent",
    "Trim",
    "CallerId",
    "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "Byoc",
    "CallReason",
    "CallToken",
    "RecordingTrack",
    "TimeLimit",
    "ClientNotificationUrl",
    "Url",
    "Twiml",
    "ApplicationSid",
];

/// A call the mock created (answered 201).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    /// `CA…`.
    pub sid: String,
    pub to: String,
    pub from: String,
    /// `Url` as sent, if any.
    pub url: Option<String>,
    /// `Twiml` as sent, if any: what the callee hears.
    pub twiml: Option<String>,
    /// `StatusCallback` as sent, if any.
    pub status_callback: Option<String>,
}

fn is_http_url(s: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|scheme| s.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()))
}

pub(super) fn create(shared: &Shared, req: &RecordedRequest, is_form: bool) -> Outcome {
    if !is_form {
        return Outcome::bad_request(
            21201,
            "No 'To' number is specified (mock Twilio: Content-Type must be \
             application/x-www-form-urlencoded)",
        );
    }
    if let Some((name, _)) = req
        .form
        .iter()
        .find(|(name, _)| !CREATE_CALL_FIELDS.contains(&name.as_str()))
    {
        return Outcome::bad_request(
            20001,
            format!(
                "Unknown parameters: {name} (mock Twilio: CreateCall fields are case-sensitive)"
            ),
        );
    }
    let field = |name: &str| req.field(name).filter(|v| !v.is_empty());
    let Some(to) = field("To") else {
        return Outcome::bad_request(21201, "No 'To' number is specified");
    };
    let Some(from) = field("From") else {
        return Outcome::bad_request(21213, "No 'From' number is specified");
    };
    let (url, twiml) = (field("Url"), field("Twiml"));
    if url.is_none() && twiml.is_none() && field("ApplicationSid").is_none() {
        return Outcome::bad_request(
            21205,
            "A 'Url', 'Twiml' or 'ApplicationSid' parameter is required.",
        );
    }
    if let Some(url) = url.filter(|url| !is_http_url(url)) {
        return Outcome::bad_request(21205, format!("Url is not a valid URL: {url}"));
    }
    if to == magic::TO_INVALID || !is_e164(to) {
        return Outcome::bad_request(
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if from == magic::FROM_INVALID || !is_e164(from) {
        return Outcome::bad_request(
            21212,
            format!("The 'From' number {from} is not a valid phone number."),
        );
    }
    if from == magic::FROM_NOT_OWNED {
        return Outcome::bad_request(
            21210,
            format!(
                "The source phone number provided, {from}, is not yet verified for your account."
            ),
        );
    }
    created(shared, req, to, from)
}

fn created(shared: &Shared, req: &RecordedRequest, to: &str, from: &str) -> Outcome {
    let account = &shared.opts.account_sid;
    let sid = format!("CA{}", hex32());
    let now = rfc2822(jiff::Timestamp::now());
    let base = format!("/{API_VERSION}/Accounts/{account}/Calls/{sid}");
    let resource = json!({
        "sid": sid,
        "date_created": now,
        "date_updated": now,
        "parent_call_sid": null,
        "account_sid": account,
        "to": to,
        "to_formatted": to,
        "from": from,
        "from_formatted": from,
        "phone_number_sid": format!("PN{}", hex32()),
        "status": "queued",
        "start_time": null,
        "end_time": null,
        "duration": null,
        "price": null,
        "price_unit": "USD",
        "direction": "outbound-api",
        "answered_by": null,
        "api_version": API_VERSION,
        "forwarded_from": null,
        "group_sid": null,
        "caller_name": null,
        "queue_time": "0",
        "trunk_sid": null,
        "uri": format!("{base}.json"),
        "subresource_uris": {
            "notifications": format!("{base}/Notifications.json"),
            "recordings": format!("{base}/Recordings.json"),
            "events": format!("{base}/Events.json"),
        },
    });
    let call = RecordedCall {
        sid,
        to: to.to_owned(),
        from: from.to_owned(),
        url: req.field("Url").map(str::to_owned),
        twiml: req.field("Twiml").map(str::to_owned),
        status_callback: req.field("StatusCallback").map(str::to_owned),
    };
    Outcome::ok(StatusCode::CREATED, resource, Some(Created::Call(call)))
}
