//! A fleet of simulated IoT devices, one NATS connection each.
//!
//! Every device publishes telemetry as JSON on `devices.<id>.telemetry` at a fixed rate and
//! answers commands sent to `devices.<id>.cmd` with an acknowledgement (request-reply). Run
//! `fleet_monitor` next to it to watch the telemetry and send a device a command.
//!
//! ```sh
//! cargo run --release --example iot_fleet -- --devices 1000 --rate 1 --duration 30
//! ```
//!
//! Device ids are `dev-0000`, `dev-0001`, ... The program stops after `--duration` seconds,
//! prints a summary, and exits non-zero if a device could not connect or publish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::time::MissedTickBehavior;

/// Simulates IoT devices publishing telemetry and answering commands.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Number of devices, each with its own connection.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Telemetry messages per second, per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// How many devices connect at the same time.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
}

/// Counters shared by every device task.
#[derive(Default)]
struct Totals {
    published: AtomicU64,
    publish_errors: AtomicU64,
    commands: AtomicU64,
    reply_errors: AtomicU64,
}

/// The name of device number `n`: a single subject token.
fn device_id(n: usize) -> String {
    format!("dev-{n:04}")
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One telemetry reading. The values drift smoothly so that a chart of them looks plausible.
fn telemetry(id: &str, n: usize, seq: u64) -> serde_json::Value {
    let phase = seq as f64 * 0.1 + n as f64;
    json!({
        "device": id,
        "seq": seq,
        "ts_ms": unix_millis(),
        "temperature_c": ((20.0 + 5.0 * phase.sin()) * 10.0).round() / 10.0,
        "humidity_pct": ((45.0 + 10.0 * (phase * 0.7).cos()) * 10.0).round() / 10.0,
        "battery_pct": (100.0 - (seq as f64 * 0.01)).max(0.0),
    })
}

/// The acknowledgement a device sends for a command.
fn ack(id: &str, request: &[u8], seq: u64) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(request) {
        Ok(cmd) => json!({
            "device": id,
            "ack": true,
            "command": cmd.get("command").cloned().unwrap_or(serde_json::Value::Null),
            "telemetry_sent": seq,
            "ts_ms": unix_millis(),
        }),
        Err(e) => json!({ "device": id, "ack": false, "error": format!("command is not JSON: {e}") }),
    }
}

struct Device {
    n: usize,
    id: String,
    client: async_nats::Client,
    commands: async_nats::Subscriber,
}

async fn connect_device(server: &str, n: usize) -> Result<Device> {
    let id = device_id(n);
    let client = async_nats::ConnectOptions::new()
        .name(format!("iot_fleet {id}"))
        .connection_timeout(Duration::from_secs(5))
        // Devices receive little: a small read buffer keeps a thousand connections light.
        .read_buffer_capacity(4096)
        .connect(server)
        .await
        .with_context(|| format!("{id}: connecting to {server}"))?;
    let commands = client.subscribe(format!("devices.{id}.cmd")).await.with_context(|| format!("{id}: subscribe"))?;
    // The round trip makes sure the server has the subscription before commands are sent.
    client.flush().await.with_context(|| format!("{id}: flush"))?;
    Ok(Device { n, id, client, commands })
}

/// Publishes telemetry every `period` (the first one after `offset`) until `deadline`,
/// answering commands as they come.
async fn run_device(
    mut device: Device,
    start: tokio::time::Instant,
    offset: Duration,
    period: Duration,
    deadline: tokio::time::Instant,
    totals: Arc<Totals>,
) {
    let mut ticks = tokio::time::interval_at(start + offset, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let subject = format!("devices.{}.telemetry", device.id);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ticks.tick() => {
                let payload = telemetry(&device.id, device.n, seq).to_string();
                match device.client.publish(subject.clone(), payload.into()).await {
                    Ok(()) => {
                        seq += 1;
                        totals.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        totals.publish_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(cmd) = device.commands.next() => {
                let Some(reply) = cmd.reply else { continue };
                let body = ack(&device.id, &cmd.payload, seq).to_string();
                println!("{}: command {} -> ack", device.id, String::from_utf8_lossy(&cmd.payload));
                match device.client.publish(reply, body.into()).await {
                    Ok(()) => totals.commands.fetch_add(1, Ordering::Relaxed),
                    Err(_) => totals.reply_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }
    // Send what is still buffered before the connection goes away.
    if device.client.flush().await.is_err() {
        totals.publish_errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.devices == 0 || args.rate <= 0.0 || args.duration <= 0.0 {
        bail!("--devices, --rate and --duration must be positive");
    }
    let period = Duration::from_secs_f64(1.0 / args.rate);

    println!("connecting {} devices to {} ...", args.devices, args.server);
    let connect_start = Instant::now();
    let devices: Vec<Device> = futures::stream::iter(0..args.devices)
        .map(|n| connect_device(&args.server, n))
        .buffer_unordered(args.connect_concurrency.max(1))
        .try_collect()
        .await?;
    println!(
        "connected {} devices in {:.2} s; publishing on devices.<id>.telemetry at {} msg/s each for {} s",
        devices.len(),
        connect_start.elapsed().as_secs_f64(),
        args.rate,
        args.duration
    );

    let totals = Arc::new(Totals::default());
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let count = devices.len() as u32;
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|device| {
            // Spread the devices over one period so that they do not all publish at once.
            let offset = period * device.n as u32 / count;
            tokio::spawn(run_device(device, start, offset, period, deadline, Arc::clone(&totals)))
        })
        .collect();
    for task in tasks {
        task.await.context("device task panicked")?;
    }
    let elapsed = start.elapsed().as_secs_f64();

    let published = totals.published.load(Ordering::Relaxed);
    let publish_errors = totals.publish_errors.load(Ordering::Relaxed);
    let commands = totals.commands.load(Ordering::Relaxed);
    let reply_errors = totals.reply_errors.load(Ordering::Relaxed);
    println!();
    println!("iot_fleet summary");
    println!("  devices:            {}", args.devices);
    println!("  duration:           {elapsed:.2} s");
    println!("  telemetry messages: {published} ({:.0} msg/s in all)", published as f64 / elapsed);
    println!("  commands answered:  {commands}");
    println!("  errors:             {}", publish_errors + reply_errors);
    if publish_errors + reply_errors > 0 {
        bail!("{publish_errors} publish errors, {reply_errors} failed acknowledgements");
    }
    if published == 0 {
        bail!("no telemetry was published");
    }
    Ok(())
}
