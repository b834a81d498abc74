//! Self-tests of the mock Twilio server in `common/mock_twilio.rs`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use crate::common::mock_twilio::{
    CREATE_MESSAGE_FIELDS, Fault, MESSAGE_PROPERTIES, MockOptions, MockTwilio, TEST_API_KEY_SECRET,
    TEST_API_KEY_SID, WHATSAPP_SANDBOX, magic,
};
use crate::common::prism::twilio_spec_path;
use base64::Engine as _;
use serde_json::Value;

const TO: &str = "+15558675310";
const BODY: &str = "Your verification code is 123456";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(
    user: &str,
    pass: &str,
    url: &str,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client()
        .post(url)
        .basic_auth(user, Some(pass))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let json = resp.json::<Value>().await.unwrap();
    (status, headers, json)
}

/// POST a form with the account's own credentials to its Messages.json.
async fn send(mock: &MockTwilio, form: &[(&str, &str)]) -> (u16, Value) {
    let o = mock.options().clone();
    let (status, _, json) = post(&o.account_sid, &o.auth_token, &mock.messages_url(), form).await;
    (status, json)
}

fn assert_error(status: u16, json: &Value, want_status: u16, want_code: u64) {
    assert_eq!(status, want_status, "{json}");
    assert_eq!(json["code"], want_code, "{json}");
    assert_eq!(json["status"], want_status, "{json}");
    assert_eq!(
        json["more_info"],
        format!("https://www.twilio.com/docs/errors/{want_code}")
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_rfc2822(s: &str) -> bool {
    // "Thu, 24 Aug 2023 05:01:45 +0000"
    let parts: Vec<&str> = s.split(' ').collect();
    parts.len() == 6
        && ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&parts[0])
        && parts[1].len() == 2
        && parts[3].len() == 4
        && parts[4].len() == 8
        && parts[5] == "+0000"
}

#[tokio::test]
async fn valid_create_returns_schema_shaped_201_and_is_recorded() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let resp = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&[("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let m: Value = resp.json().await.unwrap();

    let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        MESSAGE_PROPERTIES.into_iter().collect::<BTreeSet<_>>()
    );

    let sid = m["sid"].as_str().unwrap();
    assert!(is_sid(sid, "SM"), "{sid}");
    assert_eq!(m["account_sid"], o.account_sid.as_str());
    assert_eq!(m["api_version"], "2010-04-01");
    assert_eq!(m["body"], BODY);
    assert_eq!(m["to"], TO);
    assert_eq!(m["from"], magic::FROM_VALID);
    assert_eq!(m["messaging_service_sid"], Value::Null);
    assert_eq!(m["status"], "queued");
    assert_eq!(m["direction"], "outbound-api");
    assert!(is_rfc2822(m["date_created"].as_str().unwrap()), "{m}");
    assert!(is_rfc2822(m["date_updated"].as_str().unwrap()), "{m}");
    assert_eq!(m["date_sent"], Value::Null);
    assert_eq!(m["num_segments"], "1");
    assert_eq!(m["num_media"], "0");
    assert_eq!(m["price"], Value::Null);
    assert_eq!(m["price_unit"], "USD");
    assert_eq!(m["error_code"], Value::Null);
    assert_eq!(m["error_message"], Value::Null);
    let base = format!("/2010-04-01/Accounts/{}/Messages/{sid}", o.account_sid);
    assert_eq!(m["uri"], format!("{base}.json"));
    assert_eq!(m["subresource_uris"]["media"], format!("{base}/Media.json"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{}/Messages.json", o.account_sid)
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(r.authorization.as_deref().unwrap().starts_with("Basic "));
    assert_eq!(
        r.basic_auth(),
        Some((o.account_sid.clone(), o.auth_token.clone()))
    );
    assert_eq!(r.field("To"), Some(TO));
    assert_eq!(r.field("Body"), Some(BODY));
    assert_eq!(r.field("Nope"), None);
    assert_eq!(r.response_json().unwrap(), m);

    let messages = mock.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sid, sid);
    assert_eq!(messages[0].to, TO);
    assert_eq!(messages[0].from.as_deref(), Some(magic::FROM_VALID));
    assert_eq!(messages[0].messaging_service_sid, None);
    assert_eq!(messages[0].body, BODY);
    assert_eq!(messages[0].status, "queued");
}

#[tokio::test]
async fn sids_are_unique_and_messages_in_order() {
    let mock = MockTwilio::start(MockOptions::default());
    let mut sids = BTreeSet::new();
    for i in 0..20 {
        let body = format!("code {i}");
        let (status, json) = send(
            &mock,
            &[("To", TO), ("From", magic::FROM_VALID), ("Body", &body)],
        )
        .await;
        assert_eq!(status, 201);
        sids.insert(json["sid"].as_str().unwrap().to_owned());
    }
    assert_eq!(sids.len(), 20);
    let bodies: Vec<String> = mock.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies,
        (0..20).map(|i| format!("code {i}")).collect::<Vec<_>>()
    );
    mock.clear();
    assert!(mock.requests().is_empty() && mock.messages().is_empty());
}

#[tokio::test]
async fn messaging_service_gives_accepted_and_null_from() {
    let mock = MockTwilio::start(MockOptions::default());
    let mg = "MG0123456789abcdef0123456789abcdef";
    let (status, m) = send(
        &mock,
        &[("To", TO), ("MessagingServiceSid", mg), ("Body", BODY)],
    )
    .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["status"], "accepted");
    assert_eq!(m["from"], Value::Null);
    assert_eq!(m["messaging_service_sid"], mg);
    assert_eq!(m["num_segments"], "0");
    let msg = &mock.messages()[0];
    assert_eq!(msg.from, None);
    assert_eq!(msg.messaging_service_sid.as_deref(), Some(mg));
    assert_eq!(msg.status, "accepted");

    let (status, m) = send(
        &mock,
        &[
            ("To", TO),
            ("MessagingServiceSid", "MGnothex"),
            ("Body", BODY),
        ],
    )
    .await;
    assert_error(status, &m, 400, 21701);
}

