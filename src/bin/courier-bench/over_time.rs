//! Latency over time: each message's latency filed under the interval it was sent in, so that a
//! stall (of the server, the machine or the bench) shows as a spike at the moment it happened
//! instead of disappearing into the run's percentiles.
//!
//! Each interval keeps a coarse histogram (four buckets per doubling, 1 µs to about 1 s, so a
//! percentile is within 19% of the exact value) and the exact maximum; recording is a few
//! arithmetic operations and no allocation once the interval exists.

use serde::Serialize;

/// Buckets per doubling of latency.
const PER_OCTAVE: u32 = 4;
/// Buckets in all: 20 doublings above 1 µs; slower messages go in the last.
const BUCKETS: usize = 80;
/// Intervals a run is cut into at most (longer runs get longer intervals).
const MAX_INTERVALS: u64 = 2000;
/// The shortest interval.
const MIN_INTERVAL_NS: u64 = 10_000_000;

/// One interval's latencies.
#[derive(Clone)]
struct Slot {
    buckets: [u32; BUCKETS],
    count: u64,
    max_ns: u64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot { buckets: [0; BUCKETS], count: 0, max_ns: 0 }
    }
}

/// The bucket of a latency in nanoseconds.
#[inline]
fn bucket(ns: u64) -> usize {
    let us = (ns / 1000).max(1);
    let octave = 63 - us.leading_zeros();
    // The two bits below the leading one pick the quarter of the doubling.
    let quarter = if octave >= 2 { (us >> (octave - 2)) & 3 } else { (us << (2 - octave)) & 3 } as u32;
    ((octave * PER_OCTAVE + quarter) as usize).min(BUCKETS - 1)
}

/// The upper edge of a bucket, in microseconds.
fn bucket_top_us(b: usize) -> f64 {
    let octave = b as u32 / PER_OCTAVE;
    let quarter = b as u32 % PER_OCTAVE;
    f64::from(1u32 << octave.min(31)) * (1.0 + f64::from(quarter + 1) / f64::from(PER_OCTAVE))
}

/// Latencies filed by send time, interval by interval.
#[derive(Clone)]
pub struct LatencyOverTime {
    origin_ns: u64,
    interval_ns: u64,
    slots: Vec<Slot>,
}

/// One interval as reported.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySample {
    /// Seconds from the start of the run to the end of the interval.
    pub t_s: f64,
    /// Messages sent in the interval whose latency was measured.
    pub count: u64,
    /// Median latency (upper edge of its bucket).
    pub p50_us: f64,
    /// 99th percentile latency (upper edge of its bucket).
    pub p99_us: f64,
    /// The largest latency, exact.
    pub max_us: f64,
}

impl LatencyOverTime {
    /// Intervals starting at `origin_ns` (the shared epoch's clock), sized so that a run of
    /// `duration` has at most [`MAX_INTERVALS`] of them.
    pub fn new(origin_ns: u64, duration: std::time::Duration) -> Self {
        let interval_ns = (duration.as_nanos() as u64 / MAX_INTERVALS).max(MIN_INTERVAL_NS);
        LatencyOverTime { origin_ns, interval_ns, slots: Vec::new() }
    }

    /// Files a message sent at `sent_ns` that took `latency_ns`.
    #[inline]
    pub fn record(&mut self, sent_ns: u64, latency_ns: u64) {
        let i = (sent_ns.saturating_sub(self.origin_ns) / self.interval_ns) as usize;
        if i >= self.slots.len() {
            if i as u64 > 4 * MAX_INTERVALS {
                return;
            }
            self.slots.resize(i + 1, Slot::default());
        }
        let slot = &mut self.slots[i];
        slot.buckets[bucket(latency_ns)] += 1;
        slot.count += 1;
        slot.max_ns = slot.max_ns.max(latency_ns);
    }

    /// Adds another receiver's record (same origin and interval).
    pub fn merge(&mut self, other: &LatencyOverTime) {
        if other.slots.len() > self.slots.len() {
            self.slots.resize(other.slots.len(), Slot::default());
        }
        for (a, b) in self.slots.iter_mut().zip(&other.slots) {
            for (x, y) in a.buckets.iter_mut().zip(&b.buckets) {
                *x += y;
            }
            a.count += b.count;
            a.max_ns = a.max_ns.max(b.max_ns);
        }
    }

    /// The intervals that saw messages, in order.
    pub fn samples(&self) -> Vec<LatencySample> {
        let quantile = |s: &Slot, q: f64| {
            let rank = ((s.count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0u64;
            for (b, &n) in s.buckets.iter().enumerate() {
                seen += u64::from(n);
                if seen >= rank {
                    return bucket_top_us(b).min(s.max_ns as f64 / 1000.0);
                }
            }
            s.max_ns as f64 / 1000.0
        };
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.count > 0)
            .map(|(i, s)| LatencySample {
                t_s: (i as u64 + 1) as f64 * self.interval_ns as f64 / 1e9,
                count: s.count,
                p50_us: quantile(s, 0.50),
                p99_us: quantile(s, 0.99),
                max_us: s.max_ns as f64 / 1000.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_grow_by_quarters() {
        assert_eq!(bucket(500), 0);
        assert_eq!(bucket(1_000), 0);
        assert_eq!(bucket(2_000), 4);
        assert_eq!(bucket(3_000), 6);
        assert_eq!(bucket(1_000_000_000_000), BUCKETS - 1);
        for us in [1u64, 3, 17, 100, 999, 12_345, 400_000] {
            let top = bucket_top_us(bucket(us * 1000));
            assert!(top >= us as f64 && top <= us as f64 * 1.5, "{us} µs in a bucket topped at {top}");
        }
    }

    #[test]
    fn a_stall_shows_in_its_interval() {
        let mut a = LatencyOverTime::new(1_000, Duration::from_secs(1));
        for i in 0..1000u64 {
            // 1 ms apart; the messages sent between 500 and 510 ms waited 5 ms.
            let sent = 1_000 + i * 1_000_000;
            let lat = if (500..510).contains(&i) { 5_000_000 } else { 20_000 };
            a.record(sent, lat);
        }
        let mut b = LatencyOverTime::new(1_000, Duration::from_secs(1));
        b.record(1_000, 30_000);
        a.merge(&b);
        let s = a.samples();
        assert_eq!(s.len(), 100);
        assert_eq!(s[0].count, 11);
        assert_eq!(s[0].max_us, 30.0);
        let worst = s.iter().max_by(|x, y| x.max_us.total_cmp(&y.max_us)).unwrap();
        assert!((worst.t_s - 0.51).abs() < 1e-9 && worst.max_us == 5000.0 && worst.p50_us >= 5000.0);
        assert!(s[10].p99_us <= 24.0, "{:?}", s[10]);
    }
}
