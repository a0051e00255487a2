//! JetStream: streams that keep the messages published to their subjects, on the NATS
//! JetStream API that the official clients speak.
//!
//! - [`store`]: where a stream's messages live (memory, or checksummed segment files), with the
//!   limits both apply.
//! - [`stream`]: one stream: it is an internal consumer of its account's subjects, checks each
//!   publish as nats-server does, stores it and acknowledges it once written.
//! - [`consumer`]: consumers: delivery at least once, acks, redelivery, pull requests, dead
//!   letters.
//! - [`api`]: the `$JS.API` handlers and their JSON.
//! - [`config`]: stream configuration defaults and validation.
//! - [`meta`]: a file stream's configuration on disk.
//! - [`headers`]: NATS header blocks as JetStream reads and writes them.
//!
//! On disk, as nats-server: `<store_dir>/jetstream/<account>/streams/<stream>/`.

pub mod api;
pub mod config;
pub mod consumer;
pub mod headers;
pub mod limits;
pub mod meta;
pub mod store;
pub mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxBuildHasher;
use tracing::{error, info, warn};

use self::api::errors::ApiError;
use self::api::types::{Retention, Storage, StreamConfig};
use self::consumer::config::ConsumerConfig;
use self::consumer::Consumer;
use self::store::{FileStore, MemoryStore, Store};
use self::stream::Stream;
use crate::account::Account;
use crate::delivery::{InternalSink, Message, Subscription, Target};
use crate::format::now_nanos;
use crate::options::{JetStreamOptions, SyncInterval};
use crate::publish::InternalPublisher;
use crate::state::ServerState;

/// How often expiry, dedupe pruning and compaction run.
const TICK: Duration = Duration::from_millis(250);

/// What every stream of the server shares.
pub struct Shared {
    /// Publishes acknowledgements, API answers and direct-get replies.
    pub(crate) publisher: InternalPublisher,
    /// `<store_dir>/jetstream`.
    root: PathBuf,
    /// What memory and file streams may hold in all, hold, and reserve.
    budget: Arc<limits::Budget>,
    /// fsync before acknowledging.
    sync_always: bool,
    /// How often to fsync otherwise.
    sync_interval: Duration,
}

/// JetStream in one account: its streams and its API.
pub struct JsAccount {
    account: Arc<Account>,
    shared: Arc<Shared>,
    /// Where its streams' directories are.
    dir: PathBuf,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serialises creates, updates and deletes.
    admin: Mutex<()>,
    api_total: AtomicU64,
    api_errors: AtomicU64,
    /// Wakes push consumers when their deliver subjects gain subscribers.
    push_interest: Arc<consumer::PushInterest>,
    /// Its limits and usage.
    tally: Arc<limits::AccountTally>,
}