#[tokio::test]
async fn bad_credentials_give_401_20003() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];

    let (status, headers, json) =
        post(&o.account_sid, "wrong-token", &mock.messages_url(), &form).await;
    assert_error(status, &json, 401, 20003);
    assert_eq!(json["message"], "Authenticate");
    assert_eq!(headers["www-authenticate"], "Basic realm=\"Twilio API\"");
    assert_eq!(headers["content-type"], "application/json");

    // No Authorization header at all.
    let resp = client()
        .post(mock.messages_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let json: Value = resp.json().await.unwrap();
    assert_error(401, &json, 401, 20003);

    // Right credentials, other account in the path.
    let other = "ACffffffffffffffffffffffffffffffff";
    let url = format!(
        "{}/2010-04-01/Accounts/{other}/Messages.json",
        mock.base_url()
    );
    let (status, _, json) = post(&o.account_sid, &o.auth_token, &url, &form).await;
    assert_error(status, &json, 401, 20003);

    // API key credentials are rejected when no key is configured.
    let (status, _, json) = post(
        TEST_API_KEY_SID,
        TEST_API_KEY_SECRET,
        &mock.messages_url(),
        &form,
    )
    .await;
    assert_error(status, &json, 401, 20003);

    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 401, 401]);
    assert!(mock.messages().is_empty());
}

