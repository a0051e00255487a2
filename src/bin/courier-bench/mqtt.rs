//! MQTT scenarios, over plain TCP to any MQTT 3.1.1 broker (Courier's or nats-server's `mqtt`
//! listener, mosquitto): telemetry from many devices to one wildcard subscriber at QoS 0 or 1,
//! and idle device connections with the server's memory.
//!
//! Each device publishes in windows: at QoS 1 a window of publishes, then their PUBACKs; at
//! QoS 0 a window of publishes and a PINGREQ, then its PINGRESP, so that no device runs ahead of
//! what the broker has read. The subscriber acknowledges every QoS 1 delivery. Payloads carry
//! the send time and the device's sequence number, so latency is measured and every message
//! is checked for loss, duplicates and order per device.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::progress::Sampler;
use crate::report::Report;
use crate::scenarios::{idle_memory, idle_report, IdleRun, Kind, Meter, Spec};
use crate::stats::{nanos_since_epoch, new_histogram, proc_rss_kb, Checks, Latency, SeqSeen};

/// Connections opened at once while setting up.
const PARALLEL_CONNECTS: usize = 64;
/// How long one connection may take to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One MQTT connection: its halves and what was read but not yet taken.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

/// Appends a PUBLISH.
fn put_publish(out: &mut Vec<u8>, topic: &[u8], qos: u8, packet_id: u16, payload: &[u8]) {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    put_string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    put_packet(out, 0x30 | (qos << 1), &body);
}

impl Conn {
    /// Connects with a clean session and waits for CONNACK.
    async fn open(addr: std::net::SocketAddr, client_id: &str) -> Result<Conn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut c = Conn { rd, wr, buf: BytesMut::with_capacity(4096) };
        let mut body = Vec::new();
        put_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 60]);
        put_string(&mut body, client_id.as_bytes());
        let mut out = Vec::new();
        put_packet(&mut out, 0x10, &body);
        c.wr.write_all(&out).await?;
        let (first, ack) = tokio::time::timeout(CONNECT_TIMEOUT, c.packet()).await.context("CONNACK timed out")??;
        if first != 0x20 || ack.get(1) != Some(&0) {
            bail!("connection refused: {first:02x} {ack:02x?}");
        }
        Ok(c)
    }

    /// Reads one whole packet: its first byte and its body.
    async fn packet(&mut self) -> Result<(u8, Vec<u8>)> {
        loop {
            if let Some((first, at, len)) = header(&self.buf)? {
                if self.buf.len() >= at + len {
                    let body = self.buf[at..at + len].to_vec();
                    self.buf.advance(at + len);
                    return Ok((first, body));
                }
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Subscribes to `filter` and checks the granted QoS.
    async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<()> {
        let mut body = 1u16.to_be_bytes().to_vec();
        put_string(&mut body, filter.as_bytes());
        body.push(qos);
        let mut out = Vec::new();
        put_packet(&mut out, 0x82, &body);
        self.wr.write_all(&out).await?;
        let (first, ack) = tokio::time::timeout(CONNECT_TIMEOUT, self.packet()).await.context("SUBACK timed out")??;
        if first != 0x90 || ack.get(2) != Some(&qos) {
            bail!("subscription to {filter} at QoS {qos} not granted: {first:02x} {ack:02x?}");
        }
        Ok(())
    }
}

/// The fixed header at the start of `buf`: first byte, header length, remaining length.
fn header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, 2 + i, len)));
        }
    }
    bail!("malformed remaining length from the broker")
}

/// Opens `n` connections, `PARALLEL_CONNECTS` at a time, named `<prefix><i>`.
async fn open_many(spec: &Spec, n: usize, prefix: &str, checks: &mut Checks) -> Vec<(usize, Conn)> {
    let mut held = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut launched = 0;
    while launched < n || !pending.is_empty() {
        while launched < n && pending.len() < PARALLEL_CONNECTS {
            let addr = spec.addr.addr;
            let id = format!("{prefix}{launched}");
            let i = launched;
            pending.spawn(async move { (i, Conn::open(addr, &id).await) });
            launched += 1;
        }
        let Some(done) = pending.join_next().await else { break };
        match done {
            Ok((i, Ok(c))) => held.push((i, c)),
            Ok((_, Err(e))) => checks.error(format!("connection: {e:#}")),
            Err(e) => checks.error(format!("connection task: {e}")),
        }
    }
    held.sort_by_key(|(i, _)| *i);
    held
}

