//! One client connection: the state other connections share with it, its subscriptions, its
//! outbound buffer and writer, and the read loop that runs its protocol.
//!
//! Each connection runs two tasks. The reader ([`conn`]) parses what the client sends and, for
//! each publish, appends the message straight into every matching consumer's outbound buffer;
//! once per read it wakes each consumer it wrote to. The writer ([`outbound`]) waits to be woken
//! and flushes the whole buffer in one write.

pub(crate) mod conn;
pub mod outbound;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Instant, SystemTime};

use crate::auth::permissions::ResponsePermission;

use crate::sublist::Subscribable;
pub use outbound::{Outbound, Push};

/// Why a connection ended, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed its side.
    ClientClosed,
    /// Reading from the socket failed.
    ReadError,
    /// Writing to the socket failed.
    WriteError,
    /// The client broke the protocol.
    ProtocolViolation,
    /// The client let more than max_pending bytes pile up.
    SlowConsumerPendingBytes,
    /// One flush to the client took longer than write_deadline.
    SlowConsumerWriteDeadline,
    /// The client stopped answering pings.
    StaleConnection,
    /// The server is shutting down.
    ServerShutdown,
    /// The server already had max_connections clients.
    MaxConnectionsExceeded,
    /// Authentication failed.
    AuthenticationViolation,
    /// CONNECT did not arrive in time.
    AuthenticationTimeout,
}

impl CloseReason {
    /// Whether what is still queued for the client is sent before the socket closes.
    pub fn flushes(self) -> bool {
        !matches!(
            self,
            CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline | CloseReason::WriteError
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
        })
    }
}

/// The part of a connection that publishers on other connections touch: its outbound buffer,
/// the signals that wake its writer and its reader, and what it negotiated in CONNECT.
pub struct ClientShared {
    /// Connection id, unique for the server's lifetime.
    pub cid: u64,
    /// Queued bytes and the writer's bookkeeping.
    pub outbound: Outbound,
    /// Set from CONNECT: the client understands HMSG.
    headers: AtomicBool,
    /// Set from CONNECT (protocol 1): the client accepts INFO updates after the first.
    info_updates: AtomicBool,
    /// Why the connection is closing, once it is; the first reason wins.
    close_reason: Mutex<Option<CloseReason>>,
    /// Wakes the reader: to stop when closing, else to pick up reloaded options.
    attention: tokio::sync::Notify,
    /// Set once the connection is closing; publishers then skip it.
    closing: AtomicBool,
    /// Set when the client may answer the requests it receives (allow_responses).
    tracks_responses: AtomicBool,
    /// Reply subjects of requests delivered to it, while it may answer them.
    responses: Mutex<ResponseTracker>,
    /// Who the client is, for monitoring.
    pub meta: Mutex<ConnMeta>,
    /// Counters the reader keeps, for monitoring.
    pub stats: ConnStats,
}

/// What monitoring shows about a connection besides its counters.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    /// Remote address.
    pub peer: Option<std::net::SocketAddr>,
    /// When it connected.
    pub start: Option<SystemTime>,
    /// Client-chosen name from CONNECT.
    pub name: String,
    /// Client library language.
    pub lang: String,
    /// Client library version.
    pub version: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The account it belongs to.
    pub account: String,
    /// The negotiated TLS version, for TLS connections.
    pub tls_version: Option<String>,
}

/// Per-connection counters, updated by the connection's reader once per read.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Messages received from the client.
    pub in_msgs: AtomicU64,
    /// Payload bytes received from the client.
    pub in_bytes: AtomicU64,
    /// Subscriptions it holds now.
    pub subscriptions: AtomicU64,
    /// Last time it sent anything, as nanoseconds since the Unix epoch.
    pub last_activity: AtomicU64,
    /// Round-trip time of the first PING, in nanoseconds (0 until measured).
    pub rtt_nanos: AtomicU64,
}

