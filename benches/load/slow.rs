//! Slow Twilio: sends on `--slow-conns` connections against a mock answering after the
//! largest latency, with verifies paced beside them (open loop). The verifies must not
//! queue behind the sends waiting on Twilio.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::connect_all;
use crate::drive::{Scenario, Window, closed_task, merge, paced_verify_task};
use crate::otpd::Perf;
use crate::progress;
use crate::report::summarize;
use crate::scenarios::Bench;
use crate::server_view::server_side;

impl Bench {
    pub fn verify_during_slow_sends(&self) -> String {
        format!(
            "verify (paced {}/s during send x{})",
            self.args.mixed_verify_rate.max(1),
            self.args.slow_conns
        )
    }

    pub fn mixed(&mut self, latency: u64) {
        let otpd = self.start_shared();
        let socket = otpd.socket();
        let conns = self.args.slow_conns;
        let vconns = self.args.mixed_verify_conns.max(1);
        let rate = self.args.mixed_verify_rate.max(1);
        progress(&format!(
            "send x{conns}, mock {latency} ms, with {rate} verifies/s on {vconns} connections"
        ));
        let mut send_runs = Vec::new();
        let mut verify_runs = Vec::new();
        let (mut send_server, mut verify_server) = (String::new(), String::new());
        for _ in 0..self.s.repeat {
            let need = (rate as f64 * self.s.window().as_secs_f64() * 1.2) as usize + 50;
            self.ensure_pool(&socket, need);
            self.set_latency(latency);
            let _perf = Perf::start(
                self.perf_dir(),
                otpd.pid(),
                &format!("mixed-{conns}-{latency}ms"),
            );
            let before = self.scrape(&socket);
            let ctx = self.ctx.clone();
            let sock = Arc::new(socket.clone());
            // The warm-up covers the staggered start and one full round of sends.
            let warmup = self.s.warmup.max(Duration::from_millis(2 * latency + 200));
            let duration = self.s.duration;
            let run = self.ctx.runs.fetch_add(1, Ordering::Relaxed) + 1;
            let (send, verify) = self.rt.block_on(async move {
                let senders = connect_all(&sock, conns).await;
                let verifiers = connect_all(&sock, vconns).await;
                let start = Instant::now();
                let w = Window::starting(start, warmup, duration);
                // Independent callers: each send connection starts at its own phase of
                // the mock's latency, so the sends do not arrive in synchronized waves.
                let send_tasks: Vec<_> = senders
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let phase = Duration::from_millis(latency).mul_f64(i as f64 / conns as f64);
                        tokio::spawn(closed_task(
                            ctx.clone(),
                            sock.clone(),
                            c,
                            Some(Scenario::Send),
                            run,
                            w,
                            Some(start + phase),
                        ))
                    })
                    .collect();
                let period = Duration::from_secs_f64(vconns as f64 / rate as f64);
                let verify_tasks: Vec<_> = verifiers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let first = start + period.mul_f64(i as f64 / vconns as f64);
                        tokio::spawn(paced_verify_task(ctx.clone(), c, period, first, w))
                    })
                    .collect();
                let mut s = Vec::new();
                for t in send_tasks {
                    s.push(t.await.unwrap());
                }
                let mut v = Vec::new();
                for t in verify_tasks {
                    v.push(t.await.unwrap());
                }
                (merge(s, &w), merge(v, &w))
            });
            let after = self.scrape(&socket);
            send_server = server_side(&before, &after, Scenario::Send);
            verify_server = server_side(&before, &after, Scenario::Verify);
            self.set_latency(0);
            send_runs.push(send);
            verify_runs.push(verify);
        }
        let peak = otpd.peaks();
        let mut send = summarize("send", conns, Some(latency), &send_runs);
        send.peak = peak;
        let name = self.verify_during_slow_sends();
        let mut verify = summarize(&name, vconns, Some(latency), &verify_runs);
        verify.peak = peak;
        send.add_note(&send_server);
        verify.add_note(&verify_server);
        self.rows.push(send);
        self.rows.push(verify);
        otpd.stop();
    }
}
