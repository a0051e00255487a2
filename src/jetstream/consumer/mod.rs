//! Consumers: the messages of a stream delivered at least once, to a push consumer's deliver
//! subject or to the pull requests waiting on `CONSUMER.MSG.NEXT`, acknowledged on the
//! `$JS.ACK` subject each message carries, and sent again when the ack does not come.
//!
//! - [`config`]: the configuration, its defaults and checks, as nats-server's.
//! - [`state`]: what was delivered, what is pending, the ack floor (pure data, saved as is).
//! - [`ack`]: the ack subject and the ack kinds.
//! - [`pull`]: pull requests, the queue they wait in, and the status messages.
//! - [`persist`]: a durable consumer's files.
//!
//! Each consumer has a task of its own that delivers whatever can go out (new messages,
//! redeliveries, heartbeats, expired pull requests) whenever it is woken: by the stream when it
//! stored messages, by an ack, by a pull request, or by its next timer. Locks are taken in one
//! order: a consumer's, then its stream's; the stream never waits for a consumer's lock while
//! it holds its own.

pub mod ack;
pub mod config;
pub mod persist;
pub mod pull;
pub mod state;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::warn;

use self::ack::AckKind;
use self::config::{AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy};
use self::pull::{WaitQueue, Waiting};
use self::state::DeliveryState;
use super::api::types::Retention;
use super::store::StoredMsg;
use super::stream::Stream;
use super::Shared;
use crate::account::{Account, Removal};
use crate::delivery::{InternalSink, Message, Subscription, Target};
use crate::format::{now_nanos, rfc3339_nanos};
use crate::publish::Batch;

/// Most messages one wake-up sends before it lets other tasks run.
const BURST: usize = 256;
/// How often a push consumer without subscribers looks for them again, besides being told
/// when they come ([`PushInterest`]).
const INTEREST_POLL: i64 = 1_000_000_000;
/// How often, at most, the pending count is recounted after the stream removed messages.
const RECOUNT_EVERY: i64 = 250_000_000;
/// rate_limit_bps: the bytes that may go in one burst (the default max_payload).
const RATE_BURST: usize = 1024 * 1024;
/// Flow control: the window a push consumer starts with, and the most it grows to.
const FC_START: i64 = 2 * 1024 * 1024;
const FC_MAX: i64 = 32 * 1024 * 1024;

/// Flow control of a push consumer, as nats-server runs it: a request once half the window is
/// outstanding, delivery stalled while the whole window is.
#[derive(Debug)]
struct FlowControl {
    pending_bytes: i64,
    window: i64,
    awaiting: Option<String>,
    awaiting_bytes: i64,
}

/// What a consumer holds behind its lock.
struct Inner {
    config: ConsumerConfig,
    state: DeliveryState,
    /// For deliver last_per_subject: the sequences still to send before `state.next_sseq`.
    skip_list: VecDeque<u64>,
    waiting: WaitQueue,
    fc: FlowControl,
    /// Messages not yet delivered (the lag), counted up to `counted_to`.
    num_pending: u64,
    counted_to: u64,
    /// The stream's removal count when `num_pending` was last counted in full, and when.
    counted_gen: u64,
    counted_at: i64,
    /// `$JS.ACK.<stream>.<consumer>.`.
    ack_prefix: Vec<u8>,
    subs: Vec<Arc<Subscription>>,
    /// The last delivery or heartbeat to the deliver subject.
    last_sent: i64,
    /// The last sign of life (a pull request, an ack, subscribers on the deliver subject).
    last_active: i64,
    /// For replay original: (first message's stored time, when it was sent).
    replay_origin: Option<(i64, i64)>,
    /// For rate_limit_bps: (bytes that may go now, when that was reckoned).
    rate_bucket: Option<(f64, i64)>,
    /// State changed since it was saved.
    dirty: bool,
    /// Delivered without acks since the last look: done, for the stream's retention.
    done_unacked: Vec<u64>,
    /// Scratch buffers for a delivery.
    reply: Vec<u8>,
    payload: Vec<u8>,
    target: Vec<u8>,
}

/// One consumer of a stream.
pub struct Consumer {
    name: String,
    stream_name: String,
    stream: Weak<Stream>,
    shared: Arc<Shared>,
    account: Arc<Account>,
    created: i64,
    /// Where a durable consumer of a file stream keeps its state.
    dir: Option<PathBuf>,
    /// Its filters, read by the stream without the consumer's lock (and never held while
    /// another lock is taken).
    filters: RwLock<Arc<Vec<String>>>,
    inner: Mutex<Inner>,
    wake: Notify,
    closed: AtomicBool,
    /// Messages given up on and published to the dead-letter subject.
    dead_letters: std::sync::atomic::AtomicU64,
}

/// `SequenceInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceInfo {
    /// Consumer sequence.
    pub consumer_seq: u64,
    /// Stream sequence.
    pub stream_seq: u64,
    /// When it last moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// `ConsumerInfo`, in nats-server's field order.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerInfo {
    /// The stream.
    pub stream_name: String,
    /// The consumer.
    pub name: String,
    /// When it was created.
    pub created: String,
    /// Its configuration.
    pub config: ConsumerConfig,
    /// The last delivery.
    pub delivered: SequenceInfo,
    /// Everything up to here is acknowledged.
    pub ack_floor: SequenceInfo,
    /// Delivered and not acknowledged.
    pub num_ack_pending: usize,
    /// Pending messages delivered more than once.
    pub num_redelivered: usize,
    /// Pull requests waiting.
    pub num_waiting: usize,
    /// Messages not yet delivered: the lag.
    pub num_pending: u64,
    /// A push consumer with subscribers on its deliver subject.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub push_bound: bool,
}

