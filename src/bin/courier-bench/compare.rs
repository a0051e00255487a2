//! `compare`: runs one scenario against two server commands in turn (A B A B ...), each on a fresh
//! server on a free loopback port, and reports medians, the ratio B/A and the run-to-run noise.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::report::{failure_banner, table, Report};
use crate::stats::median;
use crate::CompareArgs;

/// The CPU the servers are pinned to.
const SERVER_CPU: usize = 0;
/// The CPU the bench pins itself to.
const BENCH_CPU: usize = 1;

/// How many figures a run has.
const FIGURES: usize = 11;

/// The figures compared for one run.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    /// Throughput, counted units per second.
    msgs_per_sec: f64,
    /// Median latency, µs.
    p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    p99_us: Option<f64>,
    /// 99.9th percentile latency, µs.
    p999_us: Option<f64>,
    /// 99.99th percentile latency, µs.
    p9999_us: Option<f64>,
    /// Largest latency, µs.
    max_us: Option<f64>,
    /// Open loop: 99th percentile of the bench's own lateness, µs.
    pacing_p99_us: Option<f64>,
    /// Request-reply: the median over two PING/PONG round trips.
    p50_over_floor: Option<f64>,
    /// Server CPU seconds per million counted units.
    server_cpu_s_per_m: Option<f64>,
    /// Bench CPU seconds per million counted units.
    client_cpu_s_per_m: Option<f64>,
    /// SUB/UNSUB pairs per second (churn).
    churn_per_sec: Option<f64>,
}

impl Figures {
    fn of(r: &Report) -> Figures {
        let per_m = |s: f64| (r.msgs > 0).then(|| s / (r.msgs as f64 / 1e6));
        Figures {
            msgs_per_sec: r.msgs_per_sec,
            p50_us: r.latency.as_ref().map(|l| l.p50_us),
            p99_us: r.latency.as_ref().map(|l| l.p99_us),
            p999_us: r.latency.as_ref().map(|l| l.p999_us),
            p9999_us: r.latency.as_ref().map(|l| l.p9999_us),
            max_us: r.latency.as_ref().map(|l| l.max_us),
            pacing_p99_us: r.pacing.as_ref().map(|l| l.p99_us),
            p50_over_floor: r.floor.as_ref().and_then(|f| f.p50_over_floor),
            server_cpu_s_per_m: r.server_cpu_per_million(),
            client_cpu_s_per_m: per_m(r.client_cpu_s),
            churn_per_sec: r.churn_per_sec,
        }
    }

