//! The load-generating tasks: publishers (closed-loop or paced), subscribers that check what they
//! receive, and the requester/responder pair of the request-reply scenario.
//!
//! Payload layout (when large enough): bytes 0..8 hold the send timestamp (nanoseconds since the
//! shared epoch, little endian; the scheduled send time in paced mode), bytes 8..16 hold the
//! publisher id in the top 16 bits and its sequence number in the low 48 bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::over_time::LatencyOverTime;
use crate::proto::{encode_pub, parse, Conn, Frame, ReadHalf, SharedWriter, READ_CHUNK, WRITE_BATCH};
use crate::stats::{nanos_since_epoch, new_histogram, Checks, Recorder, SeqSeen};

/// How long a receiver waits for more messages, once every publisher is done, before it counts
/// what is missing as lost.
pub const DRAIN_IDLE: Duration = Duration::from_secs(3);

/// Bits of the tag that hold the sequence number; the publisher id sits above them.
const SEQ_BITS: u32 = 48;

/// Packs a publisher id and sequence number into the payload tag.
#[inline]
pub fn tag(publisher: u16, seq: u64) -> u64 {
    (u64::from(publisher) << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// Reads the timestamp (if the payload has 8 bytes) and the publisher id and sequence number (if
/// it has 16).
#[inline]
pub fn read_stamp(payload: &[u8]) -> (Option<u64>, Option<(u16, u64)>) {
    let ts = payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let tag = payload.get(8..16).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    (ts, tag.map(|t| ((t >> SEQ_BITS) as u16, t & ((1 << SEQ_BITS) - 1))))
}

/// Converts a std instant to tokio's.
fn tk(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}

/// Waits until `t` with sub-millisecond precision: sleeps on the timer while far away, then yields
/// to other tasks until the moment comes (the timer alone has millisecond granularity).
pub async fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        if t - now > Duration::from_micros(2000) {
            tokio::time::sleep_until(tk(t - Duration::from_micros(1500))).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Reads frames in the background for a connection whose main task only writes: answers PINGs,
/// forwards PONGs, and records -ERR lines and unexpected messages.
async fn background_reader(
    mut rd: ReadHalf,
    mut rbuf: BytesMut,
    wr: SharedWriter,
    pongs: mpsc::UnboundedSender<()>,
    checks: Arc<std::sync::Mutex<Checks>>,
) -> Result<()> {
    loop {
        let mut pings = 0;
        let mut pong_count = 0;
        let mut errs: Vec<String> = Vec::new();
        let used = parse(&rbuf, |f| match f {
            Frame::Ping => pings += 1,
            Frame::Pong => pong_count += 1,
            Frame::Err(e) => errs.push(format!("-ERR {}", String::from_utf8_lossy(e))),
            Frame::Msg { subject, .. } => {
                errs.push(format!("unexpected message on {}", String::from_utf8_lossy(subject)))
            }
            Frame::Info(_) | Frame::Ok => {}
        })?;
        rbuf.advance(used);
        if !errs.is_empty() {
            let mut c = checks.lock().expect("checks lock");
            for e in errs {
                c.error(e);
            }
        }
        for _ in 0..pings {
            wr.lock().await.write_all(b"PONG\r\n").await?;
        }
        for _ in 0..pong_count {
            let _ = pongs.send(());
        }
        rbuf.reserve(READ_CHUNK);
        if rd.read_buf(&mut rbuf).await? == 0 {
            bail!("server closed the connection");
        }
    }
}

/// Everything one publisher needs.
pub struct PubTask {
    /// Publisher id, written into every payload tag.
    pub id: u16,
    /// How many messages to publish.
    pub count: u64,
    /// Precomputed `PUB <subject> <size>\r\n` lines.
    pub prefixes: Arc<Vec<Vec<u8>>>,
    /// Index into `prefixes` for each sequence number; `None` always uses the first.
    pub choice: Option<Arc<Vec<u32>>>,
    /// The payload before stamping.
    pub template: Arc<Vec<u8>>,
    /// Messages per second for this publisher (open loop); `None` publishes as fast as possible.
    pub rate: Option<f64>,
    /// When publishing starts (and the paced schedule's origin).
    pub start: Instant,
    /// Messages scheduled before this moment (shared epoch nanoseconds) are warm-up: their
    /// lateness is not recorded.
    pub warm_until_ns: u64,
    /// Stop publishing at this moment even if `count` is not reached.
    pub deadline: Instant,
    /// Give up waiting on the server at this moment.
    pub hard: Instant,
    /// Live count of this publisher's messages handed to the socket.
    pub sent: Arc<AtomicU64>,
    /// Progress counter to bump with published messages, if this scenario counts publishes.
    pub progress: Option<Arc<AtomicU64>>,
}

/// What a publisher did.
pub struct PubOutcome {
    /// When the server answered the final PING, i.e. had processed every message.
    pub flushed: Instant,
    /// Server errors seen on this connection.
    pub checks: Checks,
    /// Paced mode: how far behind its scheduled time each message was handed to the socket, in
    /// nanoseconds.
    pub lag: Histogram<u64>,
}

/// Publishes `count` messages in batches, then sends PING and waits for the PONG.
pub async fn run_publisher(conn: Conn, t: PubTask) -> Result<PubOutcome> {
    let Conn { rd, wr, rbuf } = conn;
    let wr: SharedWriter = Arc::new(Mutex::new(wr));
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel();
    let checks = Arc::new(std::sync::Mutex::new(Checks::default()));
    let reader = tokio::spawn(background_reader(rd, rbuf, wr.clone(), pong_tx, checks.clone()));
    let mut lag = new_histogram();
    let result = publish_loop(&t, &wr, &mut pong_rx, &mut lag).await;
    reader.abort();
    let reader_err = match reader.await {
        Ok(Err(e)) => Some(e),
        _ => None,
    };
    let mut checks = checks.lock().expect("checks lock").clone();
    match result {
        Ok(flushed) => Ok(PubOutcome { flushed, checks, lag }),
        Err(e) => {
            let e = reader_err.map(|r| anyhow!("{e:#} ({r:#})")).unwrap_or(e);
            checks.error(format!("publisher {}: {e:#}", t.id));
            Ok(PubOutcome { flushed: Instant::now(), checks, lag })
        }
    }
}

/// The body of [`run_publisher`]; returns when the server confirmed everything.
async fn publish_loop(
    t: &PubTask,
    wr: &SharedWriter,
    pongs: &mut mpsc::UnboundedReceiver<()>,
    lag: &mut Histogram<u64>,
) -> Result<Instant> {
    let size = t.template.len();
    let longest = t.prefixes.iter().map(Vec::len).max().unwrap_or(0);
    let mut buf = Vec::with_capacity(WRITE_BATCH + longest + size + 2);
    let interval_ns = t.rate.map(|r| 1e9 / r);
    let start_ns = nanos_since_epoch(t.start);
    let mut seq = 0u64;
    while seq < t.count {
        let now = Instant::now();
        if now >= t.deadline {
            break;
        }
        let due = match interval_ns {
            None => t.count,
            Some(iv) => {
                let elapsed = now.saturating_duration_since(t.start).as_nanos() as f64;
                let due = ((elapsed / iv) as u64 + 1).min(t.count);
                if due <= seq {
                    let next = t.start + Duration::from_nanos((seq as f64 * iv) as u64);
                    wait_until(next.min(t.deadline)).await;
                    continue;
                }
                due
            }
        };
        buf.clear();
        let batch_ts = nanos_since_epoch(now);
        let first = seq;
        while seq < due && buf.len() < WRITE_BATCH {
            let prefix = match &t.choice {
                Some(c) => &t.prefixes[c[seq as usize] as usize],
                None => &t.prefixes[0],
            };
            buf.extend_from_slice(prefix);
            let p = buf.len();
            buf.extend_from_slice(&t.template);
            let ts = match interval_ns {
                Some(iv) => {
                    let scheduled = start_ns + (seq as f64 * iv) as u64;
                    if scheduled >= t.warm_until_ns {
                        lag.saturating_record(batch_ts.saturating_sub(scheduled).max(1));
                    }
                    scheduled
                }
                None => batch_ts,
            };
            if size >= 8 {
                buf[p..p + 8].copy_from_slice(&ts.to_le_bytes());
            }
            if size >= 16 {
                buf[p + 8..p + 16].copy_from_slice(&tag(t.id, seq).to_le_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            seq += 1;
        }
        {
            let mut w = wr.lock().await;
            tokio::time::timeout_at(tk(t.hard), w.write_all(&buf))
                .await
                .map_err(|_| anyhow!("write stalled: the server stopped reading"))??;
        }
        let k = seq - first;
        t.sent.fetch_add(k, Ordering::Relaxed);
        if let Some(p) = &t.progress {
            p.fetch_add(k, Ordering::Relaxed);
        }
    }
    wr.lock().await.write_all(b"PING\r\n").await?;
    match tokio::time::timeout_at(tk(t.hard), pongs.recv()).await {
        Ok(Some(())) => Ok(Instant::now()),
        Ok(None) => bail!("connection lost before the final PONG"),
        Err(_) => bail!("no PONG from the server before the time limit"),
    }
}

/// A wildcard scenario's subject space: subject `i` is `bench.<i / width>.<i % width>`.
pub struct SubjectSpace {
    /// Number of distinct values of the last token.
    pub width: u32,
    /// The subjects, as bytes.
    pub names: Vec<Vec<u8>>,
    /// Which subject each publisher uses for each sequence number.
    pub choice: Vec<Arc<Vec<u32>>>,
}

/// What a wildcard subscriber subscribed to.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    /// `bench.*.<b>`.
    LastIs(u32),
    /// `bench.<a>.*`.
    MiddleIs(u32),
    /// `bench.>`.
    All,
}

impl Filter {
    /// The subscription subject.
    pub fn subject(&self) -> String {
        match self {
            Filter::LastIs(b) => format!("bench.*.{b}"),
            Filter::MiddleIs(a) => format!("bench.{a}.*"),
            Filter::All => "bench.>".to_string(),
        }
    }

    /// Whether subject number `i` matches.
    #[inline]
    pub fn matches(&self, space: &SubjectSpace, i: u32) -> bool {
        match self {
            Filter::LastIs(b) => i % space.width == *b,
            Filter::MiddleIs(a) => i / space.width == *a,
            Filter::All => true,
        }
    }

    /// How many of the first `sent[p]` messages of each publisher `p` match.
    pub fn expected(&self, space: &SubjectSpace, sent: &[u64]) -> u64 {
        let mut n = 0;
        for (p, &s) in sent.iter().enumerate() {
            n += space.choice[p][..s as usize].iter().filter(|&&i| self.matches(space, i)).count() as u64;
        }
        n
    }
}

/// How a subscriber knows it has everything, once the publishers are done.
pub enum Expect {
    /// Every message of every publisher.
    All,
    /// The messages matching a wildcard filter.
    Filtered(Arc<SubjectSpace>, Filter),
    /// A queue group member: stop when the group as a whole has everything.
    Group(Arc<AtomicU64>, Arc<Notify>),
}

/// Everything one subscriber needs (its connection already subscribed).
pub struct SubTask {
    /// How many publishers there are (tags with a higher id are misrouted).
    pub pubs: usize,
    /// The payload size every message must have.
    pub size: usize,
    /// The completion rule.
    pub expect: Expect,
    /// Each publisher's live sent count.
    pub sent: Arc<Vec<Arc<AtomicU64>>>,
    /// Becomes true once every publisher has been confirmed by the server.
    pub done: watch::Receiver<bool>,
    /// Give up at this moment.
    pub hard: Instant,
    /// Progress counter to bump with received messages.
    pub progress: Arc<AtomicU64>,
    /// Where measured latencies go.
    pub recorder: Recorder,
}

/// What a subscriber saw.
pub struct SubOutcome {
    /// Messages received.
    pub received: u64,
    /// Messages that count toward completion: first arrivals of valid messages.
    pub counted: u64,
    /// One-way latencies (when payloads carry a timestamp).
    pub latency: Recorder,
    /// Sequence numbers seen, per publisher (when payloads carry a tag).
    pub seen: Vec<SeqSeen>,
    /// Messages on a subject this subscription should not get (or on the wrong subject).
    pub misrouted: u64,
    /// When the last message arrived.
    pub last_recv: Option<Instant>,
    /// Server errors and malformed payloads.
    pub checks: Checks,
    /// How many messages this subscriber should have received (known at the end).
    pub expected: u64,
}

/// Receives until everything expected has arrived (or nothing more comes), checking each message.
pub async fn run_subscriber(conn: Conn, mut t: SubTask) -> Result<SubOutcome> {
    let Conn { mut rd, mut wr, mut rbuf } = conn;
    let mut out = SubOutcome {
        received: 0,
        counted: 0,
        latency: std::mem::replace(&mut t.recorder, Recorder::new(0, None)),
        seen: vec![SeqSeen::default(); t.pubs],
        misrouted: 0,
        last_recv: None,
        checks: Checks::default(),
        expected: 0,
    };
    let mut done = *t.done.borrow();
    let mut target: Option<u64> = None;
    let mut idle = Instant::now() + DRAIN_IDLE;
    let never = Arc::new(Notify::new());
    let (group_count, group_notify) = match &t.expect {
        Expect::Group(c, n) => (Some(c.clone()), n.clone()),
        _ => (None, never),
    };
    loop {
        if done && target.is_none() {
            let sent: Vec<u64> = t.sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
            let total: u64 = sent.iter().sum();
            target = Some(match &t.expect {
                Expect::All | Expect::Group(..) => total,
                Expect::Filtered(space, f) => f.expected(space, &sent),
            });
            out.expected = target.unwrap_or(0);
            idle = Instant::now() + DRAIN_IDLE;
        }
        if let Some(target) = target {
            let have = match &group_count {
                Some(c) => c.load(Ordering::Relaxed),
                None => out.counted,
            };
            if have >= target {
                if group_count.is_some() {
                    group_notify.notify_waiters();
                }
                break;
            }
        }
        rbuf.reserve(READ_CHUNK);
        let n = tokio::select! {
            r = rd.read_buf(&mut rbuf) => r?,
            r = t.done.changed(), if !done => {
                if r.is_err() || *t.done.borrow() {
                    done = true;
                }
                continue;
            }
            _ = group_notify.notified() => continue,
            _ = tokio::time::sleep_until(tk(idle)), if done => break,
            _ = tokio::time::sleep_until(tk(t.hard)) => {
                out.checks.error("subscriber gave up at the time limit".into());
                break;
            }
        };
        if n == 0 {
            out.checks.error("server closed a subscriber connection".into());
            break;
        }
        let now = Instant::now();
        let now_ns = nanos_since_epoch(now);
        let mut pings = 0;
        let mut batch = 0u64;
        let counted_before = out.counted;
        let used = parse(&rbuf, |f| match f {
            Frame::Msg { subject, payload, .. } => {
                batch += 1;
                on_message(&mut out, &t, subject, payload, now_ns);
            }
            Frame::Ping => pings += 1,
            Frame::Err(e) => out.checks.error(format!("-ERR {}", String::from_utf8_lossy(e))),
            Frame::Pong | Frame::Info(_) | Frame::Ok => {}
        })?;
        rbuf.advance(used);
        for _ in 0..pings {
            wr.write_all(b"PONG\r\n").await?;
        }
        if batch > 0 {
            out.received += batch;
            out.last_recv = Some(now);
            idle = now + DRAIN_IDLE;
            t.progress.fetch_add(batch, Ordering::Relaxed);
            if let Some(c) = &group_count {
                c.fetch_add(out.counted - counted_before, Ordering::Relaxed);
            }
        }
    }
    Ok(out)
}

/// Checks and records one received message.
#[inline]
fn on_message(out: &mut SubOutcome, t: &SubTask, subject: &[u8], payload: &[u8], now_ns: u64) {
    if payload.len() != t.size {
        out.checks.error(format!("payload of {} bytes, expected {}", payload.len(), t.size));
        return;
    }
    let (ts, tag) = read_stamp(payload);
    if let Some((p, seq)) = tag {
        let p = usize::from(p);
        if p >= t.pubs {
            out.misrouted += 1;
            return;
        }
        if let Expect::Filtered(space, filter) = &t.expect {
            let Some(&i) = space.choice[p].get(seq as usize) else {
                out.misrouted += 1;
                return;
            };
            if !filter.matches(space, i) || space.names[i as usize] != subject {
                out.misrouted += 1;
                return;
            }
        }
        if out.seen[p].observe(seq) {
            out.counted += 1;
        }
    } else {
        out.counted += 1;
    }
    if let Some(ts) = ts {
        out.latency.record(ts, now_ns);
    }
}

/// A responder: a queue group member that echoes each request's payload to its reply subject.
pub async fn run_responder(conn: Conn, mut done: watch::Receiver<bool>, hard: Instant) -> Result<(u64, Checks)> {
    let Conn { mut rd, mut wr, mut rbuf } = conn;
    let mut handled = 0u64;
    let mut checks = Checks::default();
    let mut out = Vec::with_capacity(WRITE_BATCH);
    loop {
        rbuf.reserve(READ_CHUNK);
        let n = tokio::select! {
            r = rd.read_buf(&mut rbuf) => r?,
            _ = done.changed() => break,
            _ = tokio::time::sleep_until(tk(hard)) => break,
        };
        if n == 0 {
            checks.error("server closed a responder connection".into());
            break;
        }
        out.clear();
        let used = parse(&rbuf, |f| match f {
            Frame::Msg { reply: Some(reply), payload, .. } => {
                handled += 1;
                encode_pub(&mut out, reply, None, payload);
            }
            Frame::Msg { subject, .. } => {
                checks.error(format!("request without reply subject on {}", String::from_utf8_lossy(subject)))
            }
            Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
            Frame::Err(e) => checks.error(format!("-ERR {}", String::from_utf8_lossy(e))),
            Frame::Pong | Frame::Info(_) | Frame::Ok => {}
        })?;
        rbuf.advance(used);
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
    }
    Ok((handled, checks))
}

/// Everything one requester needs (its connection already subscribed to `<inbox>*`).
pub struct ReqTask {
    /// Requester id (the payload tag's publisher id).
    pub id: u16,
    /// How many requests to send.
    pub count: u64,
    /// Requests outstanding at once (closed loop).
    pub inflight: u64,
    /// Requests per second (open loop); `None` keeps `inflight` outstanding.
    pub rate: Option<f64>,
    /// The subject requests go to.
    pub subject: String,
    /// The inbox prefix, ending in a dot; reply subjects are the prefix plus the sequence number.
    pub inbox: String,
    /// The payload before stamping (at least 16 bytes).
    pub template: Arc<Vec<u8>>,
    /// When requesting starts.
    pub start: Instant,
    /// Stop sending new requests at this moment.
    pub deadline: Instant,
    /// Give up at this moment.
    pub hard: Instant,
    /// Progress counter to bump with replies.
    pub progress: Arc<AtomicU64>,
    /// Requests sent (scheduled) before this moment (shared epoch nanoseconds) are warm-up.
    pub warm_until_ns: u64,
    /// Whether this requester keeps its latency over time.
    pub over_time: bool,
}

/// What a requester saw.
pub struct ReqOutcome {
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Round-trip latencies.
    pub latency: Recorder,
    /// Sequence numbers of the replies.
    pub seen: SeqSeen,
    /// Replies whose subject does not match the sequence number they carry.
    pub misrouted: u64,
    /// When the last reply arrived.
    pub last_recv: Option<Instant>,
    /// Server errors and malformed replies.
    pub checks: Checks,
    /// Paced mode: how far behind its scheduled time each request was handed to the socket, in
    /// nanoseconds.
    pub lag: Histogram<u64>,
}

/// Appends one request (`PUB <subject> <inbox><seq> <size>`) stamped with `ts`.
fn encode_request(out: &mut Vec<u8>, t: &ReqTask, reply: &mut Vec<u8>, seq: u64, ts: u64) {
    reply.truncate(t.inbox.len());
    reply.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    let start = out.len();
    encode_pub(out, t.subject.as_bytes(), Some(reply), &t.template);
    let p = out.len() - 2 - t.template.len();
    debug_assert!(p > start);
    out[p..p + 8].copy_from_slice(&ts.to_le_bytes());
    out[p + 8..p + 16].copy_from_slice(&tag(t.id, seq).to_le_bytes());
}

/// Checks and records one reply.
fn on_reply(o: &mut ReqOutcome, t: &ReqTask, subject: &[u8], payload: &[u8], now_ns: u64) {
    let (Some(ts), Some((_, seq))) = read_stamp(payload) else {
        o.checks.error(format!("reply payload of {} bytes", payload.len()));
        return;
    };
    let token = subject.strip_prefix(t.inbox.as_bytes()).and_then(|s| std::str::from_utf8(s).ok());
    if token.and_then(|s| s.parse::<u64>().ok()) != Some(seq) {
        o.misrouted += 1;
        return;
    }
    o.seen.observe(seq);
    o.latency.record(ts, now_ns);
}

/// Sends requests and collects replies, keeping `inflight` outstanding, or at a fixed rate.
pub async fn run_requester(conn: Conn, t: ReqTask) -> Result<ReqOutcome> {
    let over_time = t
        .over_time
        .then(|| LatencyOverTime::new(nanos_since_epoch(t.start), t.deadline.saturating_duration_since(t.start)));
    let mut o = ReqOutcome {
        sent: 0,
        received: 0,
        latency: Recorder::new(t.warm_until_ns, over_time),
        seen: SeqSeen::default(),
        misrouted: 0,
        last_recv: None,
        checks: Checks::default(),
        lag: new_histogram(),
    };
    match t.rate {
        None => closed_loop_requester(conn, &t, &mut o).await?,
        Some(rate) => open_loop_requester(conn, &t, rate, &mut o).await?,
    }
    Ok(o)
}

/// One task: after each batch of replies, send as many new requests as replies arrived.
async fn closed_loop_requester(conn: Conn, t: &ReqTask, o: &mut ReqOutcome) -> Result<()> {
    let Conn { mut rd, mut wr, mut rbuf } = conn;
    let mut out = Vec::with_capacity(WRITE_BATCH);
    let mut reply = t.inbox.clone().into_bytes();
    let first = t.inflight.min(t.count);
    let ts = nanos_since_epoch(Instant::now());
    for _ in 0..first {
        encode_request(&mut out, t, &mut reply, o.sent, ts);
        o.sent += 1;
    }
    wr.write_all(&out).await?;
    let mut idle = Instant::now() + DRAIN_IDLE;
    while o.received < o.sent {
        rbuf.reserve(READ_CHUNK);
        let n = tokio::select! {
            r = rd.read_buf(&mut rbuf) => r?,
            _ = tokio::time::sleep_until(tk(idle.min(t.hard))) => {
                o.checks.error(format!("requester {}: no reply for {:?}", t.id, DRAIN_IDLE));
                break;
            }
        };
        if n == 0 {
            o.checks.error("server closed a requester connection".into());
            break;
        }
        let now = Instant::now();
        let now_ns = nanos_since_epoch(now);
        let mut replies = 0u64;
        out.clear();
        let used = parse(&rbuf, |f| match f {
            Frame::Msg { subject, headers, payload, .. } => {
                replies += 1;
                if headers.is_some() {
                    o.checks.error("reply with headers (no responders?)".into());
                } else {
                    on_reply(o, t, subject, payload, now_ns);
                }
            }
            Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
            Frame::Err(e) => o.checks.error(format!("-ERR {}", String::from_utf8_lossy(e))),
            Frame::Pong | Frame::Info(_) | Frame::Ok => {}
        })?;
        rbuf.advance(used);
        if replies > 0 {
            o.received += replies;
            o.last_recv = Some(now);
            idle = now + DRAIN_IDLE;
            t.progress.fetch_add(replies, Ordering::Relaxed);
            if now < t.deadline {
                let more = replies.min(t.count - o.sent);
                let ts = nanos_since_epoch(Instant::now());
                for _ in 0..more {
                    encode_request(&mut out, t, &mut reply, o.sent, ts);
                    o.sent += 1;
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
    }
    Ok(())
}

/// A paced sender task and this task reading replies; latency counts from the scheduled time.
async fn open_loop_requester(conn: Conn, t: &ReqTask, rate: f64, o: &mut ReqOutcome) -> Result<()> {
    let Conn { mut rd, wr, mut rbuf } = conn;
    let wr: SharedWriter = Arc::new(Mutex::new(wr));
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = watch::channel(false);
    let sender = {
        let wr = wr.clone();
        let sent = sent.clone();
        let (count, start, deadline, hard) = (t.count, t.start, t.deadline, t.hard);
        let task = ReqTask {
            id: t.id,
            count,
            inflight: 0,
            rate: Some(rate),
            subject: t.subject.clone(),
            inbox: t.inbox.clone(),
            template: t.template.clone(),
            start,
            deadline,
            hard,
            progress: t.progress.clone(),
            warm_until_ns: t.warm_until_ns,
            over_time: false,
        };
        tokio::spawn(async move {
            let r = paced_requests(&task, rate, &wr, &sent).await;
            let _ = done_tx.send(true);
            r
        })
    };
    let mut done = false;
    let mut idle = t.hard;
    loop {
        if done && o.received >= sent.load(Ordering::Relaxed) {
            break;
        }
        rbuf.reserve(READ_CHUNK);
        let n = tokio::select! {
            r = rd.read_buf(&mut rbuf) => r?,
            _ = done_rx.changed(), if !done => {
                done = true;
                idle = Instant::now() + DRAIN_IDLE;
                continue;
            }
            _ = tokio::time::sleep_until(tk(idle.min(t.hard))) => {
                o.checks.error(format!("requester {}: replies missing after {:?}", t.id, DRAIN_IDLE));
                break;
            }
        };
        if n == 0 {
            o.checks.error("server closed a requester connection".into());
            break;
        }
        let now = Instant::now();
        let now_ns = nanos_since_epoch(now);
        let mut replies = 0u64;
        let mut pings = 0;
        let used = parse(&rbuf, |f| match f {
            Frame::Msg { subject, headers, payload, .. } => {
                replies += 1;
                if headers.is_some() {
                    o.checks.error("reply with headers (no responders?)".into());
                } else {
                    on_reply(o, t, subject, payload, now_ns);
                }
            }
            Frame::Ping => pings += 1,
            Frame::Err(e) => o.checks.error(format!("-ERR {}", String::from_utf8_lossy(e))),
            Frame::Pong | Frame::Info(_) | Frame::Ok => {}
        })?;
        rbuf.advance(used);
        for _ in 0..pings {
            wr.lock().await.write_all(b"PONG\r\n").await?;
        }
        if replies > 0 {
            o.received += replies;
            o.last_recv = Some(now);
            if done {
                idle = now + DRAIN_IDLE;
            }
            t.progress.fetch_add(replies, Ordering::Relaxed);
        }
    }
    sender.abort();
    match sender.await {
        Ok(Err(e)) => o.checks.error(format!("requester {}: {e:#}", t.id)),
        Ok(Ok(lag)) => o.lag = lag,
        Err(_) => {}
    }
    o.sent = sent.load(Ordering::Relaxed);
    Ok(())
}

/// Sends requests on a fixed schedule, stamping each with its scheduled time.
async fn paced_requests(t: &ReqTask, rate: f64, wr: &SharedWriter, sent: &AtomicU64) -> Result<Histogram<u64>> {
    let mut lag = new_histogram();
    let iv = 1e9 / rate;
    let start_ns = nanos_since_epoch(t.start);
    let mut out = Vec::with_capacity(WRITE_BATCH);
    let mut reply = t.inbox.clone().into_bytes();
    let mut seq = 0u64;
    while seq < t.count {
        let now = Instant::now();
        if now >= t.deadline {
            break;
        }
        let elapsed = now.saturating_duration_since(t.start).as_nanos() as f64;
        let due = ((elapsed / iv) as u64 + 1).min(t.count);
        if due <= seq {
            wait_until((t.start + Duration::from_nanos((seq as f64 * iv) as u64)).min(t.deadline)).await;
            continue;
        }
        out.clear();
        let now_ns = nanos_since_epoch(now);
        while seq < due && out.len() < WRITE_BATCH {
            let scheduled = start_ns + (seq as f64 * iv) as u64;
            if scheduled >= t.warm_until_ns {
                lag.saturating_record(now_ns.saturating_sub(scheduled).max(1));
            }
            encode_request(&mut out, t, &mut reply, seq, scheduled);
            seq += 1;
        }
        // Count before writing so the reader never sees a reply to an uncounted request.
        sent.store(seq, Ordering::Relaxed);
        let mut w = wr.lock().await;
        tokio::time::timeout_at(tk(t.hard), w.write_all(&out))
            .await
            .map_err(|_| anyhow!("write stalled: the server stopped reading"))??;
    }
    Ok(lag)
}

/// What a churning client does: subscribe and unsubscribe continuously among a scenario's
/// subjects while the publishers run.
pub struct ChurnTask {
    /// The subjects to subscribe to (literal ones, or `bench.<a>.*` now and then).
    pub space: Arc<SubjectSpace>,
    /// Seed for the subject choice.
    pub seed: u64,
    /// Every this many pairs, the subscription is a wildcard `bench.<a>.*` (0: never).
    pub wildcard_every: u64,
    /// SUB/UNSUB pairs per second this client aims for; `None` for as fast as the server
    /// confirms them.
    pub rate: Option<f64>,
    /// Set once the publishers are done.
    pub done: watch::Receiver<bool>,
    /// Give up at this time.
    pub hard: Instant,
}

/// What a churning client saw.
pub struct ChurnOutcome {
    /// SUB/UNSUB pairs the server confirmed (each batch is followed by PING/PONG).
    pub pairs: u64,
    /// Messages its short-lived subscriptions received.
    pub msgs: u64,
    /// When it stopped.
    pub stopped: Instant,
    /// -ERR lines and failures.
    pub checks: Checks,
}

/// SUB/UNSUB pairs sent per write, before waiting for the server's PONG.
const CHURN_BATCH: u64 = 64;

/// Subscribes and unsubscribes in batches of [`CHURN_BATCH`] pairs, each confirmed by a
/// PING/PONG, until the publishers are done; messages that arrive meanwhile are read and
/// dropped.
pub async fn run_churner(mut conn: Conn, mut t: ChurnTask) -> Result<ChurnOutcome> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(t.seed);
    let mut out = ChurnOutcome { pairs: 0, msgs: 0, stopped: Instant::now(), checks: Checks::default() };
    let mut batch = Vec::with_capacity(4096);
    let n = t.space.names.len() as u32;
    let mut sid = 1u64;
    let start = Instant::now();
    let mut batches = 0u64;
    while !*t.done.borrow() && Instant::now() < t.hard {
        if let Some(rate) = t.rate {
            let due = start + Duration::from_secs_f64(batches as f64 * CHURN_BATCH as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = t.done.changed() => continue,
            }
        }
        batches += 1;
        batch.clear();
        for _ in 0..CHURN_BATCH {
            let i = rng.gen_range(0..n);
            batch.extend_from_slice(b"SUB ");
            if t.wildcard_every > 0 && sid.is_multiple_of(t.wildcard_every) {
                batch.extend_from_slice(format!("bench.{}.*", i / t.space.width).as_bytes());
            } else {
                batch.extend_from_slice(&t.space.names[i as usize]);
            }
            batch.extend_from_slice(format!(" {sid}\r\nUNSUB {sid}\r\n").as_bytes());
            sid += 1;
        }
        batch.extend_from_slice(b"PING\r\n");
        conn.wr.write_all(&batch).await?;
        // Wait for the PONG, dropping what the short-lived subscriptions got.
        let got_pong = loop {
            let mut pong = false;
            let mut pings = 0;
            let mut msgs = 0;
            let mut err = None;
            let used = parse(&conn.rbuf, |f| match f {
                Frame::Pong => pong = true,
                Frame::Ping => pings += 1,
                Frame::Msg { .. } => msgs += 1,
                Frame::Err(e) => err = Some(String::from_utf8_lossy(e).into_owned()),
                _ => {}
            })?;
            conn.rbuf.advance(used);
            out.msgs += msgs;
            for _ in 0..pings {
                conn.wr.write_all(b"PONG\r\n").await?;
            }
            if let Some(e) = err {
                out.checks.error(format!("churner: -ERR {e}"));
            }
            if pong {
                break true;
            }
            tokio::select! {
                r = conn.fill() => { r?; }
                _ = tokio::time::sleep_until(t.hard.into()) => break false,
                _ = t.done.changed() => {}
            }
        };
        if !got_pong {
            break;
        }
        out.pairs += CHURN_BATCH;
    }
    out.stopped = Instant::now();
    Ok(out)
}