/// What a consumer is made from: everything but its runtime parts.
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) config: ConsumerConfig,
    pub(crate) created: i64,
    pub(crate) state: DeliveryState,
    pub(crate) skip_list: VecDeque<u64>,
    pub(crate) dir: Option<PathBuf>,
}

fn time_or_none(ts: i64) -> Option<String> {
    (ts > 0).then(|| rfc3339_nanos(ts))
}

impl Consumer {
    /// A consumer of `stream`, subscribed to its ack and flow control subjects, its task
    /// started.
    pub(crate) fn start(stream: &Arc<Stream>, shared: Arc<Shared>, account: Arc<Account>, spec: Spec) -> Arc<Consumer> {
        let Spec { name, config, created, state, skip_list, dir } = spec;
        let stream_name = stream.name().to_string();
        let now = now_nanos();
        let filters: Vec<String> = config.filters().iter().map(|s| s.to_string()).collect();
        let inner = Inner {
            ack_prefix: format!("$JS.ACK.{stream_name}.{name}.").into_bytes(),
            config,
            state,
            skip_list,
            waiting: WaitQueue::default(),
            fc: FlowControl { pending_bytes: 0, window: FC_START, awaiting: None, awaiting_bytes: 0 },
            num_pending: 0,
            counted_to: 0,
            counted_gen: u64::MAX,
            counted_at: 0,
            subs: Vec::new(),
            last_sent: now,
            last_active: now,
            replay_origin: None,
            rate_bucket: None,
            dirty: false,
            done_unacked: Vec::new(),
            reply: Vec::with_capacity(96),
            payload: Vec::new(),
            target: Vec::new(),
        };
        let c = Arc::new(Consumer {
            name,
            stream_name,
            stream: Arc::downgrade(stream),
            shared,
            account,
            created,
            dir,
            filters: RwLock::new(Arc::new(filters)),
            inner: Mutex::new(inner),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            dead_letters: std::sync::atomic::AtomicU64::new(0),
        });
        c.subscribe();
        {
            let mut g = c.inner.lock();
            c.recount(&mut g, stream, now);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(Arc::clone(&c).run());
        }
        c
    }

    fn subscribe(self: &Arc<Self>) {
        let mut g = self.inner.lock();
        let sink: Arc<dyn InternalSink> = Arc::new(AckSink { consumer: Arc::downgrade(self) });
        let acks = format!("$JS.ACK.{}.{}.>", self.stream_name, self.name);
        let fc = format!("$JS.FC.{}.{}.*", self.stream_name, self.name);
        for subject in [acks, fc] {
            let sub = Arc::new(Subscription::new(Target::Internal(Arc::clone(&sink)), subject.as_bytes(), None, b""));
            self.account.add_subscription(Arc::clone(&sub));
            g.subs.push(sub);
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> ConsumerConfig {
        self.inner.lock().config.clone()
    }

    /// Messages it gave up on and dead-lettered.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// Whether it is durable.
    pub fn is_durable(&self) -> bool {
        !self.inner.lock().config.durable.is_empty()
    }

    /// Its filters (empty: every subject of the stream).
    pub fn filters(&self) -> Arc<Vec<String>> {
        Arc::clone(&self.filters.read())
    }

    /// Whether a message on `subject` is for it.
    pub fn wants_subject(&self, subject: &str) -> bool {
        let f = self.filters.read();
        f.is_empty() || f.iter().any(|f| super::store::index_matches(f, subject))
    }

    /// Whether it still has to deliver or see acknowledged stream sequence `seq` on `subject`.
    pub fn needs(&self, seq: u64, subject: &str) -> bool {
        let g = self.inner.lock();
        if g.state.pending.contains_key(&seq) || g.skip_list.contains(&seq) {
            return true;
        }
        seq >= g.state.next_sseq && self.wants_subject(subject)
    }

    /// Wakes its task: there may be something to send.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Stops its task and drops its subscriptions.
    pub(crate) fn stop(&self) {
        self.closed.store(true, Ordering::Release);
        let subs = std::mem::take(&mut self.inner.lock().subs);
        for sub in subs {
            self.account.remove_subscription(&sub, Removal::Owner);
        }
        self.wake.notify_one();
    }

    /// Stops it and removes its files.
    pub(crate) fn delete(&self) {
        self.stop();
        let mut g = self.inner.lock();
        for w in g.waiting.take_where(|_| true) {
            self.send_status(&w.reply, &pull::status(409, "Consumer Deleted"));
        }
        if let Some(dir) = &self.dir {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("consumer {} > {}: removing {}: {e}", self.stream_name, self.name, dir.display());
                }
            }
        }
    }

    /// Applies an update nats-server allows (already checked).
    pub(crate) fn update(&self, cfg: ConsumerConfig) {
        let mut g = self.inner.lock();
        *self.filters.write() = Arc::new(cfg.filters().iter().map(|s| s.to_string()).collect());
        g.config = cfg;
        g.counted_gen = u64::MAX;
        g.dirty = true;
        drop(g);
        self.save_meta();
        self.notify();
    }

    /// Its info as the API returns it.
    pub fn info(&self) -> ConsumerInfo {
        let stream = self.stream.upgrade();
        let mut g = self.inner.lock();
        if let Some(stream) = &stream {
            self.recount(&mut g, stream, now_nanos());
        }
        let push_bound = !g.config.deliver_subject.is_empty() && self.bound(&g.config);
        let s = &g.state;
        ConsumerInfo {
            stream_name: self.stream_name.clone(),
            name: self.name.clone(),
            created: rfc3339_nanos(self.created),
            config: g.config.clone(),
            delivered: SequenceInfo {
                consumer_seq: s.dseq,
                stream_seq: s.next_sseq.saturating_sub(1),
                last_active: time_or_none(s.last_delivered),
            },
            ack_floor: SequenceInfo {
                consumer_seq: s.floor_dseq,
                stream_seq: s.floor_sseq,
                last_active: time_or_none(s.last_ack),
            },
            num_ack_pending: s.pending.len(),
            num_redelivered: s.num_redelivered(),
            num_waiting: g.waiting.len(),
            num_pending: g.num_pending,
            push_bound,
        }
    }

