//! Watches the telemetry of an IoT fleet and sends one device a command.
//!
//! Subscribes to `devices.*.telemetry` (one wildcard subscription for the whole fleet), keeps
//! per-device counts, last-seen times and message rates, and prints the busiest devices. With
//! `--device ID` it then sends that device a command on `devices.<id>.cmd` as a request and
//! waits for its acknowledgement.
//!
//! ```sh
//! cargo run --release --example iot_fleet -- --devices 1000 --duration 60 &
//! cargo run --release --example fleet_monitor -- --duration 5 --device dev-0042
//! ```
//!
//! Exits non-zero when no telemetry arrived, or when the device did not acknowledge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::RequestErrorKind;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

/// Watches fleet telemetry and sends a device a command.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// How long to watch telemetry, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// How many devices to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Device to send a command to (for example dev-0042).
    #[arg(long)]
    device: Option<String>,
    /// The command to send.
    #[arg(long, default_value = "blink")]
    command: String,
    /// How long to wait for the acknowledgement, in seconds.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

/// What the monitor knows about one device.
struct Seen {
    messages: u64,
    first: Instant,
    last: Instant,
    last_seq: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = async_nats::ConnectOptions::new()
        .name("fleet_monitor")
        .connection_timeout(Duration::from_secs(5))
        .connect(&args.server)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    let mut telemetry = client.subscribe("devices.*.telemetry").await?;
    client.flush().await?;
    println!("watching devices.*.telemetry on {} for {} s ...", args.server, args.duration);

    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration);
    let mut devices: HashMap<String, Seen> = HashMap::new();
    let mut malformed = 0u64;
    loop {
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            msg = telemetry.next() => match msg {
                Some(msg) => msg,
                None => bail!("the subscription ended early"),
            },
        };
        // devices.<id>.telemetry: the id is the second token.
        let Some(id) = msg.subject.split('.').nth(1) else { continue };
        let seq = serde_json::from_slice::<serde_json::Value>(&msg.payload).ok().and_then(|v| v["seq"].as_u64());
        if seq.is_none() {
            malformed += 1;
        }
        let now = Instant::now();
        let seen = devices.entry(id.to_string()).or_insert(Seen { messages: 0, first: now, last: now, last_seq: None });
        seen.messages += 1;
        seen.last = now;
        seen.last_seq = seq.or(seen.last_seq);
    }
    let watched = start.elapsed().as_secs_f64();
    let now = Instant::now();
    let total: u64 = devices.values().map(|s| s.messages).sum();

    println!();
    println!(
        "{} devices seen, {total} messages in {watched:.1} s ({:.0} msg/s), {malformed} malformed",
        devices.len(),
        total as f64 / watched
    );
    let mut rows: Vec<(&String, &Seen)> = devices.iter().collect();
    rows.sort_by(|a, b| b.1.messages.cmp(&a.1.messages).then(a.0.cmp(b.0)));
    println!("{:<12} {:>8} {:>9} {:>14} {:>9}", "device", "messages", "msg/s", "last seen ago", "last seq");
    for (id, seen) in rows.iter().take(args.top) {
        // Intervals between the first and the last message seen, when there are two or more.
        let span = seen.last.duration_since(seen.first).as_secs_f64();
        let rate = if span > 0.0 { (seen.messages - 1) as f64 / span } else { seen.messages as f64 / watched };
        let ago = now.duration_since(seen.last).as_millis();
        let seq = seen.last_seq.map_or_else(|| "-".to_string(), |s| s.to_string());
        println!("{id:<12} {:>8} {rate:>9.1} {ago:>11} ms {seq:>9}", seen.messages);
    }
    if rows.len() > args.top {
        println!("... and {} more", rows.len() - args.top);
    }

    let mut failed = false;
    if total == 0 {
        println!("no telemetry arrived: is iot_fleet running against {}?", args.server);
        failed = true;
    }

    if let Some(device) = &args.device {
        let subject = format!("devices.{device}.cmd");
        let body = json!({ "command": args.command, "from": "fleet_monitor" }).to_string();
        println!();
        println!("sending command {:?} to {subject} (timeout {} s) ...", args.command, args.timeout);
        let sent = Instant::now();
        let request =
            async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs_f64(args.timeout)));
        match client.send_request(subject, request).await {
            Ok(reply) => {
                let rtt = sent.elapsed();
                let ack: serde_json::Value =
                    serde_json::from_slice(&reply.payload).context("the acknowledgement is not JSON")?;
                if ack["ack"] == true && ack["device"] == device.as_str() {
                    println!("acknowledged by {device} in {:.1} ms: {ack}", rtt.as_secs_f64() * 1000.0);
                } else {
                    println!("{device} refused the command: {ack}");
                    failed = true;
                }
            }
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                println!("no responders: {device} is not connected (nobody subscribes to its command subject)");
                failed = true;
            }
            Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                println!("no acknowledgement from {device} within {} s", args.timeout);
                failed = true;
            }
            Err(e) => return Err(e).context("sending the command"),
        }
    }
    if failed {
        bail!("fleet_monitor failed");
    }
    Ok(())
}
