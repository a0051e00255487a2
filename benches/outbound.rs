//! The outbound path: encoding messages into a consumer's queue, and flushing it.

use courier::connection::Outbound;
use courier::proto::encode::Message;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbound");
    let payload = [b'x'; 128];
    let msg = Message { subject: b"devices.42.telemetry", reply: None, header_len: 0, payload: &payload };
    group.throughput(Throughput::Elements(1000));
    group.bench_function("push_1000_msgs_128b_and_flush", |b| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let out = Outbound::new(64 << 20);
        b.iter(|| {
            for _ in 0..1000 {
                let _ = out.push_msg(&msg, b"17", false);
            }
            runtime.block_on(out.flush_to(tokio::io::sink()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