    /// (name, value) pairs in display order.
    fn named(&self) -> [(&'static str, Option<f64>); FIGURES] {
        [
            ("msgs/s", Some(self.msgs_per_sec)),
            ("p50 µs", self.p50_us),
            ("p99 µs", self.p99_us),
            ("p99.9 µs", self.p999_us),
            ("p99.99 µs", self.p9999_us),
            ("max µs", self.max_us),
            ("p50 / two PING RTT", self.p50_over_floor),
            ("bench late p99 µs", self.pacing_p99_us),
            ("server CPU s per M msgs", self.server_cpu_s_per_m),
            ("client CPU s per M msgs", self.client_cpu_s_per_m),
            ("SUB/UNSUB pairs/s", self.churn_per_sec),
        ]
    }
}

/// One run's result.
#[derive(Debug, Serialize)]
struct Run {
    /// 1-based run number.
    run: usize,
    /// "A" or "B".
    side: &'static str,
    /// The port the server listened on.
    port: u16,
    /// The compared figures.
    figures: Figures,
    /// The full scenario report.
    report: Report,
}

/// One figure across all runs.
#[derive(Debug, Serialize)]
struct Summary {
    /// Figure name.
    figure: &'static str,
    /// Median over A's runs.
    a_median: Option<f64>,
    /// Median over B's runs.
    b_median: Option<f64>,
    /// b_median / a_median.
    ratio_b_over_a: Option<f64>,
    /// (max - min) / median over A's runs.
    noise_a: Option<f64>,
    /// (max - min) / median over B's runs.
    noise_b: Option<f64>,
}

/// The whole comparison, as printed with --json.
#[derive(Debug, Serialize)]
struct Comparison {
    /// Names this format; changes only when a field is renamed or removed.
    schema: &'static str,
    scenario: String,
    scenario_args: Vec<String>,
    a: String,
    b: String,
    runs_per_side: usize,
    server_pinned_cpu: Option<usize>,
    bench_pinned_cpu: Option<usize>,
    runs: Vec<Run>,
    summary: Vec<Summary>,
}

/// Whether an executable named `name` is on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// How many CPUs this process may run on.
fn cpus_allowed() -> usize {
    // SAFETY: sched_getaffinity writes into the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// Pins the calling thread (and threads it creates later) to one CPU.
fn pin_self(cpu: usize) -> Result<()> {
    // SAFETY: the set is initialised before use and only read by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A started server process.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` (with `{port}` replaced) through the shell, optionally under taskset.
    fn start(cmd: &str, port: u16, taskset: bool, log: PathBuf) -> Result<Server> {
        let line = format!("exec {}", cmd.replace("{port}", &port.to_string()));
        let mut c = if taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", &SERVER_CPU.to_string(), "sh", "-c", &line]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &line]);
            c
        };
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        c.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // SAFETY: prctl is async-signal-safe; the server dies with the bench if the bench dies.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c.spawn().with_context(|| format!("starting {line:?}"))?;
        Ok(Server { child, log })
    }

    /// The last lines the server printed.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Waits until the port accepts connections.
    fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited ({status}) before accepting connections:\n{}", self.log_tail());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("server did not accept connections on {addr} within {timeout:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; removes the log.
    fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Fills in a cluster pair's route ports: this server's and its peer's.
fn cluster_placeholders(cmd: &str, own: u16, peer: u16) -> String {
    cmd.replace("{peer_cluster_port}", &peer.to_string()).replace("{cluster_port}", &own.to_string())
}

/// (max - min) / median.
fn noise(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let m = median(v);
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (m != 0.0).then(|| (max - min) / m)
}

/// Formats a number for the tables.
fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Runs the comparison; the exit code is 2 if any run failed a correctness check.
pub fn run(args: &CompareArgs) -> Result<ExitCode> {
    if args.runs == 0 || args.runs > 100 {
        bail!("--runs must be between 1 and 100");
    }
    for (name, cmd) in [("--a", &args.a), ("--b", &args.b)] {
        if !cmd.contains("{port}") && !cmd.contains("{mqtt_port}") {
            bail!(
                "{name} must contain {{port}} (or {{mqtt_port}} for an MQTT-only broker), replaced by the loopback \
                 port the server is to listen on"
            );
        }
    }
    let (mut spec, common) = crate::parse_scenario(&args.scenario)?;
    spec.progress = false;
    let quiet = common.quiet;

    let pin = !args.no_pin && cpus_allowed() > BENCH_CPU;
    let taskset = pin && on_path("taskset");
    if pin {
        pin_self(BENCH_CPU)?;
    }
    if !quiet {
        if !pin {
            eprintln!("note: not pinning (fewer than 2 CPUs or --no-pin)");
        } else if !taskset {
            eprintln!("note: taskset not found; the servers are not pinned");
        }
    }
    let rt = crate::runtime(common.threads)?;
    let log_dir = std::env::temp_dir();
    let mut runs = Vec::new();
    let mut failed = false;
    for i in 1..=args.runs {
        for (side, cmd, second) in [("A", &args.a, &args.a2), ("B", &args.b, &args.b2)] {
            let port = free_port()?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let log = log_dir.join(format!("courier-bench-{}-{side}{i}.log", std::process::id()));
            let ws_port = match args.ws_port {
                _ if cmd.contains("{ws_port}") => Some(free_port()?),
                fixed => fixed,
            };
            let mqtt_port = match args.mqtt_port {
                _ if cmd.contains("{mqtt_port}") => Some(free_port()?),
                fixed => fixed,
            };
            let cluster_ports = (free_port()?, free_port()?);
            let mut line = cmd.to_string();
            if let Some(ws) = ws_port {
                line = line.replace("{ws_port}", &ws.to_string());
            }
            if let Some(mq) = mqtt_port {
                line = line.replace("{mqtt_port}", &mq.to_string());
            }
            let line = cluster_placeholders(&line, cluster_ports.0, cluster_ports.1);
            let mut server = Server::start(&line, port, taskset, log)?;
            let target = match (ws_port, mqtt_port) {
                (Some(ws), _) => SocketAddr::from((Ipv4Addr::LOCALHOST, ws)),
                (None, Some(mq)) => SocketAddr::from((Ipv4Addr::LOCALHOST, mq)),
                (None, None) => addr,
            };
            let nats_ready =
                if cmd.contains("{port}") { server.wait_ready(addr, args.startup_timeout) } else { Ok(()) };
            if let Err(e) = nats_ready.and_then(|_| server.wait_ready(target, args.startup_timeout)) {
                server.stop();
                return Err(e.context(format!("server {side} ({cmd})")));
            }
            let mut paired = None;
            if let Some(cmd2) = second {
                let port2 = free_port()?;
                let log2 = log_dir.join(format!("courier-bench-{}-{side}{i}-2.log", std::process::id()));
                let line2 = cluster_placeholders(cmd2, cluster_ports.1, cluster_ports.0);
                let mut other = Server::start(&line2, port2, taskset, log2)?;
                let addr2 = SocketAddr::from((Ipv4Addr::LOCALHOST, port2));
                if let Err(e) = other.wait_ready(addr2, args.startup_timeout) {
                    other.stop();
                    server.stop();
                    return Err(e.context(format!("second server {side} ({cmd2})")));
                }
                spec.sub_addr = crate::proto::Endpoint { addr: addr2, websocket: false };
                paired = Some(other);
            } else {
                spec.sub_addr = crate::proto::Endpoint { addr: target, websocket: ws_port.is_some() };
            }
            spec.addr = crate::proto::Endpoint { addr: target, websocket: ws_port.is_some() };
            spec.server = spec.addr.to_string();
            spec.server_pid = Some(server.child.id());
            let result = rt.block_on(crate::scenarios::run(&spec));
            server.stop();
            if let Some(other) = paired {
                other.stop();
            }
            let report = result.with_context(|| format!("run {i} against server {side}"))?;
            if let Some(banner) = failure_banner(&report.checks) {
                eprint!("run {i} {side}:\n{banner}");
                failed = true;
            }
            let figures = Figures::of(&report);
            if !quiet {
                let f = figures
                    .named()
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(n, v)| format!("{n} {}", fmt(*v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                eprintln!("run {i}/{} {side}: {f}", args.runs);
            }
            runs.push(Run { run: i, side, port, figures, report });
        }
    }

    let summary: Vec<Summary> = (0..FIGURES)
        .map(|k| {
            let vals = |side: &str| -> Vec<f64> {
                runs.iter().filter(|r| r.side == side).filter_map(|r| r.figures.named()[k].1).collect()
            };
            let (a, b) = (vals("A"), vals("B"));
            let am = (!a.is_empty()).then(|| median(&a));
            let bm = (!b.is_empty()).then(|| median(&b));
            Summary {
                figure: runs.first().map_or("", |r| r.figures.named()[k].0),
                a_median: am,
                b_median: bm,
                ratio_b_over_a: am.zip(bm).and_then(|(a, b)| (a != 0.0).then(|| b / a)),
                noise_a: noise(&a),
                noise_b: noise(&b),
            }
        })
        .filter(|s| s.a_median.is_some() || s.b_median.is_some())
        .collect();

    let cmp = Comparison {
        schema: "courier-bench/compare/1",
        scenario: spec.kind.name().into(),
        scenario_args: args.scenario.clone(),
        a: args.a.clone(),
        b: args.b.clone(),
        runs_per_side: args.runs,
        server_pinned_cpu: taskset.then_some(SERVER_CPU),
        bench_pinned_cpu: pin.then_some(BENCH_CPU),
        runs,
        summary,
    };
    if args.json {
        println!("{}", serde_json::to_string(&cmp)?);
    } else {
        print!("{}", human(&cmp));
    }
    if failed {
        eprintln!("!!! at least one run failed its correctness checks (see above)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable comparison.
fn human(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "compare: {} ({}), {} runs each, interleaved A B",
        c.scenario,
        c.scenario_args.join(" "),
        c.runs_per_side
    );
    let _ = writeln!(s, "A: {}", c.a);
    let _ = writeln!(s, "B: {}", c.b);
    match (c.server_pinned_cpu, c.bench_pinned_cpu) {
        (Some(sc), Some(bc)) => {
            let _ = writeln!(s, "servers pinned to CPU {sc}, bench pinned to CPU {bc}");
        }
        (None, Some(bc)) => {
            let _ = writeln!(s, "bench pinned to CPU {bc}, servers not pinned");
        }
        _ => {
            let _ = writeln!(s, "nothing pinned");
        }
    }
    s.push('\n');
    // Figures no run measured (churn rates outside the churn scenario) get no column.
    let shown: Vec<usize> = (0..FIGURES).filter(|&k| c.runs.iter().any(|r| r.figures.named()[k].1.is_some())).collect();
    let names: Vec<&str> =
        c.runs.first().map(|r| shown.iter().map(|&k| r.figures.named()[k].0).collect()).unwrap_or_default();
    let mut headers = vec!["run", "server"];
    headers.extend(names.iter().copied());
    headers.push("checks");
    let rows: Vec<Vec<String>> = c
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![r.run.to_string(), r.side.to_string()];
            row.extend(shown.iter().map(|&k| fmt(r.figures.named()[k].1)));
            row.push(if r.report.checks.ok() { "ok".into() } else { "FAILED".into() });
            row
        })
        .collect();
    s.push_str(&table(&headers, &rows));
    s.push('\n');
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0));
    let rows: Vec<Vec<String>> = c
        .summary
        .iter()
        .map(|x| {
            vec![
                x.figure.to_string(),
                fmt(x.a_median),
                fmt(x.b_median),
                x.ratio_b_over_a.map_or_else(|| "-".into(), |v| format!("{v:.3}")),
                pct(x.noise_a),
                pct(x.noise_b),
            ]
        })
        .collect();
    s.push_str(&table(&["figure", "A median", "B median", "B/A", "noise A", "noise B"], &rows));
    let _ = writeln!(s, "noise = (max - min) / median over a side's runs");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_relative_range() {
        assert_eq!(noise(&[9.0, 10.0, 11.0]), Some(0.2));
        assert_eq!(noise(&[]), None);
    }

    #[test]
    fn free_port_is_loopback_bindable() {
        let p = free_port().unwrap();
        assert!(p > 0);
    }
}
