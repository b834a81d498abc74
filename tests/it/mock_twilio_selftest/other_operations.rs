//! FetchAccount, ListMessage and CreateCall: their answers, Twilio's codes, what they
//! record, and faults scripted for one operation only.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{
    SMS, TO, assert_error, call, client, get_as_owner, is_rfc2822, is_sid, owner, post_as_owner,
    root_error, send,
};
use crate::common::mock_twilio::{
    Fault, MockOptions, MockTwilio, Operation, TEST_API_KEY_SECRET, TEST_API_KEY_SID, magic,
};

const ACCOUNT_KEYS: [&str; 10] = [
    "auth_token",
    "date_created",
    "date_updated",
    "friendly_name",
    "owner_account_sid",
    "sid",
    "status",
    "subresource_uris",
    "type",
    "uri",
];
const TWIML: &str = "<Response><Say>Your code is 1 2 3 4 5 6</Say></Response>";

fn keys(json: &Value) -> BTreeSet<&str> {
    json.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn fetch_account_answers_the_account_to_its_owner_and_a_main_key_only() {
    let mock = MockTwilio::start(MockOptions::default().with_api_key());
    let (account, token) = owner(&mock);
    let url = mock.account_url(".json");
    let (status, json) = get_as_owner(&mock, &url).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(keys(&json), ACCOUNT_KEYS.into_iter().collect());
    assert_eq!(
        (&json["sid"], &json["status"]),
        (&account.as_str().into(), &"active".into())
    );
    assert!(is_rfc2822(json["date_created"].as_str().unwrap()), "{json}");
    assert_eq!(json["uri"], format!("/2010-04-01/Accounts/{account}.json"));

    // Wrong token, no credentials, another account's path: 401 as for messages.
    let other = url.replace(&account, "ACffffffffffffffffffffffffffffffff");
    for (url, auth) in [
        (&url, Some((account.as_str(), "wrong"))),
        (&url, None),
        (&other, Some((account.as_str(), token.as_str()))),
    ] {
        let (status, headers, json) = call(Method::GET, url, auth, None).await;
        assert_error(status, &json, 401, 20003);
        assert_eq!(headers["www-authenticate"], "Basic realm=\"Twilio API\"");
    }
    // A Standard key sends messages but may not read the Account resource.
    let key = Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET));
    let (status, _, json) = call(Method::GET, &url, key, None).await;
    assert_error(status, &json, 401, 20003);
    let (status, _, _) = call(Method::POST, &mock.messages_url(), key, Some(&SMS)).await;
    assert_eq!(status, 201);

    let main = MockTwilio::start(MockOptions {
        account_status: "suspended".to_owned(),
        ..MockOptions::default().with_main_api_key()
    });
    let (status, _, json) = call(Method::GET, &main.account_url(".json"), key, None).await;
    assert_eq!(
        (status, &json["status"]),
        (200, &"suspended".into()),
        "{json}"
    );
}

#[tokio::test]
async fn faults_scripted_for_fetch_account_leave_messages_alone() {
    let mock = MockTwilio::start(MockOptions::default());
    let (account, token) = owner(&mock);
    let url = mock.account_url(".json");
    mock.script_for(
        Operation::FetchAccount,
        [Fault::unavailable(), Fault::Reset],
    );
    assert_eq!(send(&mock, &SMS).await.0, 201, "not FetchAccount's fault");
    let (status, json) = get_as_owner(&mock, &url).await;
    assert_error(status, &json, 503, 20503);
    let root = root_error(client().get(&url).basic_auth(&account, Some(&token))).await;
    assert!(root.contains("reset"), "{root}");
    assert_eq!(mock.faults_left(), 0);
    assert_eq!(get_as_owner(&mock, &url).await.0, 200);
}

/// Sends `bodies` to `to` and returns their SIDs, oldest first.
async fn sent(mock: &MockTwilio, to: &str, bodies: &[&str]) -> Vec<String> {
    let mut sids = Vec::new();
    for body in bodies {
        let (status, json) = send(
            mock,
            &[("To", to), ("From", magic::FROM_VALID), ("Body", body)],
        )
        .await;
        assert_eq!(status, 201, "{json}");
        sids.push(json["sid"].as_str().unwrap().to_owned());
    }
    sids
}

