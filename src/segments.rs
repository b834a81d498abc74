//! What an SMS body costs: its encoding (GSM-7 when every character is in the GSM 03.38
//! alphabet, UCS-2 otherwise) and how many segments carriers bill for it. Pure
//! functions; knows nothing of Twilio, HTTP or the store.
//!
//! Hand-written rather than a crate: the tables are fixed by 3GPP TS 23.038 and fit on a
//! screen, and the only Rust crate for it had two releases and no users when checked.

/// Twilio refuses bodies longer than this many characters (error 21617).
pub const MAX_BODY_CHARS: usize = 1600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Billed parts: 1 for an empty body.
    pub count: u32,
    /// Characters as Twilio counts them for the 1600 limit (Unicode scalars).
    pub chars: usize,
}

/// The GSM 03.38 basic character set: one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table: an escape plus one septet each, so two septets.
const GSM7_EXTENDED: &str = "\u{c}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or `None` if GSM-7 cannot carry it.
fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Counts segments the way handsets split them: a single part holds 160 septets (70
/// UTF-16 units); a multipart message loses 7 septets (3 units) per part to its header,
/// and a two-unit character (a GSM-7 escape pair or a UTF-16 surrogate pair) is never
/// split across parts.
pub fn count(body: &str) -> Segments {
    let chars = body.chars().count();
    let gsm: Option<Vec<usize>> = body.chars().map(gsm7_septets).collect();
    let (encoding, units, single, multi) = match gsm {
        Some(units) => (Encoding::Gsm7, units, 160, 153),
        None => (
            Encoding::Ucs2,
            body.chars().map(char::len_utf16).collect(),
            70,
            67,
        ),
    };
    let total: usize = units.iter().sum();
    let count = if total <= single {
        1
    } else {
        let mut parts = 1u32;
        let mut used = 0;
        for unit in units {
            if used + unit > multi {
                parts += 1;
                used = 0;
            }
            used += unit;
        }
        parts
    };
    Segments {
        encoding,
        count,
        chars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_is_gsm7_with_160_per_single_part() {
        let s = count(&"a".repeat(160));
        assert_eq!((s.encoding, s.count), (Encoding::Gsm7, 1));
        let s = count(&"a".repeat(161));
        assert_eq!((s.encoding, s.count), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(306)).count, 2);
        assert_eq!(count(&"a".repeat(307)).count, 3);
    }

    #[test]
    fn extended_gsm_characters_take_two_septets_and_are_not_split() {
        // 80 euro signs are 160 septets: still one part.
        let s = count(&"€".repeat(80));
        assert_eq!((s.encoding, s.count, s.chars), (Encoding::Gsm7, 1, 80));
        assert_eq!(count(&"€".repeat(81)).count, 2);
        // 306 septets would fill two parts exactly, but the escape pair after 152
        // septets cannot straddle the boundary, so it moves whole and a third part starts.
        let body = format!("{}{}{}", "a".repeat(152), "{", "a".repeat(152));
        assert_eq!(count(&body).count, 3);
        assert_eq!(count(&"a".repeat(306)).count, 2);
    }

    #[test]
    fn one_character_outside_gsm7_makes_the_whole_body_ucs2() {
        let s = count(&format!("{}ó", "a".repeat(69)));
        assert_eq!((s.encoding, s.count), (Encoding::Ucs2, 1));
        let s = count(&format!("{}ó", "a".repeat(70)));
        assert_eq!((s.encoding, s.count), (Encoding::Ucs2, 2));
        assert_eq!(count(&"ó".repeat(134)).count, 2);
        assert_eq!(count(&"ó".repeat(135)).count, 3);
    }

    #[test]
    fn emoji_take_two_utf16_units_and_are_not_split() {
        let s = count(&"😀".repeat(35));
        assert_eq!((s.encoding, s.count, s.chars), (Encoding::Ucs2, 1, 35));
        assert_eq!(count(&"😀".repeat(36)).count, 2);
        // 134 units would fill two parts, but the pair after 66 units moves whole.
        let body = format!("{}😀{}", "ó".repeat(66), "ó".repeat(66));
        assert_eq!(count(&body).count, 3);
    }

    #[test]
    fn gsm7_lookalikes_outside_the_alphabet_are_ucs2() {
        // Curly quotes and the accented capitals GSM-7 lacks force UCS-2.
        assert_eq!(count("it’s").encoding, Encoding::Ucs2);
        assert_eq!(count("Á").encoding, Encoding::Ucs2);
        assert_eq!(count("Ñandú").encoding, Encoding::Ucs2);
        assert_eq!(count("Ñandu").encoding, Encoding::Gsm7);
    }
}