    /// Whether a push consumer's deliver subject has someone to take its messages: any
    /// subscriber, or with a deliver group, a member of that group (as nats-server).
    fn bound(&self, cfg: &ConsumerConfig) -> bool {
        let m = self.account.sublist.matches(cfg.deliver_subject.as_bytes());
        if cfg.deliver_group.is_empty() {
            !m.psubs.is_empty() || !m.qsubs.is_empty()
        } else {
            m.qsubs.iter().any(|q| &*q.name == cfg.deliver_group.as_bytes())
        }
    }

    /// Counts the lag again in full.
    fn recount(&self, g: &mut Inner, stream: &Stream, now: i64) {
        let filters = self.filters();
        let next = g.state.next_sseq;
        let gen = stream.removals();
        let (count, last) = stream
            .read_store(|store| {
                let last = store.state().last_seq;
                (store.count_matching(&filters[..], next, last), last)
            })
            .unwrap_or((0, 0));
        g.num_pending = count + g.skip_list.len() as u64;
        g.counted_to = last;
        g.counted_gen = gen;
        g.counted_at = now;
    }

    /// Brings the lag up to date with what the stream stored since it was counted.
    fn refresh_pending(&self, g: &mut Inner, stream: &Stream, now: i64) {
        let gen = stream.removals();
        if gen != g.counted_gen && now - g.counted_at >= RECOUNT_EVERY {
            self.recount(g, stream, now);
            return;
        }
        let filters = self.filters();
        let from = (g.counted_to + 1).max(g.state.next_sseq);
        let (added, last) = stream
            .read_store(|store| {
                let last = store.state().last_seq;
                (store.count_matching(&filters[..], from, last), last)
            })
            .unwrap_or((0, 0));
        g.num_pending += added;
        g.counted_to = g.counted_to.max(last);
    }

