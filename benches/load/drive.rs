//! Load generation: one task per keep-alive connection, requests back to back (closed
//! loop) or on a schedule (open loop), counting only what completes inside the measured
//! window; and the pool of sent codes that verifies use.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::StatusCode;

use crate::client::{
    CallError, Conn, call, connect, connect_all, expect, next_phone, send_request, verify_request,
    wrong,
};
use crate::mock::MockState;
use crate::report::RunStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Send,
    Verify,
    VerifyWrong,
    Flow,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Send => "send",
            Scenario::Verify => "verify",
            Scenario::VerifyWrong => "verify-wrong",
            Scenario::Flow => "flow",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        [
            Scenario::Send,
            Scenario::Verify,
            Scenario::VerifyWrong,
            Scenario::Flow,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

/// A code sent and not yet verified.
pub struct Code {
    phone: String,
    code: String,
    wrong: u8,
    /// The last verify-wrong run that used it (unique phone per request within a run).
    run: u64,
}

/// What the load shares: the mock's codes, and a pool of codes ready to verify.
pub struct Ctx {
    pub mock: Arc<MockState>,
    pub pool: Mutex<VecDeque<Code>>,
    pub runs: AtomicU64,
}

impl Ctx {
    /// Moves every code the mock has seen into the verify pool.
    pub fn refill(&self) {
        let drained: Vec<(String, String)> = self.mock.codes.lock().unwrap().drain().collect();
        let mut pool = self.pool.lock().unwrap();
        pool.extend(drained.into_iter().map(|(phone, code)| Code {
            phone,
            code,
            wrong: 0,
            run: 0,
        }));
    }

    /// Empties the pool, with the codes the mock holds: the next verifies use only codes
    /// sent after this.
    pub fn clear(&self) {
        self.refill();
        self.pool.lock().unwrap().clear();
    }

    pub fn pool_len(&self) -> usize {
        self.pool.lock().unwrap().len()
    }

    fn take_for_verify(&self) -> Option<Code> {
        self.pool.lock().unwrap().pop_front()
    }

    /// A code not used by this run yet, with wrong attempts to spare (max_attempts is 5).
    fn take_for_wrong(&self, run: u64) -> Option<Code> {
        let mut pool = self.pool.lock().unwrap();
        loop {
            let code = pool.pop_front()?;
            if code.wrong >= 3 {
                continue;
            }
            if code.run == run {
                pool.push_front(code);
                return None;
            }
            return Some(code);
        }
    }

    fn put_back(&self, code: Code) {
        self.pool.lock().unwrap().push_back(code);
    }
}

/// When a run's counting starts and when the run ends.
#[derive(Clone, Copy)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn starting(start: Instant, warmup: Duration, duration: Duration) -> Window {
        Window {
            measure_from: start + warmup,
            end: start + warmup + duration,
        }
    }
}

/// One connection's share of a run.
pub struct TaskStats {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    last_done: Option<Instant>,
    exhausted: bool,
    error_samples: Vec<String>,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

impl TaskStats {
    fn new() -> Self {
        TaskStats {
            hist: histogram(),
            count: 0,
            errors: 0,
            last_done: None,
            exhausted: false,
            error_samples: Vec::new(),
        }
    }

