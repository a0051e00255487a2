//! One stream: it takes the messages published to its subjects (as an internal consumer of the
//! account), checks them as nats-server does, stores them and acknowledges them.
//!
//! Publishes are handled on the publisher's task: each one is checked and handed to the store,
//! which buffers it, and its acknowledgement is queued. When the publisher has handed over its
//! whole read it calls [`InternalSink::flush`]: the store writes everything with one write,
//! and only then do the acknowledgements go out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tracing::warn;

use super::api::errors::ApiError;
use super::api::types::{Retention, Storage, StreamConfig, StreamInfo, StreamState};
use super::consumer::Consumer;
use super::headers;
use super::limits::AccountTally;
use super::store::file::SnapshotJob;
use super::store::record;
use super::store::{Store, StoreError, StoreState};
use super::Shared;
use crate::account::{Account, Removal};
use crate::delivery::{InternalSink, Message, Subscription, Target};
use crate::format::{now_nanos, rfc3339_nanos};

/// Most message ids one stream remembers; past it the oldest are forgotten early, so that a
/// stream under a flood of unique ids keeps a bounded dedupe table.
pub const MAX_DEDUPE_IDS: usize = 500_000;

/// The message ids seen within the duplicate window.
#[derive(Default)]
struct Dedupe {
    ids: HashMap<String, u64>,
    /// (time stored, id), oldest first.
    order: VecDeque<(i64, String)>,
}

impl Dedupe {
    fn get(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    fn insert(&mut self, id: &str, seq: u64, ts: i64) {
        if self.ids.insert(id.to_string(), seq).is_none() {
            self.order.push_back((ts, id.to_string()));
        }
        while self.order.len() > MAX_DEDUPE_IDS {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.ids.remove(&id);
        }
    }

    /// Every id with its sequence and time, oldest first.
    fn entries(&self) -> Vec<(u64, i64, &str)> {
        self.order.iter().filter_map(|(ts, id)| Some((*self.ids.get(id.as_str())?, *ts, id.as_str()))).collect()
    }

    /// Forgets ids stored before `before`.
    fn expire(&mut self, before: i64) {
        while self.order.front().is_some_and(|(ts, _)| *ts < before) {
            self.pop_oldest();
        }
        if self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }
}

/// What a stream holds behind its lock.
struct Inner {
    config: StreamConfig,
    created: i64,
    store: Option<Store>,
    dedupe: Dedupe,
    /// The Nats-Msg-Id of the last stored message.
    last_msg_id: String,
    /// Acknowledgements waiting for the store to write: (reply subject, body).
    acks: Vec<(Vec<u8>, Vec<u8>)>,
    /// The start of `{"stream":"<name>", "seq":`.
    ack_prefix: Vec<u8>,
    /// Its subscriptions to its subjects.
    subs: Vec<Arc<Subscription>>,
    /// Its subscriptions for direct get.
    direct: Vec<Arc<Subscription>>,
    /// Bytes the store held at the last usage report.
    reported_bytes: u64,
}

/// One stream.
pub struct Stream {
    name: String,
    shared: Arc<Shared>,
    /// Its account's JetStream limits and usage.
    tally: Arc<AccountTally>,
    account: Arc<Account>,
    /// Where its files are (file storage).
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Its consumers, by name. Never locked while a consumer's lock is wanted by the holder.
    consumers: RwLock<BTreeMap<String, Arc<Consumer>>>,
    /// Counts removals other than by acks (deletes, purges, limits, expiry), so that
    /// consumers know to count their lag again.
    removals: AtomicU64,
    /// Messages were stored that the consumers have not been told of.
    unannounced: AtomicBool,
    /// Messages consumers are done with (workqueue and interest retention), removed at the
    /// end of the batch of acks they came in.
    unremoved: Mutex<Vec<u64>>,
}

fn ack_prefix(name: &str) -> Vec<u8> {
    format!("{{\"stream\":{}, \"seq\":", serde_json::to_string(name).unwrap_or_default()).into_bytes()
}

/// A PubAck with an error, as nats-server marshals it.
pub(crate) fn error_ack(stream: &str, err: &ApiError) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct ErrorAck<'a> {
        error: &'a ApiError,
        stream: &'a str,
        seq: u64,
    }
    super::api::go_json(&ErrorAck { error: err, stream, seq: 0 })
}

