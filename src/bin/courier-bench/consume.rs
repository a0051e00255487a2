//! `jsconsume`: reading a JetStream stream back through a consumer. The stream is filled first
//! (not timed), then one consumer reads every message: `pull` (explicit acks, pull requests of
//! --batch messages), `push` (explicit acks), `ordered` (an ordered consumer: ack none, flow
//! control, heartbeats) or `workqueue` (a workqueue stream, --subs workers pulling from one
//! consumer). Every message's stream sequence is checked (each exactly once, in order for one
//! reader), and the consumer's lag is read from CONSUMER.INFO while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Buf;
use tokio::io::AsyncWriteExt;

use crate::jetstream::{admin, STREAM};
use crate::proto::{parse, Conn, Frame};
use crate::report::Report;
use crate::scenarios::{Kind, Meter, Spec};
use crate::stats::{Checks, Latency};

const CONSUMER: &str = "BENCH";

/// The numbers of an ack subject: (stream sequence, delivery count).
fn ack_numbers(reply: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(reply).ok()?;
    let t: Vec<&str> = text.split('.').collect();
    if t.len() < 9 {
        return None;
    }
    Some((t[5].parse().ok()?, t[4].parse().ok()?))
}

/// Fills the stream with `n` messages (256 acknowledgements in flight), untimed.
async fn fill(spec: &Spec, n: u64) -> Result<()> {
    let mut conn = Conn::connect(spec.addr, spec.size).await?;
    conn.subscribe("_BENCH_FILL.*", None, 1).await?;
    let payload = vec![b'x'; spec.size];
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(64 * 1024);
    while acked < n {
        batch.clear();
        while sent < n && sent - acked < 256 {
            sent += 1;
            batch
                .extend_from_slice(format!("PUB {} _BENCH_FILL.{sent} {}\r\n", spec.subject, payload.len()).as_bytes());
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(b"\r\n");
        }
        if !batch.is_empty() {
            conn.wr.write_all(&batch).await?;
        }
        tokio::time::timeout(Duration::from_secs(30), conn.fill()).await.context("filling the stream")??;
        let mut errors = Vec::new();
        let used = parse(&conn.rbuf, |f| {
            if let Frame::Msg { payload, .. } = f {
                if payload.windows(8).any(|w| w == b"\"error\":") {
                    errors.push(String::from_utf8_lossy(payload).into_owned());
                }
                acked += 1;
            }
        })?;
        conn.rbuf.advance(used);
        if let Some(e) = errors.first() {
            bail!("filling the stream: {e}");
        }
    }
    Ok(())
}

/// One reader: a connection that takes messages (pulling, or on the deliver subject) and acks.
struct Reader {
    conn: Conn,
    /// Where its pulled messages come (its own inbox).
    inbox: String,
    pull: bool,
    ack: bool,
    batch: u64,
}

/// What the readers saw, shared.
struct Seen {
    received: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    redelivered: AtomicU64,
    seqs: Vec<AtomicU64>,
    /// When the last new message arrived, ns after the start.
    last_ns: AtomicU64,
    start: Instant,
}