#[tokio::test]
async fn api_key_auth_works_and_account_in_path_must_match() {
    let mock = MockTwilio::start(MockOptions::default().with_api_key());
    let o = mock.options().clone();
    assert_eq!(o.api_key_sid.as_deref(), Some(TEST_API_KEY_SID));
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];

    let (status, _, json) = post(
        TEST_API_KEY_SID,
        TEST_API_KEY_SECRET,
        &mock.messages_url(),
        &form,
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["account_sid"], o.account_sid.as_str());

    // The account SID and auth token still work alongside the key.
    let (status, _, _) = post(&o.account_sid, &o.auth_token, &mock.messages_url(), &form).await;
    assert_eq!(status, 201);

    // The key SID in the path instead of the account SID fails.
    let url = format!(
        "{}/2010-04-01/Accounts/{TEST_API_KEY_SID}/Messages.json",
        mock.base_url()
    );
    let (status, _, json) = post(TEST_API_KEY_SID, TEST_API_KEY_SECRET, &url, &form).await;
    assert_error(status, &json, 401, 20003);

    // Another account in the path fails.
    let url = format!(
        "{}/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
        mock.base_url()
    );
    let (status, _, json) = post(TEST_API_KEY_SID, TEST_API_KEY_SECRET, &url, &form).await;
    assert_error(status, &json, 401, 20003);

    // Wrong secret fails.
    let (status, _, json) = post(TEST_API_KEY_SID, "nope", &mock.messages_url(), &form).await;
    assert_error(status, &json, 401, 20003);

    assert_eq!(mock.messages().len(), 2);
    assert_eq!(
        mock.requests()[0].basic_auth(),
        Some((TEST_API_KEY_SID.to_owned(), TEST_API_KEY_SECRET.to_owned()))
    );
}

#[tokio::test]
async fn whatsapp_needs_both_addresses_on_the_channel_and_a_registered_sender() {
    let mock = MockTwilio::start(MockOptions::default());
    let sandbox = format!("whatsapp:{WHATSAPP_SANDBOX}");
    let to = "whatsapp:+34600111222";

    let (status, json) = send(&mock, &[("To", to), ("From", &sandbox), ("Body", BODY)]).await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["to"], to);
    assert_eq!(json["from"], sandbox.as_str());

    // A mixed pair, either way round.
    let (status, json) = send(
        &mock,
        &[("To", to), ("From", magic::FROM_VALID), ("Body", BODY)],
    )
    .await;
    assert_error(status, &json, 400, 21910);
    let (status, json) = send(
        &mock,
        &[("To", "+34600111222"), ("From", &sandbox), ("Body", BODY)],
    )
    .await;
    assert_error(status, &json, 400, 21910);

    // A WhatsApp From the account has not registered.
    let (status, json) = send(
        &mock,
        &[
            ("To", to),
            ("From", "whatsapp:+15005550006"),
            ("Body", BODY),
        ],
    )
    .await;
    assert_error(status, &json, 400, 63007);
    assert_eq!(mock.messages().len(), 1);
}

#[tokio::test]
async fn magic_numbers_give_their_codes() {
    let mock = MockTwilio::start(MockOptions::default());
    let to_cases = [
        (magic::TO_INVALID, 21211),
        (magic::TO_UNROUTABLE, 21612),
        (magic::TO_NO_INTERNATIONAL, 21408),
        (magic::TO_UNSUBSCRIBED, 21610),
        (magic::TO_NOT_MOBILE, 21614),
    ];
    for (to, code) in to_cases {
        let (status, json) = send(
            &mock,
            &[("To", to), ("From", magic::FROM_VALID), ("Body", BODY)],
        )
        .await;
        assert_error(status, &json, 400, code);
    }
    let (_, json) = send(
        &mock,
        &[
            ("To", magic::TO_INVALID),
            ("From", magic::FROM_VALID),
            ("Body", BODY),
        ],
    )
    .await;
    assert_eq!(
        json["message"],
        "The 'To' number +15005550001 is not a valid phone number."
    );

    let from_cases = [
        (magic::FROM_INVALID, 21212),
        (magic::FROM_NOT_OWNED, 21606),
        (magic::FROM_QUEUE_FULL, 21611),
    ];
    for (from, code) in from_cases {
        let (status, json) = send(&mock, &[("To", TO), ("From", from), ("Body", BODY)]).await;
        assert_error(status, &json, 400, code);
    }
    assert!(mock.messages().is_empty());
    assert!(mock.requests().iter().all(|r| r.status == 400));

    // Format checks beyond the magic numbers.
    let (status, json) = send(
        &mock,
        &[
            ("To", "5558675310"),
            ("From", magic::FROM_VALID),
            ("Body", BODY),
        ],
    )
    .await;
    assert_error(status, &json, 400, 21211);
    let (status, json) = send(&mock, &[("To", TO), ("From", "+0"), ("Body", BODY)]).await;
    assert_error(status, &json, 400, 21212);
    let (status, json) = send(&mock, &[("To", TO), ("From", TO), ("Body", BODY)]).await;
    assert_error(status, &json, 400, 21266);
    let (status, _) = send(&mock, &[("To", TO), ("From", "OTPD"), ("Body", BODY)]).await;
    assert_eq!(status, 201, "alphanumeric sender ID");
}