    async fn run(self: Arc<Self>) {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let notified = self.wake.notified();
            let next = self.pump();
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            match next {
                // More to send at once: let other tasks run, then go on (a zero timer would wait
                // for the timer's next millisecond tick).
                Some(at) if at <= now_nanos() => tokio::task::yield_now().await,
                Some(at) => {
                    let wait = (at - now_nanos()).max(0) as u64;
                    let _ = tokio::time::timeout(std::time::Duration::from_nanos(wait), notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Sends whatever can go out now; returns when it must look again (ns since the epoch).
    fn pump(&self) -> Option<i64> {
        let stream = self.stream.upgrade()?;
        let mut g = self.inner.lock();
        let now = now_nanos();
        let mut next = Next::default();
        self.refresh_pending(&mut g, &stream, now);
        if let Some(due) = g.state.expire(now) {
            next.at(due);
        }
        self.give_up_exhausted(&mut g, &stream, now);
        let pull = g.config.is_pull();
        if pull {
            self.expire_requests(&mut g, now, false);
        }
        let mut sent = 0;
        let mut end_of_stream = false;
        let bound = pull || self.bound(&g.config);
        if !bound {
            next.at(now + INTEREST_POLL);
        } else if !pull {
            g.last_active = now;
        }
        if bound {
            self.shared.publisher.batch(|out| {
                while sent < BURST {
                    if !pull {
                        if g.fc.awaiting.is_some() && g.fc.pending_bytes > g.fc.window {
                            break;
                        }
                    } else if g.waiting.is_empty() {
                        break;
                    }
                    match self.pick(&mut g, &stream, now) {
                        Pick::Send(msg, source) => {
                            if let Some(due) = self.replay_wait(&mut g, &msg, now) {
                                next.at(due);
                                break;
                            }
                            if let Some(due) = self.rate_wait(&mut g, &msg, now) {
                                next.at(due);
                                break;
                            }
                            if self.send(out, &mut g, &msg, source, now) {
                                sent += 1;
                            } else if !pull {
                                next.at(now + INTEREST_POLL);
                                break;
                            }
                        }
                        Pick::Full => break,
                        Pick::End => {
                            end_of_stream = true;
                            break;
                        }
                    }
                }
            });
        }
        if sent == BURST {
            next.at(now);
        }
        if !g.done_unacked.is_empty() {
            let done = std::mem::take(&mut g.done_unacked);
            drop(g);
            if stream.retention() != Retention::Limits {
                stream.consumer_acked(&done, self);
                stream.apply_removals();
            }
            g = self.inner.lock();
        }
        // What was just sent is due back at its own time.
        if let Some(due) = g.state.expire(now) {
            next.at(due);
        }
        if pull {
            if end_of_stream {
                self.expire_requests(&mut g, now, true);
            }
            for w in g.waiting.iter_mut() {
                if w.expires > 0 {
                    next.at(w.expires);
                }
            }
            let mut beats = Vec::new();
            for w in g.waiting.iter_mut() {
                if w.heartbeat > 0 {
                    if now >= w.next_heartbeat {
                        beats.push(w.reply.clone());
                        w.next_heartbeat = now + w.heartbeat;
                    }
                    next.at(w.next_heartbeat);
                }
            }
            for reply in beats {
                let hb = pull::heartbeat(g.state.dseq, g.state.next_sseq.saturating_sub(1), None);
                self.send_status(&reply, &hb);
            }
        } else if g.config.heartbeat > 0 {
            if now - g.last_sent >= g.config.heartbeat {
                let subject = g.config.deliver_subject.clone();
                if self.bound(&g.config) {
                    let hb =
                        pull::heartbeat(g.state.dseq, g.state.next_sseq.saturating_sub(1), g.fc.awaiting.as_deref());
                    self.send_status(subject.as_bytes(), &hb);
                }
                g.last_sent = now;
            }
            next.at(g.last_sent + g.config.heartbeat);
        }
        next.0
    }

    /// The next message to send: a redelivery first, then the next new one.
    fn pick(&self, g: &mut Inner, stream: &Stream, now: i64) -> Pick {
        while let Some(seq) = g.state.next_redelivery() {
            let deliveries = g.state.pending.get(&seq).map_or(0, |p| p.deliveries);
            let max = g.config.max_deliver;
            if max > 0 && deliveries >= max as u64 {
                self.exhausted(g, stream, seq, deliveries, Reason::MaxDeliveries, now);
                continue;
            }
            match stream.read_store(|s| s.load(seq)) {
                Some(Ok(m)) => return Pick::Send(m, Source::Redelivery),
                _ => {
                    // Gone from the stream (removed, purged, expired): nothing to redeliver.
                    g.state.give_up(seq);
                    g.dirty = true;
                }
            }
        }
        let max_pending = g.config.max_ack_pending;
        let acks = g.config.ack_policy != AckPolicy::None;
        if acks && max_pending > 0 && g.state.pending.len() as i64 >= max_pending {
            return Pick::Full;
        }
        while let Some(&seq) = g.skip_list.front() {
            match stream.read_store(|s| s.load(seq)) {
                Some(Ok(m)) => return Pick::Send(m, Source::SkipList),
                _ => {
                    g.skip_list.pop_front();
                    g.num_pending = g.num_pending.saturating_sub(1);
                }
            }
        }
        let filters = self.filters();
        let start = g.state.next_sseq;
        let found = stream.read_store(|s| s.next_matching(&filters[..], start).map(|seq| s.load(seq))).flatten();
        match found {
            Some(Ok(m)) => Pick::Send(m, Source::New),
            _ => {
                let last = stream.read_store(|s| s.state().last_seq).unwrap_or(0);
                if last + 1 > g.state.next_sseq {
                    g.state.skip_to(last + 1);
                    g.dirty = true;
                }
                Pick::End
            }
        }
    }

    /// Gives up at once on every message due again that has had its max_deliver deliveries,
    /// whether or not anyone is asking for messages: a poison message is advised and
    /// dead-lettered when its last delivery fails, not at the next pull.
    fn give_up_exhausted(&self, g: &mut Inner, stream: &Stream, now: i64) {
        let Ok(max) = u64::try_from(g.config.max_deliver) else { return };
        if max == 0 {
            return;
        }
        let done: Vec<(u64, u64)> = g
            .state
            .redeliver
            .iter()
            .filter_map(|seq| g.state.pending.get(seq).map(|p| (*seq, p.deliveries)))
            .filter(|(_, d)| *d >= max)
            .collect();
        for (seq, deliveries) in done {
            self.exhausted(g, stream, seq, deliveries, Reason::MaxDeliveries, now);
        }
    }

    /// For replay original: when `msg` is due, if not yet.
    fn replay_wait(&self, g: &mut Inner, msg: &StoredMsg, now: i64) -> Option<i64> {
        if g.config.replay_policy != ReplayPolicy::Original {
            return None;
        }
        let (first_ts, started) = *g.replay_origin.get_or_insert((msg.ts, now));
        let due = started + (msg.ts - first_ts);
        (due > now + 1_000_000).then_some(due)
    }

    /// For rate_limit_bps: when there is room for `msg`, if not now. A token bucket of the
    /// server's max_payload, as nats-server's.
    fn rate_wait(&self, g: &mut Inner, msg: &StoredMsg, now: i64) -> Option<i64> {
        let bps = g.config.rate_limit;
        if bps == 0 {
            return None;
        }
        let size = msg.subject.len() + msg.headers.len() + msg.data.len();
        bucket_wait(&mut g.rate_bucket, bps, size, now)
    }

    /// The wait before redelivery number `deliveries` + 1.
    fn wait_for(cfg: &ConsumerConfig, deliveries: u64) -> i64 {
        if cfg.backoff.is_empty() {
            return cfg.ack_wait;
        }
        let i = (deliveries as usize).saturating_sub(1).min(cfg.backoff.len() - 1);
        cfg.backoff[i]
    }

    /// Sends one message; false when nobody took it.
    fn send(&self, out: &mut Batch<'_>, g: &mut Inner, m: &StoredMsg, source: Source, now: i64) -> bool {
        let acks = g.config.ack_policy != AckPolicy::None;
        let deliveries = g.state.pending.get(&m.seq).map_or(0, |p| p.deliveries) + 1;
        let dseq = g.state.dseq + 1;
        let pending_after = match source {
            Source::Redelivery => g.num_pending,
            _ => g.num_pending.saturating_sub(1),
        };
        let mut reply = std::mem::take(&mut g.reply);
        reply.clear();
        ack::write_subject(&mut reply, &g.ack_prefix, deliveries, m.seq, dseq, m.ts, pending_after);
        let mut payload = std::mem::take(&mut g.payload);
        payload.clear();
        let header_len;
        if g.config.headers_only {
            let size = m.data.len().to_string();
            let h = super::headers::append(&m.headers, &[("Nats-Msg-Size", &size)]);
            header_len = h.len();
            payload.extend_from_slice(&h);
        } else {
            header_len = m.headers.len();
            payload.extend_from_slice(&m.headers);
            payload.extend_from_slice(&m.data);
        }
        let size = (m.subject.len() + reply.len() + payload.len()) as i64;
        let fc_size = (g.config.deliver_subject.len() + reply.len() + payload.len()) as i64;
        // Where it goes: the deliver subject, or the pull request at the front.
        let mut target = std::mem::take(&mut g.target);
        target.clear();
        if g.config.is_pull() {
            loop {
                let Some(w) = g.waiting.front_mut() else {
                    g.reply = reply;
                    g.payload = payload;
                    g.target = target;
                    return false;
                };
                if w.max_bytes > 0 && size > w.max_bytes {
                    let Some(w) = g.waiting.pop_front() else { break };
                    let st = pull::status_with_pending(409, "Message Size Exceeds MaxBytes", w.batch, w.max_bytes);
                    self.send_status(&w.reply, &st);
                    continue;
                }
                target.extend_from_slice(&w.reply);
                break;
            }
        } else {
            target.extend_from_slice(g.config.deliver_subject.as_bytes());
        }
        let msg = Message { subject: m.subject.as_bytes(), reply: Some(&reply), header_len, payload: &payload };
        let taken = !target.is_empty() && out.publish_to(&self.account, &target, &msg);
        g.reply = reply;
        g.payload = payload;
        g.target = target;
        if !taken {
            if g.config.is_pull() {
                // The requester is gone: its request goes too.
                g.waiting.pop_front();
            }
            return false;
        }
        let due = acks.then(|| now + Self::wait_for(&g.config, deliveries));
        g.state.delivered(m.seq, now, due);
        g.dirty = true;
        g.last_sent = now;
        match source {
            Source::Redelivery => {}
            Source::SkipList => {
                g.skip_list.pop_front();
                g.num_pending = pending_after;
            }
            Source::New => g.num_pending = pending_after,
        }
        if g.config.is_pull() {
            g.last_active = now;
            if let Some(w) = g.waiting.front_mut() {
                w.batch -= 1;
                w.delivered += 1;
                if w.max_bytes > 0 {
                    w.max_bytes -= size;
                    if w.max_bytes == 0 {
                        w.batch = 0;
                    }
                }
                if w.heartbeat > 0 {
                    w.next_heartbeat = now + w.heartbeat;
                }
            }
            g.waiting.served();
        } else if g.config.flow_control {
            g.fc.pending_bytes += fc_size;
            if g.fc.awaiting.is_none() && g.fc.pending_bytes > g.fc.window / 2 {
                self.send_flow_control(g);
            }
        }
        if !acks {
            // Delivered without acks is done: for interest or workqueue retention, once the
            // consumer's lock is let go.
            g.done_unacked.push(m.seq);
        }
        true
    }

    fn send_flow_control(&self, g: &mut Inner) {
        let tail = crate::nuid::random(4);
        let fc = format!("$JS.FC.{}.{}.{tail}", self.stream_name, self.name);
        let hdr = b"NATS/1.0 100 FlowControl Request\r\n\r\n";
        let subject = g.config.deliver_subject.clone();
        let msg =
            Message { subject: subject.as_bytes(), reply: Some(fc.as_bytes()), header_len: hdr.len(), payload: hdr };
        self.shared.publisher.publish(&self.account, &msg);
        g.fc.awaiting_bytes = g.fc.pending_bytes;
        g.fc.awaiting = Some(fc);
    }

    /// A flow control reply.
    fn on_flow_control(&self, subject: &[u8]) {
        let mut g = self.inner.lock();
        if g.fc.awaiting.as_deref().map(str::as_bytes) != Some(subject) {
            return;
        }
        g.fc.window = (g.fc.window * 2).min(FC_MAX);
        g.fc.pending_bytes = (g.fc.pending_bytes - g.fc.awaiting_bytes).max(0);
        g.fc.awaiting = None;
        g.fc.awaiting_bytes = 0;
        drop(g);
        self.notify();
    }

    /// A header-only status message to `subject`.
    fn send_status(&self, subject: &[u8], hdr: &[u8]) {
        let msg = Message { subject, reply: None, header_len: hdr.len(), payload: hdr };
        self.shared.publisher.publish(&self.account, &msg);
    }

    /// Answers and drops pull requests that expired (and, at the end of the stream, no_wait
    /// requests that got something).
    fn expire_requests(&self, g: &mut Inner, now: i64, end_of_stream: bool) {
        let done = g.waiting.take_where(|w| {
            (w.expires > 0 && now >= w.expires) || (end_of_stream && w.no_wait && (w.delivered > 0 || w.expires == 0))
        });
        for w in done {
            let st = if w.delivered == 0 && w.no_wait && w.expires == 0 {
                pull::status(404, "No Messages")
            } else {
                pull::status_with_pending(408, "Request Timeout", w.batch, w.max_bytes)
            };
            self.send_status(&w.reply, &st);
        }
    }

    /// A pull request on `CONSUMER.MSG.NEXT` (or after `+NXT`).
    pub(crate) fn pull_request(&self, reply: &[u8], body: &[u8]) {
        let now = now_nanos();
        let mut g = self.inner.lock();
        if !g.config.is_pull() {
            drop(g);
            self.send_status(reply, &pull::status(409, "Consumer is push based"));
            return;
        }
        let mut w: Waiting = match pull::parse_request(body, reply, now) {
            Ok(w) => w,
            Err(text) => {
                drop(g);
                self.send_status(reply, &pull::status(400, &text));
                return;
            }
        };
        w.batch = w.batch.max(1);
        let cfg = &g.config;
        let refuse = if cfg.max_request_batch > 0 && w.batch > cfg.max_request_batch {
            Some(format!("Exceeded MaxRequestBatch of {}", cfg.max_request_batch))
        } else if w.expires > 0 && cfg.max_request_expires > 0 && w.expires - now > cfg.max_request_expires {
            let d = std::time::Duration::from_nanos(cfg.max_request_expires as u64);
            Some(format!("Exceeded MaxRequestExpires of {}", crate::format::go_duration(d)))
        } else if w.max_bytes > 0 && cfg.max_request_max_bytes > 0 && w.max_bytes > cfg.max_request_max_bytes {
            Some(format!("Exceeded MaxRequestMaxBytes of {}", cfg.max_request_max_bytes))
        } else {
            None
        };
        if let Some(text) = refuse {
            drop(g);
            self.send_status(reply, &pull::status(409, &text));
            return;
        }
        g.last_active = now;
        if g.waiting.len() as i64 >= g.config.max_waiting {
            self.expire_requests(&mut g, now, false);
        }
        if w.no_wait {
            if let Some(stream) = self.stream.upgrade() {
                self.refresh_pending(&mut g, &stream, now);
            }
            let available = g.num_pending + g.state.redeliver.len() as u64;
            if available == 0 && w.expires == 0 {
                drop(g);
                self.send_status(reply, &pull::status(404, "No Messages"));
                return;
            }
            if available > 0 && available < g.waiting.wanted().max(0) as u64 {
                drop(g);
                self.send_status(reply, &pull::status(408, "Requests Pending"));
                return;
            }
        }
        if g.waiting.len() as i64 >= g.config.max_waiting {
            drop(g);
            self.send_status(reply, &pull::status(409, "Exceeded MaxWaiting"));
            return;
        }
        g.waiting.push(w);
        drop(g);
        self.notify();
    }

    /// An ack (of any kind) on `subject`, with its reply subject.
    fn on_ack(&self, subject: &[u8], body: &[u8], reply: Option<&[u8]>) {
        let kind = ack::parse_kind(body);
        let Some(a) = ack::parse_subject(subject) else {
            // As nats-server: answered all the same.
            if let (Some(r), false) = (reply.filter(|r| !r.is_empty()), matches!(kind, AckKind::Next(_))) {
                self.send_status(r, b"");
            }
            return;
        };
        let now = now_nanos();
        let stream = self.stream.upgrade();
        let mut g = self.inner.lock();
        g.last_active = now;
        let mut done = Vec::new();
        let mut next_request = None;
        let all = g.config.ack_policy == AckPolicy::All;
        if matches!(kind, AckKind::Ack | AckKind::Next(_)) {
            self.sample_ack(&g, a, now);
        }
        match kind {
            AckKind::Ack => done = g.state.ack(a.sseq, all, now),
            AckKind::Next(req) => {
                done = g.state.ack(a.sseq, all, now);
                next_request = Some(req.to_vec());
            }
            AckKind::Nak(delay) => {
                if a.dseq > g.state.floor_dseq && g.state.pending.contains_key(&a.sseq) {
                    self.advise(
                        "MSG_NAKED",
                        &DeliveryAdvisory::new("io.nats.jetstream.advisory.v1.nak", self, a.dseq, a.sseq, a.deliveries),
                    );
                    match delay {
                        Some(d) => {
                            g.state.set_due(a.sseq, now + d, None);
                        }
                        None => {
                            g.state.nak(a.sseq);
                        }
                    }
                }
            }
            AckKind::Progress => {
                let deliveries = g.state.pending.get(&a.sseq).map_or(1, |p| p.deliveries);
                let wait = Self::wait_for(&g.config, deliveries);
                g.state.set_due(a.sseq, now + wait, Some(now));
            }
            AckKind::Term => {
                if g.state.pending.contains_key(&a.sseq) {
                    if let Some(stream) = &stream {
                        self.exhausted(&mut g, stream, a.sseq, a.deliveries, Reason::Terminated, now);
                    }
                    done.push(a.sseq);
                }
            }
            AckKind::Unknown => {}
        }
        g.dirty = true;
        drop(g);
        if let (Some(r), None) = (reply.filter(|r| !r.is_empty()), &next_request) {
            self.send_status(r, b"");
        }
        if let Some(stream) = &stream {
            if !done.is_empty() && stream.retention() != Retention::Limits {
                stream.consumer_acked(&done, self);
            }
        }
        if let (Some(req), Some(r)) = (next_request, reply) {
            self.pull_request(r, &req);
        }
        self.notify();
    }

    /// The ack metric, for the share of acks `sample_freq` asks for, on
    /// `$JS.EVENT.METRIC.CONSUMER.ACK.<stream>.<consumer>`.
    fn sample_ack(&self, g: &Inner, a: ack::AckSubject, now: i64) {
        let freq = g.config.sample_frequency.trim_end_matches('%').parse::<u64>().unwrap_or(0);
        if freq == 0 || rand::random::<u64>() % 100 >= freq {
            return;
        }
        let Some(p) = g.state.pending.get(&a.sseq) else { return };
        let mut metric =
            DeliveryAdvisory::new("io.nats.jetstream.metric.v1.consumer_ack", self, a.dseq, a.sseq, p.deliveries);
        metric.ack_time = Some(now - p.ts);
        let body = super::api::go_json(&metric);
        let subject = format!("$JS.EVENT.METRIC.CONSUMER.ACK.{}.{}", self.stream_name, self.name);
        let msg = Message { subject: subject.as_bytes(), reply: None, header_len: 0, payload: &body };
        self.shared.publisher.publish(&self.account, &msg);
    }

    /// A message given up on: max deliveries reached or terminated. Advises, and publishes it
    /// to the dead-letter subject when the consumer names one.
    fn exhausted(&self, g: &mut Inner, stream: &Stream, seq: u64, deliveries: u64, reason: Reason, now: i64) {
        let Some(p) = g.state.give_up(seq) else { return };
        g.dirty = true;
        let _ = now;
        match reason {
            Reason::MaxDeliveries => {
                let mut adv =
                    DeliveryAdvisory::new("io.nats.jetstream.advisory.v1.max_deliver", self, 0, seq, deliveries);
                adv.consumer_seq = None;
                self.advise("MAX_DELIVERIES", &adv);
            }
            Reason::Terminated => {
                self.advise(
                    "MSG_TERMINATED",
                    &DeliveryAdvisory::new("io.nats.jetstream.advisory.v1.terminated", self, p.dseq, seq, deliveries),
                );
            }
        }
        let Some(dead_letter) = g.config.dead_letter_subject().map(str::to_string) else { return };
        let Some(Ok(m)) = stream.read_store(|s| s.load(seq)) else { return };
        let (seq_text, count) = (seq.to_string(), deliveries.to_string());
        let extra = [
            ("Nats-Dead-Letter-Stream", self.stream_name.as_str()),
            ("Nats-Dead-Letter-Consumer", self.name.as_str()),
            ("Nats-Dead-Letter-Sequence", seq_text.as_str()),
            ("Nats-Dead-Letter-Subject", m.subject.as_str()),
            ("Nats-Dead-Letter-Deliveries", count.as_str()),
            ("Nats-Dead-Letter-Reason", reason.text()),
        ];
        let hdr = super::headers::append(&m.headers, &extra);
        let mut payload = hdr.clone();
        payload.extend_from_slice(&m.data);
        let msg = Message { subject: dead_letter.as_bytes(), reply: None, header_len: hdr.len(), payload: &payload };
        self.shared.publisher.publish(&self.account, &msg);
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes an advisory on `$JS.EVENT.ADVISORY.CONSUMER.<kind>.<stream>.<consumer>`.
    fn advise<T: Serialize>(&self, kind: &str, body: &T) {
        let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.{kind}.{}.{}", self.stream_name, self.name);
        let payload = super::api::go_json(body);
        let msg = Message { subject: subject.as_bytes(), reply: None, header_len: 0, payload: &payload };
        self.shared.publisher.publish(&self.account, &msg);
    }

    /// Housekeeping: saves changed state; returns whether it has been unused past its
    /// inactive threshold (and should be deleted).
    pub(crate) fn tick(&self, now: i64) -> bool {
        let mut g = self.inner.lock();
        if g.dirty && self.dir.is_some() {
            g.dirty = false;
            let snapshot = persist::StateFile::of(&g.state, &g.skip_list);
            drop(g);
            self.save_state(&snapshot);
            g = self.inner.lock();
        }
        if !g.config.deliver_subject.is_empty() && self.bound(&g.config) {
            g.last_active = now;
        }
        if !g.waiting.is_empty() {
            g.last_active = now;
        }
        let threshold = if g.config.inactive_threshold > 0 {
            g.config.inactive_threshold
        } else if g.config.durable.is_empty() {
            config::DEFAULT_INACTIVE_THRESHOLD
        } else {
            return false;
        };
        now - g.last_active > threshold
    }

    /// Writes its state now (at shutdown).
    pub(crate) fn save(&self) {
        if self.dir.is_none() {
            return;
        }
        let snapshot = {
            let mut g = self.inner.lock();
            g.dirty = false;
            persist::StateFile::of(&g.state, &g.skip_list)
        };
        self.save_state(&snapshot);
    }

    fn save_state(&self, s: &persist::StateFile) {
        if let Some(dir) = &self.dir {
            if let Err(e) = persist::save_state(dir, s) {
                warn!("consumer {} > {}: saving its state failed: {e}", self.stream_name, self.name);
            }
        }
    }

    /// Writes its configuration (durable consumers of file streams).
    pub(crate) fn save_meta(&self) {
        if let Some(dir) = &self.dir {
            let cfg = self.config();
            if let Err(e) = persist::save_meta(dir, &cfg, self.created) {
                warn!("consumer {} > {}: saving its configuration failed: {e}", self.stream_name, self.name);
            }
        }
    }

    /// The stream removed messages: forgets pending ones that are gone.
    pub(crate) fn stream_removed(&self, present: impl Fn(u64) -> bool, first_seq: u64) {
        let mut g = self.inner.lock();
        g.state.forget(|s| !present(s));
        g.skip_list.retain(|&s| present(s));
        if first_seq > g.state.next_sseq {
            g.state.skip_to(first_seq);
        }
        g.counted_gen = u64::MAX;
        g.counted_at = 0;
        g.dirty = true;
        drop(g);
        self.notify();
    }
}

/// What a create request allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create, or update one of the same name (nats-server 2.9).
    CreateOrUpdate,
    /// Create only: an existing consumer with another configuration is an error.
    Create,
    /// Update only: a missing consumer is an error.
    Update,
}

/// Where the next message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Redelivery,
    SkipList,
    New,
}

enum Pick {
    Send(StoredMsg, Source),
    /// max_ack_pending reached.
    Full,
    /// Nothing more to send.
    End,
}

/// Why a message was given up on.
#[derive(Debug, Clone, Copy)]
enum Reason {
    MaxDeliveries,
    Terminated,
}

impl Reason {
    fn text(self) -> &'static str {
        match self {
            Reason::MaxDeliveries => "max_deliveries",
            Reason::Terminated => "terminated",
        }
    }
}

/// The earliest of some times.
#[derive(Default)]
struct Next(Option<i64>);

impl Next {
    fn at(&mut self, t: i64) {
        self.0 = Some(self.0.map_or(t, |n| n.min(t)));
    }
}

/// A token bucket of [`RATE_BURST`] bytes filled at `bps` bits per second: `None` when `size`
/// bytes may go at `now` (and takes them), else when they may.
fn bucket_wait(bucket: &mut Option<(f64, i64)>, bps: u64, size: usize, now: i64) -> Option<i64> {
    let per_ns = bps as f64 / 8.0 / 1e9;
    let burst = RATE_BURST as f64;
    let (tokens, at) = bucket.get_or_insert((burst, now));
    *tokens = (*tokens + (now - *at) as f64 * per_ns).min(burst);
    *at = now;
    let need = (size as f64).min(burst);
    if *tokens >= need {
        *tokens -= size as f64;
        return None;
    }
    Some(now + ((need - *tokens) / per_ns).ceil() as i64)
}

/// A unique id for an advisory.
pub(crate) fn advisory_id() -> String {
    crate::nuid::nuid()
}

/// The body of the max deliveries, NAK and terminated advisories and of the ack metric (with
/// `ack_time`).
#[derive(Serialize)]
struct DeliveryAdvisory<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    stream: &'a str,
    consumer: &'a str,
    /// Not in the max deliveries advisory.
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer_seq: Option<u64>,
    stream_seq: u64,
    /// Nanoseconds from delivery to ack (the ack metric).
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_time: Option<i64>,
    deliveries: u64,
}

impl<'a> DeliveryAdvisory<'a> {
    fn new(kind: &'static str, c: &'a Consumer, dseq: u64, sseq: u64, deliveries: u64) -> Self {
        DeliveryAdvisory {
            kind,
            id: advisory_id(),
            timestamp: rfc3339_nanos(now_nanos()),
            stream: &c.stream_name,
            consumer: &c.name,
            consumer_seq: Some(dseq),
            stream_seq: sseq,
            ack_time: None,
            deliveries,
        }
    }
}

/// Wakes push consumers when their deliver subject gains a subscriber, so that delivery starts
/// at once (clients often subscribe just after creating the consumer). Listens to its
/// account's interest changes only once the account has a push consumer.
#[derive(Default)]
pub(crate) struct PushInterest {
    consumers: RwLock<Vec<(String, Weak<Consumer>)>>,
    listening: AtomicBool,
}

impl PushInterest {
    /// Watches `deliver_subject` for `c`; the first time, starts listening to `account`.
    pub(crate) fn watch(self: &Arc<Self>, account: &Account, deliver_subject: &str, c: &Arc<Consumer>) {
        let mut list = self.consumers.write();
        list.retain(|(_, w)| w.strong_count() > 0);
        list.push((deliver_subject.to_string(), Arc::downgrade(c)));
        drop(list);
        if !self.listening.swap(true, Ordering::AcqRel) {
            account.listen(Arc::clone(self) as Arc<dyn crate::account::InterestListener>);
        }
    }
}

impl crate::account::InterestListener for PushInterest {
    fn interest_changed(&self, change: &crate::account::InterestChange<'_>) {
        if change.count == 0 {
            return;
        }
        for (subject, c) in self.consumers.read().iter() {
            if crate::subject::matches(change.subject, subject.as_bytes()) {
                if let Some(c) = c.upgrade() {
                    c.notify();
                }
            }
        }
    }
}

/// Takes acks and flow control replies for one consumer.
struct AckSink {
    consumer: Weak<Consumer>,
}

impl InternalSink for AckSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        let Some(c) = self.consumer.upgrade() else { return true };
        if msg.subject.starts_with(b"$JS.FC.") {
            c.on_flow_control(msg.subject);
            return true;
        }
        let body = &msg.payload[msg.header_len.min(msg.payload.len())..];
        c.on_ack(msg.subject, body, msg.reply);
        true
    }

    fn flush(&self) {
        // The end of a batch of acks: what they finished leaves the stream with one write.
        if let Some(stream) = self.consumer.upgrade().and_then(|c| c.stream.upgrade()) {
            stream.apply_removals();
        }
    }

    fn name(&self) -> &str {
        "consumer acks"
    }
}