fn listed_sids(page: &Value) -> Vec<&str> {
    let messages = page["messages"].as_array().unwrap();
    messages
        .iter()
        .map(|m| m["sid"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn list_message_answers_what_was_created_newest_first_filtered_and_paged() {
    let mock = MockTwilio::start(MockOptions::default());
    let account = owner(&mock).0;
    let ours = sent(&mock, TO, &["one", "two", "three"]).await;
    let theirs = sent(&mock, "+34600111222", &["other"]).await;
    let m = &mock;
    let list = |query: &str| {
        let url = format!("{}?{query}", m.messages_url());
        async move { get_as_owner(m, &url).await }
    };
    let date_sent = |page: &Value, n: usize| {
        let text = page["messages"][n]["date_sent"]
            .as_str()
            .unwrap()
            .to_owned();
        jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(&text)
            .unwrap()
    };

    let (status, page) = list("").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        listed_sids(&page),
        [&theirs[0], &ours[2], &ours[1], &ours[0]]
    );
    let first = &page["messages"][0];
    assert_eq!(
        (&first["status"], &first["body"]),
        (&"sent".into(), &"other".into())
    );
    assert!(is_rfc2822(first["date_sent"].as_str().unwrap()), "{first}");

    let (newest, oldest) = (date_sent(&page, 0), date_sent(&page, 3));

    // Filters, and the page shape Twilio answers with.
    let today = oldest.strftime("%Y-%m-%d").to_string();
    let (_, page) = list(&format!(
        "To=%2B15558675310&From=%2B15005550006&DateSent%3E={today}&PageSize=2"
    ))
    .await;
    assert_eq!(listed_sids(&page), [&ours[2], &ours[1]]);
    let base = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let filters = format!("To=%2B15558675310&From=%2B15005550006&DateSent%3E={today}&PageSize=2");
    assert_eq!(page["uri"], format!("{base}?{filters}&Page=0"));
    assert_eq!(page["first_page_uri"], format!("{base}?{filters}&Page=0"));
    assert_eq!(
        page["next_page_uri"],
        format!("{base}?{filters}&Page=1&PageToken=PA{}", ours[1])
    );
    assert_eq!(page["previous_page_uri"], Value::Null);
    assert_eq!(
        (
            &page["page"],
            &page["page_size"],
            &page["start"],
            &page["end"]
        ),
        (&0.into(), &2.into(), &0.into(), &1.into())
    );
    let next = page["next_page_uri"].as_str().unwrap();
    let (_, page) = get_as_owner(&mock, &format!("{}{next}", mock.base_url())).await;
    assert_eq!(listed_sids(&page), [&ours[0]]);
    assert_eq!(
        (&page["start"], &page["end"], &page["next_page_uri"]),
        (&2.into(), &2.into(), &Value::Null)
    );
    assert!(
        page["previous_page_uri"]
            .as_str()
            .unwrap()
            .contains("&Page=0&PageToken=PB")
    );

    // DateSent as an instant (RFC 3339 or RFC 2822), to the second, and as a day.
    let second = jiff::SignedDuration::from_secs(1);
    let (status, page) = list(&format!("DateSent={newest}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed_sids(&page)[0], theirs[0]);
    for query in [
        format!("DateSent%3C={}", oldest - second),
        format!("DateSent%3E={}", newest + second),
        "DateSent%3C=2008-01-02".to_owned(),
        "DateSent=Wed,%2019%20Jun%202019%2022:04:00%20%2B0000".to_owned(),
    ] {
        let (status, page) = list(&query).await;
        assert_eq!(
            (status, listed_sids(&page).len()),
            (200, 0),
            "{query}: {page}"
        );
    }

    for query in [
        "to=%2B15558675310",
        "PageSize=0",
        "PageSize=1001",
        "Page=-1",
        "DateSent=soon",
    ] {
        let (status, json) = list(query).await;
        assert_error(status, &json, 400, 20001);
    }
    let requests = mock.requests();
    assert_eq!(
        requests.last().unwrap().query_param("DateSent"),
        Some("soon")
    );
}

#[tokio::test]
async fn list_message_faults_and_auth() {
    let mock = MockTwilio::start(MockOptions::default().with_api_key());
    sent(&mock, TO, &["one"]).await;
    mock.script_for(Operation::ListMessage, [Fault::internal_error()]);
    let (status, json) = get_as_owner(&mock, &mock.messages_url()).await;
    assert_error(status, &json, 500, 20500);
    // A Standard key may list messages.
    let key = Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET));
    let (status, _, page) = call(Method::GET, &mock.messages_url(), key, None).await;
    assert_eq!((status, listed_sids(&page).len()), (200, 1), "{page}");
    let (status, _, json) = call(Method::GET, &mock.messages_url(), None, None).await;
    assert_error(status, &json, 401, 20003);
    // A message whose request failed was never created, so it is not listed.
    mock.script([Fault::unavailable()]);
    assert_eq!(send(&mock, &SMS).await.0, 503);
    let (_, page) = get_as_owner(&mock, &mock.messages_url()).await;
    assert_eq!(listed_sids(&page).len(), 1);
}

#[tokio::test]
async fn create_call_answers_a_queued_call_and_records_it() {
    let mock = MockTwilio::start(MockOptions::default());
    let account = owner(&mock).0;
    let url = mock.account_url("/Calls.json");
    let callback = "https://backend.example.com/otpd/call-status/";
    let form = [
        ("To", TO),
        ("From", magic::FROM_VALID),
        ("Twiml", TWIML),
        ("StatusCallback", callback),
    ];
    let (status, json) = post_as_owner(&mock, &url, &form).await;
    assert_eq!(status, 201, "{json}");
    let sid = json["sid"].as_str().unwrap();
    assert!(is_sid(sid, "CA"), "{sid}");
    assert_eq!(
        (&json["status"], &json["direction"]),
        (&"queued".into(), &"outbound-api".into())
    );
    assert_eq!(
        (&json["to"], &json["from"]),
        (&TO.into(), &magic::FROM_VALID.into())
    );
    assert_eq!(
        json["uri"],
        format!("/2010-04-01/Accounts/{account}/Calls/{sid}.json")
    );
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].sid.as_str(), calls[0].to.as_str()), (sid, TO));
    assert_eq!(calls[0].twiml.as_deref(), Some(TWIML));
    assert_eq!(calls[0].status_callback.as_deref(), Some(callback));
    assert!(mock.messages().is_empty(), "a call is not a message");

    let with_url = [
        ("To", TO),
        ("From", magic::FROM_VALID),
        ("Url", "https://example.com/twiml"),
    ];
    assert_eq!(post_as_owner(&mock, &url, &with_url).await.0, 201);
    assert_eq!(
        mock.calls()[1].url.as_deref(),
        Some("https://example.com/twiml")
    );
}