impl Stream {
    /// A stream over `store`, not yet subscribed.
    pub(crate) fn new(
        shared: Arc<Shared>,
        tally: Arc<AccountTally>,
        account: Arc<Account>,
        dir: PathBuf,
        config: StreamConfig,
        created: i64,
        mut store: Store,
    ) -> Arc<Stream> {
        let mut dedupe = Dedupe::default();
        let since = now_nanos() - config.duplicate_window;
        for (seq, ts, id) in store.take_recovered_ids() {
            if ts >= since {
                dedupe.insert(&id, seq, ts);
            }
        }
        let reported_bytes = store.state().bytes;
        tally.add_usage(config.storage, reported_bytes as i64);
        let inner = Inner {
            ack_prefix: ack_prefix(&config.name),
            config,
            created,
            store: Some(store),
            dedupe,
            last_msg_id: String::new(),
            acks: Vec::new(),
            subs: Vec::new(),
            direct: Vec::new(),
            reported_bytes,
        };
        let name = inner.config.name.clone();
        Arc::new(Stream {
            name,
            shared,
            tally,
            account,
            dir,
            inner: Mutex::new(inner),
            consumers: RwLock::new(BTreeMap::new()),
            removals: AtomicU64::new(0),
            unannounced: AtomicBool::new(false),
            unremoved: Mutex::new(Vec::new()),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its files are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Its configuration.
    pub fn config(&self) -> StreamConfig {
        self.inner.lock().config.clone()
    }

    /// Subscribes to its subjects (and to direct get, when allowed).
    pub(crate) fn subscribe(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        self.subscribe_locked(&mut inner);
    }

    fn subscribe_locked(self: &Arc<Self>, inner: &mut Inner) {
        for sub in inner.subs.drain(..).chain(inner.direct.drain(..)) {
            self.account.remove_subscription(&sub, Removal::Owner);
        }
        let target: Arc<dyn InternalSink> = Arc::clone(self) as Arc<dyn InternalSink>;
        for subject in &inner.config.subjects {
            let sub = Arc::new(Subscription::new(Target::Internal(Arc::clone(&target)), subject.as_bytes(), None, b""));
            self.account.add_subscription(Arc::clone(&sub));
            inner.subs.push(sub);
        }
        if inner.config.allow_direct {
            let direct: Arc<dyn InternalSink> = Arc::new(DirectGet { stream: Arc::downgrade(self) });
            for subject in [format!("$JS.API.DIRECT.GET.{}", self.name), format!("$JS.API.DIRECT.GET.{}.>", self.name)]
            {
                let target = Target::Internal(Arc::clone(&direct));
                let sub = Arc::new(Subscription::new(target, subject.as_bytes(), Some(b"_sys_"), b""));
                self.account.add_subscription(Arc::clone(&sub));
                inner.direct.push(sub);
            }
        }
    }

    /// Unsubscribes, deletes its files, and gives its usage back.
    pub(crate) fn delete(&self) -> Result<(), StoreError> {
        let consumers = std::mem::take(&mut *self.consumers.write());
        for c in consumers.values() {
            c.delete();
        }
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        for sub in inner.subs.drain(..).chain(inner.direct.drain(..)) {
            self.account.remove_subscription(&sub, Removal::Owner);
        }
        self.tally.add_usage(inner.config.storage, -(inner.reported_bytes as i64));
        self.tally.add_reserved(inner.config.storage, -reservation(&inner.config));
        inner.reported_bytes = 0;
        inner.acks.clear();
        match inner.store.take() {
            Some(store) => store.delete(),
            None => Ok(()),
        }
    }

    /// Brings the usage figures up to date after the store changed.
    fn report_usage(&self, inner: &mut Inner) {
        let Some(store) = &inner.store else { return };
        let bytes = store.state().bytes;
        if bytes != inner.reported_bytes {
            self.tally.add_usage(inner.config.storage, bytes as i64 - inner.reported_bytes as i64);
            inner.reported_bytes = bytes;
        }
    }

    /// Handles one message published to the stream's subjects.
    fn on_publish(&self, msg: &Message<'_>) {
        let mut inner = self.inner.lock();
        let reply = msg.reply.filter(|r| !r.is_empty());
        let can_respond = !inner.config.no_ack && reply.is_some();
        if inner.config.sealed {
            // As nats-server: said even to a stream without acks.
            if let Some(r) = reply {
                let body = error_ack(&self.name, &ApiError::stream_sealed());
                inner.acks.push((r.to_vec(), body));
            }
            return;
        }
        let (hdr, data) = msg.payload.split_at(msg.header_len.min(msg.payload.len()));
        let subject = String::from_utf8_lossy(msg.subject);
        let outcome = self.store_checked(&mut inner, &subject, hdr, data);
        self.report_usage(&mut inner);
        let body = match outcome {
            Outcome::Stored(seq) | Outcome::Skipped(seq) => {
                let mut b = inner.ack_prefix.clone();
                b.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                b.push(b'}');
                b
            }
            Outcome::Duplicate(seq) => {
                let mut b = inner.ack_prefix.clone();
                b.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                b.extend_from_slice(b",\"duplicate\": true}");
                b
            }
            Outcome::Refused(err) => error_ack(&self.name, &err),
            Outcome::Dropped => return,
        };
        if can_respond {
            if let Some(r) = reply {
                inner.acks.push((r.to_vec(), body));
            }
        }
    }

    /// nats-server's checks on a publish, in its order, then the store.
    fn store_checked(&self, inner: &mut Inner, subject: &str, hdr: &[u8], data: &[u8]) -> Outcome {
        let mut msg_id: Option<&str> = None;
        let mut rollup: Option<bool> = None;
        if !hdr.is_empty() {
            if let Some(expected) = headers::get(hdr, "Nats-Expected-Stream").filter(|v| !v.is_empty()) {
                if expected != self.name.as_bytes() {
                    return Outcome::Refused(ApiError::stream_not_match());
                }
            }
            msg_id = headers::get_str(hdr, "Nats-Msg-Id").filter(|v| !v.is_empty());
            if let Some(id) = msg_id {
                if let Some(seq) = inner.dedupe.get(id) {
                    return Outcome::Duplicate(seq);
                }
            }
            let Some(store) = inner.store.as_ref() else { return Outcome::Dropped };
            if let Some(v) = headers::get(hdr, "Nats-Expected-Last-Subject-Sequence") {
                let want = headers::parse_i64(v);
                let have = store.last_seq_for(subject).unwrap_or(0);
                if want != have as i64 {
                    return Outcome::Refused(ApiError::wrong_last_sequence(have));
                }
            }
            if let Some(v) = headers::get(hdr, "Nats-Expected-Last-Sequence") {
                let last = store.state().last_seq;
                if headers::parse_i64(v) != last as i64 {
                    return Outcome::Refused(ApiError::wrong_last_sequence(last));
                }
            }
            if let Some(v) = headers::get(hdr, "Nats-Expected-Last-Msg-Id") {
                if v != inner.last_msg_id.as_bytes() {
                    return Outcome::Refused(ApiError::wrong_last_msg_id(&inner.last_msg_id));
                }
            }
            if let Some(v) = headers::get(hdr, "Nats-Rollup") {
                if !inner.config.allow_rollup_hdrs || inner.config.deny_purge {
                    return Outcome::Refused(ApiError::rollup_failed("rollup not permitted"));
                }
                match v.to_ascii_lowercase().as_slice() {
                    b"sub" => rollup = Some(false),
                    b"all" => rollup = Some(true),
                    // As nats-server: refused without a word.
                    _ => return Outcome::Dropped,
                }
            }
        }
        let max = inner.config.max_msg_size;
        if max >= 0 && hdr.len() + data.len() > max as usize {
            return Outcome::Refused(ApiError::message_exceeds_maximum());
        }
        if hdr.len() > usize::from(u16::MAX) {
            return Outcome::Refused(ApiError::header_exceeds_maximum());
        }
        if let Some(e) =
            self.tally.refuses_message(inner.config.storage, record::message_len(subject.as_bytes(), hdr, data))
        {
            return Outcome::Refused(e);
        }
        let Some(store) = inner.store.as_mut() else { return Outcome::Dropped };
        if super::config::drops_without_interest(&inner.config) && !self.has_interest_in(subject) {
            // No consumer wants this subject: the sequence is used, nothing kept.
            let seq = store.skip();
            if let Some(id) = msg_id {
                inner.dedupe.insert(id, 0, now_nanos());
            }
            return Outcome::Skipped(seq);
        }
        let ts = now_nanos();
        let before = store.state();
        let seq = match store.store(subject, hdr, data, ts) {
            Ok(seq) => seq,
            Err(e) => return Outcome::Refused(ApiError::store_failed(e)),
        };
        self.unannounced.store(true, Ordering::Release);
        let after = store.state();
        if after.msgs <= before.msgs || after.first_seq != before.first_seq {
            // A limit made room: consumers count their lag again.
            self.removals.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(id) = msg_id {
            inner.dedupe.insert(id, seq, ts);
        }
        inner.last_msg_id = msg_id.unwrap_or_default().to_string();
        if let Some(all) = rollup {
            let filter = (!all).then_some(subject);
            let _ = store.purge(filter, 0, 1);
        }
        Outcome::Stored(seq)
    }

    /// Stores a message the server keeps for itself (an MQTT device's QoS 1 publish, session
    /// or retained message) with a publish's checks, written before its sequence is returned.
    pub(crate) fn append(&self, subject: &str, hdr: &[u8], data: &[u8]) -> Result<u64, ApiError> {
        let outcome = {
            let mut inner = self.inner.lock();
            if inner.config.sealed {
                return Err(ApiError::stream_sealed());
            }
            let outcome = self.store_checked(&mut inner, subject, hdr, data);
            self.report_usage(&mut inner);
            outcome
        };
        self.flush_now();
        match outcome {
            Outcome::Stored(seq) | Outcome::Skipped(seq) | Outcome::Duplicate(seq) => Ok(seq),
            Outcome::Refused(e) => Err(e),
            Outcome::Dropped => Err(ApiError::stream_not_found()),
        }
    }

    /// Removes every message on `subject` (an MQTT session ended, a retained message cleared).
    pub(crate) fn purge_subject(self: &Arc<Self>, subject: &str) {
        let purged = self.with_store(|store, _| store.purge(Some(subject), 0, 0).unwrap_or(0)).unwrap_or(0);
        if purged > 0 {
            self.removed_messages();
        }
    }

    /// Writes what was stored and sends the acknowledgements waiting for it.
    pub(crate) fn flush_now(&self) {
        let acks = {
            let mut inner = self.inner.lock();
            let mut acks = std::mem::take(&mut inner.acks);
            if let Some(store) = inner.store.as_mut() {
                if let Err(e) = store.flush() {
                    warn!("stream {}: writing to its store failed: {e}", self.name);
                    // Nothing that was not written is acknowledged.
                    let err = error_ack(&self.name, &ApiError::store_failed(&e));
                    for (_, body) in acks.iter_mut() {
                        if !body.starts_with(b"{\"error\"") {
                            *body = err.clone();
                        }
                    }
                }
            }
            acks
        };
        for (reply, body) in acks {
            let m = Message { subject: &reply, reply: None, header_len: 0, payload: &body };
            self.shared.publisher.publish(&self.account, &m);
        }
        if self.unannounced.swap(false, Ordering::AcqRel) {
            self.notify_consumers();
        }
    }

    /// Wakes every consumer: there may be new messages.
    pub(crate) fn notify_consumers(&self) {
        for c in self.consumers.read().values() {
            c.notify();
        }
    }

    /// Runs `f` on the store, with pending writes flushed first; `None` once it is deleted.
    pub(crate) fn read_store<R>(&self, f: impl FnOnce(&Store) -> R) -> Option<R> {
        self.flush_now();
        let inner = self.inner.lock();
        inner.store.as_ref().map(f)
    }

    /// Removals other than by acks so far.
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Relaxed)
    }

    /// Its retention policy.
    pub(crate) fn retention(&self) -> Retention {
        self.inner.lock().config.retention
    }

    /// Its consumers, by name.
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.consumers.read().values().cloned().collect()
    }

    /// The consumer with this name.
    pub fn consumer(&self, name: &str) -> Option<Arc<Consumer>> {
        self.consumers.read().get(name).cloned()
    }

    /// How many consumers it has.
    pub fn consumer_count(&self) -> usize {
        self.consumers.read().len()
    }

    pub(crate) fn insert_consumer(&self, c: Arc<Consumer>) {
        self.consumers.write().insert(c.name().to_string(), c);
    }

    /// Removes a consumer (and its files); for interest retention, also the messages nobody
    /// else is interested in now.
    pub(crate) fn remove_consumer(&self, name: &str) -> bool {
        let Some(c) = self.consumers.write().remove(name) else { return false };
        c.delete();
        if self.retention() == Retention::Interest {
            let (first, last) = self.read_store(|s| (s.state().first_seq, s.state().last_seq)).unwrap_or((1, 0));
            let seqs: Vec<u64> = (first..=last).collect();
            self.consumer_acked(&seqs, &c);
            self.apply_removals();
        }
        true
    }

    /// Whether some consumer takes messages on `subject` (interest retention).
    fn has_interest_in(&self, subject: &str) -> bool {
        self.consumers.read().values().any(|c| c.wants_subject(subject))
    }

    /// `by` is done with `seqs` (acked, or delivered without acks): a workqueue removes them,
    /// an interest stream removes those no other consumer still needs.
    pub(crate) fn consumer_acked(&self, seqs: &[u64], by: &Consumer) {
        let retention = self.retention();
        if retention == Retention::Limits {
            return;
        }
        let others: Vec<Arc<Consumer>> =
            self.consumers.read().values().filter(|c| !std::ptr::eq(Arc::as_ptr(c), by)).cloned().collect();
        let mut gone = Vec::with_capacity(seqs.len());
        if retention == Retention::Interest && !others.is_empty() {
            let subjects =
                self.read_store(|s| seqs.iter().map(|&q| s.subject_of(q)).collect::<Vec<_>>()).unwrap_or_default();
            for (&seq, subject) in seqs.iter().zip(subjects) {
                let Some(subject) = subject else { continue };
                if !others.iter().any(|c| c.needs(seq, &subject)) {
                    gone.push(seq);
                }
            }
        } else {
            gone.extend_from_slice(seqs);
        }
        if !gone.is_empty() {
            self.unremoved.lock().extend(gone);
        }
    }

    /// Removes what consumers were done with since the last call, with one write: called once
    /// per batch of acks.
    pub(crate) fn apply_removals(&self) {
        let gone = std::mem::take(&mut *self.unremoved.lock());
        if gone.is_empty() {
            return;
        }
        self.flush_now();
        let mut inner = self.inner.lock();
        if let Some(store) = inner.store.as_mut() {
            for seq in gone {
                let _ = store.remove(seq, false);
            }
            let _ = store.flush();
        }
        self.report_usage(&mut inner);
    }

    /// The stream removed messages (a delete, a purge): consumers forget the pending ones
    /// that are gone.
    pub(crate) fn removed_messages(self: &Arc<Self>) {
        self.removals.fetch_add(1, Ordering::Relaxed);
        let first = self.read_store(|s| s.state().first_seq).unwrap_or(0);
        for c in self.consumers() {
            let me = Arc::clone(self);
            c.stream_removed(move |seq| me.read_store(|s| s.subject_of(seq).is_some()).unwrap_or(false), first);
        }
    }

    /// Runs `f` on the store and the config, with pending writes flushed first.
    pub(crate) fn with_store<R>(&self, f: impl FnOnce(&mut Store, &StreamConfig) -> R) -> Option<R> {
        self.flush_now();
        let mut inner = self.inner.lock();
        let Inner { store, config, .. } = &mut *inner;
        let store = store.as_mut()?;
        let r = f(store, config);
        self.report_usage(&mut inner);
        Some(r)
    }

    /// The info nats-server returns for the stream.
    pub fn info(&self, deleted_details: bool, subjects_filter: Option<&str>) -> Option<(StreamInfo, usize)> {
        self.flush_now();
        let inner = self.inner.lock();
        let store = inner.store.as_ref()?;
        let st = store.state();
        let mut state = state_json(&st);
        state.consumer_count = self.consumers.read().len() as u64;
        if deleted_details {
            state.deleted = Some(store.deleted()).filter(|d| !d.is_empty());
        }
        let mut total = 0;
        if let Some(filter) = subjects_filter.filter(|f| !f.is_empty()) {
            let subjects = store.subjects(filter);
            total = subjects.len();
            if !subjects.is_empty() {
                state.subjects = Some(subjects.into_iter().collect());
            }
        }
        Some((StreamInfo { config: inner.config.clone(), created: rfc3339_nanos(inner.created), state }, total))
    }

    /// Applies a checked configuration update.
    pub(crate) fn update(self: &Arc<Self>, cfg: StreamConfig) -> Result<(), ApiError> {
        self.flush_now();
        let mut inner = self.inner.lock();
        let before = reservation(&inner.config);
        let resubscribe = inner.config.subjects != cfg.subjects || inner.config.allow_direct != cfg.allow_direct;
        if cfg.duplicate_window != inner.config.duplicate_window {
            inner.dedupe.expire(now_nanos() - cfg.duplicate_window);
        }
        if let Some(store) = inner.store.as_mut() {
            store.set_limits(super::config::limits(&cfg));
            let _ = store.flush();
        }
        self.tally.add_reserved(cfg.storage, reservation(&cfg) - before);
        inner.ack_prefix = ack_prefix(&cfg.name);
        inner.config = cfg;
        self.report_usage(&mut inner);
        if resubscribe {
            self.subscribe_locked(&mut inner);
        }
        drop(inner);
        self.save_meta().map_err(ApiError::stream_update)
    }

    /// Housekeeping: expires old messages and dedupe ids, rewrites a mostly-removed segment;
    /// returns an index snapshot to write when one is due.
    pub(crate) fn tick(&self, now: i64) -> Option<SnapshotJob> {
        let mut inner = self.inner.lock();
        let window = inner.config.duplicate_window;
        inner.dedupe.expire(now - window);
        if let Some(store) = inner.store.as_mut() {
            if store.expire(now) > 0 {
                self.removals.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = store.compact_some() {
                warn!("stream {}: compacting its store failed: {e}", self.name);
            }
            if let Err(e) = store.flush() {
                warn!("stream {}: writing to its store failed: {e}", self.name);
            }
        }
        self.report_usage(&mut inner);
        self.snapshot_locked(&mut inner, false)
    }

    /// An index snapshot of the store, when one is due (`force`: whenever anything changed).
    pub(crate) fn snapshot(&self, force: bool) -> Option<SnapshotJob> {
        self.snapshot_locked(&mut self.inner.lock(), force)
    }

    fn snapshot_locked(&self, inner: &mut Inner, force: bool) -> Option<SnapshotJob> {
        let Inner { store, dedupe, .. } = inner;
        let store = store.as_mut()?;
        let ids = dedupe.entries();
        match store.snapshot(force, &ids) {
            Ok(job) => job,
            Err(e) => {
                warn!("stream {}: writing to its store failed: {e}", self.name);
                None
            }
        }
    }

    /// Files written since the last sync.
    pub(crate) fn files_to_sync(&self) -> Vec<Arc<std::fs::File>> {
        self.inner.lock().store.as_mut().map(Store::files_to_sync).unwrap_or_default()
    }

    /// Writes `meta.json` (configuration and creation time) for a file stream.
    pub(crate) fn save_meta(&self) -> std::io::Result<()> {
        let inner = self.inner.lock();
        if inner.config.storage != Storage::File {
            return Ok(());
        }
        super::meta::save(&self.dir, &inner.config, inner.created)
    }
}

/// What a publish came to.
enum Outcome {
    Stored(u64),
    Skipped(u64),
    Duplicate(u64),
    Refused(ApiError),
    /// Refused without a reply.
    Dropped,
}

/// The state as the API shows it.
pub(crate) fn state_json(st: &StoreState) -> StreamState {
    StreamState {
        messages: st.msgs,
        bytes: st.bytes,
        first_seq: st.first_seq,
        first_ts: rfc3339_nanos(st.first_ts),
        last_seq: st.last_seq,
        last_ts: rfc3339_nanos(st.last_ts),
        num_subjects: st.num_subjects,
        subjects: None,
        num_deleted: st.num_deleted,
        deleted: None,
        consumer_count: 0,
    }
}

/// The bytes a stream reserves against the server's limits: its max_bytes, or 1 when unlimited.
pub(crate) fn reservation(cfg: &StreamConfig) -> i64 {
    if cfg.max_bytes > 0 {
        cfg.max_bytes
    } else {
        1
    }
}

impl InternalSink for Stream {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        self.on_publish(msg);
        true
    }

    fn flush(&self) {
        self.flush_now();
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Answers `$JS.API.DIRECT.GET.<stream>[.<subject>]` for a stream that allows it.
struct DirectGet {
    stream: Weak<Stream>,
}

impl InternalSink for DirectGet {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        let (Some(stream), Some(reply)) = (self.stream.upgrade(), msg.reply.filter(|r| !r.is_empty())) else {
            return true;
        };
        let (hdr, body) = super::api::direct_get(&stream, msg);
        let hlen = hdr.len();
        let mut payload = hdr;
        payload.extend_from_slice(&body);
        let m = Message { subject: reply, reply: None, header_len: hlen, payload: &payload };
        stream.shared.publisher.publish(&stream.account, &m);
        true
    }

    fn name(&self) -> &str {
        "direct get"
    }
}