    /// Counts a request that completed inside the measured window.
    fn record<T>(&mut self, w: &Window, t0: Instant, result: &Result<T, CallError>) {
        let t1 = Instant::now();
        if t1 < w.measure_from || t1 > w.end {
            return;
        }
        let us = t1.saturating_duration_since(t0).as_micros() as u64;
        let _ = self.hist.record(us.clamp(1, 120_000_000));
        self.count += 1;
        self.last_done = Some(t1);
        if let Err(e) = result {
            self.errors += 1;
            if self.error_samples.len() < 2 {
                self.error_samples.push(match e {
                    CallError::Transport(s) => format!("transport: {s}"),
                    CallError::Answer(s) => s.clone(),
                });
            }
        }
    }
}

/// The connections' shares as one run; if the code pool ran out, the window ends at the
/// last answer.
pub fn merge(tasks: Vec<TaskStats>, w: &Window) -> RunStats {
    let mut out = RunStats {
        hist: histogram(),
        count: 0,
        errors: 0,
        elapsed: w.end - w.measure_from,
        exhausted: false,
        error_samples: Vec::new(),
    };
    let mut last = None::<Instant>;
    for t in tasks {
        out.hist.add(&t.hist).unwrap();
        out.count += t.count;
        out.errors += t.errors;
        out.exhausted |= t.exhausted;
        last = last.max(t.last_done);
        for s in t.error_samples {
            if out.error_samples.len() < 2 {
                out.error_samples.push(s);
            }
        }
    }
    if out.exhausted
        && let Some(last) = last
    {
        out.elapsed = last.saturating_duration_since(w.measure_from);
    }
    out
}

fn broken<T>(r: &Result<T, CallError>) -> bool {
    matches!(r, Err(CallError::Transport(_)))
}

/// One request (or one flow) of `scenario` on `conn`, recorded; true if the connection
/// broke. `None` is the ceiling's request, the size and shape of a send-otp.
async fn one(
    ctx: &Ctx,
    conn: &mut Conn,
    scenario: Option<Scenario>,
    run: u64,
    w: &Window,
    st: &mut TaskStats,
) -> Option<bool> {
    let t0;
    let r = match scenario {
        None => {
            t0 = Instant::now();
            let req = send_request(&next_phone());
            expect(call(conn, req).await, StatusCode::OK, "")
        }
        Some(Scenario::Send) => {
            let phone = next_phone();
            t0 = Instant::now();
            expect(
                call(conn, send_request(&phone)).await,
                StatusCode::OK,
                "otp_id",
            )
        }
        Some(Scenario::Verify) => {
            let code = ctx.take_for_verify()?;
            t0 = Instant::now();
            expect(
                call(conn, verify_request(&code.phone, &code.code)).await,
                StatusCode::OK,
                "\"verified\":true",
            )
        }
        Some(Scenario::VerifyWrong) => {
            let mut code = ctx.take_for_wrong(run)?;
            t0 = Instant::now();
            let r = expect(
                call(conn, verify_request(&code.phone, &wrong(&code.code))).await,
                StatusCode::BAD_REQUEST,
                "invalid_otp",
            );
            code.wrong += 1;
            code.run = run;
            ctx.put_back(code);
            r
        }
        // One flow is one sample: a send, then a verify of the code it sent.
        Some(Scenario::Flow) => {
            let phone = next_phone();
            t0 = Instant::now();
            let sent = expect(
                call(conn, send_request(&phone)).await,
                StatusCode::OK,
                "otp_id",
            );
            match (sent, ctx.mock.take_code(&phone)) {
                (Ok(_), Some(code)) => expect(
                    call(conn, verify_request(&phone, &code)).await,
                    StatusCode::OK,
                    "\"verified\":true",
                ),
                (Ok(_), None) => Err(CallError::Answer("the mock got no code".into())),
                (Err(e), _) => Err(e),
            }
        }
    };
    st.record(w, t0, &r);
    Some(broken(&r))
}

/// One connection's closed loop: requests back to back until the window ends (or the
/// code pool runs out), from `begin_at` if given.
pub async fn closed_task(
    ctx: Arc<Ctx>,
    socket: Arc<PathBuf>,
    mut conn: Conn,
    scenario: Option<Scenario>,
    run: u64,
    w: Window,
    begin_at: Option<Instant>,
) -> TaskStats {
    let mut st = TaskStats::new();
    if let Some(at) = begin_at {
        tokio::time::sleep_until(at.into()).await;
    }
    while Instant::now() < w.end {
        let Some(broke) = one(&ctx, &mut conn, scenario, run, &w, &mut st).await else {
            st.exhausted = true;
            break;
        };
        if broke {
            match connect(&socket).await {
                Ok(c) => conn = c,
                Err(_) => break,
            }
        }
    }
    st
}

/// Paced verifies (open loop, latency measured from each request's scheduled time, so a
/// stalled server cannot hide its delay): one every `period` on this connection.
pub async fn paced_verify_task(
    ctx: Arc<Ctx>,
    mut conn: Conn,
    period: Duration,
    first: Instant,
    w: Window,
) -> TaskStats {
    let mut st = TaskStats::new();
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let scheduled = ticks.tick().await.into_std();
        if scheduled >= w.end {
            break;
        }
        let Some(code) = ctx.take_for_verify() else {
            st.exhausted = true;
            break;
        };
        let r = expect(
            call(&mut conn, verify_request(&code.phone, &code.code)).await,
            StatusCode::OK,
            "\"verified\":true",
        );
        st.record(&w, scheduled, &r);
        if broken(&r) {
            break;
        }
    }
    st
}

/// Sends `n` codes as fast as `conns` connections allow, outside any measurement, and
/// moves them into the verify pool; returns the errors.
pub async fn presend(ctx: Arc<Ctx>, socket: &Path, n: usize, conns: usize) -> u64 {
    let remaining = Arc::new(AtomicI64::new(n as i64));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut conn in connect_all(socket, conns.min(n.max(1))).await {
        let remaining = remaining.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let r = expect(
                    call(&mut conn, send_request(&next_phone())).await,
                    StatusCode::OK,
                    "otp_id",
                );
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if broken(&r) {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.refill();
    errors.load(Ordering::Relaxed)
}
