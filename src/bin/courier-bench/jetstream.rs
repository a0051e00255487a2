//! `jspub`: publishing into a JetStream stream with acknowledgements, K in flight (1 is a
//! synchronous publish; more is what clients' async publish does). The stream is created fresh
//! for each run; every acknowledgement is checked (no error, the sequence the stream should
//! have given) and timed from its publish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::progress::Sampler;
use crate::proto::{parse, Conn, Frame};
use crate::report::Report;
use crate::scenarios::{Kind, Meter, Spec};
use crate::stats::{new_histogram, Checks, Latency};

/// The stream the scenario publishes into.
pub const STREAM: &str = "COURIER_BENCH";

/// Sends one request on `conn` (subscribed to `_BENCH_ADMIN.*`) and returns the reply body.
pub async fn admin(conn: &mut Conn, subject: &str, body: &str, n: u64) -> Result<Vec<u8>> {
    let reply = format!("_BENCH_ADMIN.{n}");
    conn.wr.write_all(format!("PUB {subject} {reply} {}\r\n{body}\r\n", body.len()).as_bytes()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = None;
        let used = parse(&conn.rbuf, |f| {
            if let Frame::Msg { subject, headers, payload, .. } = f {
                if subject == reply.as_bytes() {
                    got = Some(if headers.is_some() && payload.is_empty() {
                        b"no responders".to_vec()
                    } else {
                        payload.to_vec()
                    });
                }
            }
        })?;
        conn.rbuf.advance(used);
        if let Some(g) = got {
            return Ok(g);
        }
        if Instant::now() > deadline {
            bail!("no answer to {subject}: is JetStream enabled on the server (-js)?");
        }
        tokio::time::timeout(Duration::from_secs(10), conn.fill()).await.context("waiting for the API")??;
    }
}

