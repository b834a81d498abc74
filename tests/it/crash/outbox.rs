//! The outbox and codes across `kill -9`, with Twilio up, down (connections refused),
//! slow (answers after otpd's timeout, the message already created) and failing
//! mid-response (slow bodies, resets, hangs, 500s). Callers send plain messages and
//! codes while the daemon is killed at a seeded random point each round; at the end,
//! with Twilio up, every message and code a caller was told was accepted must be sent
//! exactly once at Twilio (the mock records every message it created) or, for a
//! message, reported failed with a reason; none lost, none `unknown`, and no body
//! ever created twice, accepted or not.
//!
//! Bounded: `OTPD_CRASH_ROUNDS` rounds (50 by default) of at most 500 ms of traffic,
//! then at most [`DRAIN`] for the outbox to settle. `OTPD_CRASH_SEED` replays a run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::integrity_ok;
use crate::common::mock_twilio::{Fault, Operation};
use crate::common::outbox::SEND_SMS;
use crate::common::*;

const MESSAGE_CLIENTS: usize = 3;
const CODE_PHONES: usize = 4;
/// Long enough that a test seed collides two codes with negligible odds.
const CODE_LENGTH: usize = 10;
/// The most the outbox may take to settle once Twilio is back for good.
const DRAIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Twilio {
    Up,
    Down,
    Slow,
    Failing,
}

/// What the callers were told: messages accepted (202) and codes sent (200).
#[derive(Default)]
struct Told {
    messages: Vec<(i64, String)>,
    codes: Vec<i64>,
    in_flight: usize,
}

