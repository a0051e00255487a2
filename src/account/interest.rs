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

use crate::connection::outbound::Outbound;
use crate::delivery::{Subscription, TargetKind};
use crate::proto::encode::Hop;

/// One change of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestChange<'a> {
    /// The kind of subscriber the interest comes from (routes never re-advertise what they
    /// learned from another route, so they need to tell).
    pub kind: TargetKind,
    /// For leaf node interest, the id of the leaf connection it came over (a leaf link must
    /// not be told its own interest back); 0 for every other kind.
    pub source: u64,
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
    /// The leaf connection it came over, or 0.
    pub source: u64,
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
        InterestChange {
            kind: self.kind,
            source: self.source,
            subject: &self.subject,
            queue: self.queue.as_deref(),
            count: self.count,
        }
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

type Key = (TargetKind, u64, Arc<[u8]>, Option<Arc<[u8]>>);

/// Interest counts of one account and who listens to their changes.
#[derive(Default)]
pub(crate) struct Interest {
    listeners: Vec<Arc<dyn InterestListener>>,
    /// Counts by kind, subject and queue; kept only while there are listeners.
    counts: FxHashMap<Key, u32>,
}

impl Interest {
    fn key(sub: &Subscription) -> Key {
        (sub.target.kind(), sub.target.link_source(), Arc::clone(&sub.subject), sub.queue.clone())
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
        let change = InterestChange {
            kind: sub.target.kind(),
            source: sub.target.link_source(),
            subject: &sub.subject,
            queue: sub.queue.as_deref(),
            count,
        };
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
            .map(|((kind, source, subject, queue), &count)| OwnedInterest {
                kind: *kind,
                source: *source,
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

/// What a route or leaf link tells its peer after a change of the interest it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Nothing changed that the peer sees.
    Nothing,
    /// Interest (`RS+`/`LS+`), with the queue group's weight for queue interest.
    Interest(Option<u32>),
    /// No interest left (`RS-`/`LS-`).
    Gone,
}

impl Announce {
    /// Queues the announcement for `change` on a link's outbound queue (`RS±` on a route, `LS±`
    /// on a leaf link).
    pub fn send(self, out: &Outbound, hop: Hop<'_>, change: &InterestChange<'_>) {
        match self {
            Announce::Nothing => {}
            Announce::Interest(weight) => {
                out.push_interest(hop, true, change.subject, change.queue.map(|q| (q, weight)))
            }
            Announce::Gone => out.push_interest(hop, false, change.subject, change.queue.map(|q| (q, None))),
        }
    }
}

type TallyKey = (Arc<[u8]>, Option<Arc<[u8]>>);

/// A link's sums of the interest it passes on, per subject and queue group, over the kinds
/// and leaf connections it counts: a subject two sources subscribe to is one announcement,
/// gone only when both are, and a queue group's weight is its members from every source.
#[derive(Default)]
pub struct Tally {
    parts: FxHashMap<(TargetKind, u64, TallyKey), u32>,
    totals: FxHashMap<TallyKey, u32>,
}

impl Tally {
    /// Takes one change (of a source the link counts) and says what the peer must hear.
    pub fn apply(&mut self, change: &InterestChange<'_>) -> Announce {
        let key: TallyKey = (change.subject.into(), change.queue.map(Into::into));
        let part = (change.kind, change.source, key.clone());
        let old = if change.count == 0 {
            self.parts.remove(&part).unwrap_or(0)
        } else {
            self.parts.insert(part, change.count).unwrap_or(0)
        };
        let before = self.totals.get(&key).copied().unwrap_or(0);
        let after = before.saturating_sub(old).saturating_add(change.count);
        if after == 0 {
            self.totals.remove(&key);
        } else {
            self.totals.insert(key, after);
        }
        match change.queue {
            None if before == 0 && after > 0 => Announce::Interest(None),
            None if before > 0 && after == 0 => Announce::Gone,
            Some(_) if after > 0 && after != before => Announce::Interest(Some(after)),
            Some(_) if after == 0 && before > 0 => Announce::Gone,
            _ => Announce::Nothing,
        }
    }

    /// Every subject and queue group with interest now, with its weight.
    pub fn current(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>, u32)> {
        self.totals.iter().map(|((s, q), n)| (&s[..], q.as_deref(), *n))
    }
}

#[cfg(test)]
mod tally_tests {
    use super::*;

    fn change<'a>(
        kind: TargetKind,
        source: u64,
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        count: u32,
    ) -> InterestChange<'a> {
        InterestChange { kind, source, subject, queue, count }
    }

    #[test]
    fn sums_sources_and_announces_only_edges_and_weights() {
        let mut t = Tally::default();
        assert_eq!(t.apply(&change(TargetKind::Client, 0, b"a", None, 1)), Announce::Interest(None));
        assert_eq!(t.apply(&change(TargetKind::Leaf, 7, b"a", None, 1)), Announce::Nothing);
        assert_eq!(t.apply(&change(TargetKind::Client, 0, b"a", None, 0)), Announce::Nothing);
        assert_eq!(t.apply(&change(TargetKind::Leaf, 7, b"a", None, 0)), Announce::Gone);
        assert_eq!(t.apply(&change(TargetKind::Client, 0, b"q", Some(b"g"), 2)), Announce::Interest(Some(2)));
        assert_eq!(t.apply(&change(TargetKind::Leaf, 9, b"q", Some(b"g"), 3)), Announce::Interest(Some(5)));
        assert_eq!(t.apply(&change(TargetKind::Client, 0, b"q", Some(b"g"), 0)), Announce::Interest(Some(3)));
        assert_eq!(t.current().collect::<Vec<_>>(), vec![(&b"q"[..], Some(&b"g"[..]), 3)]);
        assert_eq!(t.apply(&change(TargetKind::Leaf, 9, b"q", Some(b"g"), 0)), Announce::Gone);
        assert_eq!(t.current().count(), 0);
    }
}
