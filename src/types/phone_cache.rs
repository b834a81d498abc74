//! otpd's one door to the phonenumber crate's regular expressions. The library keeps
//! every metadata pattern in one LRU cache of 100 compiled regexes, shared by all
//! countries and locked for each match. Three things about that cache hurt a daemon:
//!
//! - 100 is fewer than the patterns that numbers from about fifteen countries need, so
//!   with traffic from more countries than that, parses evict each other's regexes and
//!   compile them again, under that one lock (BENCHMARKS.md, History: "Many
//!   countries").
//! - Its regexes are compiled in Unicode mode, where `\d` is every script's digits:
//!   ~110 KB each, against ~10 KB for the ASCII build of the same pattern.
//! - The library only ever uses a match that starts at the number's first digit, but
//!   its patterns are unanchored, and their lazy DFAs (one per regex and thread) then
//!   track every later start as well: they grew with each new number (BENCHMARKS.md,
//!   History: "The phone regexes' lazy DFAs").
//!
//! So the cache is made big enough never to evict (the metadata holds ~2,100 distinct
//! patterns), and [`call`] rebuilds each regex the library compiled once the call is
//! over ([`rebuild`]: ASCII, anchored, no lazy DFA). The library's answers are
//! unchanged for what otpd gives it, ASCII digits only ([`crate::types::PhoneNumber`]
//! refuses anything else before parsing); a test holds every pattern to that. Memory
//! is bounded by the countries seen, not the numbers: ~2 MB for 40 in one thread, ~1 MB
//! more for each other thread that parses.

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
            // A pattern that does not build that way keeps the library's regex.
            if let Ok(rebuilt) = rebuild(source) {
                *regex = rebuilt;
            }
            rebuilt.insert(source.clone());
        }
    }
    out
}

/// `source` built with the library's options (`Database::from`: whitespace ignored) and
/// three changes that keep every answer the library takes from it:
/// - ASCII digits only (see the module doc);
/// - anchored at the start: each of the library's uses (`find`, then `captures` or
///   `replace`) discards a match that does not start at 0, and a leftmost-first match
///   that starts at 0 is the same match anchored or not. The newline ends a `#` comment
///   that would otherwise swallow the `)` in whitespace-ignoring mode;
/// - no lazy DFA: a cache capacity below its minimum makes `regex` skip it, and the
///   one-pass DFA, built once and shared, or the bounded backtracker match instead.
///   Their per-thread state is sized by the pattern, not by the numbers matched so far;
///   on phone numbers they are no slower than the lazy DFA was (BENCHMARKS.md).
fn rebuild(source: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{source}\n)"))
        .ignore_whitespace(true)
        .unicode(false)
        .dfa_size_limit(0)
        .build()
}

/// The library itself panics on a poisoned cache; otpd's side goes on with the data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    use phonenumber::metadata::{Descriptor, Metadata};

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

    /// The number types `region` describes, each with its pattern and example.
    fn descriptors(region: &Metadata) -> Vec<&Descriptor> {
        let d = region.descriptors();
        let all = [
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
        all.into_iter().flatten().collect()
    }

    /// Every pattern of `region`'s metadata, each of which the library compiles into
    /// its cache when it first uses it.
    fn patterns(region: &Metadata) -> HashSet<&str> {
        let mut patterns: HashSet<&str> = descriptors(region)
            .into_iter()
            .map(|d| d.national_number().as_str())
            .collect();
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
        patterns
    }

    #[test]
    fn the_cache_holds_every_pattern_of_the_metadata() {
        let patterns: HashSet<&str> = regions().into_iter().flat_map(patterns).collect();
        assert!(patterns.len() > 1000, "{} patterns found", patterns.len());
        assert!(
            patterns.len() < CACHE_CAPACITY,
            "{} patterns: raise CACHE_CAPACITY",
            patterns.len()
        );
    }

    /// What the library can give `region`'s patterns: its example numbers whole, cut
    /// short, lengthened, and behind a trunk or international prefix still to strip.
    fn inputs(region: &Metadata) -> HashSet<String> {
        let mut inputs = HashSet::new();
        for example in descriptors(region).into_iter().filter_map(|d| d.example()) {
            for cut in 1..example.len() {
                inputs.insert(example[..cut].to_owned());
            }
            inputs.insert(example[1..].to_owned());
            let prefixes = ["", "0", "00", "011", "8", "1"];
            let national = region.national_prefix().unwrap_or("0");
            for prefix in prefixes.into_iter().chain([national]) {
                inputs.insert(format!("{prefix}{example}"));
                inputs.insert(format!("{prefix}{example}7"));
            }
        }
        inputs
    }

    /// The spans of a match and its groups: all that `find`, `captures` and `replace`
    /// hand the library.
    fn spans(captures: regex::Captures<'_>) -> Vec<Option<std::ops::Range<usize>>> {
        captures.iter().map(|m| m.map(|m| m.range())).collect()
    }

    #[test]
    fn rebuilt_regexes_give_the_library_the_same_answers() {
        // The library's own build, but ASCII (the test below covers that change alone).
        let plain = |source: &str| {
            regex::RegexBuilder::new(source)
                .ignore_whitespace(true)
                .unicode(false)
                .build()
        };
        let mut built = std::collections::HashMap::new();
        let mut checked = 0;
        for region in regions() {
            let inputs = inputs(region);
            for source in patterns(region) {
                let (plain, rebuilt) = built.entry(source).or_insert_with(|| {
                    let plain = plain(source).unwrap_or_else(|e| panic!("{source}: {e}"));
                    let rebuilt = rebuild(source).unwrap_or_else(|e| panic!("{source}: {e}"));
                    assert_eq!(plain.captures_len(), rebuilt.captures_len(), "{source}");
                    (plain, rebuilt)
                });
                for input in &inputs {
                    // Every use in the library discards a match that starts later.
                    let wanted = plain
                        .captures(input)
                        .filter(|c| c.get(0).is_some_and(|m| m.start() == 0))
                        .map(spans);
                    let got = rebuilt.captures(input).map(spans);
                    assert_eq!(got, wanted, "{source} on {input}");
                    checked += 1;
                }
            }
        }
        assert!(built.len() > 1000, "{} patterns", built.len());
        assert!(checked > 100_000, "{checked} matches");
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
        // the ASCII build. (A match counts only from the start, as in the library.)
        let at_start = |re: &regex::Regex, s: &str| re.find(s).is_some_and(|m| m.start() == 0);
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
            assert!(at_start(cached, example), "{source} on {example}");
            for (at, digit) in example.char_indices() {
                let arabic = char::from_u32(0x0660 + digit.to_digit(10).unwrap_or(0));
                let variant = format!(
                    "{}{}{}",
                    &example[..at],
                    arabic.unwrap_or(digit),
                    &example[at + 1..]
                );
                if at_start(&ascii, &variant) != at_start(&unicode, &variant) {
                    disagreements += 1;
                    assert_eq!(
                        at_start(cached, &variant),
                        at_start(&ascii, &variant),
                        "{source} on {variant}"
                    );
                }
            }
        }
        assert!(disagreements > 10, "{disagreements}");
    }
}