#[tokio::test]
async fn missing_fields_give_their_codes() {
    let mock = MockTwilio::start(MockOptions::default());
    let cases: [(&[(&str, &str)], u64); 5] = [
        (&[("From", magic::FROM_VALID), ("Body", BODY)], 21604),
        (
            &[("To", ""), ("From", magic::FROM_VALID), ("Body", BODY)],
            21604,
        ),
        (&[("To", TO), ("Body", BODY)], 21603),
        (&[("To", TO), ("From", magic::FROM_VALID)], 21602),
        (
            &[("To", TO), ("From", magic::FROM_VALID), ("Body", "")],
            21602,
        ),
    ];
    for (form, code) in cases {
        let (status, json) = send(&mock, form).await;
        assert_error(status, &json, 400, code);
    }
    // Media or a content template replace the body.
    let (status, json) = send(
        &mock,
        &[
            ("To", TO),
            ("From", magic::FROM_VALID),
            ("MediaUrl", "https://example.com/a.png"),
            ("MediaUrl", "https://example.com/b.png"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["num_media"], "2");
    assert!(is_sid(json["sid"].as_str().unwrap(), "MM"));
    assert_eq!(mock.requests().last().unwrap().fields("MediaUrl").len(), 2);
    let (status, _) = send(
        &mock,
        &[
            ("To", TO),
            ("From", magic::FROM_VALID),
            ("ContentSid", "HX0123456789abcdef0123456789abcdef"),
        ],
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn unknown_or_miscased_fields_are_rejected() {
    let mock = MockTwilio::start(MockOptions::default());
    let (status, json) = send(
        &mock,
        &[
            ("To", TO),
            ("From", magic::FROM_VALID),
            ("Body", BODY),
            ("StatusCallbackUrl", "https://example.com/cb"),
        ],
    )
    .await;
    assert_error(status, &json, 400, 20001);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("StatusCallbackUrl")
    );

    let (status, json) = send(
        &mock,
        &[("to", TO), ("From", magic::FROM_VALID), ("Body", BODY)],
    )
    .await;
    assert_error(status, &json, 400, 20001);
    assert!(json["message"].as_str().unwrap().contains("to"));
    assert!(mock.messages().is_empty());

    // Every spec field is accepted.
    let mut form: Vec<(&str, &str)> = CREATE_MESSAGE_FIELDS.iter().map(|&f| (f, "")).collect();
    form.extend([("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)]);
    form.retain(|(k, v)| !v.is_empty() || !["To", "From", "Body"].contains(k));
    let (status, json) = send(&mock, &form).await;
    assert_eq!(status, 201, "{json}");
}

#[tokio::test]
async fn wrong_content_type_path_and_method() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();

    let resp = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .json(&serde_json::json!({"To": TO, "From": magic::FROM_VALID, "Body": BODY}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let json: Value = resp.json().await.unwrap();
    assert_error(status, &json, 400, 21604);
    let r = mock.requests().pop().unwrap();
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert!(r.form.is_empty());
    assert!(r.body.contains("\"To\""));

    let resp = client()
        .get(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let status = resp.status().as_u16();
    let json: Value = resp.json().await.unwrap();
    assert_error(status, &json, 405, 20004);

    for path in [
        format!("/2010-04-01/Accounts/{}/Calls.json", o.account_sid),
        format!("/2010-04-01/Accounts/{}/Messages", o.account_sid),
        "/nothing".to_owned(),
    ] {
        let resp = client()
            .post(format!("{}{path}", mock.base_url()))
            .basic_auth(&o.account_sid, Some(&o.auth_token))
            .form(&[("To", TO)])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let json: Value = resp.json().await.unwrap();
        assert_error(status, &json, 404, 20404);
    }
    assert!(mock.messages().is_empty());
}

#[tokio::test]
async fn long_bodies_segments_and_limit() {
    let mock = MockTwilio::start(MockOptions::default());
    let cases = [
        ("a".repeat(160), "1"),
        ("a".repeat(161), "2"),
        ("é".repeat(306), "2"), // é is GSM-7
        ("€".repeat(80), "1"),  // extension characters count twice
        ("ж".repeat(70), "1"),
        ("ж".repeat(71), "2"),
        ("a".repeat(1600), "11"),
    ];
    for (body, want) in cases {
        let (status, json) = send(
            &mock,
            &[("To", TO), ("From", magic::FROM_VALID), ("Body", &body)],
        )
        .await;
        assert_eq!(status, 201, "{json}");
        assert_eq!(json["num_segments"], want, "{} chars", body.chars().count());
        assert_eq!(json["body"], body.as_str());
    }
    let (status, json) = send(
        &mock,
        &[
            ("To", TO),
            ("From", magic::FROM_VALID),
            ("Body", &"a".repeat(1601)),
        ],
    )
    .await;
    assert_error(status, &json, 400, 21617);
}

#[tokio::test]
async fn set_latency_delays_answers() {
    let mock = MockTwilio::start(MockOptions::default());
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.set_latency(Duration::from_millis(400));
    let started = Instant::now();
    let (status, _) = send(&mock, &form).await;
    assert_eq!(status, 201);
    assert!(started.elapsed() >= Duration::from_millis(400));

    mock.set_latency(Duration::ZERO);
    let started = Instant::now();
    let (status, _) = send(&mock, &form).await;
    assert_eq!(status, 201);
    assert!(started.elapsed() < Duration::from_millis(400));

    // A client that gives up earlier times out; the message was still created.
    mock.set_latency(Duration::from_millis(800));
    let o = mock.options().clone();
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&form)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(mock.messages().len(), 3);

    // Latency from the options applies from the start.
    let slow = MockTwilio::start(MockOptions {
        latency: Duration::from_millis(300),
        ..MockOptions::default()
    });
    let started = Instant::now();
    let (status, _) = send(&slow, &form).await;
    assert_eq!(status, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn set_hang_never_answers() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.set_hang(true);
    let started = Instant::now();
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&form)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 0);
    assert_eq!(requests[0].field("To"), Some(TO));
    assert!(mock.messages().is_empty());

    mock.set_hang(false);
    let (status, _) = send(&mock, &form).await;
    assert_eq!(status, 201);

    // Dropping the mock closes hung connections and is quick.
    mock.set_hang(true);
    let url = mock.messages_url();
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .basic_auth(&o.account_sid, Some(&o.auth_token))
            .form(&form)
            .send()
            .await
    });
    while mock.requests().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    drop(mock);
    assert!(started.elapsed() < Duration::from_secs(2));
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        result.is_err(),
        "hung request must fail once the mock is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_multi_thread_runtime() {
    let mock = MockTwilio::start(MockOptions::default());
    let (status, _) = send(
        &mock,
        &[("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)],
    )
    .await;
    assert_eq!(status, 201);
}

/// A plain `#[test]` with no runtime: raw HTTP/1.1 over a std TCP stream.
#[test]
fn works_from_sync_test_and_drop_stops_server() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(!mock.base_url().ends_with('/'));
    let body = format!(
        "To={}&From={}&Body=hi",
        TO.replace('+', "%2B"),
        magic::FROM_VALID.replace('+', "%2B")
    );
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", o.account_sid, o.auth_token));
    let request = format!(
        "POST /2010-04-01/Accounts/{}/Messages.json HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        o.account_sid,
        mock.addr(),
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(mock.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(mock.messages()[0].to, TO);
    assert_eq!(mock.messages()[0].body, "hi");

    let addr = mock.addr();
    drop(mock);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn rfc2822_formatting() {
    assert_eq!(
        crate::common::mock_twilio::rfc2822(0),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    assert_eq!(
        crate::common::mock_twilio::rfc2822(1_692_853_305),
        "Thu, 24 Aug 2023 05:01:45 +0000"
    );
    assert_eq!(
        crate::common::mock_twilio::rfc2822(951_782_400),
        "Tue, 29 Feb 2000 00:00:00 +0000"
    );
}

/// Keeps the mock honest against Twilio's OpenAPI description (the vendored part, or
/// `$OTPD_TWILIO_SPEC`).
#[test]
fn field_lists_match_the_twilio_openapi_spec() {
    let path = twilio_spec_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec: Value = serde_json::from_str(&text).unwrap();
    let op = &spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"];
    assert_eq!(op["operationId"], "CreateMessage");
    let fields: Vec<&str> =
        op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
    assert_eq!(
        fields.into_iter().collect::<BTreeSet<_>>(),
        CREATE_MESSAGE_FIELDS.into_iter().collect::<BTreeSet<_>>()
    );
    let schemas = &spec["components"]["schemas"];
    let props: BTreeSet<&str> = schemas["api.v2010.account.message"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        props,
        MESSAGE_PROPERTIES.into_iter().collect::<BTreeSet<_>>()
    );
    let statuses: Vec<&str> = schemas["message_enum_status"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"queued") && statuses.contains(&"accepted"));
    let directions = &schemas["message_enum_direction"]["enum"];
    assert!(
        directions
            .as_array()
            .unwrap()
            .contains(&"outbound-api".into())
    );
}

#[tokio::test]
async fn scripted_faults_answer_the_next_requests_in_order_then_normal_service_resumes() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.script([
        Fault::internal_error(),
        Fault::unavailable(),
        Fault::too_many_requests(7),
        Fault::error(
            503,
            20503,
            "Service Unavailable",
            Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        ),
    ]);
    for (want_status, want_code, want_retry_after) in [
        (500, 20500, None),
        (503, 20503, None),
        (429, 20429, Some("7")),
        (503, 20503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
    ] {
        let (status, headers, json) =
            post(&o.account_sid, &o.auth_token, &mock.messages_url(), &form).await;
        assert_error(status, &json, want_status, want_code);
        assert_eq!(
            headers.get("retry-after").map(|v| v.to_str().unwrap()),
            want_retry_after
        );
    }
    assert_eq!(mock.faults_left(), 0);
    assert!(mock.messages().is_empty(), "a fault creates no message");
    let (status, _) = send(&mock, &form).await;
    assert_eq!(status, 201);
    let requests = mock.requests();
    assert_eq!(requests.len(), 5);
    assert!(requests[..4].iter().all(|r| r.fault.is_some()));
    assert!(requests[4].fault.is_none());
    assert!(
        requests
            .windows(2)
            .all(|w| w[0].received_at <= w[1].received_at)
    );
}

#[tokio::test]
async fn a_scripted_reset_closes_the_connection_without_an_answer() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.script([Fault::Reset]);
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&form)
        .send()
        .await
        .unwrap_err();
    let mut root: &dyn std::error::Error = &err;
    while let Some(source) = root.source() {
        root = source;
    }
    assert!(root.to_string().contains("reset"), "{err}: {root}");
    let requests = mock.requests();
    assert_eq!((requests.len(), requests[0].status), (1, 0));
    assert!(mock.messages().is_empty());
}

#[tokio::test]
async fn a_scripted_slow_body_creates_the_message_and_delivers_the_rest_late() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.script([Fault::SlowBody(Duration::from_millis(300))]);
    let response = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The headers came at once and the message exists; the body is still on its way.
    assert_eq!(mock.messages().len(), 1);
    let started = Instant::now();
    let json: Value = response.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(json["sid"], mock.messages()[0].sid.as_str());
}

#[tokio::test]
async fn a_scripted_hang_holds_one_request_and_the_next_is_served() {
    let mock = MockTwilio::start(MockOptions::default());
    let o = mock.options().clone();
    let form = [("To", TO), ("From", magic::FROM_VALID), ("Body", BODY)];
    mock.script([Fault::Hang]);
    let err = client()
        .post(mock.messages_url())
        .basic_auth(&o.account_sid, Some(&o.auth_token))
        .form(&form)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let (status, _) = send(&mock, &form).await;
    assert_eq!(status, 201);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[0].status, requests[0].fault.clone()),
        (0, Some(Fault::Hang))
    );
    assert_eq!(
        mock.messages().len(),
        1,
        "a hung request creates no message"
    );
}
