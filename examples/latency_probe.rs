//! Request-reply round-trip latency, in a few lines.
//!
//! A responder on one connection echoes `probe.echo`; a requester on a second connection sends
//! `--count` requests of `--size` bytes one after another and times each round trip (client →
//! server → responder → server → client). Prints the minimum, p50, p90, p99 and maximum.
//!
//! ```sh
//! cargo run --release --example latency_probe -- --count 10000 --size 256
//! ```
//!
//! A starting point: `courier-bench` measures throughput, fan-out and latency under load.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;

const SUBJECT: &str = "probe.echo";

/// Measures request-reply round-trip latency.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Requests to time.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Untimed requests sent first.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Timeout for each request, in seconds.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

async fn connect(server: &str, name: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))
}

/// The value below which `p` percent of the sorted samples fall (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.count == 0 {
        bail!("--count must be positive");
    }

    let responder = connect(&args.server, "latency_probe responder").await?;
    let mut requests = responder.subscribe(SUBJECT).await?;
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                responder.publish(reply, msg.payload).await?;
            }
        }
        Ok::<(), async_nats::PublishError>(())
    });

    let requester = async_nats::ConnectOptions::new()
        .name("latency_probe requester")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs_f64(args.timeout)))
        .connect(&args.server)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    let payload = bytes::Bytes::from(vec![b'x'; args.size]);
    for _ in 0..args.warmup {
        requester.request(SUBJECT, payload.clone()).await.context("warm-up request")?;
    }
    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let sent = Instant::now();
        let reply = requester.request(SUBJECT, payload.clone()).await.with_context(|| format!("request {i}"))?;
        samples.push(sent.elapsed());
        if reply.payload != payload {
            bail!("request {i}: the echo differs from the request");
        }
    }
    echo.abort();

    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!("{} requests of {} bytes on {SUBJECT} via {}", args.count, args.size, args.server);
    println!(
        "min {}  p50 {}  p90 {}  p99 {}  max {}  (mean {})",
        show(samples[0]),
        show(percentile(&samples, 50.0)),
        show(percentile(&samples, 90.0)),
        show(percentile(&samples, 99.0)),
        show(samples[samples.len() - 1]),
        show(mean)
    );
    Ok(())
}
