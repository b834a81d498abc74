//! CreateMessage: what the mock answers, records and refuses, with Twilio's codes.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use super::{BODY, SMS, TO, assert_error, call, client, is_rfc2822, is_sid, owner, send};
use crate::common::mock_twilio::{
    CREATE_MESSAGE_FIELDS, MESSAGE_PROPERTIES, MockOptions, MockTwilio, TEST_API_KEY_SECRET,
    TEST_API_KEY_SID, WHATSAPP_SANDBOX, magic,
};

#[tokio::test]
async fn valid_create_returns_the_message_resource_and_is_recorded() {
    let mock = MockTwilio::start(MockOptions::default());
    let (account, token) = owner(&mock);
    let (status, m) = send(&mock, &SMS).await;
    assert_eq!(status, 201, "{m}");
    let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        MESSAGE_PROPERTIES.into_iter().collect::<BTreeSet<_>>()
    );
    let sid = m["sid"].as_str().unwrap();
    assert!(is_sid(sid, "SM"), "{sid}");
    assert_eq!(m["account_sid"], account.as_str());
    assert_eq!(
        (&m["to"], &m["from"], &m["body"]),
        (&TO.into(), &magic::FROM_VALID.into(), &BODY.into())
    );
    assert_eq!(
        (&m["status"], &m["date_sent"]),
        (&"queued".into(), &Value::Null)
    );
    assert!(is_rfc2822(m["date_created"].as_str().unwrap()), "{m}");
    assert_eq!(m["num_segments"], "1");
    let base = format!("/2010-04-01/Accounts/{account}/Messages/{sid}");
    assert_eq!(m["uri"], format!("{base}.json"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{account}/Messages.json")
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.basic_auth(), Some((account, token)));
    assert_eq!(
        (r.field("To"), r.field("Body"), r.field("Nope")),
        (Some(TO), Some(BODY), None)
    );
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

    let (status, headers, json) = call(
        Method::POST,
        &mock.messages_url(),
        Some((&o.account_sid, "wrong-token")),
        Some(&form),
    )
    .await;
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
    let (status, _, json) = call(
        Method::POST,
        &url,
        Some((&o.account_sid, &o.auth_token)),
        Some(&form),
    )
    .await;
    assert_error(status, &json, 401, 20003);

    // API key credentials are rejected when no key is configured.
    let (status, _, json) = call(
        Method::POST,
        &mock.messages_url(),
        Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET)),
        Some(&form),
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

    let (status, _, json) = call(
        Method::POST,
        &mock.messages_url(),
        Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET)),
        Some(&form),
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["account_sid"], o.account_sid.as_str());

    // The account SID and auth token still work alongside the key.
    let (status, _, _) = call(
        Method::POST,
        &mock.messages_url(),
        Some((&o.account_sid, &o.auth_token)),
        Some(&form),
    )
    .await;
    assert_eq!(status, 201);

    // The key SID in the path instead of the account SID fails.
    let url = format!(
        "{}/2010-04-01/Accounts/{TEST_API_KEY_SID}/Messages.json",
        mock.base_url()
    );
    let (status, _, json) = call(
        Method::POST,
        &url,
        Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET)),
        Some(&form),
    )
    .await;
    assert_error(status, &json, 401, 20003);

    // Another account in the path fails.
    let url = format!(
        "{}/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
        mock.base_url()
    );
    let (status, _, json) = call(
        Method::POST,
        &url,
        Some((TEST_API_KEY_SID, TEST_API_KEY_SECRET)),
        Some(&form),
    )
    .await;
    assert_error(status, &json, 401, 20003);

    // Wrong secret fails.
    let (status, _, json) = call(
        Method::POST,
        &mock.messages_url(),
        Some((TEST_API_KEY_SID, "nope")),
        Some(&form),
    )
    .await;
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

    let auth = Some((o.account_sid.as_str(), o.auth_token.as_str()));
    for (method, url, allow) in [
        (Method::DELETE, mock.messages_url(), "GET, POST"),
        (Method::GET, mock.account_url("/Calls.json"), "POST"),
        (Method::POST, mock.account_url(".json"), "GET"),
    ] {
        let (status, headers, json) = call(method, &url, auth, Some(&[("To", TO)])).await;
        assert_error(status, &json, 405, 20004);
        assert_eq!(headers["allow"], allow);
    }

    for path in [
        format!("/2010-04-01/Accounts/{}/Conferences.json", o.account_sid),
        format!("/2010-04-01/Accounts/{}/Messages", o.account_sid),
        "/nothing".to_owned(),
    ] {
        let url = format!("{}{path}", mock.base_url());
        let (status, _, json) = call(Method::POST, &url, auth, Some(&[("To", TO)])).await;
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
