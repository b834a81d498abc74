//! Twilio's rules for addresses and bodies, shared by CreateMessage and CreateCall:
//! the magic test numbers, E.164 and sender formats, SIDs, and SMS segments.

/// Twilio's magic test numbers, as documented for test credentials.
pub mod magic {
    /// `From` that passes all validation.
    pub const FROM_VALID: &str = "+15005550006";
    /// `From` that is invalid → 21212.
    pub const FROM_INVALID: &str = "+15005550001";
    /// `From` not owned by the account / not SMS-capable → 21606.
    pub const FROM_NOT_OWNED: &str = "+15005550007";
    /// `From` whose SMS queue is full → 21611.
    pub const FROM_QUEUE_FULL: &str = "+15005550008";
    /// `To` that is invalid → 21211.
    pub const TO_INVALID: &str = "+15005550001";
    /// `To` that Twilio cannot route to → 21612.
    pub const TO_UNROUTABLE: &str = "+15005550002";
    /// `To` lacking international permission → 21408.
    pub const TO_NO_INTERNATIONAL: &str = "+15005550003";
    /// `To` that is blocked / unsubscribed → 21610.
    pub const TO_UNSUBSCRIBED: &str = "+15005550004";
    /// `To` that cannot receive SMS → 21614.
    pub const TO_NOT_MOBILE: &str = "+15005550009";
}

/// `+` and 2–15 digits, not starting with 0 (E.164).
pub(super) fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The channel prefix of an address (`whatsapp` in `whatsapp:+1…`); `None` for SMS.
pub(super) fn channel_of(address: &str) -> Option<&str> {
    address.split_once(':').map(|(channel, _)| channel)
}

/// E.164, optionally behind a channel prefix such as `whatsapp:`.
pub(super) fn is_phone_address(s: &str) -> bool {
    match s.split_once(':') {
        Some((channel, number)) => {
            !channel.is_empty()
                && channel.bytes().all(|b| b.is_ascii_lowercase())
                && is_e164(number)
        }
        None => is_e164(s),
    }
}

/// A phone address, a short code (5–6 digits) or an alphanumeric sender ID (≤ 11 of
/// letters, digits and spaces, with at least one letter).
pub(super) fn is_valid_sender(s: &str) -> bool {
    let short_code = (5..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic());
    is_phone_address(s) || short_code || alphanumeric
}

/// `prefix` + 32 hex digits.
pub(super) fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// SMS segments for `body`: GSM-7 (160, or 153 per part; extension characters count twice)
/// or else UCS-2 (70, or 67 per part, in UTF-16 units). At least 1.
pub fn segments(body: &str) -> usize {
    let gsm_units: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, part) = match gsm_units {
        Some(units) => (units, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}
