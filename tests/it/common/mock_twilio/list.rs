//! ListMessage (`GET .../Messages.json`): the messages the mock really created, newest
//! first as Twilio lists them, filtered by `To`, `From` and `DateSent` (`DateSent=`,
//! `DateSent<=` and `DateSent>=` on the wire: the parameter names end in `<` and `>`),
//! one page of `PageSize` (1–1000, default 50) at index `Page`, in Twilio's list shape.
//!
//! `DateSent` values are a day (`2019-06-11`, GMT: the whole day) or an instant (RFC 3339,
//! or RFC 2822 as Twilio writes dates), compared to the second. Unknown parameters and
//! values that do not parse get 400 with code 20001: Twilio's exact answer to those is
//! not documented, and refusing keeps a typo in what otpd asks from passing silently.

use hyper::StatusCode;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::Offset;
use serde_json::{Value, json};

use super::{API_VERSION, Outcome, RecordedRequest, Shared};

/// ListMessage's query parameters in Twilio's description.
pub const LIST_MESSAGE_PARAMETERS: [&str; 8] = [
    "To",
    "From",
    "DateSent",
    "DateSent<",
    "DateSent>",
    "PageSize",
    "Page",
    "PageToken",
];
/// The filters, in the order Twilio writes them back into its page URIs.
const FILTERS: [&str; 5] = ["To", "From", "DateSent", "DateSent<", "DateSent>"];
const DEFAULT_PAGE_SIZE: usize = 50;

/// A `DateSent` value: a GMT day, or an instant to the second.
#[derive(Clone, Copy)]
enum When {
    Day(Date),
    At(i64),
}

fn parse_when(value: &str) -> Option<When> {
    if let Ok(t) = value.parse::<Timestamp>() {
        return Some(When::At(t.as_second()));
    }
    if let Ok(t) = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value) {
        return Some(When::At(t.as_second()));
    }
    // Exactly a date: a longer text would parse as a date too, ignoring its time.
    (value.len() == 10)
        .then(|| value.parse::<Date>().ok().map(When::Day))
        .flatten()
}

/// How `sent` compares with `when`: Less, Equal or Greater.
fn compare(sent: Timestamp, when: When) -> std::cmp::Ordering {
    match when {
        When::Day(day) => Offset::UTC.to_datetime(sent).date().cmp(&day),
        When::At(second) => sent.as_second().cmp(&second),
    }
}

fn invalid(message: String) -> Outcome {
    Outcome::bad_request(20001, message)
}

pub(super) fn list(shared: &Shared, req: &RecordedRequest) -> Outcome {
    if let Some((name, _)) = req
        .query
        .iter()
        .find(|(name, _)| !LIST_MESSAGE_PARAMETERS.contains(&name.as_str()))
    {
        return invalid(format!(
            "Unknown parameter {name} (mock Twilio: ListMessage parameters are case-sensitive: {})",
            LIST_MESSAGE_PARAMETERS.join(", ")
        ));
    }
    let mut dates = Vec::new();
    for (name, wanted) in [
        ("DateSent", [std::cmp::Ordering::Equal].as_slice()),
        (
            "DateSent<",
            &[std::cmp::Ordering::Less, std::cmp::Ordering::Equal],
        ),
        (
            "DateSent>",
            &[std::cmp::Ordering::Greater, std::cmp::Ordering::Equal],
        ),
    ] {
        if let Some(value) = req.query_param(name) {
            let Some(when) = parse_when(value) else {
                return invalid(format!(
                    "Invalid {name} {value:?}: a date (YYYY-MM-DD) or a date and time"
                ));
            };
            dates.push((when, wanted));
        }
    }
    let page_size = match req.query_param("PageSize").map(str::parse::<usize>) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(size)) if (1..=1000).contains(&size) => size,
        Some(_) => return invalid("PageSize must be an integer from 1 to 1000".to_owned()),
    };
    let page = match req.query_param("Page").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(page)) => page,
        Some(Err(_)) => return invalid("Page must be an integer of 0 or more".to_owned()),
    };

    let (to, from) = (req.query_param("To"), req.query_param("From"));
    let matching: Vec<(String, Value)> = shared
        .state()
        .messages
        .iter()
        .rev()
        .filter(|m| to.is_none_or(|to| m.record.to == to))
        .filter(|m| from.is_none_or(|from| m.record.from.as_deref() == Some(from)))
        .filter(|m| {
            dates
                .iter()
                .all(|(when, wanted)| wanted.contains(&compare(m.sent_at, *when)))
        })
        .map(|m| (m.record.sid.clone(), m.listed()))
        .collect();

    let start = page.saturating_mul(page_size);
    let on_page: Vec<&(String, Value)> = matching.iter().skip(start).take(page_size).collect();
    let uri = |page: usize, token: Option<String>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for name in FILTERS {
            if let Some(value) = req.query_param(name) {
                query.append_pair(name, value);
            }
        }
        query.append_pair("PageSize", &page_size.to_string());
        query.append_pair("Page", &page.to_string());
        if let Some(token) = token {
            query.append_pair("PageToken", &token);
        }
        format!(
            "/{API_VERSION}/Accounts/{}/Messages.json?{}",
            shared.opts.account_sid,
            query.finish()
        )
    };
    let next = (start + on_page.len() < matching.len())
        .then(|| uri(page + 1, on_page.last().map(|(sid, _)| format!("PA{sid}"))));
    let previous =
        (page > 0).then(|| uri(page - 1, on_page.first().map(|(sid, _)| format!("PB{sid}"))));
    let body = json!({
        "messages": on_page.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        "page": page,
        "page_size": page_size,
        "uri": uri(page, None),
        "first_page_uri": uri(0, None),
        "next_page_uri": next,
        "previous_page_uri": previous,
        "start": start,
        "end": start + on_page.len().saturating_sub(1),
    });
    Outcome::ok(StatusCode::OK, body, None)
}