impl JsAccount {
    /// The account's name.
    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// The stream with this name.
    pub fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().get(name).cloned()
    }

    /// Every stream, by name.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams.read().values().cloned().collect()
    }

    /// Its limits.
    pub fn limits(&self) -> limits::JetStreamAccountLimits {
        self.tally.limits
    }

    /// How many streams there are.
    pub fn stream_count(&self) -> usize {
        self.streams.read().len()
    }

    /// How many consumers its streams have.
    pub fn consumer_count(&self) -> usize {
        self.streams().iter().map(|s| s.consumer_count()).sum()
    }

    /// Adds a consumer to `stream`, or updates the one of that name as nats-server allows.
    pub(crate) fn add_consumer(
        &self,
        stream: &Arc<Stream>,
        cfg: ConsumerConfig,
        action: consumer::Action,
    ) -> Result<Arc<Consumer>, ApiError> {
        let scfg = stream.config();
        let cfg = consumer::config::with_defaults(cfg);
        consumer::config::check(&cfg, &scfg)?;
        let _admin = self.admin.lock();
        let name = if cfg.durable.is_empty() { cfg.name.clone() } else { cfg.durable.clone() };
        if let Some(existing) = stream.consumer(&name) {
            let old = existing.config();
            if action == consumer::Action::Create && old != cfg {
                return Err(ApiError::new(400, 10148, "consumer already exists"));
            }
            let bound = !old.deliver_subject.is_empty() && {
                let m = self.account.sublist.matches(old.deliver_subject.as_bytes());
                !m.psubs.is_empty() || !m.qsubs.is_empty()
            };
            consumer::config::check_update(&old, &cfg, bound)?;
            if old != cfg {
                existing.update(cfg);
            }
            return Ok(existing);
        }
        if action == consumer::Action::Update {
            return Err(ApiError::new(400, 10149, "consumer does not exist"));
        }
        if scfg.max_consumers > 0 && stream.consumer_count() as i64 >= scfg.max_consumers {
            return Err(ApiError::new(400, 10026, "maximum consumers limit reached"));
        }
        self.tally.allows_consumer(stream.consumer_count())?;
        if scfg.retention == Retention::WorkQueue {
            if cfg.ack_policy != consumer::config::AckPolicy::Explicit {
                return Err(ApiError::new(400, 10098, "workqueue stream requires explicit ack"));
            }
            let others = stream.consumers();
            if !others.is_empty() {
                let mine = cfg.filters();
                if mine.is_empty() {
                    return Err(ApiError::new(
                        400,
                        10099,
                        "multiple non-filtered consumers not allowed on workqueue stream",
                    ));
                }
                let overlaps = others.iter().any(|o| {
                    let theirs = o.filters();
                    theirs.is_empty() || mine.iter().any(|a| theirs.iter().any(|b| config::subjects_collide(a, b)))
                });
                if overlaps {
                    return Err(ApiError::new(400, 10100, "filtered consumer not unique on workqueue stream"));
                }
            }
            if cfg.deliver_policy != consumer::config::DeliverPolicy::All {
                return Err(ApiError::new(400, 10101, "consumer must be deliver all on workqueue stream"));
            }
        }
        let name = if name.is_empty() { self.ephemeral_name(stream) } else { name };
        let Some((start, skip_list)) = stream.read_store(|s| consumer::starting_point(&cfg, s)) else {
            return Err(ApiError::stream_not_found());
        };
        let durable = !cfg.durable.is_empty();
        let dir = (durable && scfg.storage == Storage::File && !cfg.memory_storage)
            .then(|| stream.dir().join("obs").join(&name));
        let spec = consumer::Spec {
            name,
            config: cfg,
            created: now_nanos(),
            state: consumer::state::DeliveryState::starting_at(start),
            skip_list,
            dir,
        };
        let c = Consumer::start(stream, Arc::clone(&self.shared), Arc::clone(&self.account), spec);
        self.watch_push(&c);
        c.save_meta();
        c.save();
        stream.insert_consumer(Arc::clone(&c));
        self.consumer_advisory(stream.name(), c.name(), "create");
        Ok(c)
    }

    /// Has a push consumer woken when its deliver subject gains subscribers.
    fn watch_push(&self, c: &Arc<Consumer>) {
        let cfg = c.config();
        if !cfg.deliver_subject.is_empty() {
            self.push_interest.watch(&self.account, &cfg.deliver_subject, c);
        }
    }

    /// A random name no consumer of `stream` has, as nats-server makes for ephemerals.
    fn ephemeral_name(&self, stream: &Stream) -> String {
        loop {
            let name = crate::nuid::random(8);
            if stream.consumer(&name).is_none() {
                return name;
            }
        }
    }

    /// Deletes a consumer; false when there is none of that name.
    pub(crate) fn delete_consumer(&self, stream: &Arc<Stream>, name: &str) -> bool {
        let _admin = self.admin.lock();
        if !stream.remove_consumer(name) {
            return false;
        }
        self.consumer_advisory(stream.name(), name, "delete");
        true
    }

    /// `$JS.EVENT.ADVISORY.CONSUMER.CREATED|DELETED.<stream>.<consumer>`.
    fn consumer_advisory(&self, stream: &str, consumer: &str, action: &str) {
        self.action_advisory(stream, Some(consumer), action);
    }

    /// `$JS.EVENT.ADVISORY.STREAM.CREATED|UPDATED|DELETED.<stream>`.
    fn stream_advisory(&self, stream: &str, action: &str) {
        self.action_advisory(stream, None, action);
    }

    /// A stream or consumer action advisory, as nats-server publishes them.
    fn action_advisory(&self, stream: &str, consumer: Option<&str>, action: &str) {
        #[derive(serde::Serialize)]
        struct Action<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            id: String,
            timestamp: String,
            stream: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            consumer: Option<&'a str>,
            action: &'a str,
        }
        let what = match action {
            "create" => "CREATED",
            "modify" => "UPDATED",
            _ => "DELETED",
        };
        let (subject, kind) = match consumer {
            Some(c) => (
                format!("$JS.EVENT.ADVISORY.CONSUMER.{what}.{stream}.{c}"),
                "io.nats.jetstream.advisory.v1.consumer_action",
            ),
            None => {
                (format!("$JS.EVENT.ADVISORY.STREAM.{what}.{stream}"), "io.nats.jetstream.advisory.v1.stream_action")
            }
        };
        let body = api::go_json(&Action {
            kind,
            id: consumer::advisory_id(),
            timestamp: crate::format::rfc3339_nanos(now_nanos()),
            stream,
            consumer,
            action,
        });
        let m = Message { subject: subject.as_bytes(), reply: None, header_len: 0, payload: &body };
        self.shared.publisher.publish(&self.account, &m);
    }

    /// Opens the durable consumers found in `stream`'s directory.
    fn recover_consumers(&self, stream: &Arc<Stream>) {
        let Ok(entries) = std::fs::read_dir(stream.dir().join("obs")) else { return };
        let entries: Vec<_> = entries.flatten().collect();
        if !entries.is_empty() {
            info!("  Recovering {} consumers for stream - '{} > {}'", entries.len(), self.account.name, stream.name());
        }
        for entry in entries {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let loaded = match consumer::persist::load(&dir) {
                Ok(l) => l,
                Err(e) => {
                    error!("consumer in {} not loaded, its configuration is unreadable: {e}", dir.display());
                    continue;
                }
            };
            let name = loaded.config.durable.clone();
            if name.is_empty() {
                continue;
            }
            let (state, skip_list) = match loaded.state {
                Some(s) => (s.state, s.skip_list),
                None => {
                    warn!("consumer {} > {}: its state is missing or damaged; starting over", stream.name(), name);
                    let (start, skip) = stream
                        .read_store(|s| consumer::starting_point(&loaded.config, s))
                        .unwrap_or((1, Default::default()));
                    (consumer::state::DeliveryState::starting_at(start), skip)
                }
            };
            let spec = consumer::Spec {
                name,
                config: loaded.config,
                created: loaded.created,
                state,
                skip_list,
                dir: Some(dir),
            };
            let c = Consumer::start(stream, Arc::clone(&self.shared), Arc::clone(&self.account), spec);
            self.watch_push(&c);
            stream.insert_consumer(c);
        }
    }

    /// Memory and file bytes its streams hold.
    pub fn usage(&self) -> (u64, u64) {
        let mut mem = 0;
        let mut file = 0;
        for s in self.streams() {
            let (cfg, bytes) = (s.config(), s.info(false, None).map_or(0, |(i, _)| i.state.bytes));
            if cfg.storage == Storage::Memory {
                mem += bytes;
            } else {
                file += bytes;
            }
        }
        (mem, file)
    }

    /// API calls and errors so far.
    pub fn api_counts(&self) -> (u64, u64) {
        (self.api_total.load(Ordering::Relaxed), self.api_errors.load(Ordering::Relaxed))
    }

    fn stream_dir(&self, name: &str) -> PathBuf {
        self.dir.join("streams").join(name)
    }

    /// Opens the store a new or recovered stream (created at `created`) needs.
    fn open_store(&self, cfg: &StreamConfig, created: i64) -> Result<Store, store::StoreError> {
        let limits = config::limits(cfg);
        match cfg.storage {
            Storage::Memory => Ok(Store::Memory(MemoryStore::new(limits, cfg.first_seq))),
            _ => {
                let since = now_nanos() - cfg.duplicate_window;
                let dir = self.stream_dir(&cfg.name).join("msgs");
                Ok(Store::File(FileStore::open(&dir, limits, cfg.first_seq, self.shared.sync_always, since, created)?))
            }
        }
    }

    /// Creates a stream (or returns the existing one when its configuration is the same).
    pub(crate) fn create_stream(&self, cfg: StreamConfig) -> Result<Arc<Stream>, ApiError> {
        let cfg = config::check(&cfg)?;
        if cfg.num_replicas > 1 {
            return Err(ApiError::replicas_not_supported());
        }
        let _admin = self.admin.lock();
        if let Some(existing) = self.stream(&cfg.name) {
            return if existing.config() == cfg { Ok(existing) } else { Err(ApiError::stream_name_exists()) };
        }
        self.tally.allows_stream(self.stream_count())?;
        self.tally.fits(cfg.storage, stream::reservation(&cfg))?;
        self.check_overlap(&cfg, None)?;
        let created = now_nanos();
        let store = self.open_store(&cfg, created).map_err(|e| {
            error!("creating the store of stream {}: {e}", cfg.name);
            ApiError::stream_create("error creating store for stream")
        })?;
        let dir = self.stream_dir(&cfg.name);
        let s = Stream::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.tally),
            Arc::clone(&self.account),
            dir,
            cfg.clone(),
            created,
            store,
        );
        if let Err(e) = s.save_meta() {
            error!("writing the configuration of stream {}: {e}", cfg.name);
            let _ = s.delete();
            return Err(ApiError::stream_create("error creating store for stream"));
        }
        self.tally.add_reserved(cfg.storage, stream::reservation(&cfg));
        s.subscribe();
        self.streams.write().insert(cfg.name.clone(), Arc::clone(&s));
        self.stream_advisory(&cfg.name, "create");
        Ok(s)
    }

    /// Updates a stream's configuration (already checked with defaults).
    pub(crate) fn update_stream(&self, cfg: StreamConfig) -> Result<Arc<Stream>, ApiError> {
        let _admin = self.admin.lock();
        let Some(s) = self.stream(&cfg.name) else { return Err(ApiError::stream_not_found()) };
        let old = s.config();
        let cfg = config::check_update(&old, &cfg)?;
        self.check_overlap(&cfg, Some(&cfg.name))?;
        self.tally.fits(cfg.storage, stream::reservation(&cfg) - stream::reservation(&old))?;
        s.update(cfg)?;
        self.stream_advisory(s.name(), "modify");
        Ok(s)
    }

    /// Deletes a stream and its files.
    pub(crate) fn delete_stream(&self, name: &str) -> Result<(), ApiError> {
        let _admin = self.admin.lock();
        let Some(s) = self.streams.write().remove(name) else { return Err(ApiError::stream_not_found()) };
        s.delete().map_err(ApiError::stream_delete)?;
        self.stream_advisory(name, "delete");
        Ok(())
    }

    /// Refuses subjects that overlap another stream's.
    fn check_overlap(&self, cfg: &StreamConfig, except: Option<&str>) -> Result<(), ApiError> {
        for other in self.streams() {
            if Some(other.name()) == except {
                continue;
            }
            let theirs = other.config().subjects;
            if cfg.subjects.iter().any(|a| theirs.iter().any(|b| config::subjects_collide(a, b))) {
                return Err(ApiError::subject_overlap());
            }
        }
        Ok(())
    }

    /// Opens the streams found on disk. A stream whose files are damaged keeps what is good; a
    /// stream whose configuration cannot be read is left on disk, untouched, with an error.
    fn recover(&self) {
        let dir = self.dir.join("streams");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let (cfg, created) = match meta::load(&path) {
                Ok(m) => m,
                Err(e) => {
                    error!("stream in {} not loaded, its configuration is unreadable: {e}", path.display());
                    continue;
                }
            };
            let store = match self.open_store(&cfg, created) {
                Ok(s) => s,
                Err(e) => {
                    error!("stream {} not loaded: {e}", cfg.name);
                    continue;
                }
            };
            let s = Stream::new(
                Arc::clone(&self.shared),
                Arc::clone(&self.tally),
                Arc::clone(&self.account),
                path,
                cfg.clone(),
                created,
                store,
            );
            self.tally.add_reserved(cfg.storage, stream::reservation(&cfg));
            s.subscribe();
            let st = s.info(false, None).map(|(i, _)| i.state);
            info!(
                "  Restored {} messages for stream '{} > {}'",
                crate::format::comma(st.as_ref().map_or(0, |s| s.messages)),
                self.account.name,
                cfg.name
            );
            self.recover_consumers(&s);
            self.streams.write().insert(cfg.name.clone(), s);
        }
    }
}

