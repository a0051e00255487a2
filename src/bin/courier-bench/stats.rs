//! Measurements: latency histograms, sequence tracking for correctness checks, and CPU/memory
//! readings of the bench process and of the server process.

use std::sync::LazyLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::over_time::LatencyOverTime;

/// The shared clock origin: timestamps embedded in payloads are nanoseconds since this instant.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds from the shared epoch to `t` (0 for instants before it).
pub fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(*EPOCH).as_nanos() as u64
}

/// Forces the epoch to be set now, before any timestamp is taken.
pub fn init_epoch() {
    LazyLock::force(&EPOCH);
}

/// A latency histogram in nanoseconds, from 1 ns to one hour, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Where a receiver puts the latencies it measures: the run's histogram (once the warm-up is
/// over) and, for the first few receivers, the record over time (warm-up included, so the plot
/// shows it).
#[derive(Clone)]
pub struct Recorder {
    /// Latencies in nanoseconds of messages sent after the warm-up.
    pub hist: Histogram<u64>,
    /// Messages sent before this moment (shared epoch nanoseconds) are warm-up.
    pub from_ns: u64,
    /// Latency by send time, if this receiver keeps one.
    pub over_time: Option<LatencyOverTime>,
}

impl Recorder {
    /// A recorder that ignores messages sent before `from_ns` in its histogram.
    pub fn new(from_ns: u64, over_time: Option<LatencyOverTime>) -> Self {
        Recorder { hist: new_histogram(), from_ns, over_time }
    }

    /// Records a message stamped `sent_ns` that arrived at `now_ns`.
    #[inline]
    pub fn record(&mut self, sent_ns: u64, now_ns: u64) {
        let lat = now_ns.saturating_sub(sent_ns).max(1);
        if sent_ns >= self.from_ns {
            self.hist.saturating_record(lat);
        }
        if let Some(o) = &mut self.over_time {
            o.record(sent_ns, lat);
        }
    }

    /// Adds another receiver's latencies.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.hist.add(&other.hist);
        match (&mut self.over_time, &other.over_time) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.over_time = Some(b.clone()),
            _ => {}
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// How many samples were recorded.
    pub samples: u64,
    /// Mean.
    pub mean_us: f64,
    /// 50th percentile.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latency {
    /// Summarises a histogram of nanoseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        })
    }
}

/// Which sequence numbers of one publisher a receiver has seen.
#[derive(Debug, Default, Clone)]
pub struct SeqSeen {
    /// One bit per sequence number, grown on demand.
    bits: Vec<u64>,
    /// Distinct sequence numbers seen.
    pub distinct: u64,
    /// Sequence numbers seen more than once (each repeat counts).
    pub duplicated: u64,
    /// Messages that arrived after a higher sequence number from the same publisher.
    pub out_of_order: u64,
    /// The highest sequence number seen plus one (0 when none).
    next: u64,
}

impl SeqSeen {
    /// Records one arrival of `seq`; returns whether it is the first.
    #[inline]
    pub fn observe(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two().max(1024), 0);
        }
        let mask = 1u64 << (seq % 64);
        if self.bits[word] & mask != 0 {
            self.duplicated += 1;
            return false;
        }
        self.bits[word] |= mask;
        self.distinct += 1;
        if seq < self.next {
            self.out_of_order += 1;
        } else {
            self.next = seq + 1;
        }
        true
    }

    /// Merges another receiver's view (queue group members): sequence numbers both have seen
    /// count as duplicates.
    pub fn merge(&mut self, other: &SeqSeen) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        let mut distinct = 0u64;
        for (i, w) in self.bits.iter_mut().enumerate() {
            let o = other.bits.get(i).copied().unwrap_or(0);
            self.duplicated += u64::from((*w & o).count_ones());
            *w |= o;
            distinct += u64::from(w.count_ones());
        }
        self.distinct = distinct;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.next = self.next.max(other.next);
    }

    /// Whether `seq` has been seen.
    #[cfg(test)]
    pub fn contains(&self, seq: u64) -> bool {
        self.bits.get((seq / 64) as usize).is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }
}

/// Correctness counters; all zero on a clean run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Checks {
    /// Messages that should have arrived and did not.
    pub lost: u64,
    /// Messages that arrived more than once.
    pub duplicated: u64,
    /// Messages that arrived after a later one from the same publisher.
    pub out_of_order: u64,
    /// Messages delivered to a subscription whose filter does not match, or on the wrong subject.
    pub misrouted: u64,
    /// -ERR lines and connection failures.
    pub errors: u64,
    /// The first few error texts.
    pub error_texts: Vec<String>,
}

impl Checks {
    /// Whether every counter is zero.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.misrouted == 0 && self.errors == 0
    }

    /// Adds another set of counters.
    pub fn add(&mut self, o: &Checks) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.misrouted += o.misrouted;
        self.errors += o.errors;
        for t in &o.error_texts {
            self.note_error_text(t.clone());
        }
    }

    /// Counts one error and keeps its text if few are kept so far.
    pub fn error(&mut self, text: String) {
        self.errors += 1;
        self.note_error_text(text);
    }

    fn note_error_text(&mut self, text: String) {
        if self.error_texts.len() < 10 && !self.error_texts.contains(&text) {
            self.error_texts.push(text);
        }
    }
}

/// User plus system CPU seconds used so far by this process (all threads).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User plus system CPU seconds used so far by process `pid`, from /proc/<pid>/stat.
pub fn proc_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3), ..., utime (14) and stime (15).
    if fields.len() < 13 {
        bail!("malformed {path}");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    // SAFETY: sysconf has no memory effects.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Ok((utime + stime) as f64 / tck)
}

/// Resident memory of process `pid` in kB, from the VmRSS line of /proc/<pid>/status.
pub fn proc_rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb = v.trim().trim_end_matches("kB").trim();
            return kb.parse().with_context(|| format!("parsing VmRSS {kb:?}"));
        }
    }
    bail!("no VmRSS line in {path}")
}

/// Milliseconds of steal per CPU so far (time the hypervisor ran something else while this
/// machine's CPU had work), from the `cpuN` lines of /proc/stat; empty where it cannot be read.
pub fn steal_ms_by_cpu() -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    // SAFETY: sysconf has no memory effects.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ms_per_tick = if tck > 0 { 1000 / tck as u64 } else { 10 };
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| l.split_whitespace().nth(8).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * ms_per_tick)
        .collect()
}

/// Median of a list (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracking() {
        let mut s = SeqSeen::default();
        for q in [0, 1, 3, 2, 3, 5000] {
            s.observe(q);
        }
        assert_eq!((s.distinct, s.duplicated, s.out_of_order), (5, 1, 1));
        let mut other = SeqSeen::default();
        other.observe(4);
        other.observe(5000);
        s.merge(&other);
        assert_eq!((s.distinct, s.duplicated), (6, 2));
        assert!(s.contains(4) && !s.contains(6));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn own_cpu_and_memory() {
        assert!(self_cpu_seconds() >= 0.0);
        let pid = std::process::id();
        assert!(proc_cpu_seconds(pid).unwrap() >= 0.0);
        assert!(proc_rss_kb(pid).unwrap() > 0);
        // One figure per CPU of the machine, not only those this process may run on.
        if std::path::Path::new("/proc/stat").exists() {
            assert!(!steal_ms_by_cpu().is_empty());
        }
    }
}