/// Nanoseconds since the Unix epoch, for timestamps kept in atomics.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The reply subjects a client may publish to because it received a request naming them.
#[derive(Default)]
pub struct ResponseTracker {
    /// How many answers and for how long.
    permission: ResponsePermission,
    /// Reply subject → (answers so far, when the request arrived).
    replies: rustc_hash::FxHashMap<Box<[u8]>, (u32, Instant)>,
}

/// Most reply subjects remembered per client; the oldest are dropped past it.
const MAX_TRACKED_REPLIES: usize = 10_000;

impl ClientShared {
    /// State for a new connection with the given outbound limit.
    pub fn new(cid: u64, max_pending: usize) -> Self {
        ClientShared {
            cid,
            outbound: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
            info_updates: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            attention: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            tracks_responses: AtomicBool::new(false),
            responses: Mutex::new(ResponseTracker::default()),
            meta: Mutex::new(ConnMeta::default()),
            stats: ConnStats::default(),
        }
    }

    /// Whether messages to this client may carry headers (HMSG).
    #[inline]
    pub fn headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    pub(crate) fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
    }

    /// Whether the client accepts INFO messages after the first (it sent protocol 1).
    pub fn info_updates(&self) -> bool {
        self.info_updates.load(Ordering::Relaxed)
    }

    pub(crate) fn set_info_updates(&self, on: bool) {
        self.info_updates.store(on, Ordering::Relaxed);
    }

    /// Sets whether (and how) the client may answer requests it receives.
    pub(crate) fn set_response_permission(&self, permission: Option<ResponsePermission>) {
        let mut tracker = self.responses.lock();
        tracker.replies.clear();
        if let Some(p) = permission {
            tracker.permission = p;
        }
        self.tracks_responses.store(permission.is_some(), Ordering::Release);
    }

    /// Remembers that the client received a request answered at `reply`.
    #[inline]
    pub fn note_request(&self, reply: &[u8]) {
        if !self.tracks_responses.load(Ordering::Acquire) {
            return;
        }
        let mut tracker = self.responses.lock();
        if tracker.replies.len() >= MAX_TRACKED_REPLIES {
            let expires = tracker.permission.expires;
            tracker.replies.retain(|_, (_, at)| !expires.is_zero() && at.elapsed() < expires);
            if tracker.replies.len() >= MAX_TRACKED_REPLIES {
                tracker.replies.clear();
            }
        }
        tracker.replies.insert(reply.into(), (0, Instant::now()));
    }

    /// Counts one answer to `subject` if the client may publish it as a response.
    pub fn take_response(&self, subject: &[u8]) -> bool {
        if !self.tracks_responses.load(Ordering::Acquire) {
            return false;
        }
        let mut tracker = self.responses.lock();
        let ResponsePermission { max, expires } = tracker.permission;
        let Some((count, at)) = tracker.replies.get_mut(subject) else { return false };
        *count += 1;
        let allowed = (max == 0 || *count <= max) && (expires.is_zero() || at.elapsed() <= expires);
        if !allowed || (max > 0 && *count >= max) {
            tracker.replies.remove(subject);
        }
        allowed
    }

    /// True once the connection has started closing.
    #[inline]
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts closing the connection for `reason`: the reader stops, and the writer flushes
    /// what is queued first or drops it, as the reason says. Returns false if it was already
    /// closing.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut r = self.close_reason.lock();
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
        }
        self.closing.store(true, Ordering::Release);
        self.outbound.close(reason.flushes());
        self.attention.notify_one();
        true
    }

    /// Wakes the reader to look at the server's options again.
    pub fn attention(&self) {
        self.attention.notify_one();
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }
}

/// One subscription of one client.
pub struct Subscription {
    /// The subscriber.
    pub client: Arc<ClientShared>,
    /// The subject filter.
    pub subject: Box<[u8]>,
    /// The queue group, for queue subscriptions.
    pub queue: Option<Box<[u8]>>,
    /// The client's id for it, sent back in each MSG.
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
    pub fn new(client: Arc<ClientShared>, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Self {
        Subscription {
            client,
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
