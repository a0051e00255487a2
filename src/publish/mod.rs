//! Publish → match → deliver: the message path for every kind of publisher.
//!
//! A [`Publisher`] belongs to one publishing task (a client's read loop, later a route's or a
//! leaf's, or the server itself through an [`InternalPublisher`]). For each message it finds
//! the matching subscriptions through its cache of the account's shared match results, hands
//! the message to each target (one member per queue group), and remembers which connections it
//! wrote to. After a whole read is processed, [`Publisher::flush`] wakes each of them once; for a
//! publishing client, [`Publisher::flush_and_stall`] also holds the client back briefly while a
//! consumer it feeds is backing up. A route or leaf read loop is never stalled: that would
//! stall every client behind the link.
//!
//! Routes and leaf nodes get one copy of a message per connection, however many of their
//! subscriptions it matched, naming the queue groups it was picked for on their side.

mod internal;

pub use internal::{Batch, InternalPublisher};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::account::{Account, Removal};
use crate::connection::{CloseReason, Connection, Push};
use crate::delivery::{Admit, Import, InternalSink, Message, ResponseRouter, Subscription, Target};
use crate::proto::encode::{self, Hop};
use crate::state::ServerState;
use crate::sublist::cache::Lookup;
use crate::sublist::{Matches, PublisherCache};

/// The longest one stall on one consumer may last.
const STALL_STEP: Duration = Duration::from_millis(5);
/// How many imports one message may pass through, so that imports forming a cycle end.
pub const MAX_IMPORT_DEPTH: u8 = 4;
/// The longest a publisher is stalled after one read, in all.
const STALL_BUDGET: Duration = Duration::from_millis(10);