/// Reads until every message is in, or the deadline.
async fn read(mut r: Reader, seen: Arc<Seen>, n: u64, deadline: Instant, ordered_check: bool) -> Result<()> {
    let next = format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{CONSUMER}");
    let body = format!(r#"{{"batch":{},"expires":5000000000}}"#, r.batch);
    let request = format!("PUB {next} {} {}\r\n{body}\r\n", r.inbox, body.len()).into_bytes();
    let mut outstanding = 0u64;
    let mut last_seq = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if seen.received.load(Ordering::Relaxed) >= n || Instant::now() > deadline {
            return Ok(());
        }
        out.clear();
        let mut pongs = 0;
        let used = parse(&r.conn.rbuf, |f| match f {
            Frame::Msg { reply, headers, payload, .. } => {
                let Some(reply) = reply else { return };
                if reply.starts_with(b"$JS.FC.") {
                    // Flow control: answered with an empty message.
                    out.extend_from_slice(format!("PUB {} 0\r\n\r\n", String::from_utf8_lossy(reply)).as_bytes());
                    return;
                }
                let Some((seq, deliveries)) = ack_numbers(reply) else {
                    if headers.is_some() && payload.is_empty() && r.pull {
                        // A 408 (the request expired) frees its place.
                        outstanding = 0;
                    }
                    return;
                };
                if r.pull {
                    outstanding = outstanding.saturating_sub(1);
                }
                if deliveries > 1 {
                    seen.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(slot) = seen.seqs.get(seq as usize) {
                    if slot.swap(1, Ordering::Relaxed) == 1 {
                        seen.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else {
                        seen.received.fetch_add(1, Ordering::Relaxed);
                        seen.last_ns.fetch_max(seen.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                }
                if ordered_check && seq <= last_seq {
                    seen.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                last_seq = seq;
                if r.ack {
                    out.extend_from_slice(b"PUB ");
                    out.extend_from_slice(reply);
                    out.extend_from_slice(b" 0\r\n\r\n");
                }
            }
            Frame::Ping => pongs += 1,
            _ => {}
        })?;
        r.conn.rbuf.advance(used);
        for _ in 0..pongs {
            out.extend_from_slice(b"PONG\r\n");
        }
        if r.pull {
            // Two requests' worth outstanding, so the server never waits for the next one.
            while outstanding < 2 * r.batch {
                out.extend_from_slice(&request);
                outstanding += r.batch;
            }
        }
        if !out.is_empty() {
            r.conn.wr.write_all(&out).await?;
        }
        if seen.received.load(Ordering::Relaxed) >= n {
            return Ok(());
        }
        let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(10));
        match tokio::time::timeout(wait, r.conn.fill()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => return Ok(()),
        }
    }
}

/// The consumer's lag (num_pending, num_ack_pending) now.
async fn lag(adm: &mut Conn, k: u64) -> Option<(u64, u64)> {
    let info = admin(adm, &format!("$JS.API.CONSUMER.INFO.{STREAM}.{CONSUMER}"), "", k).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&info).ok()?;
    Some((v["num_pending"].as_u64()?, v["num_ack_pending"].as_u64()?))
}

/// Runs `jsconsume`.
pub async fn run_jsconsume(spec: &Spec) -> Result<Report> {
    let mode = spec.consume_mode.as_str();
    let workers = if mode == "workqueue" { spec.subs.max(1) } else { 1 };
    let n = spec.msgs;
    let mut adm = Conn::connect(spec.addr, spec.size).await?;
    adm.subscribe("_BENCH_ADMIN.*", None, 1).await?;
    let _ = admin(&mut adm, &format!("$JS.API.STREAM.DELETE.{STREAM}"), "", 1).await?;
    let retention = if mode == "workqueue" { "workqueue" } else { "limits" };
    let cfg = format!(
        r#"{{"name":"{STREAM}","subjects":["{}"],"storage":"{}","retention":"{retention}"}}"#,
        spec.subject, spec.storage
    );
    let created = admin(&mut adm, &format!("$JS.API.STREAM.CREATE.{STREAM}"), &cfg, 2).await?;
    if created.windows(8).any(|w| w == b"\"error\":") || created == b"no responders" {
        bail!("creating the stream failed: {}", String::from_utf8_lossy(&created));
    }
    fill(spec, n).await?;

    // The readers connect (and subscribe) before the consumer exists, as clients do.
    let mut readers = Vec::new();
    for w in 0..workers {
        let mut conn = Conn::connect(spec.addr, spec.size).await?;
        let inbox = format!("_BENCH_PULL.{w}");
        let (pull, ack) = match mode {
            "pull" | "workqueue" => (true, true),
            "push" => (false, true),
            _ => (false, false),
        };
        conn.subscribe(if pull { &inbox } else { "_BENCH_PUSH" }, None, 1).await?;
        readers.push(Reader { conn, inbox, pull, ack, batch: spec.batch.max(1) });
    }
    let consumer = match mode {
        "pull" | "workqueue" => format!(r#"{{"durable_name":"{CONSUMER}","ack_policy":"explicit","max_ack_pending":-1}}"#),
        "push" => format!(
            r#"{{"durable_name":"{CONSUMER}","ack_policy":"explicit","deliver_subject":"_BENCH_PUSH","max_ack_pending":10000}}"#
        ),
        _ => r#"{"name":"BENCH","ack_policy":"none","deliver_subject":"_BENCH_PUSH","flow_control":true,"idle_heartbeat":5000000000,"max_deliver":1,"mem_storage":true}"#
            .to_string(),
    };
    let body = format!(r#"{{"stream_name":"{STREAM}","config":{consumer}}}"#);
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let created = admin(&mut adm, &format!("$JS.API.CONSUMER.CREATE.{STREAM}.{CONSUMER}"), &body, 3).await?;
    if created.windows(8).any(|w| w == b"\"error\":") || created == b"no responders" {
        bail!("creating the consumer failed: {}", String::from_utf8_lossy(&created));
    }
    let deadline = start + spec.duration;
    let seen = Arc::new(Seen {
        received: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        redelivered: AtomicU64::new(0),
        seqs: (0..=n).map(|_| AtomicU64::new(0)).collect(),
        last_ns: AtomicU64::new(0),
        start,
    });
    let ordered_check = workers == 1;
    let mut tasks = Vec::new();
    for r in readers {
        tasks.push(tokio::spawn(read(r, Arc::clone(&seen), n, deadline, ordered_check)));
    }
    // The lag, from the consumer's own info, while the readers read.
    let mut lags = Vec::new();
    let mut k = 10;
    while tasks.iter().any(|t| !t.is_finished()) && seen.received.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(250)).await;
        k += 1;
        if let Some(l) = lag(&mut adm, k).await {
            lags.push(l);
        }
    }
    for t in tasks {
        if t.is_finished() {
            t.await.context("reader")??;
        } else {
            // Waiting for more when another reader took the last message.
            t.abort();
        }
    }
    let elapsed_s = seen.last_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let final_lag = lag(&mut adm, k + 1).await;
    let mut cpu_notes = Vec::new();
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut cpu_notes);
    let received = seen.received.load(Ordering::Relaxed);
    let checks = Checks {
        lost: n.saturating_sub(received),
        duplicated: seen.duplicated.load(Ordering::Relaxed),
        out_of_order: seen.out_of_order.load(Ordering::Relaxed),
        ..Default::default()
    };
    let per_sec = if elapsed_s > 0.0 { received as f64 / elapsed_s } else { 0.0 };
    let max_lag = lags.iter().map(|l| l.0).max().unwrap_or(0);
    let mut notes = vec![format!(
        "{mode} consumer on a {} stream of {n} messages, {workers} reader(s){}",
        spec.storage,
        if mode == "pull" || mode == "workqueue" { format!(", pull batch {}", spec.batch) } else { String::new() }
    )];
    notes.push(format!(
        "consumer lag (num_pending) sampled every 250 ms: highest {max_lag}, {} samples; at the end: {}",
        lags.len(),
        match final_lag {
            Some((p, a)) => format!("{p} pending, {a} awaiting ack"),
            None => "not read".into(),
        }
    ));
    let redelivered = seen.redelivered.load(Ordering::Relaxed);
    if redelivered > 0 {
        notes.push(format!("{redelivered} redeliveries"));
    }
    Ok(Report {
        scenario: Kind::Jsconsume.name().into(),
        server: spec.server.clone(),
        msgs: received,
        published: n,
        received,
        size: spec.size,
        elapsed_s,
        msgs_per_sec: per_sec,
        mb_per_sec: per_sec * spec.size as f64 / 1e6,
        latency: Latency::from_histogram(&crate::stats::new_histogram()),
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: received < n,
        spread: None,
        memory: None,
        churn_per_sec: None,
        timeline: Vec::new(),
        notes: notes.into_iter().chain(cpu_notes).collect(),
        histogram: None,
        ..Report::default()
    })
}
