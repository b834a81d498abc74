//! send-otp, verify-otp and test-twilio: the request bodies as callers send them, parsed
//! into `types` here at the edge, handed to the OTP service, and its answers as JSON.
//!
//! Knows the service's request and answer types, not how codes are made, stored or sent;
//! errors go back as [`Failure`] for error.rs to turn into statuses.

use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::body::{UserIdField, parse_json};
use super::error::Failure;
use super::{Answer, Api, json_response, rfc3339};
use crate::otp::{SendOtp, VerifyOtp};
use crate::types::{Caller, Channel, OtpCode, PhoneNumber, Purpose, Region};

#[derive(Deserialize)]
struct SendOtpBody {
    phone_number: String,
    purpose: String,
    #[serde(default)]
    user_id: Option<UserIdField>,
    #[serde(default)]
    locale: Option<String>,
    /// "sms" or "whatsapp"; absent: `messaging.channels` in order.
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
struct VerifyOtpBody {
    phone_number: String,
    otp_code: String,
    purpose: String,
    #[serde(default)]
    user_id: Option<UserIdField>,
}

#[derive(Serialize)]
struct Sent {
    message: &'static str,
    otp_id: i64,
    expires_at: String,
    channel: &'static str,
}

#[derive(Serialize)]
struct Verified {
    message: &'static str,
    verified: bool,
    otp_id: i64,
}

#[derive(Serialize)]
struct TestSent {
    message: String,
}

pub(super) async fn send(
    api: &Api,
    req: Request<Incoming>,
    caller: Caller,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let bytes = api.body_bytes(req).await?;
    let request = send_request(&bytes, caller, &api.purposes, api.default_region)?;
    let issued = api.service.send_otp(request, now).await?;
    let sent = Sent {
        message: "OTP sent successfully",
        otp_id: issued.otp_id,
        expires_at: rfc3339(issued.expires_at),
        channel: issued.channel.as_str(),
    };
    Ok(json_response(StatusCode::OK, &sent))
}

pub(super) async fn verify(
    api: &Api,
    req: Request<Incoming>,
    caller: Caller,
    now: SystemTime,
) -> Result<Answer, Failure> {
    let bytes = api.body_bytes(req).await?;
    let request = verify_request(&bytes, caller, &api.purposes, api.default_region)?;
    let otp_id = api.service.verify_otp(request, now).await?;
    let verified = Verified {
        message: "OTP verified successfully",
        verified: true,
        otp_id,
    };
    Ok(json_response(StatusCode::OK, &verified))
}

pub(super) async fn test_twilio(api: &Api, now: SystemTime) -> Result<Answer, Failure> {
    let sid = api.service.send_test_message(now).await?;
    let sent = TestSent {
        message: format!("Test message sent successfully with SID: {sid}"),
    };
    Ok(json_response(StatusCode::OK, &sent))
}

// Body bytes to typed requests: pure, so the property tests drive exactly this path.

fn send_request(
    bytes: &[u8],
    caller: Caller,
    purposes: &[String],
    region: Option<Region>,
) -> Result<SendOtp, Failure> {
    let body: SendOtpBody = parse_json(bytes)?;
    Ok(SendOtp {
        caller,
        phone: PhoneNumber::parse_in(&body.phone_number, region)?,
        purpose: Purpose::parse(&body.purpose, purposes)?,
        user_id: UserIdField::parse(body.user_id)?,
        locale: body.locale,
        channel: body.channel.as_deref().map(Channel::parse).transpose()?,
    })
}

fn verify_request(
    bytes: &[u8],
    caller: Caller,
    purposes: &[String],
    region: Option<Region>,
) -> Result<VerifyOtp, Failure> {
    let body: VerifyOtpBody = parse_json(bytes)?;
    Ok(VerifyOtp {
        caller,
        phone: PhoneNumber::parse_in(&body.phone_number, region)?,
        code: OtpCode::parse(&body.otp_code)?,
        purpose: Purpose::parse(&body.purpose, purposes)?,
        user_id: UserIdField::parse(body.user_id)?,
    })
}

/// The property tests' view of the request path (src/properties.rs): the status and
/// stable code a body gets, or the typed request it becomes.
#[cfg(test)]
pub(crate) mod parse {
    use super::*;

    pub(crate) type Outcome<T> = Result<T, (StatusCode, &'static str)>;

    const CALLER: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: None,
    };

    fn outcome<T>(r: Result<T, Failure>) -> Outcome<T> {
        r.map_err(|f| {
            let d = f.describe();
            (d.status, d.code)
        })
    }

    pub(crate) fn send(
        bytes: &[u8],
        purposes: &[String],
        region: Option<Region>,
    ) -> Outcome<SendOtp> {
        outcome(send_request(bytes, CALLER, purposes, region))
    }

    pub(crate) fn verify(
        bytes: &[u8],
        purposes: &[String],
        region: Option<Region>,
    ) -> Outcome<VerifyOtp> {
        outcome(verify_request(bytes, CALLER, purposes, region))
    }
}
