//! A scenario's results and their human, JSON and CSV renderings.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::over_time::LatencySample;
use crate::progress::Sample;
use crate::stats::{Checks, Latency};

/// The `schema` of the `--json` line; it changes only when a field is renamed or removed.
pub const JSON_SCHEMA: &str = "courier-bench/1";

/// The least a request can take: two PING/PONG round trips (requester to server and back,
/// responder to server and back), measured on the same server just before the load.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// One PING/PONG round trip.
    pub ping_rtt: Latency,
    /// Twice the median round trip.
    pub two_rtt_p50_us: f64,
    /// The request median over `two_rtt_p50_us` (1.0 is the floor).
    pub p50_over_floor: Option<f64>,
}

impl Floor {
    /// The floor from a histogram of round trips, compared with the requests' latency.
    pub fn new(rtt: Histogram<u64>, requests: Option<&Latency>, notes: &mut Vec<String>) -> Option<Floor> {
        let ping_rtt = Latency::from_histogram(&rtt)?;
        let two = 2.0 * ping_rtt.p50_us;
        let p50_over_floor = requests.filter(|_| two > 0.0).map(|l| l.p50_us / two);
        notes.push(format!(
            "floor: PING/PONG round trip p50 {:.1} µs, p99 {:.1} µs; two round trips {two:.1} µs{}",
            ping_rtt.p50_us,
            ping_rtt.p99_us,
            p50_over_floor.map_or_else(String::new, |r| format!("; request p50 is {r:.2}x that"))
        ));
        Some(Floor { ping_rtt, two_rtt_p50_us: two, p50_over_floor })
    }
}

/// How evenly queue group members (or responders) shared the work.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Messages each member handled.
    pub members: Vec<u64>,
    /// Fewest handled by one member.
    pub min: u64,
    /// Most handled by one member.
    pub max: u64,
    /// (max - min) / mean, in percent.
    pub spread_pct: f64,
}

impl Spread {
    /// Summarises per-member counts.
    pub fn new(members: Vec<u64>) -> Spread {
        let min = members.iter().copied().min().unwrap_or(0);
        let max = members.iter().copied().max().unwrap_or(0);
        let mean = members.iter().sum::<u64>() as f64 / members.len().max(1) as f64;
        let spread_pct = if mean > 0.0 { (max - min) as f64 / mean * 100.0 } else { 0.0 };
        Spread { members, min, max, spread_pct }
    }
}

/// The server's memory before and after opening idle connections.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Connections held open when memory was read.
    pub conns: u64,
    /// Resident memory before, kB.
    pub rss_before_kb: u64,
    /// Resident memory with the connections open, kB.
    pub rss_after_kb: u64,
    /// (after - before) / conns, bytes.
    pub per_conn_bytes: f64,
}

/// Everything one scenario run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The server URL.
    pub server: String,
    /// The counted unit: messages received (published for `pub`), replies, or connections.
    pub msgs: u64,
    /// Messages (or requests) published.
    pub published: u64,
    /// Messages (or replies) received.
    pub received: u64,
    /// Payload size in bytes.
    pub size: usize,
    /// Measured time in seconds: first publish to last receive (or last PONG for `pub`).
    pub elapsed_s: f64,
    /// `msgs` per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Latency, where measured.
    pub latency: Option<Latency>,
    /// CPU seconds (user + system) this process used during the measurement.
    pub client_cpu_s: f64,
    /// CPU seconds the server used during the measurement (with --server-pid).
    pub server_cpu_s: Option<f64>,
    /// Correctness counters.
    pub checks: Checks,
    /// Whether --duration stopped publishing before --msgs was reached.
    pub stopped_by_duration: bool,
    /// Work split among queue members or responders.
    pub spread: Option<Spread>,
    /// Server memory (conns scenario).
    pub memory: Option<Memory>,
    /// SUB/UNSUB pairs per second the churning clients got through (churn scenario).
    pub churn_per_sec: Option<f64>,
    /// Throughput over time.
    pub timeline: Vec<Sample>,
    /// Free-form notes (what was not measured and why).
    pub notes: Vec<String>,
    /// Open loop: how long after its scheduled time each message was handed to the socket (the
    /// bench's own lateness, already part of `latency`).
    pub pacing: Option<Latency>,
    /// Milliseconds the hypervisor took from each CPU during the run (steal; 10 ms ticks).
    pub steal_ms: Vec<u64>,
    /// Seconds at the start whose messages are left out of `latency` and `pacing`.
    pub warmup_s: f64,
    /// Latency by send time (p50, p99, max per interval), warm-up included.
    pub latency_over_time: Vec<LatencySample>,
    /// Request-reply: the round-trip floor measured on the same server.
    pub floor: Option<Floor>,
    /// The latency histogram in nanoseconds, for plotting.
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
}

impl Report {
    /// Server CPU seconds per million counted messages.
    pub fn server_cpu_per_million(&self) -> Option<f64> {
        self.server_cpu_s.filter(|_| self.msgs > 0).map(|s| s / (self.msgs as f64 / 1e6))
    }
}

/// Formats an optional number with `prec` decimals, or "-".
fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
}

