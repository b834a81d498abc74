//! The benchmark's state and its main scenarios: one otpd process per group (a scenario
//! at one mock latency, connection counts ascending), each row a closed-loop measurement
//! over keep-alive connections, verifies fed from a pool of codes sent beforehand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::bigdb::Startup;
use crate::client::{COUNTRIES, COUNTRIES_IN_USE, connect_all};
use crate::drive::{Ctx, Scenario, Window, closed_task, merge, presend};
use crate::mock::Mock;
use crate::otpd::{self, Mem, Otpd, Perf};
use crate::report::{Row, RunStats, summarize};
use crate::server_view::{metrics_text, server_side};
use crate::{Args, Settings, progress};

pub struct Bench {
    pub args: Args,
    pub s: Settings,
    pub rt: Runtime,
    pub mock: Mock,
    pub ctx: Arc<Ctx>,
    pub bin: PathBuf,
    pub rows: Vec<Row>,
    /// Best SQLite-write ceiling (req/s) per connection count, and the plain one.
    pub sqlite_ceiling: HashMap<usize, f64>,
    pub plain_ceiling: HashMap<usize, f64>,
    /// Measured verify rates, to size the code pool of the next verify run.
    pub verify_rate: HashMap<usize, f64>,
    pub startups: Vec<Startup>,
    /// otpd's memory one second after its first start, on an empty database.
    pub idle: Option<Mem>,
    /// The data directory shared by the fast, countries and slow sections.
    pub otpd_dir: Option<PathBuf>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl Bench {
    pub fn tempdir(&mut self, prefix: &str) -> PathBuf {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let path = dir.path().to_owned();
        self.dirs.push(dir);
        path
    }

    pub fn section(&self, name: &str) -> bool {
        self.args.sections.iter().any(|s| s == name)
    }

    pub fn scenarios(&self) -> Vec<Scenario> {
        self.args
            .scenarios
            .iter()
            .map(|s| Scenario::parse(s).unwrap_or_else(|| panic!("unknown scenario {s}")))
            .collect()
    }

    pub fn set_latency(&self, ms: u64) {
        self.mock.state.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn scrape(&self, socket: &Path) -> String {
        self.rt.block_on(metrics_text(socket))
    }

    pub fn perf_dir(&self) -> Option<&PathBuf> {
        self.args.perf.as_ref()
    }

    pub fn ratio(&self, conns: usize, rps: f64) -> Option<f64> {
        self.sqlite_ceiling.get(&conns).map(|c| rps / c)
    }

    /// A fresh directory with otpd's config for the mock.
    pub fn config_dir(&mut self, prefix: &str) -> PathBuf {
        let dir = self.tempdir(prefix);
        otpd::write_config(&dir, self.mock.port, &self.args.log_level);
        dir
    }

    fn otpd_dir(&mut self) -> PathBuf {
        if let Some(dir) = &self.otpd_dir {
            return dir.clone();
        }
        let dir = self.config_dir("otpd-bench-");
        self.otpd_dir = Some(dir.clone());
        dir
    }

    /// otpd started on the shared data directory, with the mock answering at once.
    pub fn start_shared(&mut self) -> Otpd {
        let dir = self.otpd_dir();
        self.set_latency(0);
        otpd::start(&self.bin, &dir)
    }

    /// One closed-loop measurement (`None`: the ceiling's request).
    pub fn closed(&self, socket: &Path, scenario: Option<Scenario>, conns: usize) -> RunStats {
        let ctx = self.ctx.clone();
        let socket = Arc::new(socket.to_owned());
        let (warmup, duration) = (self.s.warmup, self.s.duration);
        let run = self.ctx.runs.fetch_add(1, Ordering::Relaxed) + 1;
        self.rt.block_on(async move {
            let connections = connect_all(&socket, conns).await;
            let w = Window::starting(Instant::now(), warmup, duration);
            let tasks: Vec<_> = connections
                .into_iter()
                .map(|c| {
                    let task = closed_task(ctx.clone(), socket.clone(), c, scenario, run, w, None);
                    tokio::spawn(task)
                })
                .collect();
            let mut stats = Vec::new();
            for t in tasks {
                stats.push(t.await.unwrap());
            }
            merge(stats, &w)
        })
    }

    /// Makes sure the pool holds at least `n` codes (sent at 0 ms mock latency).
    pub fn ensure_pool(&self, socket: &Path, n: usize) {
        self.ctx.refill();
        let have = self.ctx.pool_len();
        if have >= n {
            return;
        }
        let latency = self.mock.state.latency_ms.swap(0, Ordering::Relaxed);
        let need = n - have;
        let t = Instant::now();
        let errors = self
            .rt
            .block_on(presend(self.ctx.clone(), socket, need, 64));
        progress(&format!(
            "  pre-sent {need} codes in {:.1} s{}",
            t.elapsed().as_secs_f64(),
            if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            }
        ));
        self.set_latency(latency);
    }

    /// How many codes a verify run at `conns` may use: the rate measured at these
    /// connections (by an earlier verify or verify-wrong run), else the rate at fewer
    /// connections scaled like the SQLite ceiling, else a share of that ceiling.
    pub fn pool_for(&self, conns: usize) -> usize {
        let ceiling = |c: usize| self.sqlite_ceiling.get(&c).copied();
        let guess = self
            .verify_rate
            .get(&conns)
            .copied()
            .or_else(|| {
                let (&c, &r) = self
                    .verify_rate
                    .iter()
                    .filter(|(c, _)| **c < conns)
                    .max_by_key(|(c, _)| **c)?;
                let scale = match (ceiling(conns), ceiling(c)) {
                    (Some(a), Some(b)) if b > 0.0 => a / b,
                    _ => 2.0,
                };
                Some(r * scale)
            })
            .or_else(|| ceiling(conns).map(|r| r * 0.5))
            .unwrap_or(5000.0);
        (guess * 1.15 * self.s.window().as_secs_f64()) as usize + 100
    }

    /// One group: a fresh otpd process, then `scenario` at each connection count.
    pub fn group(&mut self, scenario: Scenario, latency: u64, conns_list: &[usize]) {
        self.group_as(scenario.name(), scenario, latency, conns_list);
    }

    /// A group whose rows are called `name` (the scenario, with what sets it apart).
    fn group_as(&mut self, name: &str, scenario: Scenario, latency: u64, conns_list: &[usize]) {
        let otpd = self.start_shared();
        if self.idle.is_none() {
            std::thread::sleep(Duration::from_secs(1));
            self.idle = otpd.mem();
            let m = self.idle.unwrap_or_default();
            progress(&format!(
                "otpd idle after start-up: RSS {} KiB = RssAnon {} + RssFile {} (ready in {:.1} ms)",
                m.rss,
                m.anon,
                m.file,
                otpd.ready.as_secs_f64() * 1000.0
            ));
        }
        let socket = otpd.socket();
        let verifies = matches!(scenario, Scenario::Verify | Scenario::VerifyWrong);
        for &conns in conns_list {
            progress(&format!("{name} x{conns}, mock {latency} ms"));
            let mut runs = Vec::new();
            let mut server = String::new();
            for _ in 0..self.s.repeat {
                let mut pool = self.pool_for(conns);
                let run = loop {
                    if verifies {
                        self.ensure_pool(&socket, pool);
                    }
                    let (run, side) = self.measure(&otpd, name, scenario, latency, conns);
                    server = side;
                    match verifies.then(|| self.pool_ran_short(&run, pool, conns)) {
                        Some(Some(more)) => pool = more,
                        _ => break run,
                    }
                };
                runs.push(run);
            }
            let mut row = summarize(name, conns, Some(latency), &runs);
            row.add_note(&server);
            if verifies {
                let r = self.verify_rate.entry(conns).or_insert(0.0);
                *r = r.max(row.rps);
            }
            row.peak = otpd.peaks();
            if latency == 0 {
                // A flow is two requests.
                let requests = if scenario == Scenario::Flow { 2.0 } else { 1.0 };
                row.ratio = self.ratio(conns, requests * row.rps);
            }
            self.rows.push(row);
        }
        otpd.stop();
    }

    /// One measured run of `scenario` on `otpd`, and otpd's own view of it (`/metrics`).
    fn measure(
        &mut self,
        otpd: &Otpd,
        name: &str,
        scenario: Scenario,
        latency: u64,
        conns: usize,
    ) -> (RunStats, String) {
        let socket = otpd.socket();
        self.set_latency(latency);
        let _perf = Perf::start(
            self.perf_dir(),
            otpd.pid(),
            &format!("{}-{conns}-{latency}ms", name.replace([' ', ','], "-")),
        );
        let before = self.scrape(&socket);
        let run = self.closed(&socket, Some(scenario), conns);
        let server = server_side(&before, &self.scrape(&socket), scenario);
        self.set_latency(0);
        (run, server)
    }

    /// With no ceiling or earlier verify measured, a verify run's pool of `pool` codes is
    /// a guess that can run out before the window is half over: then the pool to run
    /// again with, sized from how fast those codes went (at least the warm-up and the
    /// measured part, so their rate at least).
    fn pool_ran_short(&mut self, run: &RunStats, pool: usize, conns: usize) -> Option<usize> {
        let short = run.count == 0 || run.elapsed < self.s.duration / 2;
        if !run.exhausted || !short || pool > 1_000_000 {
            return None;
        }
        let measured = if run.count == 0 {
            Duration::ZERO
        } else {
            run.elapsed
        };
        let rate = self.verify_rate.entry(conns).or_insert(0.0);
        *rate = rate.max(pool as f64 / (self.s.warmup + measured).as_secs_f64());
        let more = self.pool_for(conns).max(pool * 2);
        progress(&format!(
            "  the code pool ran out early: again with {more} codes"
        ));
        Some(more)
    }

    /// `send` and `verify` at the largest connection count, numbers from
    /// `--many-countries` countries in turn: a parse's cost and the memory of the phone
    /// library's compiled rules grow with the countries in use, which Spanish numbers
    /// alone never show. Skipped when the whole run already spans countries.
    pub fn countries(&mut self, scenarios: &[Scenario]) {
        let n = self.many_countries();
        let Some(&conns) = self.s.conns.iter().max() else {
            return;
        };
        if n <= 1 || self.args.countries > 1 {
            return;
        }
        // The verify pool holds codes of these numbers only, and none of them after.
        self.ctx.clear();
        COUNTRIES_IN_USE.store(n, Ordering::Relaxed);
        for &scenario in scenarios
            .iter()
            .filter(|s| matches!(s, Scenario::Send | Scenario::Verify))
        {
            let name = format!("{}, {n} countries", scenario.name());
            self.group_as(&name, scenario, 0, &[conns]);
        }
        COUNTRIES_IN_USE.store(self.args.countries, Ordering::Relaxed);
        self.ctx.clear();
    }

    /// How many countries the `countries` section draws from: those found, up to
    /// `--many-countries`.
    pub fn many_countries(&self) -> usize {
        self.args
            .many_countries
            .min(COUNTRIES.get().map_or(1, Vec::len))
    }
}
