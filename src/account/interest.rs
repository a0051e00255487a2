//! Interest: which subjects an account has subscribers for, and events when that changes.
//!
//! Routes and leaf nodes do not forward every subscription; they tell their peer when a subject
//! gains its first subscriber and loses its last one, and for a queue group, every change in its
//! member count (the group's weight). [`Interest`] counts subscriptions per kind of subscriber,
//! subject and queue group, and calls each [`InterestListener`] with the changes that matter.
//! Counting is only done while someone listens: a server with no routes and no leaf nodes pays
//! nothing for it. A listener that joins later gets the whole current picture first.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::delivery::{Subscription, TargetKind};

/// One change of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestChange<'a> {
    /// The kind of subscriber the interest comes from (routes never re-advertise what they
    /// learned from another route, so they need to tell).
    pub kind: TargetKind,
    /// The subject filter.
    pub subject: &'a [u8],
    /// The queue group, for queue interest.
    pub queue: Option<&'a [u8]>,
    /// Subscriptions of this kind on this subject (and group) now; 0 when the last one went.
    /// For a plain subject the change is only reported on 0 ↔ 1; for a queue group on every
    /// change, since the count is the group's weight.
    pub count: u32,
}

/// An [`InterestChange`] that owns its strings, for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedInterest {
    /// The kind of subscriber.
    pub kind: TargetKind,
    /// The subject filter.
    pub subject: Arc<[u8]>,
    /// The queue group, if any.
    pub queue: Option<Arc<[u8]>>,
    /// Subscriptions now.
    pub count: u32,
}

impl OwnedInterest {
    /// The borrowed form.
    pub fn as_change(&self) -> InterestChange<'_> {
        InterestChange { kind: self.kind, subject: &self.subject, queue: self.queue.as_deref(), count: self.count }
    }
}

/// Hears about interest changes in an account.
///
/// Called while the account's subscriptions are being changed, in the order they change: it
/// must be quick and must not change subscriptions of the same account itself (queue the
/// change, e.g. as `RS+` bytes in a route's outbound queue).
pub trait InterestListener: Send + Sync {
    /// One change.
    fn interest_changed(&self, change: &InterestChange<'_>);
}

type Key = (TargetKind, Arc<[u8]>, Option<Arc<[u8]>>);

/// Interest counts of one account and who listens to their changes.
#[derive(Default)]
pub(crate) struct Interest {
    listeners: Vec<Arc<dyn InterestListener>>,
    /// Counts by kind, subject and queue; kept only while there are listeners.
    counts: FxHashMap<Key, u32>,
}

impl Interest {
    fn key(sub: &Subscription) -> Key {
        (sub.target.kind(), Arc::clone(&sub.subject), sub.queue.clone())
    }

    pub(crate) fn added(&mut self, sub: &Subscription) {
        if self.listeners.is_empty() {
            return;
        }
        let count = self.counts.entry(Self::key(sub)).or_insert(0);
        *count += 1;
        let count = *count;
        if sub.queue.is_some() || count == 1 {
            self.emit(sub, count);
        }
    }

    pub(crate) fn removed(&mut self, sub: &Subscription) {
        if self.listeners.is_empty() {
            return;
        }
        let key = Self::key(sub);
        let Some(count) = self.counts.get_mut(&key) else { return };
        *count -= 1;
        let count = *count;
        if count == 0 {
            self.counts.remove(&key);
        }
        if sub.queue.is_some() || count == 0 {
            self.emit(sub, count);
        }
    }

    fn emit(&self, sub: &Subscription, count: u32) {
        let change =
            InterestChange { kind: sub.target.kind(), subject: &sub.subject, queue: sub.queue.as_deref(), count };
        for listener in &self.listeners {
            listener.interest_changed(&change);
        }
    }

    /// Adds a listener; `all` lists every subscription, for counting from scratch when this is
    /// the first listener. Returns the interest there is now.
    pub(crate) fn listen(
        &mut self,
        listener: Arc<dyn InterestListener>,
        all: impl FnOnce() -> Vec<Arc<Subscription>>,
    ) -> Vec<OwnedInterest> {
        if self.listeners.is_empty() {
            self.counts.clear();
            for sub in all() {
                *self.counts.entry(Self::key(&sub)).or_insert(0) += 1;
            }
        }
        self.listeners.push(listener);
        self.counts
            .iter()
            .map(|((kind, subject, queue), &count)| OwnedInterest {
                kind: *kind,
                subject: Arc::clone(subject),
                queue: queue.clone(),
                count,
            })
            .collect()
    }

    pub(crate) fn unlisten(&mut self, listener: &Arc<dyn InterestListener>) {
        self.listeners.retain(|l| !Arc::ptr_eq(l, listener));
        if self.listeners.is_empty() {
            self.counts = FxHashMap::default();
        }
    }
}
