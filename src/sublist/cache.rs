//! The two levels of match caching.
//!
//! [`SharedCache`] belongs to a trie: one [`CacheSlot`] per subject published recently, shared
//! by every publisher of the account. An insert or remove patches, in place, the slots whose
//! subject the subscription matches (a literal subscription touches at most one slot, found by
//! hashing; a wildcard one checks each cached subject), so one SUB or UNSUB costs the entries it
//! changes and no publisher loses the rest. A subject is cached the second time it misses
//! (a small table of recent misses, by hash, remembers the first), so the reply subjects of
//! requests, each published to once, are answered by a walk of the trie and never fill it. The
//! cache is bounded: past [`MAX_SHARED`] subjects a random eighth of them is evicted.
//!
//! [`PublisherCache`] belongs to one publisher: a small direct-mapped table of the slots it
//! published to and the result it last read from each. A lookup hashes the subject, compares
//! it with the slot's own copy and the slot's version with one atomic load; only when the slot
//! was patched (or evicted) does it take the slot's lock to read the new result. It allocates
//! nothing per subject, starts empty and grows (up to [`MAX_PRIVATE`] entries) only while
//! subjects collide in it. Many publishers of one subject share the slot and the result
//! instead of holding copies.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashSet;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;

use super::{Matches, Sublist, Subscribable};
use crate::subject;

/// Most subjects the shared cache of one trie holds.
pub const MAX_SHARED: usize = 16 * 1024;
/// Most entries one publisher's table holds.
pub const MAX_PRIVATE: usize = 1024;
/// The version of a slot that was evicted from the shared cache and is no longer patched.
const EVICTED: u64 = u64::MAX;
/// Hashes of recent misses remembered, to cache a subject on its second miss.
const RECENT_MISSES: usize = 4096;

/// What a lookup found.
pub enum Lookup<S> {
    /// The subject's shared slot.
    Cached(Arc<CacheSlot<S>>),
    /// A result for this once only: the subject is not cached (yet).
    Uncached(Matches<S>),
}

/// The cached result for one subject, patched in place as subscriptions come and go.
pub struct CacheSlot<S> {
    /// The subject it answers for.
    subject: Box<[u8]>,
    /// Bumped (under `result`'s lock) every time the result changes; [`EVICTED`] once the slot
    /// left the shared cache.
    version: AtomicU64,
    result: Mutex<Arc<Matches<S>>>,
}

impl<S> CacheSlot<S> {
    fn new(subject: &[u8], result: Matches<S>) -> Self {
        CacheSlot { subject: subject.into(), version: AtomicU64::new(0), result: Mutex::new(Arc::new(result)) }
    }

    /// The subject it answers for.
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// The version now; a reader holding an older one must read the result again.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The result and the version it belongs to.
    pub fn read(&self) -> (u64, Arc<Matches<S>>) {
        let result = self.result.lock();
        (self.version.load(Ordering::Acquire), Arc::clone(&result))
    }

    /// Replaces the result with what `change` makes of it, if it makes anything.
    fn patch(&self, change: impl FnOnce(&Matches<S>) -> Option<Matches<S>>) {
        let mut result = self.result.lock();
        let version = self.version.load(Ordering::Relaxed);
        if version == EVICTED {
            return;
        }
        if let Some(new) = change(&result) {
            *result = Arc::new(new);
            self.version.store(version + 1, Ordering::Release);
        }
    }

    fn evict(&self) {
        let _result = self.result.lock();
        self.version.store(EVICTED, Ordering::Release);
    }
}

/// A slot in the shared set, found by its subject.
struct Entry<S>(Arc<CacheSlot<S>>);

impl<S> Borrow<[u8]> for Entry<S> {
    fn borrow(&self) -> &[u8] {
        &self.0.subject
    }
}

impl<S> Hash for Entry<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.subject.hash(state)
    }
}

impl<S> PartialEq for Entry<S> {
    fn eq(&self, other: &Self) -> bool {
        self.0.subject == other.0.subject
    }
}

impl<S> Eq for Entry<S> {}

/// A trie's results by subject, shared by all its publishers.
pub(super) struct SharedCache<S> {
    slots: DashSet<Entry<S>, FxBuildHasher>,
    /// Hashes of subjects that missed recently, made at the first miss.
    recent: std::sync::OnceLock<Box<[AtomicU64]>>,
    /// State of a xorshift generator for picking what to evict.
    rng: AtomicU64,
}

impl<S> Default for SharedCache<S> {
    fn default() -> Self {
        SharedCache {
            slots: DashSet::with_hasher(FxBuildHasher),
            recent: std::sync::OnceLock::new(),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }
}

impl<S: Subscribable> SharedCache<S> {
    /// Subjects cached now.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn get(&self, subject: &[u8]) -> Option<Arc<CacheSlot<S>>> {
        self.slots.get(subject).map(|e| Arc::clone(&e.0))
    }

    /// Whether a subject that missed should be cached: only when it missed recently already.
    pub(super) fn admit(&self, subject: &[u8]) -> bool {
        let recent = self.recent.get_or_init(|| (0..RECENT_MISSES).map(|_| AtomicU64::new(0)).collect());
        let hash = FxBuildHasher.hash_one(subject) | 1;
        let i = (hash >> 32) as usize % RECENT_MISSES;
        recent[i].swap(hash, Ordering::Relaxed) == hash
    }

    /// The slot for `subject`, made from `walk` when there is none. The caller holds the
    /// trie's read lock, so no insert or remove runs meanwhile.
    pub(super) fn get_or_insert(&self, subject: &[u8], walk: impl FnOnce() -> Matches<S>) -> Arc<CacheSlot<S>> {
        if let Some(slot) = self.get(subject) {
            return slot;
        }
        if self.slots.len() >= MAX_SHARED {
            self.evict_some();
        }
        let slot = Arc::new(CacheSlot::new(subject, walk()));
        if !self.slots.insert(Entry(Arc::clone(&slot))) {
            // Another publisher cached it meanwhile; both results come from the same trie.
            if let Some(theirs) = self.get(subject) {
                return theirs;
            }
        }
        slot
    }

