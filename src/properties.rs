//! Property ("fuzz") targets for the three places hostile bytes meet otpd's logic:
//! request parsing (body bytes to a typed request, `api`), phone normalization
//! (`types`) and code checking (`otp`). Each target first replays its checked-in corpus
//! (`tests/corpus/<target>/`, one input per file for requests, one per line otherwise),
//! then runs `OTPD_FUZZ_CASES` random cases (default 256; `.ci/run` raises it).
//! Shrunk failures are kept by proptest under `proptest-regressions/` and replayed
//! first on every run; copy a minimal one into the corpus when fixing it.
//!
//! Only the stable toolchain exists on CI, so proptest stands in for cargo-fuzz.

use std::path::PathBuf;

use hmac::Mac;
use hyper::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::api::parse;
use crate::otp::{CodeKey, code_matches};
use crate::types::{OtpCode, PhoneNumber, Region};

const PURPOSES: [&str; 2] = ["login", "registration"];

fn purposes() -> Vec<String> {
    PURPOSES.map(String::from).to_vec()
}

fn config() -> Config {
    let cases = std::env::var("OTPD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        ..Config::default()
    }
}

/// The corpus files of `target`, sorted so runs replay in a stable order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Non-empty lines of a target's corpus files (`#` starts a comment line).
fn corpus_lines(target: &str) -> Vec<String> {
    corpus(target)
        .into_iter()
        .flat_map(|(_, bytes)| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn regions() -> [Option<Region>; 4] {
    [
        None,
        Region::parse("ES"),
        Region::parse("US"),
        Region::parse("GB"),
    ]
}

fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

// ---- Request parsing ----

/// Any body either becomes a request whose every field is valid, or a 4xx answer with
/// a stable code: never a panic, never a 5xx.
fn check_request(bytes: &[u8]) -> Result<(), TestCaseError> {
    let purposes = purposes();
    for region in regions() {
        match parse::send(bytes, &purposes, region) {
            Ok(req) => {
                prop_assert!(is_e164(req.phone.as_str()), "{:?}", req.phone);
                prop_assert!(PURPOSES.contains(&req.purpose.as_str()));
            }
            Err((status, code)) => {
                prop_assert!(status.is_client_error(), "{status} {code}");
                prop_assert!(!code.is_empty());
            }
        }
        match parse::verify(bytes, &purposes, region) {
            Ok(req) => {
                prop_assert!(is_e164(req.phone.as_str()), "{:?}", req.phone);
                let code = req.code.as_str();
                prop_assert!(
                    (4..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
                );
            }
            Err((status, code)) => {
                prop_assert!(status.is_client_error(), "{status} {code}");
                prop_assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    }
    Ok(())
}

/// Values that reach the field parsers: strings that look like numbers and codes, odd
/// Unicode, wrong types, and nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[+0-9 ().-]{0,24}".prop_map(Value::String),
        "[0-9\u{ff10}-\u{ff19}\u{660}-\u{669} ]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        prop::sample::select(PURPOSES.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let field = |name: &'static str| prop::option::of(json_value()).prop_map(move |v| (name, v));
    (
        field("phone_number"),
        field("purpose"),
        field("otp_code"),
        field("user_id"),
    )
        .prop_map(|fields| {
            let (a, b, c, d) = fields;
            let object: serde_json::Map<String, serde_json::Value> = [a, b, c, d]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect();
            serde_json::to_vec(&object).unwrap_or_default()
        })
}

#[test]
fn fuzz_request_parsing_corpus() {
    for (path, bytes) in corpus("request") {
        if let Err(e) = check_request(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_request_parsing_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_request(&bytes)?;
    }

    #[test]
    fn fuzz_request_parsing_json_objects(body in request_body()) {
        check_request(&body)?;
    }
}

// ---- Phone normalization ----

/// Never panics; what it accepts is E.164 and parses again to itself, under any region.
fn check_phone(input: &str) -> Result<(), TestCaseError> {
    for region in regions() {
        if let Ok(phone) = PhoneNumber::parse_in(input, region) {
            let e164 = phone.as_str();
            prop_assert!(is_e164(e164), "{input:?} -> {e164:?}");
            // `PhoneNumber` writes E.164 itself; it must be what the library writes.
            let library = phonenumber::parse(None, e164)
                .map(|p| p.format().mode(phonenumber::Mode::E164).to_string())
                .ok();
            prop_assert_eq!(library.as_deref(), Some(e164));
            for again in regions() {
                let reparsed = PhoneNumber::parse_in(e164, again).map(|p| p.as_str().to_owned());
                prop_assert_eq!(reparsed, Ok(e164.to_owned()), "{:?} is not stable", e164);
            }
            // The masked form never shows more than the prefix and the last 3 digits.
            let masked = phone.masked().to_string();
            prop_assert!(masked.matches(char::is_numeric).count() <= 6, "{masked}");
        }
    }
    Ok(())
}

/// Numbers libphonenumber considers valid, one per plan people use here.
const VALID: [&str; 6] = [
    "+34600111222",
    "+14155550100",
    "+442079460958",
    "+33612345678",
    "+4915123456789",
    "+819012345678",
];

/// `e164` typed with a separator between (some) digits.
fn typed(e164: &'static str) -> impl Strategy<Value = String> {
    let digits = e164.len() - 1;
    prop::collection::vec(
        prop::sample::select(vec!["", "", " ", "-", ".", " - "]),
        digits,
    )
    .prop_map(move |seps| {
        let mut out = String::from("+");
        for (i, (d, sep)) in e164[1..].chars().zip(seps).enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push(d);
        }
        out
    })
}

#[test]
fn fuzz_phone_normalization_corpus() {
    for line in corpus_lines("phone") {
        if let Err(e) = check_phone(&line) {
            panic!("{line:?}: {e}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_phone_normalization_any_string(input in any::<String>()) {
        check_phone(&input)?;
    }

    #[test]
    fn fuzz_phone_normalization_phone_like(input in "[+0-9 ().-]{0,20}") {
        check_phone(&input)?;
    }

    /// Spaces, dashes and dots people type do not change the number; "00" is "+".
    #[test]
    fn fuzz_phone_separators_and_00_do_not_change_the_number(
        (e164, typed) in prop::sample::select(VALID.to_vec())
            .prop_flat_map(|e164| (Just(e164), typed(e164)))
    ) {
        check_phone(&typed)?;
        let e164_of = |input: &str| PhoneNumber::parse(input).map(|p| p.as_str().to_owned());
        prop_assert_eq!(e164_of(&typed), Ok(e164.to_owned()));
        prop_assert_eq!(e164_of(&format!("00{}", &typed[1..])), Ok(e164.to_owned()));
    }
}

// ---- Code checking ----

/// A code verifies iff it is exactly the issued code for the same key, phone and
/// purpose; anything typed goes through `OtpCode::parse` first, as in the API.
fn check_code(issued: &str, typed: &str) -> Result<(), TestCaseError> {
    let key = [7u8; 32];
    let (phone, purpose) = ("+34600111222", "login");
    let stored = CodeKey::new(&key)
        .mac(phone, purpose, issued)
        .finalize()
        .into_bytes();
    let verifies = OtpCode::parse(typed)
        .map(|code| code_matches(&key, phone, purpose, code.as_str(), &stored))
        .unwrap_or(false);
    prop_assert_eq!(
        verifies,
        typed.trim() == issued,
        "{:?} vs {:?}",
        issued,
        typed
    );
    // The same code is worthless with another key, phone or purpose, or a damaged hash.
    if verifies {
        let code = typed.trim();
        prop_assert!(!code_matches(&[8u8; 32], phone, purpose, code, &stored));
        prop_assert!(!code_matches(&key, "+34600111223", purpose, code, &stored));
        prop_assert!(!code_matches(&key, phone, "registration", code, &stored));
        prop_assert!(!code_matches(&key, phone, purpose, code, &stored[..31]));
        prop_assert!(!code_matches(&key, phone, purpose, code, &[]));
    }
    Ok(())
}

#[test]
fn fuzz_code_checking_corpus() {
    // "issued typed": the typed code may hold spaces, so split at the first space only.
    for line in corpus_lines("code") {
        let (issued, typed) = line.split_once(' ').unwrap_or((&line, ""));
        if let Err(e) = check_code(issued, typed) {
            panic!("{line:?}: {e}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_code_checking_issued_against_anything(
        issued in "[0-9]{4,10}",
        typed in prop_oneof!["[0-9]{4,10}", "[0-9 ]{0,12}", any::<String>()],
    ) {
        check_code(&issued, &typed)?;
    }

    /// A one-digit change never verifies: no prefix, truncation or near-miss passes.
    #[test]
    fn fuzz_code_checking_near_misses(issued in "[0-9]{4,10}", at in any::<prop::sample::Index>(), delta in 1u8..10) {
        let mut near: Vec<u8> = issued.clone().into_bytes();
        let i = at.index(near.len());
        near[i] = b'0' + (near[i] - b'0' + delta) % 10;
        let near = String::from_utf8(near).unwrap_or_default();
        check_code(&issued, &near)?;
        check_code(&issued, &issued[..issued.len() - 1])?;
        check_code(&issued, &format!("{issued}0"))?;
        check_code(&issued, &issued)?;
    }
}