/// Publishes `spec.msgs` messages to a fresh stream with `spec.inflight` acks outstanding.
pub async fn run_jspub(spec: &Spec) -> Result<Report> {
    if spec.inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    let storage = spec.storage.as_str();
    let mut adm = Conn::connect(spec.addr, spec.size).await?;
    adm.subscribe("_BENCH_ADMIN.*", None, 1).await?;
    let _ = admin(&mut adm, &format!("$JS.API.STREAM.DELETE.{STREAM}"), "", 1).await?;
    let cfg = format!(r#"{{"name":"{STREAM}","subjects":["{}"],"storage":"{storage}"}}"#, spec.subject);
    let created = admin(&mut adm, &format!("$JS.API.STREAM.CREATE.{STREAM}"), &cfg, 2).await?;
    if created.windows(8).any(|w| w == b"\"error\":") || created == b"no responders" {
        bail!("creating the stream failed: {}", String::from_utf8_lossy(&created));
    }

    let conn = Conn::connect(spec.addr, spec.size).await?;
    let mut conn = conn;
    conn.subscribe("_BENCH_ACK.*", None, 1).await?;
    let Conn { mut rd, wr, mut rbuf } = conn;
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let n = spec.msgs;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..=n).map(|_| AtomicU64::new(0)).collect());
    let permits = Arc::new(Semaphore::new(spec.inflight.min(1 << 20) as usize));
    let progress = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let sampler = Sampler::start(progress.clone(), n, start, spec.progress, "acks");
    let payload = vec![b'x'; spec.size];

    let writer = {
        let (wr, sent_at, permits) = (Arc::clone(&wr), Arc::clone(&sent_at), Arc::clone(&permits));
        let subject = spec.subject.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64 * 1024);
            let mut seq = 1u64;
            while seq <= n && Instant::now() < deadline {
                let Ok(p) = permits.acquire().await else { break };
                p.forget();
                let mut take = 1;
                while take < 256 && seq + take <= n {
                    match permits.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            take += 1;
                        }
                        Err(_) => break,
                    }
                }
                batch.clear();
                let now = crate::stats::nanos_since_epoch(Instant::now());
                for _ in 0..take {
                    sent_at[seq as usize].store(now.max(1), Ordering::Relaxed);
                    batch.extend_from_slice(format!("PUB {subject} _BENCH_ACK.{seq} {}\r\n", payload.len()).as_bytes());
                    batch.extend_from_slice(&payload);
                    batch.extend_from_slice(b"\r\n");
                    seq += 1;
                }
                if wr.lock().await.write_all(&batch).await.is_err() {
                    break;
                }
            }
            seq - 1
        })
    };

    let mut checks = Checks::default();
    let mut hist = new_histogram();
    let mut acked = 0u64;
    let mut returned = 0u64;
    let mut last = start;
    let hard = deadline + Duration::from_secs(30);
    while acked < n {
        let mut pongs = 0;
        let used = parse(&rbuf, |f| match f {
            Frame::Msg { subject, payload, .. } => {
                let token = subject
                    .rsplit(|&b| b == b'.')
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok());
                let Some(seq) = token.filter(|&s| s >= 1 && s <= n) else {
                    checks.misrouted += 1;
                    return;
                };
                let sent = sent_at[seq as usize].swap(0, Ordering::Relaxed);
                if sent == 0 {
                    checks.duplicated += 1;
                    return;
                }
                let expect = format!("\"seq\":{seq}}}");
                if payload.windows(8).any(|w| w == b"\"error\":") {
                    checks.error(format!("ack {seq}: {}", String::from_utf8_lossy(payload)));
                } else if !payload.ends_with(expect.as_bytes()) {
                    checks.out_of_order += 1;
                }
                let now = crate::stats::nanos_since_epoch(Instant::now());
                let _ = hist.record(now.saturating_sub(sent).max(1));
                acked += 1;
            }
            Frame::Ping => pongs += 1,
            Frame::Err(e) => checks.error(format!("-ERR {}", String::from_utf8_lossy(e))),
            _ => {}
        })?;
        rbuf.advance(used);
        // Every acknowledgement read frees its place for the next publish.
        permits.add_permits((acked - returned) as usize);
        returned = acked;
        for _ in 0..pongs {
            wr.lock().await.write_all(b"PONG\r\n").await?;
        }
        progress.store(acked, Ordering::Relaxed);
        last = Instant::now();
        if acked >= n {
            break;
        }
        let in_flight = (spec.inflight as usize).saturating_sub(permits.available_permits());
        if writer.is_finished() && in_flight == 0 {
            break;
        }
        let wait = hard.saturating_duration_since(Instant::now());
        rbuf.reserve(128 * 1024);
        let read = tokio::time::timeout(wait, tokio::io::AsyncReadExt::read_buf(&mut rd, &mut rbuf)).await;
        match read {
            Ok(Ok(0)) => bail!("server closed the connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                checks.error("acknowledgements stopped coming".into());
                break;
            }
        }
    }
    let published = writer.await.unwrap_or(0);
    checks.lost += published.saturating_sub(acked);
    let timeline = sampler.finish().await;
    let mut cpu_notes = Vec::new();
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut cpu_notes);
    let elapsed_s = last.saturating_duration_since(start).as_secs_f64();
    let per_sec = if elapsed_s > 0.0 { acked as f64 / elapsed_s } else { 0.0 };
    Ok(Report {
        scenario: Kind::Jspub.name().into(),
        server: spec.server.clone(),
        msgs: acked,
        published,
        received: acked,
        size: spec.size,
        elapsed_s,
        msgs_per_sec: per_sec,
        mb_per_sec: per_sec * spec.size as f64 / 1e6,
        latency: Latency::from_histogram(&hist),
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: published < n,
        spread: None,
        memory: None,
        churn_per_sec: None,
        timeline,
        notes: std::iter::once(format!(
            "{storage} stream, {} publish(es) in flight; latency is publish to acknowledgement",
            spec.inflight
        ))
        .chain(cpu_notes)
        .collect(),
        histogram: (!hist.is_empty()).then_some(hist),
        ..Report::default()
    })
}
