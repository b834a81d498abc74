//! CreateMessage (`POST .../Messages.json`): Twilio's checks in its order and the
//! `api.v2010.account.message` resource it answers with. The order: the body must be
//! form-encoded (else 21604, Twilio then sees no `To`); every field a CreateMessage field
//! (exact case, else 20001: Twilio only warns, the mock refuses so that a typo in what
//! otpd sends fails loudly); `To` (21604), `From` or `MessagingServiceSid` (21603),
//! `Body`, `MediaUrl` or `ContentSid` (21602), empty values counting as missing; then the
//! magic numbers and formats ([`super::rules`]), one channel for both addresses (21910),
//! a registered WhatsApp sender (63007), `To` != `From` (21266), at most 1600 characters
//! (21617). Unlike Twilio with test credentials, any valid `From` is accepted (as with live
//! credentials and an owned number), and `MessagingServiceSid` is supported.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::rules::{channel_of, is_phone_address, is_sid, is_valid_sender, magic, segments};
use super::{API_VERSION, Created, Outcome, RecordedRequest, Shared, hex32, rfc2822};

/// The form fields of `CreateMessage` (`CreateMessageRequest`) in the spec, in spec order.
/// Names are PascalCase and matched case-sensitively. `MediaUrl` and `PersistentAction` are
/// arrays (the field may repeat); all others are scalars.
pub const CREATE_MESSAGE_FIELDS: [&str; 25] = [
    "To",
    "StatusCallback",
    "ApplicationSid",
    "MaxPrice",
    "ProvideFeedback",
    "Attempt",
    "ValidityPeriod",
    "ForceDelivery",
    "ContentRetention",
    "AddressRetention",
    "SmartEncoded",
    "PersistentAction",
    "TrafficType",
    "ShortenUrls",
    "ScheduleType",
    "SendAt",
    "SendAsMms",
    "ContentVariables",
    "RiskCheck",
    "From",
    "FallbackFrom",
    "MessagingServiceSid",
    "Body",
    "MediaUrl",
    "ContentSid",
];

/// The properties of the `api.v2010.account.message` schema (snake_case); the mock's 201
/// body has exactly these keys.
pub const MESSAGE_PROPERTIES: [&str; 20] = [
    "account_sid",
    "api_version",
    "body",
    "date_created",
    "date_sent",
    "date_updated",
    "direction",
    "error_code",
    "error_message",
    "from",
    "messaging_service_sid",
    "num_media",
    "num_segments",
    "price",
    "price_unit",
    "sid",
    "status",
    "subresource_uris",
    "to",
    "uri",
];

/// A message the mock created (answered 201).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMessage {
    /// `SM…` (or `MM…` when media was attached).
    pub sid: String,
    /// `To` as sent.
    pub to: String,
    /// `From` as sent, if any.
    pub from: Option<String>,
    /// `MessagingServiceSid` as sent, if any.
    pub messaging_service_sid: Option<String>,
    /// `Body` as sent (empty when only media/content was given).
    pub body: String,
    /// Status answered: `"queued"`, or `"accepted"` with a `MessagingServiceSid`.
    pub status: String,
}

/// A created message as the mock keeps it, for ListMessage.
pub(super) struct Stored {
    pub(super) record: RecordedMessage,
    pub(super) sent_at: jiff::Timestamp,
    resource: Value,
}

impl Stored {
    /// The resource as Twilio shows it once sent: the mock "sends" at creation.
    pub(super) fn listed(&self) -> Value {
        let mut resource = self.resource.clone();
        let sent = rfc2822(self.sent_at);
        resource["status"] = "sent".into();
        resource["date_sent"] = sent.clone().into();
        resource["date_updated"] = sent.into();
        resource
    }
}

