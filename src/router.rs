//! Publish → match → deliver: the message path.
//!
//! A [`Router`] belongs to one publishing connection. For each message it finds the matching
//! subscriptions through its own match cache, appends the message to each consumer's outbound
//! buffer (one member per queue group), and remembers whom it wrote to. After the whole read is
//! processed, [`Router::flush`] wakes each of those consumers once and, when one of them is
//! backing up, stalls this publisher briefly so the consumer can drain.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::account::Account;
use crate::client::{Admit, ClientShared, CloseReason, Push, Subscription};
use crate::proto::encode::Message;
use crate::server::ServerState;
use crate::sublist::MatchCache;

/// The longest one stall on one consumer may last.
const STALL_STEP: Duration = Duration::from_millis(5);
/// The longest a publisher is stalled after one read, in all.
const STALL_BUDGET: Duration = Duration::from_millis(10);

/// One publisher's routing state.
pub struct Router {
    cache: MatchCache<Subscription>,
    /// Consumers written to since the last flush, by connection id.
    touched: FxHashMap<u64, Arc<ClientShared>>,
    /// State of a xorshift generator for picking queue members.
    rng: u64,
    /// Messages delivered since the last flush, for the server's counters.
    out_msgs: u64,
    /// Payload bytes delivered since the last flush.
    out_bytes: u64,
    /// The largest fan-out this publisher has reported to the server's counters.
    max_fanout: u64,
}

impl Router {
    /// A router seeded for queue picks.
    pub fn new(seed: u64) -> Self {
        Router {
            cache: MatchCache::default(),
            touched: FxHashMap::default(),
            rng: seed | 1,
            out_msgs: 0,
            out_bytes: 0,
            max_fanout: 0,
        }
    }

    #[inline]
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Delivers `msg` to every matching subscription and one member of each queue group.
    /// `publisher` is skipped when `echo` is off. Returns whether anyone got it.
    pub fn publish(
        &mut self,
        server: &ServerState,
        account: &Account,
        publisher: &Arc<ClientShared>,
        echo: bool,
        msg: &Message<'_>,
    ) -> bool {
        let matches = self.cache.get(&account.sublist, msg.subject);
        if matches.is_empty() {
            return false;
        }
        let matches = Arc::clone(matches);
        let mut delivered = false;
        let fanout = matches.psubs.len() + matches.qsubs.len();
        if fanout as u64 > self.max_fanout {
            self.max_fanout = fanout as u64;
            server.stats.max_fanout.fetch_max(self.max_fanout, std::sync::atomic::Ordering::Relaxed);
        }
        for sub in &matches.psubs {
            delivered |= self.deliver(server, account, publisher, echo, sub, msg);
        }
        for group in &matches.qsubs {
            let n = group.members.len();
            let start = (self.next_random() % n as u64) as usize;
            for i in 0..n {
                let sub = &group.members[(start + i) % n];
                if self.deliver(server, account, publisher, echo, sub, msg) {
                    delivered = true;
                    break;
                }
            }
        }
        delivered
    }

    #[inline]
    fn deliver(
        &mut self,
        server: &ServerState,
        account: &Account,
        publisher: &Arc<ClientShared>,
        echo: bool,
        sub: &Arc<Subscription>,
        msg: &Message<'_>,
    ) -> bool {
        let consumer = &sub.client;
        if (!echo && Arc::ptr_eq(consumer, publisher))
            || consumer.is_closing()
            || sub.is_removed()
            || sub.denies(msg.subject)
        {
            return false;
        }
        match sub.admit() {
            Admit::Deliver => {}
            Admit::DeliverLast => account.remove_subscription(sub),
            Admit::Skip => return false,
        }
        match consumer.outbound.push_msg(msg, &sub.sid, consumer.headers()) {
            Push::Queued => {
                if let Some(reply) = msg.reply {
                    consumer.note_request(reply);
                }
                self.out_msgs += 1;
                self.out_bytes += msg.payload.len() as u64;
                self.touch(consumer);
                true
            }
            Push::Closed => false,
            Push::SlowConsumer => {
                server.slow_consumer(consumer, CloseReason::SlowConsumerPendingBytes);
                false
            }
        }
    }

    /// Forgets cached matches (when the publisher moves to another account).
    pub fn reset_cache(&mut self) {
        self.cache = MatchCache::default();
    }

    /// Records that `client` has new bytes to flush.
    #[inline]
    pub fn touch(&mut self, client: &Arc<ClientShared>) {
        self.touched.entry(client.cid).or_insert_with(|| Arc::clone(client));
    }

    /// Wakes every consumer written to since the last call, adds the delivery counters to the
    /// server's, and stalls the caller (bounded) while any of those consumers is over its
    /// high-water mark.
    pub async fn flush(&mut self, server: &ServerState, high_water: usize) {
        let (lookups, hits) = self.cache.take_counts();
        if lookups > 0 {
            server.stats.lookups.fetch_add(lookups, std::sync::atomic::Ordering::Relaxed);
            server.stats.cache_hits.fetch_add(hits, std::sync::atomic::Ordering::Relaxed);
        }
        if self.touched.is_empty() {
            return;
        }
        server.stats.add_out(self.out_msgs, self.out_bytes);
        self.out_msgs = 0;
        self.out_bytes = 0;
        let mut stalled = false;
        for client in self.touched.values() {
            client.outbound.wake();
            stalled |= client.outbound.pending() > high_water;
        }
        if stalled {
            let deadline = tokio::time::Instant::now() + STALL_BUDGET;
            for client in self.touched.values() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                if client.outbound.pending() > high_water {
                    server.stats.stalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    client.outbound.wait_below(high_water, left.min(STALL_STEP)).await;
                }
            }
        }
        self.touched.clear();
    }
}
