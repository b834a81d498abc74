//! Issuing a code: test numbers, channel choice, the caller's limits, the cost guard,
//! the stored MAC, then the message with fallback across channels, each try recorded.
//! Also the re-issue of a code whose WhatsApp message Twilio later reported lost, and
//! the operator's test message, which goes the same way without a code.

use std::time::SystemTime;

use hmac::Mac;

use super::code::generate_code;
use super::{Issued, OtpError, OtpService, SendOtp, TEST_MESSAGE};
use crate::checks::{self, Check, Subject};
use crate::config::{OtpSlot, TestNumber};
use crate::sender::SendError;
use crate::store::{CodeResend, Delivery, Fallback, NewCode};
use crate::types::{Channel, Channels, PhoneNumber, Purpose, UserId};

impl OtpService {
    pub async fn send_otp(&self, req: SendOtp, now: SystemTime) -> Result<Issued, OtpError> {
        let test = self
            .otp
            .test_numbers
            .iter()
            .find(|t| t.matches(&req.phone, now));
        if test.is_none() && self.sender.provider().is_none() {
            return Err(SendError::NotConfigured.into());
        }
        let channels = match test {
            // A test number is sent nothing, on whatever channel it asks for.
            Some(_) => Channels::one(req.channel.unwrap_or(self.channels.first())),
            None => self
                .sender
                .channels(req.channel, &self.channels)
                .map_err(SendError::ChannelNotConfigured)?,
        };
        // Test numbers too: a script hammering one must still be told to slow down.
        let user = req.user_id.as_ref().map(UserId::as_str);
        self.limiter.check_send(req.phone.as_str(), user)?;
        let shared = self.limiter.shared_send(req.phone.as_str(), user);
        checks::shared_limits(&self.store, &self.limiter, shared).await??;
        if let Some(test) = test {
            return self
                .issue_test_code(&req, test, channels.first(), now)
                .await;
        }
        // The cost guard, after the caller's own limits (a flood stops there) and before
        // anything is stored or sent.
        let country = match self.guard.is_active() {
            true => Some(self.guard_send(&req, now).await?),
            false => None,
        };
        let code = generate_code(self.otp.length);
        let (otp_id, expires_at) = self.issue(&req, &code, false, country, now).await?;
        let channel = self.deliver(&req, otp_id, channels, &code, now).await?;
        Ok(Issued {
            otp_id,
            expires_at,
            channel,
        })
    }