#[tokio::test]
async fn create_call_refusals_have_twilios_codes_and_create_nothing() {
    let mock = MockTwilio::start(MockOptions::default());
    let url = mock.account_url("/Calls.json");
    let (from, twiml) = (("From", magic::FROM_VALID), ("Twiml", TWIML));
    let cases: [(&[(&str, &str)], u64); 9] = [
        (&[from, twiml], 21201),
        (&[("To", TO), twiml], 21213),
        (&[("To", TO), from], 21205),
        (&[("To", TO), from, ("Url", "/relative")], 21205),
        (&[("To", magic::TO_INVALID), from, twiml], 21211),
        (&[("To", "whatsapp:+34600111222"), from, twiml], 21211),
        (&[("To", TO), ("From", "OTPD"), twiml], 21212),
        (&[("To", TO), ("From", magic::FROM_NOT_OWNED), twiml], 21210),
        (&[("To", TO), from, twiml, ("Body", "hi")], 20001),
    ];
    for (form, code) in cases {
        let (status, json) = post_as_owner(&mock, &url, form).await;
        assert_error(status, &json, 400, code);
    }
    mock.script_for(Operation::CreateCall, [Fault::Reset]);
    let (account, token) = owner(&mock);
    let request = client()
        .post(&url)
        .basic_auth(&account, Some(&token))
        .form(&[("To", TO), from, twiml]);
    assert!(root_error(request).await.contains("reset"));
    assert!(mock.calls().is_empty());
}

/// Down means refused at connect, for new and pooled connections alike; back up, on the
/// same port, the mock still holds and lists what it created before.
#[tokio::test]
async fn a_mock_taken_down_refuses_connections_and_keeps_its_messages() {
    let mock = MockTwilio::start(MockOptions::default());
    let (account, token) = owner(&mock);
    // One client for the whole test, so its pooled connection is the one shut.
    let client = client();
    let create = || {
        client
            .post(mock.messages_url())
            .basic_auth(&account, Some(&token))
            .form(&SMS)
            .send()
    };
    assert_eq!(create().await.unwrap().status(), 201);

    mock.set_down(true);
    // The shut keep-alive connection reaches the client's pool as an EOF; a request
    // that raced it would fail as "incomplete message" instead, as with a real Twilio.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        let error = create().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
    }
    assert!(std::net::TcpStream::connect(mock.addr()).is_err());

    mock.set_down(false);
    assert_eq!(create().await.unwrap().status(), 201);
    let (status, page) = get_as_owner(&mock, &mock.messages_url()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed_sids(&page).len(), 2, "{page}");
    assert_eq!(mock.messages().len(), 2);
}