/// Who is publishing, which decides the loop rules and whether the publisher may be stalled.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// A client connection; `echo` off means it does not get its own messages.
    Client {
        /// The publishing connection.
        conn: &'a Connection,
        /// Whether its own subscriptions get what it publishes.
        echo: bool,
    },
    /// A route: what arrives from the cluster is not sent back into it.
    Route(&'a Connection),
    /// A leaf node connected to this server: what arrives from it is not sent back to it.
    Leaf(&'a Connection),
    /// This server's hub: what arrives from it is not sent back to it, nor on to routes (each
    /// server of a leaf cluster has its own link to the hub).
    Hub(&'a Connection),
    /// The server itself (API replies, advisories, system answers).
    Internal,
}

impl Origin<'_> {
    /// Whether the message came over the leaf link `conn`.
    #[inline]
    fn is_link(&self, conn: &Arc<Connection>) -> bool {
        matches!(self, Origin::Leaf(from) | Origin::Hub(from) if std::ptr::eq(Arc::as_ptr(conn), *from))
    }
}

/// A route or leaf connection a message is going to, with the queue groups picked there.
struct HopTarget {
    conn: Arc<Connection>,
    leaf: bool,
    queues: Vec<Arc<[u8]>>,
}

/// One publisher's routing state.
pub struct Publisher {
    cache: PublisherCache<Subscription>,
    /// Connections written to since the last flush, by connection id.
    touched: FxHashMap<u64, Arc<Connection>>,
    /// Route and leaf connections the current message goes to (reused between messages).
    hops: Vec<HopTarget>,
    /// Internal consumers handed messages since the last flush, to flush in turn.
    sinks: Vec<Arc<dyn InternalSink>>,
    /// State of a xorshift generator for picking queue members.
    rng: u64,
    /// Messages delivered since the last flush, for the server's counters.
    out_msgs: u64,
    /// Payload bytes delivered since the last flush.
    out_bytes: u64,
    /// The largest fan-out this publisher has reported to the server's counters.
    max_fanout: u32,
    /// How many imports deep the current delivery is.
    import_depth: u8,
}

impl Publisher {
    /// A publisher seeded for queue picks.
    pub fn new(seed: u64) -> Self {
        Publisher {
            cache: PublisherCache::default(),
            touched: FxHashMap::default(),
            hops: Vec::new(),
            sinks: Vec::new(),
            rng: seed | 1,
            out_msgs: 0,
            out_bytes: 0,
            max_fanout: 0,
            import_depth: 0,
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

    /// Delivers `msg` to every matching subscription of `account` and one member of each queue
    /// group. Returns whether anyone got it.
    pub fn publish(&mut self, server: &ServerState, account: &Account, origin: Origin<'_>, msg: &Message<'_>) -> bool {
        self.publish_to(server, account, origin, msg.subject, msg)
    }

    /// Delivers `msg` to the subscriptions matching `route`, which may differ from the subject
    /// the message carries: a JetStream consumer sends a stored message, with its own subject,
    /// to a deliver subject or a pull request's inbox.
    pub fn publish_to(
        &mut self,
        server: &ServerState,
        account: &Account,
        origin: Origin<'_>,
        route: &[u8],
        msg: &Message<'_>,
    ) -> bool {
        let matches = self.cache.get(&account.sublist, route);
        if matches.is_empty() {
            return false;
        }
        let matches = Arc::clone(matches);
        self.deliver_matches(server, account, origin, &matches, msg, None)
    }

    /// Delivers a message that came from a route: to every matching plain subscription, and to
    /// a member of each queue group the sending server picked this one for (`queues`, names
    /// separated by spaces), as nats-server does.
    pub fn publish_routed(
        &mut self,
        server: &ServerState,
        account: &Account,
        origin: Origin<'_>,
        msg: &Message<'_>,
        queues: &[u8],
    ) -> bool {
        let matches = self.cache.get(&account.sublist, msg.subject);
        if matches.is_empty() {
            return false;
        }
        let matches = Arc::clone(matches);
        self.deliver_matches(server, account, origin, &matches, msg, Some(queues))
    }

    /// Hands `msg` to each of `matches` (one member per queue group), then to the route and
    /// leaf connections among them.
    fn deliver_matches(
        &mut self,
        server: &ServerState,
        account: &Account,
        origin: Origin<'_>,
        matches: &Matches<Subscription>,
        msg: &Message<'_>,
        picked_queues: Option<&[u8]>,
    ) -> bool {
        let mut delivered = false;
        let fanout = matches.psubs.len() + matches.qsubs.len();
        if fanout > self.max_fanout as usize {
            self.max_fanout = u32::try_from(fanout).unwrap_or(u32::MAX);
            server.stats.max_fanout.fetch_max(u64::from(self.max_fanout), Ordering::Relaxed);
        }
        for sub in &matches.psubs {
            delivered |= self.deliver(server, account, origin, sub, msg, None);
        }
        for group in &matches.qsubs {
            if let Some(names) = picked_queues {
                if !names.split(|b| *b == b' ').any(|q| q == &group.name[..]) {
                    continue;
                }
            }
            let n = group.members.len();
            let start = (self.next_random() % n as u64) as usize;
            // Members behind leaf links serve the group only when no member here or in the
            // cluster can, as in nats-server, so that each side keeps its own work.
            let mut served = false;
            let mut over_leaf = false;
            for i in 0..n {
                let sub = &group.members[(start + i) % n];
                if matches!(sub.target, Target::Leaf(_) | Target::Hub(_)) {
                    over_leaf = true;
                    continue;
                }
                if self.deliver(server, account, origin, sub, msg, Some(&group.name)) {
                    served = true;
                    break;
                }
            }
            if !served && over_leaf {
                for i in 0..n {
                    let sub = &group.members[(start + i) % n];
                    if matches!(sub.target, Target::Leaf(_) | Target::Hub(_))
                        && self.deliver(server, account, origin, sub, msg, Some(&group.name))
                    {
                        served = true;
                        break;
                    }
                }
            }
            delivered |= served;
        }
        if !self.hops.is_empty() {
            self.send_hops(server, account, msg);
        }
        delivered
    }

    /// Carries `msg` through an import into another account (see [`Import`]): on the import's
    /// local subject for a stream, into the exporter with a reply of the server's own for a
    /// service request, back to the requester for a response. Imports may lead on to further
    /// imports, up to [`MAX_IMPORT_DEPTH`] deep, so that a cycle cannot loop.
    #[inline(never)]
    fn deliver_import(&mut self, server: &ServerState, origin: Origin<'_>, import: &Import, msg: &Message<'_>) -> bool {
        if self.import_depth >= MAX_IMPORT_DEPTH {
            return false;
        }
        let mut subject = Vec::new();
        let mut opened: Option<(&ResponseRouter, Box<[u8]>)> = None;
        let mut with_info = Vec::new();
        let mut header_len = msg.header_len;
        let mut payload = msg.payload;
        let way_back;
        let (into, reply): (&str, Option<&[u8]>) = match import {
            Import::Stream { into, transform } => {
                transform.apply(msg.subject, &mut subject);
                (into, msg.reply)
            }
            Import::Service { into, from, transform, response, threshold, responses } => {
                match transform {
                    Some(t) => t.apply(msg.subject, &mut subject),
                    None => subject.extend_from_slice(msg.subject),
                }
                if let Some(reply) = msg.reply {
                    opened = Some((responses, responses.open(from, reply, *response, *threshold)));
                }
                if let Origin::Client { conn, .. } | Origin::Leaf(conn) | Origin::Hub(conn) = origin {
                    header_len = request_info(from, conn.stats.rtt_nanos.load(Ordering::Relaxed), msg, &mut with_info);
                    payload = &with_info;
                }
                (into, opened.as_ref().map(|(_, r)| &r[..]))
            }
            Import::Responses(router) => {
                let Some(way) = router.route(msg.subject) else { return false };
                // An empty message ends a streamed or chunked response.
                if msg.payload.is_empty() {
                    router.close(msg.subject);
                }
                way_back = way;
                subject.extend_from_slice(&way_back.reply);
                (&way_back.account, msg.reply)
            }
        };
        let Some(account) = server.accounts.get(into) else { return false };
        let forwarded = Message { subject: &subject, reply, header_len, payload };
        let matches = match account.sublist.lookup(&subject) {
            Lookup::Cached(slot) => slot.read().1,
            Lookup::Uncached(m) => Arc::new(m),
        };
        self.import_depth += 1;
        let outer_hops = std::mem::take(&mut self.hops);
        let delivered = self.deliver_matches(server, &account, origin, &matches, &forwarded, None);
        self.hops = outer_hops;
        self.import_depth -= 1;
        if let (false, Some((router, reply))) = (delivered, &opened) {
            router.close(reply);
        }
        // A request handed to a service import counts as delivered whether or not the exporter
        // had a responder, as in nats-server: the requester times out rather than hearing of no
        // responders.
        delivered || matches!(import, Import::Service { .. })
    }

    #[inline(always)]
    fn deliver(
        &mut self,
        server: &ServerState,
        account: &Account,
        origin: Origin<'_>,
        sub: &Arc<Subscription>,
        msg: &Message<'_>,
        queue: Option<&[u8]>,
    ) -> bool {
        if sub.is_removed() || sub.denies(msg.subject) {
            return false;
        }
        match &sub.target {
            Target::Client(conn) => {
                if conn.is_closing() {
                    return false;
                }
                if let Origin::Client { conn: publisher, echo: false } = origin {
                    if std::ptr::eq(Arc::as_ptr(conn), publisher) {
                        return false;
                    }
                }
                if !self.admit(account, sub) {
                    return false;
                }
                match conn.outbound.push_msg(msg, &sub.sid, conn.headers()) {
                    Push::Queued => {
                        if let Some(reply) = msg.reply {
                            conn.note_request(reply);
                        }
                        self.out_msgs += 1;
                        self.out_bytes += msg.payload.len() as u64;
                        self.touch(conn);
                        true
                    }
                    Push::Closed => false,
                    Push::SlowConsumer => {
                        server.slow_consumer(conn, CloseReason::SlowConsumerPendingBytes);
                        false
                    }
                }
            }
            Target::Mqtt(target) => {
                if target.conn.is_closing() || !self.admit(account, sub) {
                    return false;
                }
                match target.push(msg) {
                    None => true,
                    Some(Push::Queued) => {
                        self.out_msgs += 1;
                        self.out_bytes += msg.payload.len() as u64;
                        self.touch(&target.conn);
                        true
                    }
                    Some(Push::Closed) => false,
                    Some(Push::SlowConsumer) => {
                        server.slow_consumer(&target.conn, CloseReason::SlowConsumerPendingBytes);
                        false
                    }
                }
            }
            Target::Route(conn) => {
                // One hop only: what came from the cluster stays on this server, and what came
                // from the hub reached the other servers of this one's cluster over their own
                // links.
                if conn.is_closing() || matches!(origin, Origin::Route(_) | Origin::Hub(_)) {
                    return false;
                }
                self.add_hop(conn, true, queue);
                true
            }
            Target::Leaf(conn) => {
                if conn.is_closing() || origin.is_link(conn) {
                    return false;
                }
                self.add_hop(conn, false, queue);
                true
            }
            Target::Hub(conn) => {
                // What came from a route went to the hub from the server it was published on.
                if conn.is_closing() || origin.is_link(conn) || matches!(origin, Origin::Route(_)) {
                    return false;
                }
                self.add_hop(conn, false, queue);
                true
            }
            Target::Import(import) => self.deliver_import(server, origin, import, msg),
            Target::Internal(sink) => {
                if !self.admit(account, sub) {
                    return false;
                }
                let taken = sink.deliver(sub, msg);
                if taken && !self.sinks.iter().any(|s| Arc::ptr_eq(s, sink)) {
                    self.sinks.push(Arc::clone(sink));
                }
                taken
            }
        }
    }

    /// Counts a delivery against the subscription's limit; the last one removes it.
    #[inline(always)]
    fn admit(&self, account: &Account, sub: &Arc<Subscription>) -> bool {
        match sub.admit() {
            Admit::Deliver => true,
            Admit::DeliverLast => {
                account.remove_subscription(sub, Removal::Elsewhere);
                true
            }
            Admit::Skip => false,
        }
    }

    fn add_hop(&mut self, conn: &Arc<Connection>, route: bool, queue: Option<&[u8]>) {
        let hop = match self.hops.iter_mut().find(|h| Arc::ptr_eq(&h.conn, conn)) {
            Some(hop) => hop,
            None => {
                self.hops.push(HopTarget { conn: Arc::clone(conn), leaf: !route, queues: Vec::new() });
                let last = self.hops.len() - 1;
                &mut self.hops[last]
            }
        };
        if let Some(q) = queue {
            if !hop.queues.iter().any(|have| &**have == q) {
                hop.queues.push(q.into());
            }
        }
    }

    /// Sends the current message once to each route and leaf connection it matched.
    fn send_hops(&mut self, server: &ServerState, account: &Account, msg: &Message<'_>) {
        let mut hops = std::mem::take(&mut self.hops);
        for hop in hops.drain(..) {
            let queues = &hop.queues[..];
            let kind = if hop.leaf { Hop::Leaf } else { Hop::Route { account: account.name.as_bytes() } };
            let need = encode::routed_len_hint(kind, msg, queues);
            let headers = hop.conn.headers();
            match hop
                .conn
                .outbound
                .push_message(need, msg.payload.len(), |b| encode::routed(b, kind, msg, queues, headers))
            {
                Push::Queued => {
                    self.out_msgs += 1;
                    self.out_bytes += msg.payload.len() as u64;
                    self.touch(&hop.conn);
                }
                Push::Closed => {}
                Push::SlowConsumer => server.slow_consumer(&hop.conn, CloseReason::SlowConsumerPendingBytes),
            }
        }
        self.hops = hops;
    }

    /// Messages handed to connections since the last flush.
    #[inline]
    pub fn deliveries(&self) -> u64 {
        self.out_msgs
    }

    /// Records that `conn` has new bytes to flush.
    #[inline]
    pub fn touch(&mut self, conn: &Arc<Connection>) {
        self.touched.entry(conn.cid).or_insert_with(|| Arc::clone(conn));
    }

    /// Adds the counters gathered since the last call to the server's, and lets the internal
    /// consumers handed messages finish their batch.
    fn report(&mut self, server: &ServerState) {
        for sink in std::mem::take(&mut self.sinks) {
            sink.flush();
        }
        let (lookups, hits) = self.cache.take_counts();
        if lookups > 0 {
            server.stats.lookups.fetch_add(lookups, Ordering::Relaxed);
            server.stats.cache_hits.fetch_add(hits, Ordering::Relaxed);
        }
        server.stats.add_out(self.out_msgs, self.out_bytes);
        self.out_msgs = 0;
        self.out_bytes = 0;
    }

    /// Wakes every connection written to since the last call and adds the delivery counters to
    /// the server's. Never waits: for publishers that must not be stalled.
    pub fn flush(&mut self, server: &ServerState) {
        self.report(server);
        for (_, conn) in self.touched.drain() {
            conn.outbound.wake();
        }
    }

    /// Waits (bounded) for the connections written to that are over `high_water` to drain.
    async fn stall(&self, server: &ServerState, high_water: usize) {
        let deadline = tokio::time::Instant::now() + STALL_BUDGET;
        for conn in self.touched.values() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if conn.outbound.pending() > high_water {
                server.stats.stalls.fetch_add(1, Ordering::Relaxed);
                conn.outbound.wait_below(high_water, left.min(STALL_STEP)).await;
            }
        }
    }

    /// Like [`Publisher::flush`], then stalls the caller (bounded) while any client it wrote to
    /// is over `high_water` pending bytes, so that the consumer can drain before it is cut off.
    pub async fn flush_and_stall(&mut self, server: &ServerState, high_water: usize) {
        self.report(server);
        if self.touched.is_empty() {
            return;
        }
        let mut stalled = false;
        for conn in self.touched.values() {
            conn.outbound.wake();
            stalled |= conn.outbound.pending() > high_water;
        }
        if stalled {
            // Boxed: rare, and a publisher that never stalls should not carry room for it.
            Box::pin(self.stall(server, high_water)).await;
        }
        self.touched.clear();
    }
}

/// Writes into `out` the header block and body of `msg` with nats-server's
/// `Nats-Request-Info` header added (the requester's account and round-trip time, as a request
/// crossing a service import carries it); returns the new header block's length.
fn request_info(account: &str, rtt_nanos: u64, msg: &Message<'_>, out: &mut Vec<u8>) -> usize {
    const NAME: &[u8] = b"Nats-Request-Info:";
    let (headers, body) = msg.payload.split_at(msg.header_len.min(msg.payload.len()));
    out.clear();
    if headers.len() >= 4 {
        if memchr::memmem::find(headers, NAME).is_some() {
            out.extend_from_slice(msg.payload);
            return msg.header_len;
        }
        out.extend_from_slice(&headers[..headers.len() - 2]);
    } else {
        out.extend_from_slice(b"NATS/1.0\r\n");
    }
    out.extend_from_slice(b"Nats-Request-Info: {\"acc\":");
    // A string always serialises.
    let _ = serde_json::to_writer(&mut *out, account);
    if rtt_nanos > 0 {
        out.extend_from_slice(b",\"rtt\":");
        out.extend_from_slice(itoa::Buffer::new().format(rtt_nanos).as_bytes());
    }
    out.extend_from_slice(b"}\r\n\r\n");
    let header_len = out.len();
    out.extend_from_slice(body);
    header_len
}

#[cfg(test)]
mod tests;
