//! Validated values built once at the API edge: phone numbers in E.164, purposes from
//! the configured allow-list, user ids and OTP codes. The service below takes these
//! types and never re-validates; nothing here knows about HTTP or SQL.

use std::fmt;

use thiserror::Error;

mod phone;
mod phone_cache;

pub use phone::{MaskedPhone, PhoneNumber, Region, calling_code, mask_numbers};

/// Why a caller's value was refused; `api` maps each variant to a stable error code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidInput {
    #[error("Invalid phone number")]
    PhoneNumber(&'static str),
    #[error("Invalid purpose")]
    Purpose(String),
    #[error("Invalid user_id")]
    UserId(&'static str),
    #[error("Invalid OTP code")]
    OtpCode(&'static str),
    #[error("Invalid channel")]
    Channel(String),
}

/// The process on the other end of the socket (SO_PEERCRED): logged with requests,
/// written to the audit trail, and checked against the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// A purpose from the configured allow-list ("registration", "login", ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Purpose(String);

impl Purpose {
    pub fn parse(input: &str, allowed: &[String]) -> Result<Self, InvalidInput> {
        if allowed.iter().any(|p| p == input) {
            Ok(Purpose(input.to_owned()))
        } else {
            Err(InvalidInput::Purpose(allowed.join(", ")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a message reaches the phone. WhatsApp goes through Twilio's same Messages API,
/// with `whatsapp:` in front of both addresses and its own sender; voice is a phone
/// call that says a code (codes only: a plain message is never read out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    WhatsApp,
    Voice,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::WhatsApp, Channel::Voice];

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == input)
            .ok_or_else(|| {
                InvalidInput::Channel(format!("{input:?}: use \"sms\", \"whatsapp\" or \"voice\""))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::WhatsApp => "whatsapp",
            Channel::Voice => "voice",
        }
    }

    /// The address Twilio expects for `number` on this channel.
    pub fn address(self, number: &str) -> String {
        match self {
            Channel::Sms | Channel::Voice => number.to_owned(),
            Channel::WhatsApp => format!("whatsapp:{number}"),
        }
    }

    /// Whether the channel carries written text (a plain message, media); voice only
    /// says codes.
    pub fn carries_text(self) -> bool {
        !matches!(self, Channel::Voice)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Channels to try, in order: never empty, so there is always a first one to send on.
/// Config builds `messaging.channels` (and refuses an empty list or a channel twice); a
/// request naming one channel gets [`Channels::one`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    first: Channel,
    rest: Vec<Channel>,
}

impl Channels {
    pub fn one(channel: Channel) -> Channels {
        Channels {
            first: channel,
            rest: Vec::new(),
        }
    }

    /// `None` for an empty list.
    pub fn from_list(list: Vec<Channel>) -> Option<Channels> {
        let mut list = list.into_iter();
        Some(Channels {
            first: list.next()?,
            rest: list.collect(),
        })
    }

    pub fn first(&self) -> Channel {
        self.first
    }

    /// The fallbacks after the first, in order.
    pub fn rest(&self) -> &[Channel] {
        &self.rest
    }

    pub fn iter(&self) -> impl Iterator<Item = Channel> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().copied())
    }

    /// Channels as the store keeps a message's fallbacks: comma-separated, `None` when
    /// there are none.
    pub fn stored(channels: &[Channel]) -> Option<String> {
        let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        Some(names.join(",")).filter(|s| !s.is_empty())
    }

    /// Back from [`Channels::stored`]; a name this build does not know is skipped.
    pub fn from_stored(stored: &str) -> Option<Channels> {
        Channels::from_list(
            stored
                .split(',')
                .filter_map(|c| Channel::parse(c).ok())
                .collect(),
        )
    }
}

/// The backend's id for its already-authenticated user, kept opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    const MAX_LEN: usize = 128;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        if input.is_empty() {
            return Err(InvalidInput::UserId("user_id is empty"));
        }
        if input.len() > Self::MAX_LEN {
            return Err(InvalidInput::UserId("user_id is longer than 128 bytes"));
        }
        if input.chars().any(char::is_control) {
            return Err(InvalidInput::UserId("user_id contains control characters"));
        }
        Ok(UserId(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A code as typed by the user: ASCII digits of a length otpd can ever issue (4–10).
/// Whether it is the right length for the code on file is the comparison's business.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    pub const MIN_LEN: usize = 4;
    pub const MAX_LEN: usize = 10;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let input = input.trim();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&input.len()) {
            return Err(InvalidInput::OtpCode("otp_code must have 4 to 10 digits"));
        }
        if !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::OtpCode(
                "otp_code may contain only the digits 0-9",
            ));
        }
        Ok(OtpCode(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Codes never reach a log, not even through `{:?}`.
impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(******)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_codes_are_ascii_digits_only() {
        assert!(OtpCode::parse("123456").is_ok());
        assert!(OtpCode::parse("12 34").is_err());
        assert!(OtpCode::parse("١٢٣٤٥٦").is_err());
        assert!(OtpCode::parse("123").is_err());
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456")),
            "Ok(OtpCode(******))"
        );
    }

    #[test]
    fn purposes_come_from_the_allow_list() {
        let allowed = vec!["login".to_owned()];
        assert!(Purpose::parse("login", &allowed).is_ok());
        assert!(Purpose::parse("Login", &allowed).is_err());
    }
}
