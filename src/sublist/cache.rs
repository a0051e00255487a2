//! A publisher's own cache of match results.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Matches, Sublist, Subscribable};

/// Most subjects one connection caches; past it the cache starts over.
const MAX_ENTRIES: usize = 1024;

/// Match results keyed by subject, valid for one generation of the trie.
///
/// Each connection owns one, so looking up a subject takes no lock and touches no shared cache
/// line. When the trie's generation moves on (any subscription came or went) the whole cache is
/// dropped; results are then recomputed on demand.
pub struct MatchCache<S> {
    genid: u64,
    /// Subject → index into `results`.
    entries: FxHashMap<Box<[u8]>, usize>,
    results: Vec<Arc<Matches<S>>>,
    /// Lookups and hits since [`MatchCache::take_counts`] was last called.
    lookups: u64,
    hits: u64,
}

impl<S> Default for MatchCache<S> {
    fn default() -> Self {
        MatchCache { genid: u64::MAX, entries: FxHashMap::default(), results: Vec::new(), lookups: 0, hits: 0 }
    }
}

impl<S: Subscribable> MatchCache<S> {
    /// The subscriptions matching `subject`, from the cache when still current. Borrowed, so
    /// that a subject nobody listens to costs no reference count.
    #[inline]
    pub fn get(&mut self, sublist: &Sublist<S>, subject: &[u8]) -> &Arc<Matches<S>> {
        let genid = sublist.genid();
        self.lookups += 1;
        if genid != self.genid {
            self.entries.clear();
            self.results.clear();
            self.genid = genid;
        } else if let Some(&i) = self.entries.get(subject) {
            self.hits += 1;
            return &self.results[i];
        }
        let m = Arc::new(sublist.matches(subject));
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
            self.results.clear();
        }
        self.entries.insert(subject.into(), self.results.len());
        self.results.push(m);
        &self.results[self.results.len() - 1]
    }

    /// Lookups and cache hits since the last call, for monitoring.
    pub fn take_counts(&mut self) -> (u64, u64) {
        let counts = (self.lookups, self.hits);
        self.lookups = 0;
        self.hits = 0;
        counts
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
