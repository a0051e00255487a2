//! MQTT devices and a NATS service sharing one broker.
//!
//! `--devices` MQTT devices (rumqttc) connect to the broker's `mqtt` listener with persistent
//! sessions, subscribe to their command topic `site/<id>/cmd` at QoS 1, and publish
//! `--messages` telemetry readings each on `site/<id>/telemetry` at QoS 1. A NATS service
//! (async-nats) sees the readings on the wildcard subject `site.*.telemetry`, with the
//! `Nmqtt-Pub` header naming their QoS, and answers every reading with a command published to
//! `site.<id>.cmd`, which reaches the device as an MQTT message.
//!
//! ```sh
//! cat > mqtt.conf <<EOF
//! server_name: site-gateway
//! jetstream { store_dir: "/var/lib/courier" }
//! mqtt { port: 1883 }
//! EOF
//! cargo run --release -- -c mqtt.conf
//! cargo run --release --example mqtt_devices -- --devices 50 --messages 10
//! ```
//!
//! Exits non-zero unless every reading reached the service and every command its device.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// MQTT devices publishing telemetry and receiving commands from a NATS service.
#[derive(Debug, Parser)]
struct Args {
    /// NATS server URL, for the service.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// The broker's MQTT listener, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// MQTT devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Telemetry readings per device.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// How long everything may take, in seconds.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
}

/// What a device reports back to the main task.
enum DeviceEvent {
    /// Subscribed to its commands.
    Ready,
    /// A command arrived.
    Command(String),
    /// Its connection failed.
    Failed(String),
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (host, port) = args.mqtt.rsplit_once(':').context("--mqtt is host:port")?;
    let port: u16 = port.parse().context("--mqtt port")?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);

    // The NATS service: every reading is answered with a command to its device.
    let nc = async_nats::ConnectOptions::new()
        .name("mqtt_devices service")
        .connection_timeout(Duration::from_secs(5))
        .connect(&args.server)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    let mut telemetry = nc.subscribe("site.*.telemetry").await?;
    nc.flush().await?;

    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, DeviceEvent)>();
    let mut clients = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let id = format!("meter-{i:04}");
        let mut opts = MqttOptions::new(id.clone(), host, port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        client.subscribe(format!("site/{id}/cmd"), QoS::AtLeastOnce).await?;
        let tx = events_tx.clone();
        tokio::spawn(async move {
            loop {
                let event = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => DeviceEvent::Ready,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        DeviceEvent::Command(String::from_utf8_lossy(&p.payload).into_owned())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send((i, DeviceEvent::Failed(e.to_string())));
                        return;
                    }
                };
                if tx.send((i, event)).is_err() {
                    return;
                }
            }
        });
        clients.push((id, client));
    }
    let mut ready = 0;
    while ready < args.devices {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some((_, DeviceEvent::Ready))) => ready += 1,
            Ok(Some((i, DeviceEvent::Failed(e)))) => bail!("device {i}: {e}"),
            Ok(Some(_)) => {}
            _ => bail!("only {ready} of {} devices subscribed in time", args.devices),
        }
    }
    println!("{} MQTT devices connected and subscribed to their commands", args.devices);

    for (id, client) in &clients {
        for n in 0..args.messages {
            let reading = format!(r#"{{"device":"{id}","n":{n},"kwh":{:.2}}}"#, 1.5 + n as f64 * 0.25);
            client.publish(format!("site/{id}/telemetry"), QoS::AtLeastOnce, false, reading).await?;
        }
    }

    let expected = args.devices * args.messages;
    let mut readings = 0;
    let mut qos1 = 0;
    let mut commands: HashMap<usize, usize> = HashMap::new();
    let mut received_commands = 0;
    while readings < expected || received_commands < expected {
        tokio::select! {
            m = telemetry.next(), if readings < expected => {
                let Some(m) = m else { bail!("the telemetry subscription ended") };
                readings += 1;
                if m.headers.as_ref().and_then(|h| h.get("Nmqtt-Pub")).map(|v| v.as_str()) == Some("1") {
                    qos1 += 1;
                }
                // site.<id>.telemetry → site.<id>.cmd
                let device = m.subject.as_str().trim_end_matches(".telemetry");
                nc.publish(format!("{device}.cmd"), format!("ack reading {readings}").into()).await?;
            }
            e = events.recv() => match e {
                Some((i, DeviceEvent::Command(text))) => {
                    if !text.starts_with("ack reading ") {
                        bail!("device {i} got an unexpected command {text:?}");
                    }
                    *commands.entry(i).or_default() += 1;
                    received_commands += 1;
                }
                Some((i, DeviceEvent::Failed(e))) => bail!("device {i}: {e}"),
                Some(_) => {}
                None => bail!("every device stopped"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                bail!("timed out: {readings} of {expected} readings, {received_commands} of {expected} commands");
            }
        }
    }
    println!("readings received by the NATS service: {readings} ({qos1} at QoS 1)");
    println!("commands received by devices: {received_commands} (every device: {})", commands.len() == args.devices);
    for (_, client) in &clients {
        let _ = client.disconnect().await;
    }
    if commands.len() != args.devices || qos1 != expected {
        bail!("some devices got no commands, or readings lost their QoS");
    }
    Ok(())
}
