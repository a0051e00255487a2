//! A site gateway: Courier runs at the site as a leaf node of a central hub. The site's devices
//! and its local controller talk through the gateway whether or not the uplink is up; the hub's
//! collector gets the readings while it is, and its commands reach the site again once the
//! uplink is back.
//!
//! `--devices` devices publish `--readings` readings each, one every `--interval-ms`, on
//! `site.<site>.telemetry` at the gateway (`--server`). The site's controller, also at the
//! gateway, counts them all. The hub's collector (`--hub`, reconnecting for as long as it
//! takes) counts those that crossed the uplink. At the end the gateway waits for the uplink:
//! a last reading must reach the hub and a command from the hub (`cmd.<site>.sync`) must reach
//! the controller.
//!
//! ```sh
//! # the hub
//! cat > hub.conf <<EOF
//! server_name: hub
//! listen: 127.0.0.1:4222
//! leafnodes { listen: 127.0.0.1:7422 }
//! EOF
//! # the gateway
//! cat > site.conf <<EOF
//! server_name: site1
//! listen: 127.0.0.1:4223
//! leafnodes { remotes [ { url: "nats-leaf://127.0.0.1:7422" } ] }
//! EOF
//! cargo run --release -- -c hub.conf &
//! cargo run --release -- -c site.conf &
//! cargo run --release --example site_gateway -- --server nats://127.0.0.1:4223 --hub nats://127.0.0.1:4222
//! # stop and restart the hub while it runs: the site's counts keep growing
//! ```
//!
//! Exits non-zero unless the controller got every reading and the uplink carried traffic both
//! ways at the end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use tokio::sync::Mutex;

/// Devices and a controller at a site, a collector at the hub, across a leaf node uplink.
#[derive(Debug, Parser)]
struct Args {
    /// The site gateway (the leaf node).
    #[arg(long, default_value = "nats://127.0.0.1:4223")]
    server: String,
    /// The hub.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    hub: String,
    /// The site's name, in subjects.
    #[arg(long, default_value = "site1")]
    site: String,
    /// Devices at the site.
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Readings per device.
    #[arg(long, default_value_t = 100)]
    readings: usize,
    /// Milliseconds between one device's readings.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// How long everything may take, in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let telemetry = format!("site.{}.telemetry", args.site);
    let commands = format!("cmd.{}.>", args.site);

    // The site's controller: every reading, and the hub's commands.
    let site = connect(&args.server, "site controller").await?;
    let mut at_site = site.subscribe(telemetry.clone()).await?;
    let mut command_sub = site.subscribe(commands).await?;
    site.flush().await?;

    // The hub's collector, which rides out the hub going away and coming back.
    let hub = async_nats::ConnectOptions::new()
        .name("hub collector")
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(&args.hub)
        .await
        .with_context(|| format!("connecting to {}", args.hub))?;
    let mut at_hub = hub.subscribe(format!("site.{}.telemetry", args.site)).await?;
    hub.flush().await?;

    let expected = args.devices * args.readings;
    let site_seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let hub_seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let final_at_hub = Arc::new(AtomicBool::new(false));
    {
        let seen = Arc::clone(&site_seen);
        tokio::spawn(async move {
            while let Some(m) = at_site.next().await {
                seen.lock().await.insert(String::from_utf8_lossy(&m.payload).into_owned());
            }
        });
        let seen = Arc::clone(&hub_seen);
        let final_seen = Arc::clone(&final_at_hub);
        tokio::spawn(async move {
            while let Some(m) = at_hub.next().await {
                if &m.payload[..] == b"final" {
                    final_seen.store(true, Ordering::Relaxed);
                } else {
                    seen.lock().await.insert(String::from_utf8_lossy(&m.payload).into_owned());
                }
            }
        });
    }

    // The devices, each its own connection to the gateway.
    let mut devices = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        devices.push(connect(&args.server, &format!("device-{i}")).await?);
    }
    println!("publishing {expected} readings from {} devices, one every {} ms each", args.devices, args.interval_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
    for n in 0..args.readings {
        tick.tick().await;
        for (i, device) in devices.iter().enumerate() {
            device.publish(telemetry.clone(), format!("device-{i}:{n}").into()).await?;
        }
    }
    for device in &devices {
        device.flush().await?;
    }

    // Local traffic never needed the uplink.
    while site_seen.lock().await.len() < expected {
        if Instant::now() > deadline {
            bail!("the site controller got {} of {expected} readings", site_seen.lock().await.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("site controller: {expected}/{expected} readings");

    // The uplink: a last reading reaches the hub, a command from the hub reaches the site.
    let mut waiting = tokio::time::interval(Duration::from_millis(100));
    while !final_at_hub.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            bail!("the uplink never carried a reading to the hub");
        }
        waiting.tick().await;
        site.publish(telemetry.clone(), "final".into()).await?;
        site.flush().await?;
    }
    let sync = format!("cmd.{}.sync", args.site);
    loop {
        hub.publish(sync.clone(), "sync".into()).await?;
        hub.flush().await?;
        match tokio::time::timeout(Duration::from_millis(100), command_sub.next()).await {
            Ok(Some(m)) if &m.payload[..] == b"sync" => break,
            Ok(None) => bail!("the controller's subscription closed"),
            _ if Instant::now() > deadline => bail!("no command from the hub reached the site"),
            _ => {}
        }
    }
    let at_hub = hub_seen.lock().await.len();
    println!(
        "hub collector: {at_hub}/{expected} readings ({} did not cross: the uplink was down, and core NATS keeps no copy)",
        expected - at_hub
    );
    println!("uplink: forwarding resumed both ways");
    Ok(())
}

async fn connect(url: &str, name: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}
