//! Codes an earlier run left `pending`: otpd stopped between storing the code and
//! recording how its SMS went, so the SMS may or may not have left. Nothing can be
//! sent again (only the code's MAC is kept), but the provider can be asked: its list
//! of what it sent to the number since the code was made is searched for a body whose
//! digits make this code's MAC. Found, the code is sent and verifies like any other;
//! the provider has none, it failed; the provider cannot be asked, it is asked again
//! on the next pass, and once the code has expired, or `messaging.unknown_after` has
//! passed, it is recorded unknown (failed for good).

use std::time::SystemTime;

use super::code::Guess;
use super::{OtpError, OtpService};
use crate::sender::Listed;
use crate::store::{Delivery, PendingCode};
use crate::types::{Caller, Channel, PhoneNumber};

impl OtpService {
    /// The codes an earlier run left pending (created before this one `started`).
    pub async fn interrupted_codes(
        &self,
        started: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<PendingCode>, OtpError> {
        Ok(self.store.pending_codes(started, now).await?)
    }

    /// Tries to decide one such code; false: the provider could not be asked yet.
    pub async fn recover_code(
        &self,
        code: &PendingCode,
        now: SystemTime,
    ) -> Result<bool, OtpError> {
        let provider = self.sender.provider().unwrap_or("none");
        let Ok(phone) = PhoneNumber::parse(&code.phone) else {
            return Ok(true);
        };
        let mut found = None;
        let mut not_asked = None;
        for channel in Channel::ALL
            .into_iter()
            .filter(|c| self.sender.supports(*c))
        {
            match self
                .sender
                .sent_since(&phone, channel, code.created_at)
                .await
            {
                Ok(listed) => {
                    let mut ours = self.carrying(code, listed);
                    let known = self
                        .store
                        .known_sids(ours.iter().map(|m| m.sid.clone()).collect())
                        .await?;
                    ours.retain(|m| !known.contains(&m.sid));
                    if let Some(message) = ours.into_iter().next() {
                        found = Some((channel, message));
                        break;
                    }
                }
                Err(e) => not_asked = Some(e.to_string()),
            }
        }
        let id = code.id;
        let masked = phone.masked();
        let (channel, delivery) = match (found, not_asked) {
            (Some((channel, message)), _) => {
                log::info!(otp_id = id, phone:% = masked, twilio_sid = message.sid.as_str(); "otp {id} for {masked}: its SMS left before otpd stopped (sid {}); it can be verified", message.sid);
                let delivery = Delivery::Sent {
                    provider,
                    sid: message.sid,
                    status: message.status,
                    attempts: 1,
                    fallback: None,
                };
                (channel, delivery)
            }
            (None, None) => {
                log::info!(otp_id = id, phone:% = masked; "otp {id} for {masked}: its SMS never left before otpd stopped; it can never verify");
                let delivery = Delivery::Failed {
                    provider,
                    error_code: None,
                    error_message:
                        "otpd stopped before the message left; the provider has no such message"
                            .to_owned(),
                    attempts: 0,
                };
                (Channel::Sms, delivery)
            }
            (None, Some(reason)) => {
                let within = self.unknown_after;
                if now < code.expires_at.min(code.created_at + within) {
                    log::debug!("otp {id} for {masked}: {reason}; asking again later");
                    return Ok(false);
                }
                log::warn!(otp_id = id, phone:% = masked; "otp {id} for {masked}: could not learn whether its SMS left ({reason}); it can never verify");
                let error_message = format!(
                    "otpd stopped while sending and could not learn in time whether the message left ({reason})"
                );
                (
                    Channel::Sms,
                    Delivery::Unknown {
                        provider,
                        error_message,
                    },
                )
            }
        };
        self.store
            .record_delivery(
                id,
                code.phone.clone(),
                channel,
                delivery,
                now,
                this_process(),
            )
            .await?;
        Ok(true)
    }

    /// The listed messages whose body holds this code (recognised by its MAC: the
    /// store keeps no code), oldest first.
    fn carrying(&self, code: &PendingCode, mut listed: Vec<Listed>) -> Vec<Listed> {
        let length = self.otp.length;
        listed.reverse();
        listed.retain(|m| {
            // Every run of `length` digits in the body is a candidate.
            let digits: Vec<char> = m.body.chars().collect();
            digits
                .split(|c| !c.is_ascii_digit())
                .filter(|run| run.len() >= length)
                .flat_map(|run| run.windows(length))
                .any(|window| {
                    let candidate: String = window.iter().collect();
                    Guess::new(&self.key, &code.phone, &code.purpose, &candidate)
                        .matches(&code.code_hash)
                })
        });
        listed
    }
}

/// The audit trail's "who" for what otpd decides by itself.
pub(super) fn this_process() -> Caller {
    Caller {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        pid: i32::try_from(std::process::id()).ok(),
    }
}