/// CreateMessage: the checks in Twilio's order, then a 201 with the message resource.
pub(super) fn create(shared: &Shared, req: &RecordedRequest, is_form: bool) -> Outcome {
    if !is_form {
        // Twilio only reads form-encoded parameters; with any other body it sees no `To`
        // and answers 21604. The mock uses that code and says why in the message.
        return Outcome::bad_request(
            21604,
            format!(
                "A 'To' phone number is required. (mock Twilio: Content-Type must be \
                 application/x-www-form-urlencoded, got {})",
                req.content_type.as_deref().unwrap_or("none")
            ),
        );
    }
    // Twilio merely warns (20001 "Unknown parameters") and ignores unknown fields; the mock
    // rejects them with that code so typos in what the daemon sends fail loudly.
    let mut unknown: Vec<&str> = Vec::new();
    for (name, _) in &req.form {
        if !CREATE_MESSAGE_FIELDS.contains(&name.as_str()) && !unknown.contains(&name.as_str()) {
            unknown.push(name);
        }
    }
    if !unknown.is_empty() {
        return Outcome::bad_request(
            20001,
            format!(
                "Unknown parameters: {} (mock Twilio: CreateMessage fields are case-sensitive: {})",
                unknown.join(", "),
                CREATE_MESSAGE_FIELDS.join(", ")
            ),
        );
    }

    let field = |name: &str| req.field(name).filter(|v| !v.is_empty());
    let media: Vec<&str> = req
        .fields("MediaUrl")
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    let Some(to) = field("To") else {
        return Outcome::bad_request(21604, "A 'To' phone number is required.");
    };
    let from = field("From");
    let service = field("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return Outcome::bad_request(21603, "A 'From' phone number is required.");
    }
    let body = field("Body");
    if body.is_none() && media.is_empty() && field("ContentSid").is_none() {
        return Outcome::bad_request(21602, "Message body is required.");
    }

    if let Some(from) = from {
        match from {
            magic::FROM_INVALID => return invalid_from(from),
            magic::FROM_NOT_OWNED => {
                return Outcome::bad_request(
                    21606,
                    format!(
                        "The 'From' phone number provided ({from}) is not a valid \
                         message-capable Twilio phone number for this destination/account."
                    ),
                );
            }
            magic::FROM_QUEUE_FULL => {
                return Outcome::bad_request(
                    21611,
                    "This 'From' number has exceeded the maximum number of queued messages",
                );
            }
            _ if !is_valid_sender(from) => return invalid_from(from),
            _ => {}
        }
    }
    // Both addresses on one channel (21910), and a WhatsApp From must be one of the
    // account's WhatsApp senders (63007).
    if let Some(from) = from {
        if channel_of(from) != channel_of(to) {
            return Outcome::bad_request(
                21910,
                "Invalid From and To pair. From and To should be of the same channel",
            );
        }
        if let Some(number) = from.strip_prefix("whatsapp:")
            && !shared.opts.whatsapp_senders.iter().any(|s| s == number)
        {
            return Outcome::bad_request(
                63007,
                "Twilio could not find a Channel with the specified From address",
            );
        }
    }
    if let Some(sid) = service.filter(|sid| !is_sid(sid, "MG")) {
        return Outcome::bad_request(
            21701,
            format!("The Messaging Service Sid {sid} is invalid."),
        );
    }
    match to {
        magic::TO_INVALID => return invalid_to(to),
        magic::TO_UNROUTABLE => {
            return Outcome::bad_request(
                21612,
                format!(
                    "The 'To' phone number: {to}, is not currently reachable using the \
                     'From' phone number: {} via SMS.",
                    from.unwrap_or("(messaging service)")
                ),
            );
        }
        magic::TO_NO_INTERNATIONAL => {
            return Outcome::bad_request(
                21408,
                format!(
                    "Permission to send an SMS has not been enabled for the region indicated \
                     by the 'To' number: {to}."
                ),
            );
        }
        magic::TO_UNSUBSCRIBED => {
            return Outcome::bad_request(21610, "Attempt to send to unsubscribed recipient");
        }
        magic::TO_NOT_MOBILE => {
            return Outcome::bad_request(
                21614,
                format!("'To' number {to} is not a valid mobile number"),
            );
        }
        _ if !is_phone_address(to) => return invalid_to(to),
        _ => {}
    }
    if from == Some(to) {
        return Outcome::bad_request(21266, "'To' and 'From' number cannot be the same");
    }
    let body = body.unwrap_or_default();
    if body.chars().count() > 1600 {
        return Outcome::bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }

    created(shared, to, from, service, body, media.len())
}

fn invalid_to(to: &str) -> Outcome {
    Outcome::bad_request(
        21211,
        format!("The 'To' number {to} is not a valid phone number."),
    )
}

fn invalid_from(from: &str) -> Outcome {
    Outcome::bad_request(
        21212,
        format!(
            "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric \
             sender ID."
        ),
    )
}

fn created(
    shared: &Shared,
    to: &str,
    from: Option<&str>,
    service: Option<&str>,
    body: &str,
    num_media: usize,
) -> Outcome {
    let account = &shared.opts.account_sid;
    let prefix = if num_media > 0 { "MM" } else { "SM" };
    let sid = format!("{prefix}{}", hex32());
    // The status enum (message_enum_status) has "accepted" for Messaging Service sends.
    let status = if service.is_some() {
        "accepted"
    } else {
        "queued"
    };
    // Spec: "For messages sent via a Messaging Service, num_segments is initially 0, since a
    // sender hasn't yet been assigned."
    let num_segments = if service.is_some() && from.is_none() {
        0
    } else {
        segments(body)
    };
    let now = jiff::Timestamp::now();
    let uri_base = format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}");
    let resource = json!({
        "account_sid": account,
        "api_version": API_VERSION,
        "body": body,
        "date_created": rfc2822(now),
        "date_sent": null,
        "date_updated": rfc2822(now),
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": num_media.to_string(),
        "num_segments": num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{uri_base}/Media.json") },
        "to": to,
        "uri": format!("{uri_base}.json"),
    });
    let record = RecordedMessage {
        sid,
        to: to.to_owned(),
        from: from.map(str::to_owned),
        messaging_service_sid: service.map(str::to_owned),
        body: body.to_owned(),
        status: status.to_owned(),
    };
    let stored = Stored {
        record,
        sent_at: now,
        resource: resource.clone(),
    };
    Outcome::ok(
        StatusCode::CREATED,
        resource,
        Some(Created::Message(stored)),
    )
}
