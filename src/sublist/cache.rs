//! The two levels of match caching.
//!
//! [`SharedCache`] belongs to a trie: subject → [`CacheSlot`], one per subject published
//! recently, shared by every publisher of the account. An insert or remove patches, in place,
//! the slots whose subject the subscription matches (a literal subscription touches at most one
//! slot, found by hashing; a wildcard one checks each cached subject), so one SUB or UNSUB costs
//! the entries it changes and no publisher loses the rest. The cache is bounded: past
//! [`MAX_SHARED`] subjects a random eighth of them is evicted.
//!
//! [`PublisherCache`] belongs to one publisher: subject → the slot and the result it last read
//! from it. A lookup hashes the subject in a map nobody else touches and compares the slot's
//! version with one atomic load; only when the slot was patched (or evicted) does it take the
//! slot's lock to read the new result. Many publishers of one subject share the slot and the
//! result instead of holding copies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::{Matches, Sublist, Subscribable};
use crate::subject;

/// Most subjects the shared cache of one trie holds.
pub const MAX_SHARED: usize = 8192;
/// Most subjects one publisher's cache holds; past it the publisher's cache starts over.
pub const MAX_PRIVATE: usize = 1024;
/// The version of a slot that was evicted from the shared cache and is no longer patched.
const EVICTED: u64 = u64::MAX;

/// The cached result for one subject, patched in place as subscriptions come and go.
pub struct CacheSlot<S> {
    /// Bumped (under `result`'s lock) every time the result changes; [`EVICTED`] once the slot
    /// left the shared cache.
    version: AtomicU64,
    result: Mutex<Arc<Matches<S>>>,
}

impl<S> CacheSlot<S> {
    fn new(result: Matches<S>) -> Self {
        CacheSlot { version: AtomicU64::new(0), result: Mutex::new(Arc::new(result)) }
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

/// A trie's results by subject, shared by all its publishers.
pub(super) struct SharedCache<S> {
    slots: DashMap<Box<[u8]>, Arc<CacheSlot<S>>, FxBuildHasher>,
    /// State of a xorshift generator for picking what to evict.
    rng: AtomicU64,
}

impl<S> Default for SharedCache<S> {
    fn default() -> Self {
        SharedCache { slots: DashMap::with_hasher(FxBuildHasher), rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15) }
    }
}

impl<S: Subscribable> SharedCache<S> {
    /// Subjects cached now.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn get(&self, subject: &[u8]) -> Option<Arc<CacheSlot<S>>> {
        self.slots.get(subject).map(|slot| Arc::clone(&slot))
    }

    /// The slot for `subject`, made from `walk` when there is none. The caller holds the
    /// trie's read lock, so no insert or remove runs meanwhile.
    pub(super) fn get_or_insert(&self, subject: &[u8], walk: impl FnOnce() -> Matches<S>) -> Arc<CacheSlot<S>> {
        if let Some(slot) = self.get(subject) {
            return slot;
        }
        let slot = Arc::new(CacheSlot::new(walk()));
        if self.slots.len() >= MAX_SHARED {
            self.evict_some();
        }
        Arc::clone(self.slots.entry(subject.into()).or_insert(slot).value())
    }

    /// Drops about an eighth of the cached subjects, picked at random.
    fn evict_some(&self) {
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        self.slots.retain(|_, slot| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let keep = !x.is_multiple_of(8);
            if !keep {
                slot.evict();
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
            if let Some(slot) = self.slots.get(filter) {
                slot.patch(&change);
            }
            return;
        }
        for entry in self.slots.iter() {
            if subject::matches(filter, entry.key()) {
                entry.value().patch(&change);
            }
        }
    }
}

/// One publisher's view of a cached subject: the slot and what it last read from it.
struct Seen<S> {
    slot: Arc<CacheSlot<S>>,
    version: u64,
    result: Arc<Matches<S>>,
}

/// One publisher's cache of the shared slots it publishes to.
pub struct PublisherCache<S> {
    /// Subject → index into `seen`.
    index: FxHashMap<Box<[u8]>, usize>,
    seen: Vec<Seen<S>>,
    /// Lookups and hits since [`PublisherCache::take_counts`] was last called.
    lookups: u64,
    hits: u64,
}

impl<S> Default for PublisherCache<S> {
    fn default() -> Self {
        PublisherCache { index: FxHashMap::default(), seen: Vec::new(), lookups: 0, hits: 0 }
    }
}

impl<S: Subscribable> PublisherCache<S> {
    /// The subscriptions matching the literal `subject`. Borrowed, so that a subject nobody
    /// listens to costs no reference count.
    #[inline]
    pub fn get(&mut self, sublist: &Sublist<S>, subject: &[u8]) -> &Arc<Matches<S>> {
        self.lookups += 1;
        if let Some(&i) = self.index.get(subject) {
            let seen = &mut self.seen[i];
            let version = seen.slot.version();
            if version != seen.version {
                if version == EVICTED {
                    seen.slot = sublist.lookup(subject);
                }
                (seen.version, seen.result) = seen.slot.read();
            }
            self.hits += 1;
            return &self.seen[i].result;
        }
        self.miss(sublist, subject)
    }

    #[cold]
    fn miss(&mut self, sublist: &Sublist<S>, subject: &[u8]) -> &Arc<Matches<S>> {
        if self.seen.len() >= MAX_PRIVATE {
            self.clear();
        }
        let slot = sublist.lookup(subject);
        let (version, result) = slot.read();
        self.index.insert(subject.into(), self.seen.len());
        self.seen.push(Seen { slot, version, result });
        &self.seen[self.seen.len() - 1].result
    }

    /// Forgets everything (when the publisher moves to another account's trie).
    pub fn clear(&mut self) {
        self.index.clear();
        self.seen.clear();
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
        self.seen.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
