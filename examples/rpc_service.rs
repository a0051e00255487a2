//! A request-reply service with several instances in one queue group, and a client.
//!
//! `--instances` service instances (each its own connection, as separate processes would be)
//! subscribe to `svc.orders.get` in the queue group `orders`, so each request goes to exactly
//! one of them. A client sends `--requests` requests, `--concurrency` at a time, each with a
//! timeout, and prints how many each instance served. Then it requests `svc.orders.missing`,
//! which nobody serves: the server answers at once with a no-responders status, and the client
//! gets `RequestErrorKind::NoResponders` instead of waiting for its timeout.
//!
//! ```sh
//! cargo run --release --example rpc_service -- --instances 3 --requests 1000 --concurrency 32
//! ```
//!
//! Exits non-zero when a request fails or no-responders is not reported.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::RequestErrorKind;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

/// The subject the service answers on.
const SUBJECT: &str = "svc.orders.get";
/// The queue group every instance joins.
const QUEUE: &str = "orders";
/// Made-up order states.
const STATUSES: [&str; 3] = ["pending", "shipped", "delivered"];

/// Runs service instances in a queue group and a client that calls them.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Service instances in the queue group.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Requests the client sends.
    #[arg(long, default_value_t = 300)]
    requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
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
        .with_context(|| format!("{name}: connecting to {server}"))
}

/// The service's answer to `{"order_id": N}`.
fn answer(instance: &str, request: &[u8]) -> serde_json::Value {
    let order_id = serde_json::from_slice::<serde_json::Value>(request).ok().and_then(|v| v["order_id"].as_u64());
    match order_id {
        Some(id) => json!({
            "order_id": id,
            "status": STATUSES[(id % 3) as usize],
            "total_cents": 1000 + (id * 37) % 9000,
            "served_by": instance,
        }),
        None => json!({ "error": "expected {\"order_id\": <number>}", "served_by": instance }),
    }
}

/// Serves requests until `stop` changes; returns how many it answered.
async fn serve(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    name: String,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut served = 0;
    loop {
        let request = tokio::select! {
            _ = stop.changed() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let Some(reply) = request.reply else { continue };
        client.publish(reply, answer(&name, &request.payload).to_string().into()).await?;
        served += 1;
    }
    requests.unsubscribe().await?;
    client.flush().await?;
    Ok(served)
}

/// What one client request came to.
enum Outcome {
    Served(String),
    TimedOut,
    Failed(String),
}

async fn call(client: &async_nats::Client, order_id: u64, timeout: Duration) -> Outcome {
    let body = json!({ "order_id": order_id }).to_string();
    let request = async_nats::Request::new().payload(body.into()).timeout(Some(timeout));
    match client.send_request(SUBJECT, request).await {
        Ok(reply) => match serde_json::from_slice::<serde_json::Value>(&reply.payload) {
            Ok(v) if v["order_id"] == order_id => Outcome::Served(v["served_by"].as_str().unwrap_or("?").to_string()),
            Ok(v) => Outcome::Failed(format!("wrong reply for order {order_id}: {v}")),
            Err(e) => Outcome::Failed(format!("reply is not JSON: {e}")),
        },
        Err(e) if e.kind() == RequestErrorKind::TimedOut => Outcome::TimedOut,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.instances == 0 || args.concurrency == 0 {
        bail!("--instances and --concurrency must be positive");
    }
    let timeout = Duration::from_secs_f64(args.timeout);

    // The service instances.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut instances = Vec::new();
    for i in 1..=args.instances {
        let name = format!("orders-{i}");
        let client = connect(&args.server, &name).await?;
        let sub = client.queue_subscribe(SUBJECT, QUEUE.to_string()).await?;
        // Once flushed, the server has the subscription: no request can miss this instance.
        client.flush().await?;
        instances.push((name.clone(), tokio::spawn(serve(client, sub, name, stop_rx.clone()))));
    }
    println!("{} instances serving {SUBJECT} in queue group {QUEUE:?}", args.instances);

    // The client.
    let client = connect(&args.server, "orders-client").await?;
    let start = Instant::now();
    let outcomes: Vec<Outcome> = futures::stream::iter(0..args.requests)
        .map(|id| call(&client, id, timeout))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mut by_reply: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut timed_out, mut failed) = (0u64, 0u64, 0u64);
    for outcome in outcomes {
        match outcome {
            Outcome::Served(by) => {
                ok += 1;
                *by_reply.entry(by).or_default() += 1;
            }
            Outcome::TimedOut => timed_out += 1,
            Outcome::Failed(why) => {
                if failed == 0 {
                    println!("first failure: {why}");
                }
                failed += 1;
            }
        }
    }
    println!(
        "{} requests, {} at a time: {ok} ok, {timed_out} timed out, {failed} failed in {:.1} ms ({:.0} req/s)",
        args.requests,
        args.concurrency,
        elapsed.as_secs_f64() * 1000.0,
        args.requests as f64 / elapsed.as_secs_f64()
    );

    // No one serves this subject: the server says so at once.
    let sent = Instant::now();
    let no_responders =
        match client.send_request("svc.orders.missing", async_nats::Request::new().timeout(Some(timeout))).await {
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                println!(
                    "svc.orders.missing: no responders, reported after {:.2} ms (the timeout was {} s)",
                    sent.elapsed().as_secs_f64() * 1000.0,
                    args.timeout
                );
                true
            }
            Err(e) => {
                println!("svc.orders.missing: expected no responders, got error: {e}");
                false
            }
            Ok(reply) => {
                println!("svc.orders.missing: expected no responders, got a reply: {:?}", reply.payload);
                false
            }
        };

    stop_tx.send(true).context("stopping the instances")?;
    println!();
    println!("{:<10} {:>8} {:>8}", "instance", "served", "share");
    let mut served_total = 0;
    let mut idle = 0;
    for (name, task) in instances {
        let served = task.await.context("instance panicked")??;
        served_total += served;
        if served == 0 {
            idle += 1;
        }
        let share = if ok > 0 { served as f64 * 100.0 / ok as f64 } else { 0.0 };
        println!("{name:<10} {served:>8} {share:>7.1}%");
        if by_reply.get(&name).copied().unwrap_or(0) != served {
            println!("  (the replies name {name} {} times)", by_reply.get(&name).copied().unwrap_or(0));
        }
    }
    if idle > 0 {
        println!("{idle} instances served nothing: send more requests for the queue group to spread them");
    }
    if served_total != ok {
        bail!("the instances served {served_total} requests but the client got {ok} replies");
    }
    if timed_out + failed > 0 {
        bail!("{timed_out} requests timed out and {failed} failed");
    }
    if !no_responders {
        bail!("no-responders was not reported");
    }
    Ok(())
}