/// Where a consumer starts in `store`, for its deliver policy: (next sequence, the
/// last-per-subject sequences to send first).
pub(crate) fn starting_point(cfg: &ConsumerConfig, store: &super::store::Store) -> (u64, VecDeque<u64>) {
    let st = store.state();
    let filters = cfg.filters();
    let first = st.first_seq.max(1);
    let start = match cfg.deliver_policy {
        DeliverPolicy::All => first,
        DeliverPolicy::Last => {
            let last = if filters.is_empty() {
                st.last_seq
            } else {
                filters.iter().filter_map(|f| store.load_last(f).ok().map(|m| m.seq)).max().unwrap_or(st.last_seq + 1)
            };
            last.max(first)
        }
        DeliverPolicy::New => st.last_seq + 1,
        DeliverPolicy::ByStartSequence => cfg.opt_start_seq,
        DeliverPolicy::ByStartTime => {
            let ts = cfg.opt_start_time.as_deref().and_then(crate::format::parse_rfc3339_nanos).unwrap_or(0);
            store.first_at_or_after(ts).unwrap_or(st.last_seq + 1)
        }
        DeliverPolicy::LastPerSubject => {
            let list: VecDeque<u64> = store.last_per_subject(&filters).into();
            return (st.last_seq + 1, list);
        }
    };
    (start.max(1), VecDeque::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_a_burst_go_then_paces_at_the_rate() {
        let mut b = None;
        // 8 Mbit/s = 1 byte per microsecond; the bucket starts full (1 MiB).
        assert_eq!(bucket_wait(&mut b, 8_000_000, RATE_BURST, 0), None);
        let due = bucket_wait(&mut b, 8_000_000, 1000, 0).expect("empty bucket waits");
        assert_eq!(due, 1_000_000, "1000 bytes at 1 byte/µs");
        assert_eq!(bucket_wait(&mut b, 8_000_000, 1000, due), None);
        assert!(bucket_wait(&mut b, 8_000_000, 1, due).is_some());
    }

    #[test]
    fn backoff_picks_the_wait_for_each_redelivery() {
        let cfg = ConsumerConfig { ack_wait: 30, backoff: vec![1, 5, 9], ..Default::default() };
        let waits: Vec<i64> = (1..=5).map(|d| Consumer::wait_for(&cfg, d)).collect();
        assert_eq!(waits, vec![1, 5, 9, 9, 9]);
        let plain = ConsumerConfig { ack_wait: 30, ..Default::default() };
        assert_eq!(Consumer::wait_for(&plain, 3), 30);
    }
}