fn seed() -> u64 {
    std::env::var("OTPD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn rounds() -> usize {
    std::env::var("OTPD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// Puts the mock in this round's state.
fn set(mock: &MockTwilio, twilio: Twilio, rng: &mut StdRng) {
    mock.unscript();
    mock.set_latency(Duration::ZERO);
    mock.set_down(false);
    match twilio {
        Twilio::Up => {}
        Twilio::Down => mock.set_down(true),
        Twilio::Slow => mock.set_latency(Duration::from_millis(rng.random_range(200..700))),
        Twilio::Failing => {
            let faults: Vec<Fault> = (0..12)
                .map(|_| match rng.random_range(0..5) {
                    0 => Fault::SlowBody(Duration::from_millis(800)),
                    1 => Fault::Reset,
                    2 => Fault::Hang,
                    3 => Fault::internal_error(),
                    _ => Fault::unavailable(),
                })
                .collect();
            mock.script_for(Operation::CreateMessage, faults);
        }
    }
}

/// One caller of send-sms with bodies of its own, until the daemon dies under it.
/// Each message to a number of its own (`+346` `client` `round` `n`), so that no check
/// reads a long list.
async fn messages(
    socket: std::path::PathBuf,
    (round, client): (usize, usize),
    stop: Arc<AtomicBool>,
) -> Told {
    let mut told = Told::default();
    for n in 0..10_000 {
        let body = format!("crash r{round} c{client} message {n}");
        let to = format!("+346{client}{round:03}{n:04}");
        let request = json!({"to": to, "body": body}).to_string();
        let reply = try_request(
            &socket,
            hyper::Method::POST,
            SEND_SMS,
            Some(request.into_bytes()),
        )
        .await;
        match reply {
            Ok(reply) if reply.status == 202 => {
                told.messages
                    .push((reply.json["message_id"].as_i64().unwrap(), body));
            }
            Ok(reply) => panic!("{body}: {:?}", reply.json),
            Err(_) => {
                told.in_flight += 1;
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    told
}

/// One caller of send-otp for one phone, until the daemon dies under it. Twilio being
/// down or slow is a 503 the caller is told: not an accepted code.
async fn codes(socket: std::path::PathBuf, phone: String, stop: Arc<AtomicBool>) -> Told {
    let mut told = Told::default();
    loop {
        let body = send_body(&phone, "login", None).to_string().into_bytes();
        let reply = try_request(
            &socket,
            hyper::Method::POST,
            "/api/v1/messaging/send-otp/",
            Some(body),
        )
        .await;
        match reply {
            Ok(reply) if reply.status == 200 => {
                told.codes.push(reply.json["otp_id"].as_i64().unwrap());
            }
            Ok(reply) if reply.status == 503 => {}
            Ok(reply) => panic!("{phone}: {:?}", reply.json),
            Err(_) => {
                told.in_flight += 1;
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    told
}

// SQLite-only: it reads the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_and_code_is_sent_once_or_failed_across_kill_9() {
    let seed = seed();
    let rounds = rounds();
    println!("outbox crash seed: {seed} (replay with OTPD_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let mock = MockTwilio::start(MockOptions::default());
    let setup = Setup::new()
        .sqlite_only()
        .twilio(&mock)
        .set("twilio", "timeout = \"400ms\"")
        .set("twilio", "send_deadline = \"1200ms\"")
        .set("twilio", "retry_backoff = \"20ms\"")
        .set("twilio", "breaker_cooldown = \"200ms\"")
        .set("messaging", "retry_delay = \"50ms\"")
        .set("messaging", "max_attempts = 30")
        .set("messaging", "unknown_after = \"10m\"")
        .set("otp", &format!("length = {CODE_LENGTH}"))
        .set("limits", "send_global = \"100000/1s\"")
        .set("limits", "send_per_phone = \"100000/1m\"");
    let mut told = Told::default();
    let mut otpd: Option<Daemon> = None;
    let mut modes: HashMap<String, usize> = HashMap::new();
    for round in 0..rounds {
        let twilio = match rng.random_range(0..4) {
            0 => Twilio::Up,
            1 => Twilio::Down,
            2 => Twilio::Slow,
            _ => Twilio::Failing,
        };
        *modes.entry(format!("{twilio:?}")).or_default() += 1;
        set(&mock, twilio, &mut rng);
        let t0 = Instant::now();
        let daemon = match otpd.take() {
            None => setup.clone().start(),
            Some(killed) => killed.start_again(),
        };
        let t_start = t0.elapsed();
        let socket = daemon.socket();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..MESSAGE_CLIENTS {
            let who = (round, client);
            tasks.push(tokio::spawn(messages(socket.clone(), who, stop.clone())));
        }
        for phone in 0..CODE_PHONES {
            let phone = format!("+3469{phone}{round:03}000");
            tasks.push(tokio::spawn(codes(socket.clone(), phone, stop.clone())));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        let mut daemon = daemon;
        daemon.kill_9();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let t = task.await.unwrap();
            told.messages.extend(t.messages);
            told.codes.extend(t.codes);
            told.in_flight += t.in_flight;
        }
        let t_kill = t0.elapsed();
        integrity_ok(&daemon.db_path());
        println!("round {round}: Twilio {twilio:?}, started in {t_start:?}, killed at {t_kill:?}");
        otpd = Some(daemon);
    }
    let traffic = started.elapsed();

    // Twilio up for good; the outbox settles.
    set(&mock, Twilio::Up, &mut rng);
    let otpd = otpd.take().unwrap().start_again();
    let conn = rusqlite::Connection::open(otpd.db_path()).unwrap();
    let deadline = Instant::now() + DRAIN;
    loop {
        let unsettled: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages WHERE kind = 'sms'
                 AND status IN ('queued', 'sending', 'checking')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if unsettled == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unsettled} messages never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed() - traffic;

    // What Twilio holds: no body was ever created twice, whoever asked for it.
    let at_twilio = mock.messages();
    let mut created: HashMap<&str, usize> = HashMap::new();
    let mut by_sid: HashMap<&str, &str> = HashMap::new();
    for m in &at_twilio {
        *created.entry(m.body.as_str()).or_default() += 1;
        by_sid.insert(m.sid.as_str(), m.body.as_str());
    }
    let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");

    // Every accepted message: sent once under the SID Twilio gave it, or failed with a
    // reason and never created; none lost, none unknown.
    let mut rows: HashMap<i64, (String, Option<String>, Option<String>)> = conn
        .prepare("SELECT id, status, sid, error_message FROM messages WHERE kind = 'sms'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (mut sent, mut failed) = (0, 0);
    for (id, body) in &told.messages {
        let (status, sid, error) = rows
            .remove(id)
            .unwrap_or_else(|| panic!("message {id} ({body}) was lost"));
        let times = created.get(body.as_str()).copied().unwrap_or(0);
        match status.as_str() {
            "sent" => {
                sent += 1;
                let sid = sid.unwrap_or_default();
                assert_eq!(times, 1, "message {id} ({body})");
                assert_eq!(
                    by_sid.get(sid.as_str()),
                    Some(&body.as_str()),
                    "message {id}'s sid"
                );
            }
            "failed" => {
                failed += 1;
                assert!(
                    error.is_some_and(|e| !e.is_empty()),
                    "message {id} failed without a reason"
                );
                assert_eq!(times, 0, "message {id} failed yet was sent");
            }
            other => panic!("message {id} ({body}) is {other} with Twilio up"),
        }
    }

    // Every code a caller was told was sent went out exactly once, under its SID.
    let mut code_sids = conn
        .prepare("SELECT sid FROM messages WHERE otp_id = ?1 AND sid IS NOT NULL")
        .unwrap();
    let codes_at_twilio: Vec<String> = at_twilio
        .iter()
        .filter(|m| m.body.contains("code"))
        .map(|m| code_in(&m.body))
        .collect();
    for otp_id in &told.codes {
        let sids: Vec<String> = code_sids
            .query_map([otp_id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sids.len(), 1, "otp {otp_id}: {sids:?}");
        let body = by_sid
            .get(sids[0].as_str())
            .unwrap_or_else(|| panic!("otp {otp_id}'s sid {} is not at Twilio", sids[0]));
        let code = code_in(body);
        let times = codes_at_twilio.iter().filter(|c| **c == code).count();
        assert_eq!(times, 1, "otp {otp_id}'s code went out {times} times");
    }

    // How often the undecided case came up, and how it was decided.
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let checked =
        count("SELECT count(DISTINCT message_id) FROM message_events WHERE status = 'checking'");
    let found = count(
        "SELECT count(*) FROM message_events WHERE status = 'sent' AND detail LIKE '%found at%'",
    );
    println!(
        "{rounds} rounds {modes:?} in {traffic:?}, drained in {drained:?}: {} messages \
         accepted ({sent} sent, {failed} failed; {checked} checked with Twilio, {found} \
         found there), {} codes sent, {} requests cut by kills, {} messages at Twilio",
        told.messages.len(),
        told.codes.len(),
        told.in_flight,
        at_twilio.len()
    );
    if rounds >= 20 {
        assert!(checked > 0 && found > 0, "no send was ever in doubt");
    }
    assert!(told.in_flight >= rounds, "the kills hit too little traffic");
    assert!(
        sent > failed,
        "too few messages got through to prove anything"
    );
}
