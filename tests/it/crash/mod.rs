//! Crash safety: acknowledged state survives `kill -9` at any moment. Concurrent
//! callers send and verify against the real daemon (mock Twilio), the daemon is
//! SIGKILLed at a random point, restarted on the same database, and every outcome a
//! caller was told is checked: a code reported sent still verifies, a verified code
//! stays used, and attempt counters never go backwards. Requests that were in flight
//! at the kill got no answer, so either outcome is allowed for them, and no more.
//!
//! Randomness is seeded (`OTPD_CRASH_SEED` replays a run); the seed is printed.
//! `outbox` does the same for plain messages and codes with Twilio up, down, slow and
//! failing mid-response: sent exactly once, or failed with a reason; never lost.

mod outbox;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAX_ATTEMPTS: u32 = 5;
const WORKERS: usize = 6;
const PHONES_PER_WORKER: usize = 2;
const ROUNDS: usize = 5;

/// Answers the workers received, for the report line of each round.
static ANSWERED: AtomicUsize = AtomicUsize::new(0);

/// What the callers know about one phone's code for purpose "login".
#[derive(Clone, Debug, PartialEq)]
enum Known {
    /// No code was ever acknowledged as sent.
    Nothing,
    /// A send was acknowledged, and `remaining` attempts were last reported.
    Sent {
        code: String,
        remaining: u32,
    },
    Verified {
        code: String,
    },
    /// A wrong guess reported 0 attempts remaining.
    Dead {
        code: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Send,
    VerifyRight,
    VerifyWrong,
    /// A verify whose answer cannot change the state (used or dead code).
    Recheck,
}

#[derive(Debug)]
struct Phone {
    number: String,
    known: Known,
    /// The request that got no answer because the daemon died under it.
    in_doubt: Option<Op>,
}

async fn send(socket: &Path, phone: &str) -> Result<Reply, String> {
    let body = send_body(phone, "login", None).to_string().into_bytes();
    try_request(
        socket,
        Method::POST,
        "/api/v1/messaging/send-otp/",
        Some(body),
    )
    .await
}

async fn verify(socket: &Path, phone: &str, code: &str) -> Result<Reply, String> {
    let body = verify_body(phone, code, "login", None)
        .to_string()
        .into_bytes();
    try_request(
        socket,
        Method::POST,
        "/api/v1/messaging/verify-otp/",
        Some(body),
    )
    .await
}

fn remaining(reply: &Reply) -> u32 {
    reply.json["attempts_remaining"].as_u64().unwrap() as u32
}

/// One caller: drives its own phones (so every answer has one expected meaning) until
/// the daemon dies under it. Panics on any answer that contradicts what it was told.
async fn worker(
    socket: PathBuf,
    mock: std::sync::Arc<MockTwilio>,
    mut phones: Vec<Phone>,
    seed: u64,
) -> Vec<Phone> {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let i = rng.random_range(0..phones.len());
        let p = &mut phones[i];
        let roll: f64 = rng.random();
        let op = match &p.known {
            Known::Nothing => Op::Send,
            Known::Sent { .. } if roll < 0.4 => Op::VerifyWrong,
            Known::Sent { .. } if roll < 0.8 => Op::VerifyRight,
            Known::Sent { .. } => Op::Send,
            Known::Verified { .. } | Known::Dead { .. } if roll < 0.3 => Op::Recheck,
            _ => Op::Send,
        };
        let answer = match (&op, &p.known) {
            (Op::Send, _) => send(&socket, &p.number).await,
            (Op::VerifyRight, Known::Sent { code, .. })
            | (Op::Recheck, Known::Verified { code } | Known::Dead { code }) => {
                verify(&socket, &p.number, code).await
            }
            (Op::VerifyWrong, Known::Sent { code, .. }) => {
                verify(&socket, &p.number, &wrong(code)).await
            }
            other => unreachable!("{other:?}"),
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(_) => {
                // No answer: the daemon died with this request in flight.
                p.in_doubt = Some(op);
                return phones;
            }
        };
        ANSWERED.fetch_add(1, Ordering::Relaxed);
        let context = format!("{} {op:?} from {:?}: {:?}", p.number, p.known, reply.json);
        p.known = match (op, p.known.clone()) {
            (Op::Send, _) => {
                assert_eq!(reply.status, 200, "{context}");
                Known::Sent {
                    code: last_code(&mock, &p.number),
                    remaining: MAX_ATTEMPTS,
                }
            }
            (Op::VerifyRight, Known::Sent { code, .. }) => {
                assert_eq!(reply.status, 200, "{context}");
                Known::Verified { code }
            }
            (
                Op::VerifyWrong,
                Known::Sent {
                    code,
                    remaining: before,
                },
            ) => {
                reply.assert_error(400, "invalid_otp");
                assert_eq!(remaining(&reply), before - 1, "{context}");
                match before - 1 {
                    0 => Known::Dead { code },
                    left => Known::Sent {
                        code,
                        remaining: left,
                    },
                }
            }
            (Op::Recheck, known @ Known::Verified { .. }) => {
                assert_eq!(reply.code(), "otp_already_used", "{context}");
                known
            }
            (Op::Recheck, known @ Known::Dead { .. }) => {
                assert_eq!(reply.code(), "too_many_attempts", "{context}");
                known
            }
            other => unreachable!("{other:?}"),
        };
    }
}

