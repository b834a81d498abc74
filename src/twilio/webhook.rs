//! Twilio's status callbacks: checking `X-Twilio-Signature` and reading the fields otpd
//! keeps. Pure functions; the service decides what a valid callback changes.
//!
//! Twilio signs each webhook with HMAC-SHA1, keyed with the account's Auth Token, over
//! the public URL it called followed by every POST parameter as `name` + `value`,
//! sorted by name; the header is that MAC in base64.
//! <https://www.twilio.com/docs/usage/security#validating-requests>

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Does `signature` (the header's value) sign `url` and `params` under `auth_token`?
/// The comparison is constant-time.
pub fn signature_is_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(claimed) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&claimed).is_ok()
}

/// The signature Twilio would send; the tests' mock Twilio signs with it too.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Repeated names are sorted by value too, as Twilio's own libraries do.
    sorted.sort();
    #[expect(clippy::unreachable, reason = "HMAC takes keys of any length")]
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The fields of a message status callback that otpd records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub sid: String,
    pub status: String,
    pub error_code: Option<i64>,
}

impl StatusUpdate {
    /// A message's report (`MessageSid`, `MessageStatus`) or a voice code's call's
    /// (`CallSid`, `CallStatus`); `None` when neither pair is there.
    pub fn from_params(params: &[(String, String)]) -> Option<StatusUpdate> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let message = get("MessageSid")
            .or_else(|| get("SmsSid"))
            .zip(get("MessageStatus").or_else(|| get("SmsStatus")));
        let (sid, status) = message.or_else(|| get("CallSid").zip(get("CallStatus")))?;
        Some(StatusUpdate {
            sid: sid.to_owned(),
            status: status.to_ascii_lowercase(),
            error_code: get("ErrorCode").and_then(|c| c.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Twilio's published example (docs and helper libraries): token 12345.
    fn twilio_example() -> (String, Vec<(String, String)>) {
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2".to_owned(),
            params(&[
                ("CallSid", "CA1234567890ABCDE"),
                ("Caller", "+14158675310"),
                ("Digits", "1234"),
                ("From", "+14158675310"),
                ("To", "+18005551212"),
            ]),
        )
    }

    #[test]
    fn matches_twilios_published_test_vector() {
        let (url, params) = twilio_example();
        assert_eq!(sign("12345", &url, &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(signature_is_valid(
            "12345",
            &url,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
    }

    #[test]
    fn parameter_order_does_not_matter_but_every_byte_does() {
        let (url, mut params) = twilio_example();
        params.reverse();
        assert!(signature_is_valid(
            "12345",
            &url,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        let good = sign("12345", &url, &params);
        assert!(!signature_is_valid("12346", &url, &params, &good));
        assert!(!signature_is_valid(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            &good
        ));
        params[0].1.push('0');
        assert!(!signature_is_valid("12345", &url, &params, &good));
        assert!(!signature_is_valid("12345", &url, &params, "not base64!"));
        assert!(!signature_is_valid("12345", &url, &params, ""));
    }

    #[test]
    fn reads_the_status_fields() {
        let update = StatusUpdate::from_params(&params(&[
            ("MessageSid", "SM123"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]));
        assert_eq!(
            update,
            Some(StatusUpdate {
                sid: "SM123".into(),
                status: "undelivered".into(),
                error_code: Some(30003)
            })
        );
        assert_eq!(
            StatusUpdate::from_params(&params(&[("MessageSid", "SM1")])),
            None
        );
    }
}