/// What the subscriber saw.
struct Received {
    seen: Vec<SeqSeen>,
    histogram: hdrhistogram::Histogram<u64>,
    misrouted: u64,
    last: Instant,
}

/// Telemetry: `--devices` devices publish `--msgs` messages in all on `bench/<device>/t`,
/// one subscriber on `bench/+/t` receives them, at `--qos` 0 or 1.
pub async fn run_telemetry(spec: &Spec) -> Result<Report> {
    let devices = spec.devices;
    if devices == 0 || devices > 100_000 {
        bail!("--devices must be between 1 and 100000");
    }
    if spec.size < 16 {
        bail!("--size must be at least 16 (send time and sequence number)");
    }
    if spec.window == 0 || spec.window > 65_535 {
        bail!("--window must be between 1 and 65535");
    }
    let per_device = (spec.msgs / devices as u64).max(1);
    let total = per_device * devices as u64;
    let qos = spec.qos;
    let mut checks = Checks::default();
    let mut notes = Vec::new();
    let mut sub = Conn::open(spec.addr.addr, "bench-subscriber").await.context("the subscriber")?;
    sub.subscribe("bench/+/t", qos).await?;
    let held = open_many(spec, devices, "bench-device-", &mut checks).await;
    if held.len() < devices {
        bail!("only {} of {devices} devices connected: {:?}", held.len(), checks.error_texts);
    }

    let progress = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let sampler = Sampler::start(progress.clone(), total, start, spec.progress, "msgs");
    let receiver = tokio::spawn(receive(sub, devices, total, Arc::clone(&progress), deadline));
    let go = Arc::new(tokio::sync::Barrier::new(devices));
    let mut publishers = JoinSet::new();
    for (i, conn) in held {
        let go = Arc::clone(&go);
        let size = spec.size;
        let window = spec.window;
        publishers.spawn(async move {
            go.wait().await;
            publish_device(conn, i, per_device, size, qos, window, deadline).await
        });
    }
    let mut published = 0u64;
    while let Some(done) = publishers.join_next().await {
        match done {
            Ok(Ok(n)) => published += n,
            Ok(Err(e)) => checks.error(format!("device: {e:#}")),
            Err(e) => checks.error(format!("device task: {e}")),
        }
    }
    let got = receiver.await.context("subscriber task")?;
    let timeline = sampler.finish().await;
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut notes);
    let (received, end, histogram) = match got {
        Ok(r) => {
            let distinct: u64 = r.seen.iter().map(|s| s.distinct).sum();
            checks.lost = published.saturating_sub(distinct);
            checks.duplicated = r.seen.iter().map(|s| s.duplicated).sum();
            // Order per device holds at QoS 0; QoS 1 may deliver a window out of order.
            if qos == 0 {
                checks.out_of_order = r.seen.iter().map(|s| s.out_of_order).sum();
            }
            checks.misrouted = r.misrouted;
            (distinct, r.last, Some(r.histogram))
        }
        Err(e) => {
            checks.error(format!("subscriber: {e:#}"));
            (0, Instant::now(), None)
        }
    };
    let stopped = published < total;
    if stopped {
        notes.push(format!("--duration stopped the devices after {published} of {total} messages"));
    }
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let per_sec = if elapsed_s > 0.0 { received as f64 / elapsed_s } else { 0.0 };
    Ok(Report {
        scenario: Kind::MqttTelemetry.name().into(),
        server: spec.server.clone(),
        msgs: received,
        published,
        received,
        size: spec.size,
        elapsed_s,
        msgs_per_sec: per_sec,
        mb_per_sec: per_sec * spec.size as f64 / 1e6,
        latency: histogram.as_ref().and_then(Latency::from_histogram),
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: stopped,
        spread: None,
        memory: None,
        churn_per_sec: None,
        timeline,
        notes,
        histogram,
        ..Report::default()
    })
}