/// After a restart: checks each phone against what its caller was told, allowing
/// either outcome only for the one request that got no answer. Leaves every phone
/// in a known state for the next round.
async fn check_after_restart(otpd: &Daemon, mock: &MockTwilio, phones: &mut [Phone]) -> usize {
    let socket = otpd.socket();
    let mut checked = 0;
    for p in phones.iter_mut() {
        let in_doubt = p.in_doubt.take();
        let context = format!("{} (was {:?}, in flight {in_doubt:?})", p.number, p.known);
        p.known = match (p.known.clone(), in_doubt) {
            // A send that got no answer may have superseded the acknowledged code, or not:
            // nothing to hold it to. Start the phone over from a fresh, answered send.
            (_, Some(Op::Send)) | (Known::Nothing, _) => {
                let reply = send(&socket, &p.number).await.unwrap();
                assert_eq!(reply.status, 200, "{context}: {:?}", reply.json);
                Known::Sent {
                    code: last_code(mock, &p.number),
                    remaining: MAX_ATTEMPTS,
                }
            }
            // Acknowledged as sent, with `remaining` reported: a wrong guess now must
            // report exactly one less (every acknowledged guess counted, none lost),
            // then the right code must still verify.
            (
                Known::Sent {
                    code,
                    remaining: before,
                },
                None,
            ) => {
                checked += 1;
                if before >= 2 {
                    let reply = verify(&socket, &p.number, &wrong(&code)).await.unwrap();
                    reply.assert_error(400, "invalid_otp");
                    assert_eq!(remaining(&reply), before - 1, "{context}");
                }
                let reply = verify(&socket, &p.number, &code).await.unwrap();
                assert_eq!(reply.status, 200, "{context}: {:?}", reply.json);
                Known::Verified { code }
            }
            // The right code was in flight: it verified (now used) or it did not (still
            // verifiable) — or its counted attempt was the last one.
            (
                Known::Sent {
                    code,
                    remaining: before,
                },
                Some(Op::VerifyRight),
            ) => {
                checked += 1;
                let reply = verify(&socket, &p.number, &code).await.unwrap();
                match (reply.status.as_u16(), reply.code()) {
                    (200, _) | (400, "otp_already_used") => Known::Verified { code },
                    (429, "too_many_attempts") if before == 1 => Known::Dead { code },
                    _ => panic!("{context}: {:?}", reply.json),
                }
            }
            // A wrong guess was in flight: it counted or it did not; never more, never
            // fewer than the guesses acknowledged.
            (
                Known::Sent {
                    code,
                    remaining: before,
                },
                Some(Op::VerifyWrong),
            ) => {
                checked += 1;
                let reply = verify(&socket, &p.number, &wrong(&code)).await.unwrap();
                if reply.code() == "too_many_attempts" {
                    assert_eq!(before, 1, "{context}: {:?}", reply.json);
                    Known::Dead { code }
                } else {
                    reply.assert_error(400, "invalid_otp");
                    let left = remaining(&reply);
                    assert!(
                        left == before - 1 || left + 2 == before,
                        "{context}: {left} attempts remaining"
                    );
                    match left {
                        0 => Known::Dead { code },
                        left => Known::Sent {
                            code,
                            remaining: left,
                        },
                    }
                }
            }
            // A verified code stays used; a dead one stays dead (a recheck changes neither).
            (Known::Verified { code }, None | Some(Op::Recheck)) => {
                checked += 1;
                let reply = verify(&socket, &p.number, &code).await.unwrap();
                reply.assert_error(400, "otp_already_used");
                Known::Verified { code }
            }
            (Known::Dead { code }, None | Some(Op::Recheck)) => {
                checked += 1;
                let reply = verify(&socket, &p.number, &code).await.unwrap();
                reply.assert_error(429, "too_many_attempts");
                Known::Dead { code }
            }
            other => unreachable!("{other:?}"),
        };
    }
    checked
}