impl InternalSink for JsAccount {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        if let Some(rest) = msg.subject.strip_prefix(b"$JS.API.CONSUMER.MSG.NEXT.") {
            // Answered by the consumer; one that does not exist has no responders, so that a
            // client pulling from a deleted consumer hears so at once.
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.splitn(2, '.');
            let (stream, consumer) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let Some(c) = self.stream(stream).and_then(|s| s.consumer(consumer)) else { return false };
            if let Some(reply) = msg.reply.filter(|r| !r.is_empty()) {
                c.pull_request(reply, &msg.payload[msg.header_len.min(msg.payload.len())..]);
            }
            return true;
        }
        if msg.subject.starts_with(b"$JS.API.DIRECT.GET.") {
            // Direct get is answered by the stream itself, when it allows it; otherwise nobody
            // answers and the requester gets no responders, as from nats-server.
            return false;
        }
        let Some(reply) = msg.reply.filter(|r| !r.is_empty()) else { return true };
        let subject = String::from_utf8_lossy(msg.subject);
        let body = &msg.payload[msg.header_len.min(msg.payload.len())..];
        let Some(answer) = api::handle(self, &subject, body) else { return true };
        if answer.counted {
            self.api_total.fetch_add(1, Ordering::Relaxed);
            if answer.error {
                self.api_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let m = Message { subject: reply, reply: None, header_len: 0, payload: &answer.body };
        self.shared.publisher.publish(&self.account, &m);
        true
    }

    fn name(&self) -> &str {
        "jetstream api"
    }
}

/// JetStream for the whole server.
pub struct JetStream {
    shared: Arc<Shared>,
    accounts: DashMap<String, Arc<JsAccount>, FxBuildHasher>,
    /// The API subscriptions, one per account.
    api_subs: Mutex<Vec<(Arc<Account>, Arc<Subscription>)>>,
}

/// 75% of the machine's memory, as nats-server's default for memory streams.
fn default_max_memory() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page > 0 {
        (pages * page) / 4 * 3
    } else {
        256 * 1024 * 1024
    }
}

