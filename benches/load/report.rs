//! Results and their output: a run's statistics, the table rows (medians of repeats),
//! and the table or the JSON object with the machine, the settings and the targets.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::COUNTRIES;
use crate::otpd::{Mem, PeakMem};
use crate::scenarios::Bench;
use crate::targets::Target;

/// One measured run.
pub struct RunStats {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub errors: u64,
    /// The measured window actually covered (shorter if the code pool ran out).
    pub elapsed: Duration,
    pub exhausted: bool,
    pub error_samples: Vec<String>,
}

impl RunStats {
    pub fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return f64::NAN;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A table row: the median of `repeat` runs.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub conns: usize,
    pub mock_ms: Option<u64>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub requests: u64,
    pub errors: u64,
    /// otpd's peak memory after this row, cumulative within its group.
    pub peak: PeakMem,
    /// Throughput over the matching ceiling (the SQLite-write one at the same conns).
    pub ratio: Option<f64>,
    pub target: Option<String>,
    pub pass: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn add_note(&mut self, note: &str) {
        if note.is_empty() {
            return;
        }
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn summarize(scenario: &str, conns: usize, mock_ms: Option<u64>, runs: &[RunStats]) -> Row {
    let mut notes = Vec::new();
    if runs.iter().any(|r| r.exhausted) {
        notes.push("code pool ran out: shorter window".to_owned());
    }
    for r in runs {
        for s in &r.error_samples {
            if notes.len() < 3 {
                notes.push(s.clone());
            }
        }
    }
    Row {
        scenario: scenario.to_owned(),
        conns,
        mock_ms,
        rps: median(runs.iter().map(RunStats::rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.ms(0.5)).collect()),
        p99_ms: median(runs.iter().map(|r| r.ms(0.99)).collect()),
        p999_ms: median(runs.iter().map(|r| r.ms(0.999)).collect()),
        requests: runs.iter().map(|r| r.count).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        peak: PeakMem::default(),
        ratio: None,
        target: None,
        pass: None,
        note: notes.join("; "),
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_total_kib": mem_kib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = out(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

fn mem_json(mem: Option<Mem>) -> Value {
    mem.map_or(
        Value::Null,
        |m| json!({"rss_kib": m.rss, "rss_anon_kib": m.anon, "rss_file_kib": m.file}),
    )
}

impl Bench {
    fn countries_label(&self) -> String {
        match COUNTRIES.get() {
            Some(p) if self.args.countries > 1 => {
                format!(
                    ", numbers from {} countries",
                    self.args.countries.min(p.len())
                )
            }
            _ => String::new(),
        }
    }

    pub fn print_table(&self, targets: &[Target]) {
        println!();
        println!(
            "otpd load benchmark, commit {}, {} s windows after {} s warm-up, median of {} run(s){}{}",
            git_commit(),
            self.s.duration.as_secs_f64(),
            self.s.warmup.as_secs_f64(),
            self.s.repeat,
            if self.s.quick { ", QUICK" } else { "" },
            self.countries_label(),
        );
        let m = machine();
        println!(
            "machine: {} cores, {}, {:.1} GiB, load average {}; otpd: {}",
            m["nproc"],
            m["cpu"].as_str().unwrap_or(""),
            m["mem_total_kib"].as_f64().unwrap_or(0.0) / 1048576.0,
            m["loadavg"].as_str().unwrap_or(""),
            self.bin.display(),
        );
        println!();
        println!(
            "{:<44} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>6}  {:<30} result",
            "scenario",
            "conns",
            "mock",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "peak RSS",
            "anon",
            "xceil",
            "target",
        );
        let mem = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}M", mib(k)));
        for r in &self.rows {
            let ratio = r.ratio.map_or("-".into(), |x| format!("{x:.2}"));
            let mock = r.mock_ms.map_or("-".into(), |m| format!("{m}ms"));
            let result = match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            println!(
                "{:<44} {:>5} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>8} {:>7} {:>6}  {:<30} {}",
                r.scenario,
                r.conns,
                mock,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.errors,
                mem(r.peak.rss),
                mem(r.peak.anon),
                ratio,
                r.target.as_deref().unwrap_or(""),
                result
            );
            if !r.note.is_empty() && r.note.contains(':') && !r.scenario.starts_with("ceiling") {
                println!("    note: {}", r.note);
            }
        }
        println!();
        println!("xceil: req/s over the best SQLite-write ceiling at the same connection count.");
        println!(
            "peak RSS: otpd's VmHWM after the row; anon: the most RssAnon sampled (every 50 ms). \
             One otpd per scenario group, so both are cumulative over that group's rows \
             (connection counts ascending, pre-sends included)."
        );
        println!(
            "flow: req/s and latencies are per flow (a send, then a verify of its code: two \
             requests); xceil counts both requests."
        );
        let idle = |m: Option<Mem>| {
            m.map_or("-".into(), |m| {
                format!(
                    "RSS {:.1} MiB = RssAnon {:.1} + RssFile {:.1}",
                    mib(m.rss),
                    mib(m.anon),
                    mib(m.file)
                )
            })
        };
        println!("idle after the first start-up: {}", idle(self.idle));
        for s in &self.startups {
            println!(
                "start-up to READY, {}: median {:.1} ms of {:?}; idle {}",
                s.label,
                median(s.ms.clone()),
                s.ms.iter()
                    .map(|m| (m * 10.0).round() / 10.0)
                    .collect::<Vec<_>>(),
                idle(s.idle)
            );
        }
        println!();
        println!("targets:");
        for t in targets {
            let result = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a",
            };
            println!(
                "  {result:<5} {:<44} {:<36} goal {}",
                t.name, t.measured, t.goal
            );
        }
    }

    pub fn to_json(&self, targets: &[Target], elapsed: Duration) -> Value {
        let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        json!({
            "commit": git_commit(),
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "machine": machine(),
            "otpd_bin": self.bin.display().to_string(),
            "settings": {
                "quick": self.s.quick,
                "duration_s": self.s.duration.as_secs_f64(),
                "warmup_s": self.s.warmup.as_secs_f64(),
                "repeat": self.s.repeat,
                "conns": self.s.conns,
                "mock_latency_ms": self.s.latencies,
                "slow_conns": self.args.slow_conns,
                "mixed_verify_rate": self.args.mixed_verify_rate,
                "mixed_verify_conns": self.args.mixed_verify_conns,
                "big_rows": self.s.rows,
                "big_conns": self.args.big_conns,
                "log_level": self.args.log_level,
                "countries": self.args.countries.min(COUNTRIES.get().map_or(1, Vec::len)),
                "many_countries": self.many_countries(),
            },
            "rows": self.rows.iter().map(|r| json!({
                "scenario": r.scenario,
                "conns": r.conns,
                "mock_ms": r.mock_ms,
                "rps": num(r.rps),
                "p50_ms": num(r.p50_ms),
                "p99_ms": num(r.p99_ms),
                "p999_ms": num(r.p999_ms),
                "requests": r.requests,
                "errors": r.errors,
                "otpd_peak_rss_kib": r.peak.rss,
                "otpd_peak_rss_anon_kib": r.peak.anon,
                "otpd_peak_rss_file_kib": r.peak.file,
                "ratio_vs_sqlite_ceiling": r.ratio.map(num),
                "target": r.target,
                "pass": r.pass,
                "note": r.note,
            })).collect::<Vec<_>>(),
            "ceilings": {
                "plain": self.plain_ceiling.iter().map(|(c, r)| (c.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
                "sqlite_write_best": self.sqlite_ceiling.iter().map(|(c, r)| (c.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
            },
            "idle": mem_json(self.idle),
            "startup": self.startups.iter().map(|s| json!({
                "label": s.label,
                "rows": s.rows,
                "ready_ms": s.ms,
                "median_ms": num(median(s.ms.clone())),
                "idle": mem_json(s.idle),
            })).collect::<Vec<_>>(),
            "targets": targets.iter().map(|t| json!({
                "name": t.name,
                "measured": t.measured,
                "goal": t.goal,
                "pass": t.pass,
            })).collect::<Vec<_>>(),
            "elapsed_s": elapsed.as_secs_f64(),
        })
    }
}