fn integrity_ok(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

// SQLite-only: it reads the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_outcomes_survive_kill_9_at_random_points() {
    let seed: u64 = std::env::var("OTPD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed: {seed} (replay with OTPD_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let mock = std::sync::Arc::new(MockTwilio::start(MockOptions::default()));
    let setup = Setup::new()
        .sqlite_only()
        .twilio(&mock)
        .set("otp", &format!("max_attempts = {MAX_ATTEMPTS}"))
        .set("limits", "send_global = \"100000/1s\"")
        .set("limits", "send_per_phone = \"100000/1m\"")
        .set("limits", "verify_per_phone = \"100000/1m\"");
    let mut otpd = setup.start();
    let mut phones: Vec<Phone> = (0..WORKERS * PHONES_PER_WORKER)
        .map(|i| Phone {
            number: format!("+346001112{i:02}"),
            known: Known::Nothing,
            in_doubt: None,
        })
        .collect();

    let (mut in_flight_kills, mut checked) = (0, 0);
    for round in 0..ROUNDS {
        let socket = otpd.socket();
        let mut tasks = Vec::new();
        for _ in 0..WORKERS {
            let mine: Vec<Phone> = phones.drain(..PHONES_PER_WORKER).collect();
            let seed = rng.random();
            tasks.push(tokio::spawn(worker(
                socket.clone(),
                mock.clone(),
                mine,
                seed,
            )));
        }
        // Kill at a random moment of the traffic.
        let after = Duration::from_millis(rng.random_range(50..400));
        tokio::time::sleep(after).await;
        otpd.kill_9();
        for task in tasks {
            phones.extend(task.await.unwrap());
        }
        in_flight_kills += phones.iter().filter(|p| p.in_doubt.is_some()).count();
        println!(
            "round {round}: killed after {after:?}, {} answers, {} requests in flight",
            ANSWERED.swap(0, Ordering::Relaxed),
            phones.iter().filter(|p| p.in_doubt.is_some()).count()
        );
        integrity_ok(&otpd.db_path());

        otpd = otpd.start_again();
        checked += check_after_restart(&otpd, &mock, &mut phones).await;
    }
    println!("{checked} acknowledged states checked, {in_flight_kills} requests cut by kills");
    // The kills must have hit traffic, or the test proved nothing.
    assert!(
        in_flight_kills >= ROUNDS,
        "only {in_flight_kills} requests were in flight at the kills"
    );
    // Each round after the first leaves at most one request per worker in doubt.
    assert!(checked >= (ROUNDS - 1) * WORKERS * (PHONES_PER_WORKER - 1));
}

#[tokio::test]
async fn a_wrong_guess_acknowledged_before_kill_9_still_counts_after_restart() {
    let mock = MockTwilio::start(MockOptions::default());
    let mut otpd = Setup::new().twilio(&mock).start();
    assert_eq!(
        otpd.send_otp(send_body(PHONE, "login", None)).await.status,
        200
    );
    let code = last_code(&mock, PHONE);
    let reply = otpd
        .verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
        .await;
    reply.assert_error(400, "invalid_otp");
    assert_eq!(reply.json["attempts_remaining"], 4);

    otpd.kill_9();
    let otpd = otpd.start_again();
    let reply = otpd
        .verify_otp(verify_body(PHONE, &wrong(&code), "login", None))
        .await;
    reply.assert_error(400, "invalid_otp");
    assert_eq!(
        reply.json["attempts_remaining"], 3,
        "the guess before the crash was lost"
    );
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    let mut otpd = otpd;
    otpd.kill_9();
    let otpd = otpd.start_again();
    let reply = otpd
        .verify_otp(verify_body(PHONE, &code, "login", None))
        .await;
    reply.assert_error(400, "otp_already_used");
}
