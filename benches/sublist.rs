//! The subject trie: matching with 10, 10k and 1M subscriptions, literal and wildcard,
//! through a publisher's match cache (hit) and without it (miss).

use std::sync::Arc;

use courier::sublist::{PublisherCache, Sublist, Subscribable};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

struct Sub {
    subject: Vec<u8>,
}

impl Subscribable for Sub {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        None
    }
}

/// `n` subscriptions on `devices.<i>.telemetry`, plus a few wildcards when asked.
fn sublist(n: usize, wildcards: bool) -> Sublist<Sub> {
    let sl = Sublist::new();
    for i in 0..n {
        sl.insert(Arc::new(Sub { subject: format!("devices.{i}.telemetry").into_bytes() }));
    }
    if wildcards {
        for s in ["devices.*.telemetry", "devices.>", ">", "devices.*.*"] {
            sl.insert(Arc::new(Sub { subject: s.as_bytes().to_vec() }));
        }
    }
    sl
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sublist");
    for &n in &[10usize, 10_000, 1_000_000] {
        for wildcards in [false, true] {
            let sl = sublist(n, wildcards);
            let label = format!("{n}{}", if wildcards { "+wildcards" } else { "" });
            let subject = format!("devices.{}.telemetry", n / 2).into_bytes();
            group.bench_with_input(BenchmarkId::new("match_miss", &label), &subject, |b, s| b.iter(|| sl.matches(s)));
            let mut cache = PublisherCache::default();
            group.bench_with_input(BenchmarkId::new("match_cache_hit", &label), &subject, |b, s| {
                b.iter(|| cache.get(&sl, s).psubs.len())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