    /// Twilio reported the code's WhatsApp message undelivered (`messaging::status`):
    /// the code the phone never saw gets a successor under the same id, attempts and
    /// expiry (the store keeps no code to send again), sent on the remaining channels.
    /// No limit or guard budget is spent: this is the accepted send, finishing. Its
    /// outcome is the code's history; there is no caller to answer.
    pub async fn resend_code(&self, code: CodeResend, now: SystemTime) {
        let id = code.otp_id;
        let (Ok(phone), Ok(purpose), Some(channels)) = (
            PhoneNumber::parse(&code.phone),
            Purpose::parse(&code.purpose, &self.otp.purposes),
            Channels::from_stored(&code.channels),
        ) else {
            log::warn!(otp_id = id; "otp {id}: its WhatsApp message will not arrive, and it cannot be sent again (its purpose or channels are no longer configured)");
            return;
        };
        let req = SendOtp {
            caller: super::recover::this_process(),
            phone,
            purpose,
            user_id: code.user_id.as_deref().and_then(|u| UserId::parse(u).ok()),
            locale: code.locale,
            channel: None,
        };
        let fresh = generate_code(self.otp.length);
        let hash = self.mac(&req, &fresh);
        match self
            .store
            .replace_code(id, hash, code.reason, now, req.caller)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                log::error!(otp_id = id; "otp {id}: not sent again: {e}");
                return;
            }
        }
        if let Err(e) = self.deliver(&req, id, channels, &fresh, now).await {
            log::warn!(otp_id = id; "otp {id}: not sent again on the next channel: {e}");
        }
    }

    /// A test number gets its fixed code and no SMS; the cost guard does not apply
    /// (nothing is sent, nothing costs).
    async fn issue_test_code(
        &self,
        req: &SendOtp,
        test: &TestNumber,
        channel: Channel,
        now: SystemTime,
    ) -> Result<Issued, OtpError> {
        let (otp_id, expires_at) = self.issue(req, &test.code, true, None, now).await?;
        let to = req.phone.as_str().to_owned();
        self.store
            .record_delivery(otp_id, to, channel, Delivery::Skipped, now, req.caller)
            .await?;
        let (masked, purpose) = (req.phone.masked(), req.purpose.as_str());
        log::info!(otp_id = otp_id, purpose = purpose, phone:% = masked; "otp {otp_id} for {masked} ({purpose}): test number, no SMS sent");
        self.events.test_number.increment(1);
        Ok(Issued {
            otp_id,
            expires_at,
            channel,
        })
    }

    /// Stores the code's MAC (superseding the live code for the same phone and purpose).
    async fn issue(
        &self,
        req: &SendOtp,
        code: &str,
        test_number: bool,
        country: Option<String>,
        now: SystemTime,
    ) -> Result<(i64, SystemTime), OtpError> {
        let expires_at = now + self.otp.ttl;
        let code_hash = self.mac(req, code);
        let otp_id = self
            .store
            .insert_code(NewCode {
                caller: req.caller,
                phone: req.phone.as_str().to_owned(),
                purpose: req.purpose.as_str().to_owned(),
                user_id: req.user_id.as_ref().map(|u| u.as_str().to_owned()),
                code_hash,
                max_attempts: self.otp.max_attempts,
                test_number,
                created_at: now,
                expires_at,
                country,
            })
            .await?;
        Ok((otp_id, expires_at))
    }

    /// The code's keyed hash, bound to its phone and purpose: all the store ever sees.
    fn mac(&self, req: &SendOtp, code: &str) -> Vec<u8> {
        self.key
            .mac(req.phone.as_str(), req.purpose.as_str(), code)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// The message in the request's locale; a call says the code digit by digit.
    fn text(&self, req: &SendOtp, code: &str, channel: Channel) -> String {
        let minutes = self.otp.ttl.as_secs().div_ceil(60).to_string();
        let spoken: String;
        let code = match channel {
            Channel::Voice => {
                spoken = code
                    .chars()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(", ");
                spoken.as_str()
            }
            _ => code,
        };
        self.otp
            .template
            .render(req.locale.as_deref(), |slot| match slot {
                OtpSlot::Code => code,
                OtpSlot::Minutes => minutes.as_str(),
                OtpSlot::Purpose => req.purpose.as_str(),
            })
    }

    /// Sends the code on each channel in turn until one takes it (a call on voice);
    /// every try is recorded. A
    /// refusal moves to the next channel; an outage does not (every channel is the same
    /// provider). Returns the channel that carried the code.
    async fn deliver(
        &self,
        req: &SendOtp,
        otp_id: i64,
        channels: Channels,
        code: &str,
        now: SystemTime,
    ) -> Result<Channel, OtpError> {
        let (masked, purpose) = (req.phone.masked(), req.purpose.as_str());
        let to = req.phone.as_str();
        let provider = self.sender.provider().unwrap_or("none");
        let (mut channel, mut rest) = (channels.first(), channels.rest().iter().copied());
        loop {
            let text = self.text(req, code, channel);
            let sent = match channel {
                Channel::Voice => {
                    let locale = req.locale.as_deref();
                    self.sender.call(&req.phone, &text, locale).await
                }
                _ => self.sender.send(&req.phone, channel, &text).await,
            };
            let error = match sent {
                Ok(sent) => {
                    // At info, unlike verify's success line: a send already costs a
                    // provider call, and operators look codes up by it.
                    log::info!(
                        otp_id = otp_id, purpose = purpose, phone:% = masked, channel:% = channel, twilio_sid = sent.sid.as_str();
                        "otp {otp_id} for {masked} ({purpose}) sent via {provider} {channel}, sid {}",
                        sent.sid
                    );
                    self.events.sent.increment(1);
                    self.events.sent_in.increment(req.phone.country());
                    // WhatsApp can still fail after accepting: keep what a re-send needs.
                    let left: Vec<Channel> = rest.collect();
                    let fallback = match (channel, Channels::stored(&left)) {
                        (Channel::WhatsApp, Some(channels)) => Some(Fallback {
                            channels,
                            locale: req.locale.clone(),
                        }),
                        _ => None,
                    };
                    let delivery = Delivery::Sent {
                        provider,
                        sid: sent.sid,
                        status: sent.status,
                        attempts: sent.attempts,
                        fallback,
                    };
                    self.store
                        .record_delivery(otp_id, to.to_owned(), channel, delivery, now, req.caller)
                        .await?;
                    return Ok(channel);
                }
                Err(error) => error,
            };
            let next = match error {
                SendError::Rejected { .. } => rest.next(),
                _ => None,
            };
            if let Some(next) = next {
                log::warn!(
                    otp_id = otp_id, purpose = purpose, phone:% = masked, channel:% = channel, error:% = error;
                    "otp {otp_id} for {masked} ({purpose}) not sent by {channel}, trying the next channel: {error}"
                );
                self.events.channel_fallback.increment(1);
                let delivery = failed(provider, &error);
                self.store
                    .record_fallback(otp_id, to.to_owned(), channel, delivery, now, req.caller)
                    .await?;
                channel = next;
                continue;
            }
            // Marked failed: this code can never verify, whatever happens next.
            let error_code = error.provider_code();
            log::warn!(otp_id = otp_id, purpose = purpose, phone:% = masked, error:% = error, error_code = error_code; "otp {otp_id} for {masked} ({purpose}) not sent: {error}");
            match error {
                SendError::CircuitOpen { .. } => self.events.circuit_open.increment(1),
                _ => self.events.send_failed.increment(1),
            }
            let delivery = failed(provider, &error);
            self.store
                .record_delivery(otp_id, to.to_owned(), channel, delivery, now, req.caller)
                .await?;
            return Err(error.into());
        }
    }

    /// Asks the guard about a code's SMS; returns the destination region to store.
    async fn guard_send(&self, req: &SendOtp, now: SystemTime) -> Result<String, OtpError> {
        let dest = self.guard.destination(&req.phone);
        let who = Subject {
            phone: &req.phone,
            purpose: Some(req.purpose.as_str()),
            user_id: req.user_id.as_ref().map(UserId::as_str),
            caller: Some(req.caller),
        };
        match checks::guard(&self.guard, &self.store, Check::Code(&dest), who, now).await? {
            Some(refused) => Err(refused.into()),
            None => Ok(dest.region_code()),
        }
    }

    /// Sends the fixed test message to the configured test number; returns its SID.
    pub async fn send_test_message(&self, now: SystemTime) -> Result<String, OtpError> {
        let to = self.test_phone.as_ref().ok_or(OtpError::NoTestNumber)?;
        let provider = self.sender.provider().ok_or(SendError::NotConfigured)?;
        self.limiter.check_global()?;
        let shared = self.limiter.shared_global();
        checks::shared_limits(&self.store, &self.limiter, shared).await??;
        // Only the daily cap: the message costs money, but goes to the operator's number.
        let who = Subject {
            phone: to,
            purpose: None,
            user_id: None,
            caller: None,
        };
        let check = Check::TestMessage;
        if let Some(refused) = checks::guard(&self.guard, &self.store, check, who, now).await? {
            return Err(refused.into());
        }
        let result = self.sender.send(to, Channel::Sms, TEST_MESSAGE).await;
        let delivery = match &result {
            Ok(sent) => Delivery::Sent {
                provider,
                sid: sent.sid.clone(),
                status: sent.status.clone(),
                attempts: sent.attempts,
                fallback: None,
            },
            Err(error) => failed(provider, error),
        };
        self.store
            .record_message(to.as_str().to_owned(), delivery, now)
            .await?;
        match result {
            Ok(sent) => {
                log::info!(
                    "test message sent to {} via {provider}, sid {}",
                    to.masked(),
                    sent.sid
                );
                Ok(sent.sid)
            }
            Err(error) => {
                log::warn!("test message to {} not sent: {error}", to.masked());
                Err(error.into())
            }
        }
    }
}

/// The record of a message that did not leave, with the provider's error code if it
/// gave one and the number of requests made; a refusal by the open circuit is told apart.
fn failed(provider: &'static str, error: &SendError) -> Delivery {
    match error {
        SendError::CircuitOpen { .. } => Delivery::CircuitOpen {
            provider,
            error_message: error.to_string(),
        },
        _ => Delivery::Failed {
            provider,
            error_code: error.provider_code(),
            error_message: error.to_string(),
            attempts: error.attempts(),
        },
    }
}
