//! Parser throughput over a realistic mixed stream: small PUBs with and without reply
//! subjects, HPUBs, SUB/UNSUB churn and PINGs, parsed the way the read loop does.

use courier::proto::Parser;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn mixed_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..10_000u32 {
        match i % 10 {
            0 => s.extend_from_slice(format!("SUB devices.{i}.cmd {i}\r\n").as_bytes()),
            1 => s.extend_from_slice(format!("UNSUB {}\r\n", i - 1).as_bytes()),
            2 => s.extend_from_slice(b"PING\r\n"),
            3 => {
                let hdr = b"NATS/1.0\r\nTrace: abc\r\n\r\n";
                s.extend_from_slice(
                    format!("HPUB svc.orders.get _INBOX.x.{i} {} {}\r\n", hdr.len(), hdr.len() + 32).as_bytes(),
                );
                s.extend_from_slice(hdr);
                s.extend_from_slice(&[b'h'; 32]);
                s.extend_from_slice(b"\r\n");
            }
            4 => {
                s.extend_from_slice(format!("PUB svc.orders.get _INBOX.x.{i} 64\r\n").as_bytes());
                s.extend_from_slice(&[b'r'; 64]);
                s.extend_from_slice(b"\r\n");
            }
            _ => {
                s.extend_from_slice(format!("PUB devices.{}.telemetry 128\r\n", i % 500).as_bytes());
                s.extend_from_slice(&[b't'; 128]);
                s.extend_from_slice(b"\r\n");
            }
        }
    }
    s
}

fn parse_all(parser: &mut Parser, mut buf: &[u8]) -> usize {
    let mut ops = 0;
    while let Ok(Some((_, used))) = parser.parse(buf) {
        buf = &buf[used..];
        ops += 1;
    }
    ops
}

fn bench(c: &mut Criterion) {
    let stream = mixed_stream();
    let mut group = c.benchmark_group("parser");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("mixed_stream", |b| {
        let mut parser = Parser::new(4096, 1 << 20);
        b.iter(|| parse_all(&mut parser, &stream))
    });
    let pubs: Vec<u8> = (0..10_000).flat_map(|_| b"PUB a.b.c 16\r\n0123456789abcdef\r\n".iter().copied()).collect();
    group.throughput(Throughput::Bytes(pubs.len() as u64));
    group.bench_function("pub_16b", |b| {
        let mut parser = Parser::new(4096, 1 << 20);
        b.iter(|| parse_all(&mut parser, &pubs))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
