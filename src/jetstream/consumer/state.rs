//! A consumer's delivery state, as nats-server keeps it: what was delivered, what waits for an
//! ack and when it is due again, what is queued for redelivery, and the ack floor. Pure data
//! with no I/O, so that it can be checked against a model and saved as it is.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A message delivered and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The consumer sequence of its first delivery.
    pub dseq: u64,
    /// When it was last delivered (or its ack timer last reset), ns since the epoch.
    pub ts: i64,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// When it is due for redelivery, ns since the epoch.
    pub due: i64,
}

/// What an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The message was pending and is done now.
    Done,
    /// Nothing was pending under that sequence (a late or duplicate ack).
    Nothing,
}

/// The delivery state of one consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryState {
    /// The next stream sequence to look at for a first delivery.
    pub next_sseq: u64,
    /// The last consumer sequence given out.
    pub dseq: u64,
    /// The highest stream sequence delivered.
    pub delivered_sseq: u64,
    /// Every consumer sequence up to this one is acknowledged.
    pub floor_dseq: u64,
    /// Every stream sequence up to this one is acknowledged (or not for this consumer).
    pub floor_sseq: u64,
    /// Delivered, not acknowledged, by stream sequence.
    pub pending: BTreeMap<u64, Pending>,
    /// Queued for redelivery now (a NAK, or the ack wait ran out), by stream sequence.
    pub redeliver: BTreeSet<u64>,
    /// When the last delivery or ack happened, ns since the epoch (0: never).
    pub last_delivered: i64,
    /// When the last ack arrived.
    pub last_ack: i64,
}

impl DeliveryState {
    /// A consumer that starts at stream sequence `start`.
    pub fn starting_at(start: u64) -> Self {
        let start = start.max(1);
        DeliveryState { next_sseq: start, floor_sseq: start - 1, delivered_sseq: start - 1, ..Default::default() }
    }

    /// Records a delivery of stream sequence `sseq` at `now`; `due` is when it must be acked
    /// by (`None`: no acks expected). Returns the consumer sequence and the delivery count.
    pub fn delivered(&mut self, sseq: u64, now: i64, due: Option<i64>) -> (u64, u64) {
        self.dseq += 1;
        self.last_delivered = now;
        let redelivery = self.redeliver.remove(&sseq);
        let deliveries = match (due, self.pending.get_mut(&sseq)) {
            (Some(due), Some(p)) => {
                p.deliveries += 1;
                p.ts = now;
                p.due = due;
                p.deliveries
            }
            (Some(due), None) => {
                self.pending.insert(sseq, Pending { dseq: self.dseq, ts: now, deliveries: 1, due });
                1
            }
            (None, _) => {
                // Without acks a delivery is the end of it.
                self.floor_dseq = self.dseq;
                self.floor_sseq = self.floor_sseq.max(sseq);
                1
            }
        };
        if !redelivery && sseq >= self.next_sseq {
            self.next_sseq = sseq + 1;
        }
        self.delivered_sseq = self.delivered_sseq.max(sseq);
        (self.dseq, deliveries)
    }

    /// Marks stream sequences before `sseq` as looked at (none of them is for this consumer).
    pub fn skip_to(&mut self, sseq: u64) {
        if sseq > self.next_sseq {
            self.next_sseq = sseq;
        }
        self.move_floor();
    }

    /// An ack of `sseq`; with `all`, also of every pending sequence before it.
    pub fn ack(&mut self, sseq: u64, all: bool, now: i64) -> Vec<u64> {
        self.last_ack = now;
        let mut done = Vec::new();
        if all {
            let upto: Vec<u64> = self.pending.range(..=sseq).map(|(&s, _)| s).collect();
            for s in upto {
                self.pending.remove(&s);
                self.redeliver.remove(&s);
                done.push(s);
            }
        } else if self.pending.remove(&sseq).is_some() {
            self.redeliver.remove(&sseq);
            done.push(sseq);
        }
        self.move_floor();
        done
    }

    /// A message given up on (max deliveries reached, or terminated): no longer pending.
    pub fn give_up(&mut self, sseq: u64) -> Option<Pending> {
        let p = self.pending.remove(&sseq)?;
        self.redeliver.remove(&sseq);
        self.move_floor();
        Some(p)
    }

    /// Queues `sseq` for redelivery now (a NAK without a delay).
    pub fn nak(&mut self, sseq: u64) -> bool {
        if !self.pending.contains_key(&sseq) {
            return false;
        }
        self.redeliver.insert(sseq);
        true
    }

    /// Moves `sseq`'s redelivery to `due` (a NAK with a delay, or a progress ack).
    pub fn set_due(&mut self, sseq: u64, due: i64, touch: Option<i64>) -> bool {
        let Some(p) = self.pending.get_mut(&sseq) else { return false };
        p.due = due;
        if let Some(now) = touch {
            p.ts = now;
        }
        self.redeliver.remove(&sseq);
        true
    }

    /// Queues every pending message due by `now` for redelivery; returns the next time one is
    /// due after that.
    pub fn expire(&mut self, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        for (&sseq, p) in &self.pending {
            if self.redeliver.contains(&sseq) {
                continue;
            }
            if p.due <= now {
                self.redeliver.insert(sseq);
            } else {
                next = Some(next.map_or(p.due, |n| n.min(p.due)));
            }
        }
        next
    }

    /// The next sequence to redeliver, if any.
    pub fn next_redelivery(&self) -> Option<u64> {
        self.redeliver.first().copied()
    }

