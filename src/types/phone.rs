//! Phone numbers: parsed once at the edge by a real numbering-plan library into E.164,
//! the region numbers without a country code are read in, and the masked form every log
//! line uses, also for numbers inside texts that come from a provider.

use std::borrow::Cow;
use std::fmt;

use super::InvalidInput;
use super::phone_cache;

/// The country whose national format otpd accepts for numbers typed without a country
/// code (`otp.default_region`, an ISO 3166-1 code such as "ES").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(phonenumber::country::Id);

impl Region {
    /// An upper-case ISO 3166-1 alpha-2 code that libphonenumber has a numbering plan for.
    pub fn parse(code: &str) -> Option<Region> {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let id: phonenumber::country::Id = code.parse().ok()?;
        phonenumber::metadata::DATABASE
            .by_id(id.as_ref())
            .map(|_| Region(id))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// The calling code `digits` (what follows the `+`) start with, and its main country
/// ("34600…" → (34, "ES"), "1202…" → (1, "US")). Calling codes are prefix-free, so the
/// first of the one-, two- and three-digit prefixes that is one is the one.
pub fn calling_code(digits: &str) -> Option<(u16, &'static str)> {
    (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        let regions = phonenumber::metadata::DATABASE.region(&code)?;
        Some((code, *regions.first()?))
    })
}

/// A phone number that a real numbering-plan library accepted, held in E.164 form with
/// what the library found while parsing it: its region (the cost guard's country) and
/// the length of its country code, so nothing parses it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    /// `None` for the non-geographic codes ("001": +800, +882, ...).
    region: Option<phonenumber::country::Id>,
    country_code_len: usize,
}

impl PhoneNumber {
    /// Longest input worth looking at: E.164 itself is at most 16 characters, and
    /// this leaves room for any grouping people type.
    const MAX_INPUT: usize = 64;

    /// Parses an international number ("+34 600 11 12 22", "+1 (415) 555-0100",
    /// "0034 600 111 222").
    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        Self::parse_in(input, None)
    }

    /// Like [`PhoneNumber::parse`], and with a `region` also the national formats of
    /// that country ("600 11 12 22", "(415) 555-0100", "020 7946 0958").
    pub fn parse_in(input: &str, region: Option<Region>) -> Result<Self, InvalidInput> {
        let input = input.trim();
        if input.is_empty() {
            return Err(InvalidInput::PhoneNumber("phone_number is empty"));
        }
        if input.len() > Self::MAX_INPUT {
            return Err(InvalidInput::PhoneNumber("phone_number is too long"));
        }
        // ASCII only: the parser would also read vanity letters ("1-800-FLOWERS"),
        // extensions and non-ASCII digits (fullwidth, Arabic-Indic). A code must go to
        // exactly the digits the caller sent, and the backend (not otpd) owns how its
        // forms turn what a person typed into ASCII.
        let (plus, rest) = match input.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'))
        {
            return Err(InvalidInput::PhoneNumber(
                "phone_number may hold only digits, spaces, dashes, dots, brackets and a leading +",
            ));
        }
        // Spaces, dashes and dots only group digits: dropped here, so they mean nothing
        // wherever they fall ("+3-4600…" too). Brackets stay: "+44 (0) 20…" marks a
        // trunk prefix that the parser knows to drop.
        let compact: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.'))
            .collect();
        let input = compact.as_str();
        let rest = input.strip_prefix('+').unwrap_or(input);
        // "00" is the international call prefix in most of the world (ITU-T E.164's
        // recommendation); no numbering plan starts a national number with it.
        let digits_start = rest.trim_start_matches('(');
        let (country, text) = if plus {
            (None, Cow::Borrowed(input))
        } else if let Some(international) = digits_start.strip_prefix("00") {
            (None, Cow::Owned(format!("+{international}")))
        } else if let Some(region) = region {
            (Some(region.0), Cow::Borrowed(input))
        } else {
            return Err(InvalidInput::PhoneNumber(
                "phone_number must be in international format, starting with + (or 00) and the country code",
            ));
        };
        // Validity and the region are asked inside the call too: they match the number
        // against the metadata's regexes, which `phone_cache` then keeps compiled.
        let (parsed, valid, region) = phone_cache::call(|| {
            phonenumber::parse(country, text).map(|p| {
                let valid = p.extension().is_none() && p.is_valid();
                let region = if valid { p.country().id() } else { None };
                (p, valid, region)
            })
        })
        .map_err(|_| InvalidInput::PhoneNumber("phone_number is not a phone number"))?;
        if !valid {
            return Err(InvalidInput::PhoneNumber(
                "phone_number is not a valid number for its country",
            ));
        }
        // E.164 is "+", the country code and the national number (with its leading
        // zeros), which is exactly what the library's E164 formatter writes; written
        // here because that formatter first picks a national format by regex for
        // the other modes and throws it away, on every verify. A valid
        // number always has metadata for its code, so the formatter could not fail.
        let code = parsed.code().value().to_string();
        Ok(PhoneNumber {
            e164: format!("+{code}{}", parsed.national()),
            region,
            country_code_len: code.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The region the number belongs to; `None`: a non-geographic code ("001").
    pub fn region(&self) -> Option<phonenumber::country::Id> {
        self.region
    }

    /// The region's ISO code for metrics; `001` (as libphonenumber writes it) for a
    /// non-geographic number.
    pub fn country(&self) -> &str {
        match &self.region {
            Some(region) => region.as_ref(),
            None => "001",
        }
    }

    /// How many digits after the `+` are the country code.
    pub fn country_code_len(&self) -> usize {
        self.country_code_len
    }

    /// The form every log line uses: country prefix and last three digits only.
    pub fn masked(&self) -> MaskedPhone<'_> {
        MaskedPhone(&self.e164)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// `+34*****222`: enough to tell numbers apart in a log, never enough to dial.
pub struct MaskedPhone<'a>(&'a str);

impl fmt::Display for MaskedPhone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // E.164 is ASCII, so byte slicing is safe; short inputs are fully masked.
        if s.len() < 10 || !s.is_ascii() {
            return f.write_str("+*****");
        }
        write!(f, "{}*****{}", &s[..3], &s[s.len() - 3..])
    }
}