    /// Drops about an eighth of the cached subjects, picked at random.
    fn evict_some(&self) {
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        self.slots.retain(|entry| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let keep = !x.is_multiple_of(8);
            if !keep {
                entry.0.evict();
            }
            keep
        });
        self.rng.store(x, Ordering::Relaxed);
    }

    /// Patches the slots a new subscription matches. Called under the trie's write lock.
    pub(super) fn added(&self, sub: &Arc<S>) {
        self.patch_matching(sub.subject(), |m| Some(m.with(sub)));
    }

    /// Patches the slots a removed subscription matched. Called under the trie's write lock.
    pub(super) fn removed(&self, sub: &Arc<S>) {
        self.patch_matching(sub.subject(), |m| m.without(sub));
    }

    fn patch_matching(&self, filter: &[u8], change: impl Fn(&Matches<S>) -> Option<Matches<S>>) {
        if subject::is_literal(filter) {
            if let Some(entry) = self.slots.get(filter) {
                entry.0.patch(&change);
            }
            return;
        }
        for entry in self.slots.iter() {
            if subject::matches(filter, &entry.0.subject) {
                entry.0.patch(&change);
            }
        }
    }
}

/// One publisher's view of a cached subject: the slot and what it last read from it.
struct Seen<S> {
    /// The subject's hash, to tell entries apart without comparing subjects.
    hash: u64,
    slot: Arc<CacheSlot<S>>,
    version: u64,
    result: Arc<Matches<S>>,
}

/// One publisher's cache of the shared slots it publishes to.
pub struct PublisherCache<S> {
    /// Direct-mapped by hash: a power of two entries, or none yet.
    table: Vec<Option<Seen<S>>>,
    /// The last result that was not cached, lent out until the next lookup.
    transient: Option<Arc<Matches<S>>>,
    /// The trie its entries come from (0: none yet); a lookup in another empties it first.
    sublist_id: u64,
    /// Lookups and hits since [`PublisherCache::take_counts`] was last called.
    lookups: u64,
    hits: u64,
}

impl<S> Default for PublisherCache<S> {
    fn default() -> Self {
        PublisherCache { table: Vec::new(), transient: None, sublist_id: 0, lookups: 0, hits: 0 }
    }
}

/// The table size a publisher's cache starts with.
const FIRST_TABLE: usize = 4;

impl<S: Subscribable> PublisherCache<S> {
    /// The subscriptions matching the literal `subject` in `sublist`. A publisher that moves to
    /// another trie (another account) starts from an empty cache, since entries are keyed by
    /// subject only. Borrowed, so that a subject nobody listens to costs no reference count.
    #[inline]
    pub fn get(&mut self, sublist: &Sublist<S>, subject: &[u8]) -> &Arc<Matches<S>> {
        if self.sublist_id != sublist.id {
            self.clear();
            self.sublist_id = sublist.id;
        }
        self.lookups += 1;
        let hash = FxBuildHasher.hash_one(subject);
        let i = (hash as usize) & self.table.len().wrapping_sub(1);
        if let Some(Some(seen)) = self.table.get_mut(i) {
            if seen.hash == hash && &*seen.slot.subject == subject {
                let version = seen.slot.version();
                if version != EVICTED {
                    if version != seen.version {
                        (seen.version, seen.result) = seen.slot.read();
                    }
                    self.hits += 1;
                    return &seen_at(&self.table, i).result;
                }
            }
        }
        self.miss(sublist, subject, hash)
    }

    #[cold]
    fn miss(&mut self, sublist: &Sublist<S>, subject: &[u8], hash: u64) -> &Arc<Matches<S>> {
        let slot = match sublist.lookup(subject) {
            Lookup::Cached(slot) => slot,
            Lookup::Uncached(result) => return self.transient.insert(Arc::new(result)),
        };
        let (version, result) = slot.read();
        if self.table.is_empty() {
            self.table.resize_with(FIRST_TABLE, || None);
        } else if self.table.len() < MAX_PRIVATE && self.table[(hash as usize) & (self.table.len() - 1)].is_some() {
            self.grow();
        }
        let i = (hash as usize) & (self.table.len() - 1);
        self.table[i] = Some(Seen { hash, slot, version, result });
        &seen_at(&self.table, i).result
    }

    /// Doubles the table, keeping what it holds.
    fn grow(&mut self) {
        let size = self.table.len() * 2;
        let old = std::mem::take(&mut self.table);
        self.table.resize_with(size, || None);
        for seen in old.into_iter().flatten() {
            let i = (seen.hash as usize) & (size - 1);
            self.table[i] = Some(seen);
        }
    }

    /// Forgets everything (when the publisher moves to another account's trie).
    pub fn clear(&mut self) {
        self.table = Vec::new();
        self.transient = None;
    }

    /// Lookups and cache hits since the last call, for monitoring.
    pub fn take_counts(&mut self) -> (u64, u64) {
        let counts = (self.lookups, self.hits);
        self.lookups = 0;
        self.hits = 0;
        counts
    }

    /// Subjects held now.
    pub fn len(&self) -> usize {
        self.table.iter().filter(|s| s.is_some()).count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entry at `i`, which the caller has just filled or checked.
#[inline]
fn seen_at<S>(table: &[Option<Seen<S>>], i: usize) -> &Seen<S> {
    match &table[i] {
        Some(seen) => seen,
        None => unreachable!("publisher cache entry was just filled"),
    }
}