    /// Messages delivered more than once and still pending.
    pub fn num_redelivered(&self) -> usize {
        self.pending.values().filter(|p| p.deliveries > 1).count()
    }

    /// Forgets pending messages the stream no longer has (below `first`, or in `gone`).
    pub fn forget(&mut self, gone: impl Fn(u64) -> bool) {
        let lost: Vec<u64> = self.pending.keys().copied().filter(|&s| gone(s)).collect();
        for s in lost {
            self.pending.remove(&s);
            self.redeliver.remove(&s);
        }
        self.move_floor();
    }

    /// The ack floor, after acks or skips: just below the oldest pending message, or
    /// everything looked at when nothing is pending.
    fn move_floor(&mut self) {
        match self.pending.iter().next() {
            Some((&sseq, p)) => {
                self.floor_sseq = sseq - 1;
                self.floor_dseq = p.dseq - 1;
            }
            None => {
                self.floor_sseq = self.next_sseq.saturating_sub(1).max(self.floor_sseq);
                self.floor_dseq = self.dseq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acks_move_the_floor_to_just_below_the_oldest_pending() {
        let mut s = DeliveryState::starting_at(1);
        for seq in 1..=3 {
            assert_eq!(s.delivered(seq, 10, Some(100)), (seq, 1));
        }
        assert_eq!(s.ack(2, false, 11), vec![2]);
        assert_eq!((s.floor_dseq, s.floor_sseq), (0, 0));
        s.ack(1, false, 12);
        assert_eq!((s.floor_dseq, s.floor_sseq), (2, 2));
        s.ack(3, false, 13);
        assert_eq!((s.floor_dseq, s.floor_sseq), (3, 3));
        assert!(s.ack(3, false, 14).is_empty(), "a second ack does nothing");
    }

    #[test]
    fn a_redelivery_keeps_the_first_consumer_sequence_and_counts() {
        let mut s = DeliveryState::starting_at(5);
        s.delivered(5, 0, Some(30));
        s.delivered(6, 0, Some(30));
        assert_eq!(s.expire(31), None);
        assert_eq!(s.next_redelivery(), Some(5));
        assert_eq!(s.delivered(5, 31, Some(61)), (3, 2));
        assert_eq!(s.pending[&5].dseq, 1);
        assert_eq!(s.num_redelivered(), 1);
        assert_eq!(s.next_redelivery(), Some(6));
        assert_eq!(s.next_sseq, 7);
        s.ack(6, true, 40);
        assert!(s.pending.is_empty());
        assert_eq!((s.floor_dseq, s.floor_sseq), (3, 6));
    }

    #[test]
    fn without_acks_a_delivery_is_final() {
        let mut s = DeliveryState::starting_at(1);
        s.delivered(1, 0, None);
        s.delivered(4, 0, None);
        assert!(s.pending.is_empty());
        assert_eq!((s.floor_dseq, s.floor_sseq, s.next_sseq), (2, 4, 5));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deliver,
        Ack(u8, bool),
        Nak(u8),
        Expire(u8),
        GiveUp(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Deliver),
            3 => (0u8..20, any::<bool>()).prop_map(|(s, a)| Op::Ack(s, a)),
            1 => (0u8..20).prop_map(Op::Nak),
            1 => (0u8..50).prop_map(Op::Expire),
            1 => (0u8..20).prop_map(Op::GiveUp),
        ]
    }

    proptest! {
        /// Against a model: the set of unacknowledged deliveries, and the floor below it.
        #[test]
        fn agrees_with_a_set_of_outstanding_messages(ops in proptest::collection::vec(op(), 1..80)) {
            let mut s = DeliveryState::starting_at(1);
            let mut outstanding = BTreeSet::new();
            let mut now = 0i64;
            for op in ops {
                now += 1;
                match op {
                    Op::Deliver => {
                        let seq = s.next_redelivery().unwrap_or(s.next_sseq);
                        s.delivered(seq, now, Some(now + 10));
                        outstanding.insert(seq);
                    }
                    Op::Ack(seq, all) => {
                        let seq = u64::from(seq);
                        let done = s.ack(seq, all, now);
                        let want: Vec<u64> = if all {
                            outstanding.range(..=seq).copied().collect()
                        } else {
                            outstanding.get(&seq).copied().into_iter().collect()
                        };
                        prop_assert_eq!(&done, &want);
                        for d in done { outstanding.remove(&d); }
                    }
                    Op::Nak(seq) => {
                        prop_assert_eq!(s.nak(u64::from(seq)), outstanding.contains(&u64::from(seq)));
                    }
                    Op::Expire(by) => {
                        s.expire(now + i64::from(by));
                    }
                    Op::GiveUp(seq) => {
                        let seq = u64::from(seq);
                        prop_assert_eq!(s.give_up(seq).is_some(), outstanding.remove(&seq));
                    }
                }
                let pending: BTreeSet<u64> = s.pending.keys().copied().collect();
                prop_assert_eq!(&pending, &outstanding);
                prop_assert!(s.redeliver.iter().all(|q| outstanding.contains(q)));
                if let Some(&oldest) = outstanding.first() {
                    prop_assert_eq!(s.floor_sseq, oldest - 1);
                } else {
                    prop_assert_eq!(s.floor_sseq, s.next_sseq - 1);
                    prop_assert_eq!(s.floor_dseq, s.dseq);
                }
                prop_assert!(s.floor_dseq <= s.dseq && s.floor_sseq < s.next_sseq);
            }
        }
    }
}