/// `text` with every phone number in it masked as [`MaskedPhone`] does: a provider's
/// error text ("The 'To' number +34600111999 is not a valid phone number.") must not put
/// the full number into a log line, the audit trail or an API answer. A number is a run
/// of at least 7 digits (single spaces, dots, dashes or brackets between them allowed,
/// an optional `+` before) that does not continue a word, so error codes and SIDs stay.
pub fn mask_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts_word =
            (i.checked_sub(1).and_then(|k| bytes.get(k))).is_some_and(u8::is_ascii_alphanumeric);
        let start = i;
        let first = if bytes.get(i) == Some(&b'+') {
            i + 1
        } else {
            i
        };
        if starts_word || !bytes.get(first).is_some_and(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        let (mut end, mut digits, mut j) = (first, String::new(), first);
        while let Some(&b) = bytes.get(j) {
            if b.is_ascii_digit() {
                digits.push(char::from(b));
                j += 1;
                end = j;
            } else if b" .-()".contains(&b) && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
            } else {
                break;
            }
        }
        let ends_word = bytes.get(end).is_some_and(u8::is_ascii_alphabetic);
        if digits.len() >= 7 && !ends_word {
            out.push_str(&text[copied..start]);
            out.push_str(&MaskedPhone(&format!("+{digits}")).to_string());
            copied = end;
        }
        i = end.max(i + 1);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_inside_provider_texts_are_masked_and_codes_and_sids_kept() {
        let twilio = "The 'To' number +34600111999 is not a valid phone number.";
        assert_eq!(
            mask_numbers(twilio),
            "The 'To' number +34*****999 is not a valid phone number."
        );
        assert_eq!(
            mask_numbers("to whatsapp:+34 600 11 19 99 (21211)"),
            "to whatsapp:+34*****999 (21211)"
        );
        assert_eq!(
            mask_numbers("error 21610 on SM0123456789abcdef0123456789abcdef"),
            "error 21610 on SM0123456789abcdef0123456789abcdef"
        );
        assert_eq!(mask_numbers("call 6001119"), "call +*****");
        assert!(matches!(mask_numbers("HTTP 400"), Cow::Borrowed(_)));
    }

    #[test]
    fn phone_numbers_normalize_to_e164() {
        for (input, want) in [
            ("+34600111222", "+34600111222"),
            ("+34 600 11 12 22", "+34600111222"),
            (" +1 (415) 555-0100 ", "+14155550100"),
            ("+44 20 7946 0958", "+442079460958"),
        ] {
            assert_eq!(
                PhoneNumber::parse(input).map(|p| p.e164),
                Ok(want.to_owned())
            );
        }
    }

    #[test]
    fn e164_is_what_the_library_formats() {
        // Leading zeros of the national number (Italian fixed lines) included.
        for input in [
            "+34600111222",
            "+390612345678",
            "+39 312 345 6789",
            "+1 (415) 555-0100",
            "+44 (0) 20 7946 0958",
            "+8613912345678",
            "+61 4 1234 5678",
            "+225 07 12 34 56 78",
        ] {
            let parsed = phonenumber::parse(None, input).map_err(|e| e.to_string());
            let parsed = parsed.unwrap();
            assert!(parsed.is_valid(), "{input:?}");
            let library = parsed.format().mode(phonenumber::Mode::E164).to_string();
            assert_eq!(
                PhoneNumber::parse(input).map(|p| p.e164),
                Ok(library),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_number_keeps_its_region_and_country_code_length() {
        use phonenumber::country::Id;
        for (input, region, code_len) in [
            ("+34600111222", Some(Id::ES), 2),
            ("+1 415 555 0100", Some(Id::US), 1),
            ("+1 613 555 0123", Some(Id::CA), 1),
            ("+225 07 12 34 56 78", Some(Id::CI), 3),
            ("+800 1234 5678", None, 3),
        ] {
            let phone = PhoneNumber::parse(input).unwrap();
            assert_eq!(phone.region(), region, "{input}");
            assert_eq!(phone.country_code_len(), code_len, "{input}");
        }
    }

    #[test]
    fn national_numbers_need_a_default_region() {
        let es = Region::parse("ES");
        let us = Region::parse("US");
        let gb = Region::parse("GB");
        for (input, region, want) in [
            ("600 11 12 22", es, "+34600111222"),
            ("600-111-222", es, "+34600111222"),
            ("0034 600 111 222", None, "+34600111222"),
            ("(0034) 600 111 222", None, "+34600111222"),
            ("0034 600 111 222", us, "+34600111222"),
            ("(415) 555-0100", us, "+14155550100"),
            ("1 415 555 0100", us, "+14155550100"),
            ("011 34 600 111 222", us, "+34600111222"),
            ("020 7946 0958", gb, "+442079460958"),
            ("+44 (0) 20 7946 0958", None, "+442079460958"),
            ("+34 600 11 12 22", gb, "+34600111222"),
        ] {
            let got = PhoneNumber::parse_in(input, region).map(|p| p.e164);
            assert_eq!(got, Ok(want.to_owned()), "{input:?} in {region:?}");
        }
        assert!(PhoneNumber::parse("600 11 12 22").is_err());
        assert!(PhoneNumber::parse_in("600 11 12 22", us).is_err());
        for bad in ["es", "E", "ESP", "XX", "ZZ", ""] {
            assert_eq!(Region::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn phone_numbers_that_cannot_receive_a_code_are_refused() {
        for input in [
            "",
            "600111222",
            "+34",
            "+3460011122233344",
            "+1-800-FLOWERS",
            "+34600111222 ext 5",
            "+999123456789",
            "tel:+34600111222",
            "+34 6OO 111 222",
        ] {
            assert!(PhoneNumber::parse(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn masking_keeps_only_prefix_and_last_three_digits() {
        let phone = PhoneNumber::parse("+34600111222").map(|p| p.masked().to_string());
        assert_eq!(phone, Ok("+34*****222".to_owned()));
    }
}
