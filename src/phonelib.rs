//! otpd's one door to the phonenumber crate's regular expressions. The library keeps
//! every metadata pattern in one LRU cache of 100 compiled regexes, shared by all
//! countries and locked for each match. Two things about that cache hurt a daemon:
//!
//! - 100 is fewer than the patterns that numbers from about fifteen countries need, so
//!   with traffic from more countries than that, parses evict each other's regexes and
//!   compile them again: ~25 million instructions a parse, under that one lock
//!   (BENCHMARKS.md, "Many countries").
//! - Its regexes are compiled in Unicode mode, where `\d` is every script's digits:
//!   ~110 KB each, against ~10 KB for the ASCII build of the same pattern.
//!
//! So the cache is made big enough never to evict (the metadata holds ~2,100 distinct
//! patterns), and [`call`] rebuilds each regex the library compiled as ASCII-only once
//! the call is over. The library's matches are unchanged for what otpd gives it: ASCII
//! digits only ([`crate::types::PhoneNumber`] refuses anything else before parsing).
//! Memory grows with the countries seen: ~8 MB for 40 (the old cache took ~23 MB for
//! the same numbers), ~25 MB were every pattern of every country ever needed.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use phonenumber::metadata::DATABASE;

/// Above the number of distinct patterns in the library's metadata (a test checks), so
/// that nothing is evicted: an evicted pattern would come back in Unicode mode.
const CACHE_CAPACITY: usize = 4096;

/// Sources of the cached regexes already rebuilt as ASCII. Taken after the library's
/// cache lock, never before it.
static REBUILT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| {
    lock(&DATABASE.cache()).set_capacity(CACHE_CAPACITY);
    Mutex::new(HashSet::new())
});

/// Runs `f`, which uses the phonenumber crate, then rebuilds as ASCII any regex the
/// library compiled meanwhile. Costs two uncontended locks when nothing is new.
pub fn call<T>(f: impl FnOnce() -> T) -> T {
    // First use sets the cache's capacity, before the library puts anything in it.
    let rebuilt = &*REBUILT;
    let out = f();
    let cache = DATABASE.cache();
    let mut cache = lock(&cache);
    let mut rebuilt = lock(rebuilt);
    if cache.len() != rebuilt.len() {
        for (source, regex) in cache.iter_mut() {
            if rebuilt.contains(source.as_str()) {
                continue;
            }
            // The same options as the library's (`Database::from`), but ASCII digits.
            // A pattern that does not build that way keeps its Unicode regex.
            if let Ok(ascii) = regex::RegexBuilder::new(source)
                .ignore_whitespace(true)
                .unicode(false)
                .build()
            {
                *regex = ascii;
            }
            rebuilt.insert(source.clone());
        }
    }
    out
}

/// The library itself panics on a poisoned cache; otpd's side goes on with the data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    use phonenumber::metadata::Metadata;

    /// Every region in the library's metadata.
    fn regions() -> Vec<&'static Metadata> {
        (1..=999u16)
            .filter_map(|code| DATABASE.by_code(&code))
            .flatten()
            .collect()
    }

    /// A mobile number of `region` (its metadata's example), in E.164.
    fn example(region: &Metadata) -> Option<String> {
        let mobile = region.descriptors().mobile()?.example()?;
        Some(format!("+{}{mobile}", region.country_code()))
    }

    /// Takes the example numbers of the first `n` regions with one through the API's
    /// own parse.
    fn parse_examples(n: usize) -> usize {
        let numbers: Vec<String> = regions().into_iter().filter_map(example).take(n).collect();
        for number in &numbers {
            let parsed = crate::types::PhoneNumber::parse(number);
            assert!(parsed.is_ok(), "{number}: {parsed:?}");
        }
        numbers.len()
    }

    #[test]
    fn the_cache_holds_every_pattern_of_the_metadata() {
        let mut patterns = HashSet::new();
        for region in regions() {
            let d = region.descriptors();
            let descriptors = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
                d.emergency(),
                d.short_code(),
                d.standard_rate(),
                d.carrier(),
                d.no_international(),
            ];
            for descriptor in descriptors.into_iter().flatten() {
                patterns.insert(descriptor.national_number().as_str());
            }
            let prefixes = [
                region.international_prefix(),
                region.national_prefix_for_parsing(),
                region.leading_digits(),
            ];
            patterns.extend(prefixes.into_iter().flatten().map(|r| r.as_str()));
            for format in region
                .formats()
                .iter()
                .chain(region.international_formats())
            {
                patterns.insert(format.pattern().as_str());
                patterns.extend(format.leading_digits().iter().map(|r| r.as_str()));
            }
        }
        assert!(patterns.len() > 1000, "{} patterns found", patterns.len());
        assert!(
            patterns.len() < CACHE_CAPACITY,
            "{} patterns: raise CACHE_CAPACITY",
            patterns.len()
        );
    }

    #[test]
    fn numbers_from_many_countries_compile_each_regex_once() {
        let countries = parse_examples(60);
        // The library's own cache stops at 100 and then evicts, so that a next parse
        // compiles again; more than 100 means nothing was evicted. (Other tests parse
        // at the same time and only add to the count.)
        let cached = lock(&DATABASE.cache()).len();
        assert!(cached > 100, "{countries} countries, {cached} regexes");
    }

    #[test]
    fn cached_regexes_match_ascii_digits_only() {
        parse_examples(60);
        let build = |source: &str, unicode: bool| {
            regex::RegexBuilder::new(source)
                .ignore_whitespace(true)
                .unicode(unicode)
                .build()
                .ok()
        };
        let cache = DATABASE.cache();
        let mut cache = lock(&cache);
        // Each region's mobile example with one digit written in Arabic-Indic: where
        // a Unicode `\d` and the ASCII build disagree, the cached regex must side with
        // the ASCII build.
        let mut disagreements = 0;
        for region in regions().into_iter().take(60) {
            let Some(mobile) = region.descriptors().mobile() else {
                continue;
            };
            let (Some(example), source) = (mobile.example(), mobile.national_number().as_str())
            else {
                continue;
            };
            let (Some(cached), Some(ascii), Some(unicode)) = (
                cache.get_mut(source),
                build(source, false),
                build(source, true),
            ) else {
                continue;
            };
            assert!(cached.is_match(example), "{source} on {example}");
            for (at, digit) in example.char_indices() {
                let arabic = char::from_u32(0x0660 + digit.to_digit(10).unwrap_or(0));
                let variant = format!(
                    "{}{}{}",
                    &example[..at],
                    arabic.unwrap_or(digit),
                    &example[at + 1..]
                );
                if ascii.is_match(&variant) != unicode.is_match(&variant) {
                    disagreements += 1;
                    assert_eq!(
                        cached.is_match(&variant),
                        ascii.is_match(&variant),
                        "{source} on {variant}"
                    );
                }
            }
        }
        assert!(disagreements > 10, "{disagreements}");
    }
}