/// 75% of the free disk under `dir`, as nats-server's default for file streams.
fn default_max_store(dir: &std::path::Path) -> i64 {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return 1 << 40 };
    // SAFETY: statvfs writes into the struct we pass and reads the NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) == 0 {
            return (st.f_bavail as i64).saturating_mul(st.f_frsize as i64) / 4 * 3;
        }
    }
    1 << 40
}

impl JetStream {
    /// Enables JetStream: makes the store directory, recovers the global account's streams
    /// and answers its API.
    pub fn start(state: &Arc<ServerState>, opts: &JetStreamOptions) -> std::io::Result<Arc<JetStream>> {
        let base = opts.store_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("nats"));
        let root = base.join("jetstream");
        std::fs::create_dir_all(&root)?;
        let (sync_always, sync_interval) = match opts.sync_interval {
            SyncInterval::Always => (true, Duration::from_secs(120)),
            SyncInterval::Every(d) => (false, d.max(Duration::from_millis(10))),
        };
        let shared = Arc::new(Shared {
            publisher: InternalPublisher::new(Arc::clone(state)),
            budget: Arc::new(limits::Budget::new(
                opts.max_memory.map_or_else(default_max_memory, |m| m as i64),
                opts.max_store.map_or_else(|| default_max_store(&root), |m| m as i64),
            )),
            root,
            sync_always,
            sync_interval,
        });
        info!("Starting JetStream");
        info!("    Max Memory:      {}", bytes_text(shared.budget.max(Storage::Memory)));
        info!("    Max Storage:     {}", bytes_text(shared.budget.max(Storage::File)));
        info!("    Store Directory: \"{}\"", shared.root.display());
        let js = Arc::new(JetStream {
            shared,
            accounts: DashMap::with_hasher(FxBuildHasher),
            api_subs: Mutex::new(Vec::new()),
        });
        js.enable(state.accounts.global());
        Ok(js)
    }

    /// Enables JetStream in `account` without limits of its own: its streams from disk, and
    /// its API.
    pub fn enable(&self, account: &Arc<Account>) -> Arc<JsAccount> {
        self.enable_with(account, limits::JetStreamAccountLimits::default())
    }

    /// Enables JetStream in `account` under `limits`.
    pub fn enable_with(&self, account: &Arc<Account>, limits: limits::JetStreamAccountLimits) -> Arc<JsAccount> {
        if let Some(acc) = self.accounts.get(&account.name) {
            return Arc::clone(&acc);
        }
        let acc = Arc::new(JsAccount {
            account: Arc::clone(account),
            shared: Arc::clone(&self.shared),
            dir: self.shared.root.join(&account.name),
            streams: RwLock::new(BTreeMap::new()),
            admin: Mutex::new(()),
            api_total: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            push_interest: Arc::default(),
            tally: Arc::new(limits::AccountTally::new(limits, Arc::clone(&self.shared.budget))),
        });
        acc.recover();
        let sink: Arc<dyn InternalSink> = Arc::clone(&acc) as Arc<dyn InternalSink>;
        let sub = Arc::new(Subscription::new(Target::Internal(sink), b"$JS.API.>", None, b""));
        account.add_subscription(Arc::clone(&sub));
        self.api_subs.lock().push((Arc::clone(account), sub));
        self.accounts.insert(account.name.clone(), Arc::clone(&acc));
        acc
    }

    /// JetStream in the account with this name, if enabled there.
    pub fn account(&self, name: &str) -> Option<Arc<JsAccount>> {
        self.accounts.get(name).map(|a| Arc::clone(&a))
    }

    /// Every account with JetStream.
    pub fn accounts(&self) -> Vec<Arc<JsAccount>> {
        self.accounts.iter().map(|a| Arc::clone(a.value())).collect()
    }

    /// The limits and usage for monitoring: (max memory, max store, memory used, store used).
    pub fn totals(&self) -> (i64, i64, i64, i64) {
        let b = &self.shared.budget;
        (b.max(Storage::Memory), b.max(Storage::File), b.used(Storage::Memory), b.used(Storage::File))
    }

    /// Where the streams are.
    pub fn store_dir(&self) -> &std::path::Path {
        &self.shared.root
    }

    fn all_streams(&self) -> Vec<Arc<Stream>> {
        self.accounts.iter().flat_map(|a| a.streams()).collect()
    }

    /// Runs expiry, dedupe pruning, compaction and the periodic fsync until `shutdown`.
    pub async fn housekeeping(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sync = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = now_nanos();
            self.tick_consumers(now);
            let jobs: Vec<_> = self.all_streams().iter().filter_map(|s| s.tick(now)).collect();
            if !jobs.is_empty() {
                // Written one tick at a time: nothing else rewrites a store's files meanwhile.
                let done = tokio::task::spawn_blocking(move || {
                    for job in jobs {
                        if let Err(e) = job.write() {
                            warn!("writing an index snapshot failed: {e}");
                        }
                    }
                });
                let _ = done.await;
            }
            if last_sync.elapsed() >= self.shared.sync_interval {
                last_sync = tokio::time::Instant::now();
                self.sync_files().await;
            }
        }
    }

    /// Saves consumers' changed state and deletes the ones unused past their inactive threshold.
    fn tick_consumers(&self, now: i64) {
        for acc in self.accounts() {
            for s in acc.streams() {
                for c in s.consumers() {
                    if c.tick(now) {
                        acc.delete_consumer(&s, c.name());
                    }
                }
            }
        }
    }

    /// fsyncs every file written since the last sync, off the runtime's threads.
    async fn sync_files(&self) {
        let files: Vec<Arc<std::fs::File>> = self.all_streams().iter().flat_map(|s| s.files_to_sync()).collect();
        if files.is_empty() {
            return;
        }
        let done = tokio::task::spawn_blocking(move || {
            for f in files {
                if let Err(e) = f.sync_data() {
                    warn!("syncing a stream file failed: {e}");
                }
            }
        });
        let _ = done.await;
    }

    /// Writes and syncs everything, at shutdown.
    pub fn shutdown(&self) {
        for s in self.all_streams() {
            for c in s.consumers() {
                c.save();
                c.stop();
            }
            s.flush_now();
            for f in s.files_to_sync() {
                let _ = f.sync_data();
            }
            if let Some(job) = s.snapshot(true) {
                if let Err(e) = job.write() {
                    warn!("stream {}: writing its index snapshot failed: {e}", s.name());
                }
            }
        }
        for (account, sub) in self.api_subs.lock().drain(..) {
            account.remove_subscription(&sub, crate::account::Removal::Owner);
        }
    }
}

fn bytes_text(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", UNITS[u])
}
