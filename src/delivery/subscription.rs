//! One subscription.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::Target;
use crate::sublist::Subscribable;

/// One subscription: a subject filter, an optional queue group, and where matches go.
pub struct Subscription {
    /// Where matching messages are delivered.
    pub target: Target,
    /// The subject filter.
    pub subject: Arc<[u8]>,
    /// The queue group, for queue subscriptions.
    pub queue: Option<Arc<[u8]>>,
    /// The owner's id for it: sent back in each MSG to a client; unused by other kinds.
    pub sid: Box<[u8]>,
    /// Deliveries after which it ends (UNSUB with max); 0 means no limit.
    max: AtomicU64,
    /// Deliveries so far.
    delivered: AtomicU64,
    /// Set when it has been removed from the trie.
    removed: AtomicBool,
    /// For a wildcard subscription overlapping the owner's deny rules: subjects it must not get.
    deny: Option<Vec<Box<[u8]>>>,
}

/// What a delivery attempt decided about a subscription with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Deliver; more may follow.
    Deliver,
    /// Deliver; this is the last one, so remove the subscription.
    DeliverLast,
    /// Its limit is reached: skip it.
    Skip,
}

impl Subscription {
    /// A subscription with no delivery limit.
    pub fn new(target: Target, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Self {
        Subscription {
            target,
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            deny: None,
        }
    }

    /// Filters out messages on subjects matching any of `deny` at delivery.
    pub fn with_deny_filter(mut self, deny: Option<Vec<Box<[u8]>>>) -> Self {
        self.deny = deny;
        self
    }

    /// Whether a message on `subject` is kept from this subscription by its owner's deny rules.
    #[inline]
    pub fn denies(&self, subject: &[u8]) -> bool {
        self.deny.as_ref().is_some_and(|d| d.iter().any(|f| crate::subject::matches(f, subject)))
    }

    /// Counts one delivery against the limit, if there is one.
    #[inline]
    pub fn admit(&self) -> Admit {
        let n = self.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.max.load(Ordering::Acquire);
        if max == 0 {
            return Admit::Deliver;
        }
        match n.cmp(&max) {
            std::cmp::Ordering::Less => Admit::Deliver,
            std::cmp::Ordering::Equal => Admit::DeliverLast,
            std::cmp::Ordering::Greater => Admit::Skip,
        }
    }

    /// Sets the total number of deliveries; returns true when that many were already made.
    pub fn set_max(&self, max: u64) -> bool {
        self.max.store(max, Ordering::Release);
        self.delivered.load(Ordering::Acquire) >= max
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Marks it removed from the trie; returns false if it already was.
    pub fn mark_removed(&self) -> bool {
        !self.removed.swap(true, Ordering::AcqRel)
    }

    /// True once removed from the trie (by UNSUB, its limit, or the connection closing).
    #[inline]
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

impl Subscribable for Subscription {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}
