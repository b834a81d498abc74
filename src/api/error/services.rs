//! Each service's own errors, arm by arm: the codes that only verification (`OtpError`)
//! or only plain messages (`MessagingError`) can produce. The causes both share are in
//! `shared.rs`, called from here, so a later shared service error drops these calls and
//! nothing else.

use serde_json::json;

use super::shared::{
    channel_not_configured, guard_refused, provider_not_configured, rate_limited, send_failed,
    store_failed,
};
use super::{Described, S};
use crate::messaging::MessagingError;
use crate::otp::OtpError;
use crate::templates::TemplateError;

pub(super) fn otp_failed(e: &OtpError) -> Described {
    let not_verified = |code, error: &str, details: &str| {
        Described::new(S::BAD_REQUEST, code, error)
            .details(details)
            .extra(json!({"verified": false}))
    };
    match e {
        OtpError::WrongCode { attempts_remaining } => {
            let details = match attempts_remaining {
                0 => "no attempts remain; request a new code".to_owned(),
                1 => "1 attempt remaining".to_owned(),
                n => format!("{n} attempts remaining"),
            };
            not_verified("invalid_otp", "Invalid OTP code", &details)
                .extra(json!({"attempts_remaining": attempts_remaining}))
        }
        OtpError::Expired => {
            not_verified("otp_expired", "OTP code has expired", "request a new code")
        }
        OtpError::AlreadyUsed => not_verified(
            "otp_already_used",
            "OTP code has already been used",
            "request a new code",
        ),
        OtpError::NoCode => not_verified(
            "otp_not_found",
            "No OTP code to verify",
            "no code was sent for this phone number and purpose",
        ),
        OtpError::AttemptsExhausted { retry_after } => Described::new(
            S::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "Too many wrong attempts for this code",
        )
        .details("request a new code")
        .extra(json!({"verified": false}))
        .retry_after(*retry_after),
        OtpError::NoTestNumber => Described::new(
            S::SERVICE_UNAVAILABLE,
            "test_phone_not_configured",
            "No test phone number is configured",
        )
        .details("set twilio.test_phone_number or TEST_PHONE_NUMBER"),
        OtpError::RateLimited(limited) => rate_limited(limited),
        OtpError::Guard(g) => guard_refused(g),
        OtpError::Send(e) => send_failed(e),
        OtpError::Store(e) => store_failed(e),
    }
}

pub(super) fn messaging_failed(e: &MessagingError) -> Described {
    match e {
        MessagingError::Body(why) => {
            Described::new(S::BAD_REQUEST, "invalid_body", "Invalid message body")
                .details(why.clone())
        }
        MessagingError::BodyTooLong(segments) => {
            Described::new(S::BAD_REQUEST, "body_too_long", "Message body is too long")
                .details(format!(
                    "{} characters; Twilio's limit is {}",
                    segments.chars,
                    crate::segments::MAX_BODY_CHARS
                ))
                .extra(json!({
                    "characters": segments.chars,
                    "segments": segments.count,
                    "encoding": segments.encoding.as_str(),
                }))
        }
        MessagingError::IdempotencyKey(why) => Described::new(
            S::BAD_REQUEST,
            "invalid_idempotency_key",
            "Invalid idempotency_key",
        )
        .details(*why),
        MessagingError::Media(why) => {
            Described::new(S::BAD_REQUEST, "invalid_media_url", "Invalid media_urls")
                .details(why.clone())
        }
        MessagingError::SendAt(why) => {
            Described::new(S::BAD_REQUEST, "invalid_send_at", "Invalid send_at")
                .details(why.clone())
        }
        MessagingError::KeyConflict { message_id } => Described::new(
            S::CONFLICT,
            "idempotency_key_reused",
            "This idempotency_key was used for a different request",
        )
        .details("use a new key for a new message")
        .extra(json!({"message_id": message_id})),
        MessagingError::NotFound(id) => {
            Described::new(S::NOT_FOUND, "message_not_found", "No such message")
                .details(format!("no message has id {id}"))
        }
        MessagingError::UnknownSid(sid) => {
            Described::new(S::NOT_FOUND, "message_not_found", "No such message")
                .details(format!("no message has SID {sid:.40}"))
        }
        MessagingError::CallbacksNotConfigured => Described::new(
            S::SERVICE_UNAVAILABLE,
            "callbacks_not_configured",
            "Status callbacks are not configured",
        )
        .details("set twilio.status_callback_url and twilio.auth_token"),
        MessagingError::BadSignature => Described::new(
            S::FORBIDDEN,
            "invalid_signature",
            "X-Twilio-Signature is missing or wrong",
        )
        .details("the callback was refused and audited"),
        MessagingError::BadCallback => Described::new(
            S::BAD_REQUEST,
            "invalid_callback",
            "Status callback lacks MessageSid or MessageStatus",
        ),
        MessagingError::BodyOrTemplate => Described::new(
            S::BAD_REQUEST,
            "invalid_request",
            "Give either body or template",
        )
        .details("send-sms takes a body, or a template with its variables, not both"),
        MessagingError::Template(e) => template_failed(e),
        MessagingError::ChannelNotConfigured(channel) => channel_not_configured(*channel),
        MessagingError::CodesOnly(channel) => Described::new(
            S::BAD_REQUEST,
            "invalid_channel",
            "This channel carries codes only",
        )
        .details(format!(
            "{channel} says a code; send-sms takes \"sms\" or \"whatsapp\""
        )),
        MessagingError::NotConfigured => provider_not_configured(),
        MessagingError::RateLimited(limited) => rate_limited(limited),
        MessagingError::Guard(g) => guard_refused(g),
        MessagingError::Store(e) => store_failed(e),
    }
}

fn template_failed(e: &TemplateError) -> Described {
    let code = match e {
        TemplateError::UnknownTemplate(_) => "unknown_template",
        TemplateError::MissingVariable(_) => "template_variable_missing",
        TemplateError::UnknownVariable(_) => "template_variable_unknown",
        // Texts are checked at load; these cannot come from a request.
        TemplateError::Unclosed | TemplateError::Unopened | TemplateError::BadName(_) => {
            "invalid_template"
        }
    };
    Described::new(S::BAD_REQUEST, code, "Cannot render the template").details(e.to_string())
}
