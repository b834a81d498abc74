//! Which operation a request is (and the requests of one), the checks every request
//! meets (path, credentials, account, method) in Twilio's order, and FetchAccount, the
//! one operation small enough to live here.

use base64::Engine as _;
use hyper::header;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{
    API_VERSION, MockOptions, MockTwilio, Outcome, RecordedRequest, Shared, calls, list, messages,
    rfc2822,
};

/// The operations the mock serves, by their `operationId` in Twilio's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateMessage,
    ListMessage,
    FetchAccount,
    CreateCall,
}

impl Operation {
    pub(super) const COUNT: usize = 4;

    /// The operation `method` on `path` would be, whatever the account and credentials.
    pub fn of(method: &Method, path: &str) -> Option<Operation> {
        let rest = path.strip_prefix("/2010-04-01/Accounts/")?;
        let (_account, resource) = rest.split_once('/').unwrap_or((rest, ""));
        match (method, resource) {
            (&Method::POST, "Messages.json") => Some(Operation::CreateMessage),
            (&Method::GET, "Messages.json") => Some(Operation::ListMessage),
            (&Method::POST, "Calls.json") => Some(Operation::CreateCall),
            (&Method::GET, "") if rest.ends_with(".json") => Some(Operation::FetchAccount),
            _ => None,
        }
    }
}

impl MockTwilio {
    /// The requests received so far for `operation` (a daemon's status check asks
    /// FetchAccount or ListMessage between its sends).
    pub fn requests_of(&self, operation: Operation) -> Vec<RecordedRequest> {
        let state = self.shared.state();
        let of = |r: &&RecordedRequest| {
            r.method
                .parse()
                .is_ok_and(|method| Operation::of(&method, &r.path) == Some(operation))
        };
        state.requests.iter().filter(of).cloned().collect()
    }
}

pub(super) fn parse_basic_auth(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Who the credentials are: the account itself, its API key, or nobody.
#[derive(PartialEq)]
enum Caller {
    Account,
    ApiKey,
    Nobody,
}

fn caller(opts: &MockOptions, authorization: Option<&str>) -> Caller {
    let Some((user, pass)) = authorization.and_then(parse_basic_auth) else {
        return Caller::Nobody;
    };
    if user == opts.account_sid && pass == opts.auth_token {
        return Caller::Account;
    }
    match (&opts.api_key_sid, &opts.api_key_secret) {
        (Some(sid), Some(secret)) if &user == sid && &pass == secret => Caller::ApiKey,
        _ => Caller::Nobody,
    }
}

fn unauthorized() -> Outcome {
    Outcome::error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
        .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"Twilio API\"")
}

pub(super) fn evaluate(
    shared: &Shared,
    method: &Method,
    req: &RecordedRequest,
    is_form: bool,
) -> Outcome {
    let opts = &shared.opts;
    let path = req.path.as_str();
    let not_found = || {
        Outcome::error(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    };

    let Some(api_path) = path.strip_prefix("/2010-04-01") else {
        return not_found();
    };
    // The account named in the path must be the authenticated one (API keys belong to it).
    let path_account_ok = match api_path.strip_prefix("/Accounts/") {
        Some(rest) => {
            let segment = rest.split('/').next().unwrap_or_default();
            segment.strip_suffix(".json").unwrap_or(segment) == opts.account_sid
        }
        None => true,
    };
    let caller = caller(opts, req.authorization.as_deref());
    if caller == Caller::Nobody || !path_account_ok {
        return unauthorized();
    }
    let account = format!("/Accounts/{}", opts.account_sid);
    let Some(resource) = api_path.strip_prefix(&account) else {
        return not_found();
    };
    let allow = match resource {
        "/Messages.json" => "GET, POST",
        "/Calls.json" => "POST",
        ".json" => "GET",
        _ => return not_found(),
    };
    match Operation::of(method, path) {
        Some(Operation::CreateMessage) => messages::create(shared, req, is_form),
        Some(Operation::ListMessage) => list::list(shared, req),
        Some(Operation::CreateCall) => calls::create(shared, req, is_form),
        // Twilio: "Standard API Keys give access to all the functionality in Twilio's
        // API, except for managing API Keys, Account Configuration, and Subaccounts."
        Some(Operation::FetchAccount) if caller == Caller::ApiKey && !opts.api_key_is_main => {
            unauthorized()
        }
        Some(Operation::FetchAccount) => fetch_account(shared),
        None => Outcome::error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
            .with_header(header::ALLOW, allow),
    }
}

/// The `api.v2010.account` resource of the configured account. Like Twilio's, it
/// carries the auth token, so a test sees it if the daemon ever logs the answer.
fn fetch_account(shared: &Shared) -> Outcome {
    let opts = &shared.opts;
    let sid = &opts.account_sid;
    let since = rfc2822(shared.started);
    let base = format!("/{API_VERSION}/Accounts/{sid}");
    let body = json!({
        "auth_token": opts.auth_token,
        "date_created": since,
        "date_updated": since,
        "friendly_name": "otpd test account",
        "owner_account_sid": sid,
        "sid": sid,
        "status": opts.account_status,
        "subresource_uris": {
            "messages": format!("{base}/Messages.json"),
            "calls": format!("{base}/Calls.json"),
            "balance": format!("{base}/Balance.json"),
        },
        "type": "Full",
        "uri": format!("{base}.json"),
    });
    Outcome::ok(StatusCode::OK, body, None)
}