/// The human-readable table and notes.
pub fn human(r: &Report) -> String {
    let lat = r.latency.as_ref();
    let headers = [
        "scenario",
        "msgs",
        "msgs/s",
        "MB/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "p99.99 µs",
        "max µs",
        "client CPU s",
        "server CPU s",
    ];
    let row = [
        r.scenario.clone(),
        r.msgs.to_string(),
        format!("{:.0}", r.msgs_per_sec),
        if r.size > 0 { format!("{:.2}", r.mb_per_sec) } else { "-".into() },
        opt(lat.map(|l| l.p50_us), 1),
        opt(lat.map(|l| l.p90_us), 1),
        opt(lat.map(|l| l.p99_us), 1),
        opt(lat.map(|l| l.p999_us), 1),
        opt(lat.map(|l| l.p9999_us), 1),
        opt(lat.map(|l| l.max_us), 1),
        format!("{:.3}", r.client_cpu_s),
        opt(r.server_cpu_s, 3),
    ];
    let mut s = table(&headers, &[row.to_vec()]);
    let stopped = if r.stopped_by_duration { "; stopped by --duration" } else { "" };
    if r.memory.is_some() || r.scenario == "conns" {
        let _ = writeln!(s, "opened {} connections in {:.3} s (msgs/s = connections/s){stopped}", r.msgs, r.elapsed_s);
    } else {
        let _ = writeln!(
            s,
            "published {} received {} in {:.3} s ({} B payloads){stopped}",
            r.published, r.received, r.elapsed_s, r.size
        );
    }
    if let Some(c) = r.churn_per_sec {
        let _ = writeln!(s, "churn: {c:.0} SUB/UNSUB pairs/s");
    }
    if let Some(sp) = &r.spread {
        let _ = writeln!(
            s,
            "spread: {:?} (min {}, max {}, (max-min)/mean {:.1}%)",
            sp.members, sp.min, sp.max, sp.spread_pct
        );
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(
            s,
            "server memory: {} kB before, {} kB with {} connections, {:.0} bytes per connection",
            m.rss_before_kb, m.rss_after_kb, m.conns, m.per_conn_bytes
        );
    }
    if let Some(per_m) = r.server_cpu_per_million().filter(|_| r.size > 0) {
        let _ = writeln!(s, "server CPU: {per_m:.3} s per million msgs");
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let c = &r.checks;
    if c.ok() {
        let _ = writeln!(s, "checks: ok (0 lost, 0 duplicated, 0 out of order, 0 misrouted, 0 errors)");
    }
    s
}

/// The loud failure banner, or `None` on a clean run.
pub fn failure_banner(c: &Checks) -> Option<String> {
    if c.ok() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    let _ = writeln!(
        s,
        "!!! CORRECTNESS FAILURE: {} lost, {} duplicated, {} out of order, {} misrouted, {} errors",
        c.lost, c.duplicated, c.out_of_order, c.misrouted, c.errors
    );
    for e in &c.error_texts {
        let _ = writeln!(s, "!!!   {e}");
    }
    let _ = writeln!(s, "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    Some(s)
}

/// CSV column names, matching [`csv_row`].
pub const CSV_HEADER: &str = "scenario,server,msgs,published,received,size,elapsed_s,msgs_per_sec,mb_per_sec,\
p50_us,p90_us,p99_us,p999_us,max_us,client_cpu_s,server_cpu_s,lost,duplicated,out_of_order,misrouted,errors,\
p9999_us,pacing_p50_us,pacing_p99_us,pacing_max_us,floor_two_rtt_us,warmup_s";

/// One CSV line for a report.
pub fn csv_row(r: &Report) -> String {
    let lat = r.latency.as_ref();
    let o = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let c = &r.checks;
    let pacing = r.pacing.as_ref();
    format!(
        "{},{},{},{},{},{},{:.6},{:.1},{:.3},{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.scenario,
        r.server,
        r.msgs,
        r.published,
        r.received,
        r.size,
        r.elapsed_s,
        r.msgs_per_sec,
        r.mb_per_sec,
        o(lat.map(|l| l.p50_us)),
        o(lat.map(|l| l.p90_us)),
        o(lat.map(|l| l.p99_us)),
        o(lat.map(|l| l.p999_us)),
        o(lat.map(|l| l.max_us)),
        r.client_cpu_s,
        o(r.server_cpu_s),
        c.lost,
        c.duplicated,
        c.out_of_order,
        c.misrouted,
        c.errors,
        o(lat.map(|l| l.p9999_us)),
        o(pacing.map(|l| l.p50_us)),
        o(pacing.map(|l| l.p99_us)),
        o(pacing.map(|l| l.max_us)),
        o(r.floor.as_ref().map(|f| f.two_rtt_p50_us)),
        r.warmup_s
    )
}

/// The `--json` line: the whole report on one line, led by its schema name.
pub fn json_line(r: &Report) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Line<'a> {
        schema: &'static str,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_string(&Line { schema: JSON_SCHEMA, report: r })
}

/// The latency percentile spectrum as CSV (`percentile,latency_us`), from p0 to the maximum.
pub fn percentiles_csv(r: &Report) -> String {
    let mut s = String::from("percentile,latency_us\n");
    if let Some(h) = &r.histogram {
        for v in h.iter_quantiles(5) {
            let _ = writeln!(s, "{:.6},{:.3}", v.quantile_iterated_to() * 100.0, v.value_iterated_to() as f64 / 1000.0);
        }
    }
    s
}

/// Latency over time as CSV, one line per interval.
pub fn over_time_csv(r: &Report) -> String {
    let mut s = String::from("t_s,count,p50_us,p99_us,max_us\n");
    for x in &r.latency_over_time {
        let _ = writeln!(s, "{:.3},{},{:.1},{:.1},{:.1}", x.t_s, x.count, x.p50_us, x.p99_us, x.max_us);
    }
    s
}

/// Renders a plain text table with right-aligned columns (the first left-aligned).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        for (i, cell) in cells.enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.push('\n');
    };
    line(&mut s, &mut headers.iter().copied());
    for row in rows {
        line(&mut s, &mut row.iter().map(String::as_str));
    }
    s
}