/// One device's messages, in windows; returns how many it published.
async fn publish_device(
    mut c: Conn,
    device: usize,
    msgs: u64,
    size: usize,
    qos: u8,
    window: usize,
    deadline: Instant,
) -> Result<u64> {
    let topic = format!("bench/{device}/t").into_bytes();
    let mut payload = vec![0u8; size];
    let mut out = Vec::with_capacity(window * (size + topic.len() + 8) + 2);
    let mut seq = 0u64;
    while seq < msgs && Instant::now() < deadline {
        out.clear();
        let batch = (msgs - seq).min(window as u64);
        for k in 0..batch {
            let s = seq + k;
            payload[..8].copy_from_slice(&nanos_since_epoch(Instant::now()).to_le_bytes());
            payload[8..16].copy_from_slice(&(((device as u64) << 40) | s).to_le_bytes());
            put_publish(&mut out, &topic, qos, (s % 65_535) as u16 + 1, &payload);
        }
        if qos == 0 {
            out.extend_from_slice(&[0xc0, 0x00]);
        }
        c.wr.write_all(&out).await?;
        let want = if qos == 0 { 1 } else { batch };
        for _ in 0..want {
            let (first, _) = tokio::time::timeout_at(deadline.into(), c.packet()).await.context("ack timed out")??;
            let expected = if qos == 0 { 0xd0 } else { 0x40 };
            if first != expected {
                bail!("expected {expected:02x}, got {first:02x}");
            }
        }
        seq += batch;
    }
    let _ = c.wr.write_all(&[0xe0, 0x00]).await;
    Ok(seq)
}

/// The subscriber: takes deliveries (acknowledging QoS 1 ones) until `total` arrived or the
/// deadline (plus a grace period for what is in flight).
async fn receive(
    mut c: Conn,
    devices: usize,
    total: u64,
    progress: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<Received> {
    let mut r = Received {
        seen: vec![SeqSeen::default(); devices],
        histogram: new_histogram(),
        misrouted: 0,
        last: Instant::now(),
    };
    let mut acks = Vec::new();
    let mut got = 0u64;
    let stop = deadline + Duration::from_secs(5);
    while got < total {
        acks.clear();
        while let Some((first, at, len)) = header(&c.buf)? {
            if c.buf.len() < at + len {
                break;
            }
            let body = &c.buf[at..at + len];
            if first >> 4 == 3 {
                got += 1;
                let pqos = (first >> 1) & 3;
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut p = 2 + topic_len;
                if pqos > 0 {
                    acks.extend_from_slice(&[0x40, 0x02, body[p], body[p + 1]]);
                    p += 2;
                }
                let payload = &body[p..];
                if payload.len() >= 16 {
                    let sent = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                    let id = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
                    let (device, seq) = ((id >> 40) as usize, id & ((1 << 40) - 1));
                    let now = nanos_since_epoch(Instant::now());
                    let _ = r.histogram.record(now.saturating_sub(sent).max(1));
                    let topic = &body[2..2 + topic_len];
                    match r.seen.get_mut(device) {
                        Some(s) if topic == format!("bench/{device}/t").as_bytes() => {
                            s.observe(seq);
                        }
                        _ => r.misrouted += 1,
                    }
                } else {
                    r.misrouted += 1;
                }
            }
            c.buf.advance(at + len);
        }
        if !acks.is_empty() {
            c.wr.write_all(&acks).await?;
        }
        progress.store(got, Ordering::Relaxed);
        r.last = Instant::now();
        if got >= total {
            break;
        }
        match tokio::time::timeout_at(stop.into(), c.rd.read_buf(&mut c.buf)).await {
            Ok(Ok(0)) => bail!("the broker closed the subscriber"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(r)
}

/// Idle devices: opens `--conns` MQTT connections and reads the server's memory.
pub async fn run_conns(spec: &Spec) -> Result<Report> {
    let n = spec.conns;
    if n == 0 || n > 1_000_000 {
        bail!("--conns must be between 1 and 1000000");
    }
    let limit = crate::scenarios::raise_nofile_limit();
    if limit > 0 && (n as u64) + 64 > limit {
        bail!("--conns {n} exceeds this process's open-file limit ({limit})");
    }
    let mut notes = Vec::new();
    let rss_before = spec.server_pid.map(proc_rss_kb).transpose().context("reading the server's memory")?;
    if spec.server_pid.is_none() {
        notes.push("server memory not measured: pass --server-pid".into());
    }
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let mut checks = Checks::default();
    let held = open_many(spec, n, "bench-idle-", &mut checks).await;
    let end = Instant::now();
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut notes);
    let memory = idle_memory(spec, rss_before, held.len()).await?;
    if !spec.hold.is_zero() {
        tokio::time::sleep(spec.hold.min(spec.duration)).await;
    }
    let opened = held.len() as u64;
    drop(held);
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let idle = IdleRun {
        opened,
        elapsed_s,
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped: false,
        memory,
        timeline: Vec::new(),
        notes,
    };
    Ok(idle_report(Kind::MqttConns, spec, idle))
}
