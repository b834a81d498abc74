//! The business report: sends, verifications and the conversion rate by country,
//! purpose, channel and provider; failures by the provider's error code; the guard's
//! blocks; the median time from send to verify; and an estimated cost, segments times
//! `[reports] prices` for the longest matching destination prefix. The store counts;
//! this part names countries and prices segments.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::config::ReportsConfig;
use crate::store::{Billed, CodeGroup, ReportRows};
use crate::types::calling_code;

/// Codes sent and verified in one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub sent: i64,
    pub verified: i64,
}

impl Group {
    /// Verified over sent; `None` when nothing was sent.
    pub fn conversion(&self) -> Option<f64> {
        (self.sent > 0).then(|| self.verified as f64 / self.sent as f64)
    }

    fn add(&mut self, g: &CodeGroup) {
        self.sent += g.sent;
        self.verified += g.verified;
    }
}

/// The estimate: SMS segments priced by destination; what has no price is counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cost {
    pub currency: String,
    pub estimated: f64,
    pub segments: i64,
    /// By country (the calling code's main country), in `currency`.
    pub by_country: BTreeMap<String, f64>,
    /// SMS segments to destinations without a price.
    pub unpriced_segments: i64,
    /// WhatsApp messages and calls: priced by the provider per conversation or minute,
    /// which otpd does not know.
    pub unpriced_messages: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub since: SystemTime,
    pub until: SystemTime,
    pub codes: Group,
    pub by_country: BTreeMap<String, Group>,
    pub by_purpose: BTreeMap<String, Group>,
    pub by_channel: BTreeMap<String, Group>,
    pub by_provider: BTreeMap<String, Group>,
    pub median_seconds_to_verify: Option<f64>,
    /// (provider, its error code, messages), most first.
    pub failures: Vec<(String, Option<i64>, i64)>,
    /// (rule, blocked sends), most first.
    pub guard_blocks: Vec<(String, i64)>,
    pub cost: Cost,
}

impl Report {
    pub fn new(
        rows: ReportRows,
        prices: &ReportsConfig,
        since: SystemTime,
        until: SystemTime,
    ) -> Self {
        let mut report = Report {
            since,
            until,
            codes: Group::default(),
            by_country: BTreeMap::new(),
            by_purpose: BTreeMap::new(),
            by_channel: BTreeMap::new(),
            by_provider: BTreeMap::new(),
            median_seconds_to_verify: rows.median_seconds_to_verify,
            failures: rows.failures,
            guard_blocks: rows.guard_blocks,
            cost: Cost {
                currency: prices.currency.clone(),
                ..Cost::default()
            },
        };
        for g in &rows.codes {
            report.codes.add(g);
            report
                .by_country
                .entry(country(&g.prefix))
                .or_default()
                .add(g);
            report
                .by_purpose
                .entry(g.purpose.clone())
                .or_default()
                .add(g);
            report
                .by_channel
                .entry(g.channel.clone())
                .or_default()
                .add(g);
            let provider = Some(g.provider.clone()).filter(|p| !p.is_empty());
            report
                .by_provider
                .entry(provider.unwrap_or_else(|| "none".into()))
                .or_default()
                .add(g);
        }
        for billed in &rows.billed {
            report.cost.charge(billed, prices);
        }
        report
    }
}

impl Cost {
    fn charge(&mut self, billed: &Billed, prices: &ReportsConfig) {
        if billed.channel != "sms" {
            self.unpriced_messages += billed.messages;
            return;
        }
        let digits = billed.prefix.strip_prefix('+').unwrap_or(&billed.prefix);
        self.segments += billed.segments;
        match prices
            .prices
            .iter()
            .find(|(p, _)| digits.starts_with(p.as_str()))
        {
            Some((_, price)) => {
                let cost = price * billed.segments as f64;
                self.estimated += cost;
                *self.by_country.entry(country(digits)).or_default() += cost;
            }
            None => self.unpriced_segments += billed.segments,
        }
    }
}

/// The main country of the calling code a number starts with ("34600" → "ES", "1" →
/// "US"); "unknown" for what no numbering plan has.
fn country(digits: &str) -> String {
    calling_code(digits.strip_prefix('+').unwrap_or(digits))
        .map_or_else(|| "unknown".to_owned(), |(_, region)| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(prefix: &str, purpose: &str, channel: &str, sent: i64, verified: i64) -> CodeGroup {
        CodeGroup {
            prefix: prefix.into(),
            purpose: purpose.into(),
            channel: channel.into(),
            provider: "twilio".into(),
            sent,
            verified,
        }
    }

    #[test]
    fn groups_add_up_by_country_purpose_and_channel_and_segments_are_priced() {
        let rows = ReportRows {
            codes: vec![
                group("346", "login", "sms", 10, 8),
                group("346", "registration", "whatsapp", 4, 1),
                group("447", "login", "sms", 5, 5),
                group("120", "login", "sms", 1, 0),
            ],
            billed: vec![
                Billed {
                    prefix: "+34600".into(),
                    channel: "sms".into(),
                    messages: 10,
                    segments: 12,
                },
                Billed {
                    prefix: "+44740".into(),
                    channel: "sms".into(),
                    messages: 5,
                    segments: 5,
                },
                Billed {
                    prefix: "+12025".into(),
                    channel: "sms".into(),
                    messages: 1,
                    segments: 1,
                },
                Billed {
                    prefix: "+34600".into(),
                    channel: "whatsapp".into(),
                    messages: 4,
                    segments: 4,
                },
            ],
            ..ReportRows::default()
        };
        let prices = ReportsConfig {
            currency: "EUR".into(),
            prices: vec![("346".into(), 0.1), ("34".into(), 0.5), ("44".into(), 0.04)],
        };
        let r = Report::new(
            rows,
            &prices,
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            r.codes,
            Group {
                sent: 20,
                verified: 14
            }
        );
        assert_eq!(
            r.by_country["ES"],
            Group {
                sent: 14,
                verified: 9
            }
        );
        assert_eq!(
            r.by_country["GB"],
            Group {
                sent: 5,
                verified: 5
            }
        );
        assert_eq!(
            r.by_country["US"],
            Group {
                sent: 1,
                verified: 0
            }
        );
        assert_eq!(r.by_purpose["login"].conversion(), Some(13.0 / 16.0));
        assert_eq!(
            r.by_channel["whatsapp"],
            Group {
                sent: 4,
                verified: 1
            }
        );
        // The longest prefix wins: +346 at 0.1, not +34 at 0.5.
        assert!((r.cost.by_country["ES"] - 1.2).abs() < 1e-9, "{:?}", r.cost);
        assert!((r.cost.estimated - 1.4).abs() < 1e-9, "{:?}", r.cost);
        assert_eq!((r.cost.segments, r.cost.unpriced_segments), (18, 1));
        assert_eq!(r.cost.unpriced_messages, 4);
    }
}
