//! What any socket connection (a client now; a route or a leaf node later) shares with the
//! tasks that deliver to it: its outbound queue, the signals that wake its writer and its
//! reader, how it is closing, and what monitoring shows about it.
//!
//! The connection's own read loop owns everything else (its parser, its subscriptions by sid,
//! its permissions). Other tasks only ever hold an `Arc<Connection>`: publishers append to the
//! outbound queue, the account tells it about subscriptions that ended elsewhere, and the
//! server closes it.

pub mod accept;
pub mod heartbeat;
pub mod outbound;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::auth::permissions::ResponsePermission;

pub use outbound::{Outbound, Push};

/// What is at the other end of a connection, as nats-server names it in `/connz` (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An application's client library.
    Client,
    /// Another server of the cluster.
    Router,
    /// A leaf node server.
    Leaf,
}

impl Kind {
    /// The name nats-server's monitoring uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "Client",
            Kind::Router => "Router",
            Kind::Leaf => "Leafnode",
        }
    }
}

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
    /// Another MQTT connection took over its client id.
    DuplicateClientId,
    /// A route to a server that already has one.
    DuplicateRoute,
    /// A route from a server with this server's name.
    DuplicateServerName,
    /// A route from a server of another cluster, or a leaf node of this server's cluster.
    ClusterNameConflict,
    /// A leaf node link replaced by a newer one from the same server.
    DuplicateLeaf,
    /// The connection's task ended without saying why (it panicked).
    Internal,
}

impl CloseReason {
    /// Whether what is still queued for the client is sent before the socket closes.
    pub fn flushes(self) -> bool {
        !matches!(
            self,
            CloseReason::SlowConsumerPendingBytes
                | CloseReason::SlowConsumerWriteDeadline
                | CloseReason::WriteError
                | CloseReason::Internal
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
            CloseReason::DuplicateClientId => "Duplicate Client ID",
            CloseReason::DuplicateRoute => "Duplicate Route",
            CloseReason::DuplicateServerName => "Duplicate Server Name",
            CloseReason::ClusterNameConflict => "Cluster Name Conflict",
            CloseReason::DuplicateLeaf => "Duplicate Remote LeafNode Connection",
            CloseReason::Internal => "Internal Error",
        })
    }
}

/// Subscriptions that ended outside the owner's read loop pile up at most this many before
/// the owner is woken to forget them.
const ENDED_WAKE_AT: usize = 1024;

/// The part of a connection that other tasks touch.
pub struct Connection {
    /// Connection id, unique for the server's lifetime.
    pub cid: u64,
    /// What is at the other end.
    pub kind: Kind,
    /// Queued bytes and the writer's bookkeeping.
    pub outbound: Outbound,
    /// Set from CONNECT: the peer understands HMSG.
    headers: AtomicBool,
    /// Set from CONNECT (protocol 1): the client accepts INFO updates after the first.
    info_updates: AtomicBool,
    /// Why the connection is closing, once it is; the first reason wins.
    close_reason: Mutex<Option<CloseReason>>,
    /// Wakes the reader: to stop when closing, to forget ended subscriptions, or to pick up
    /// reloaded options.
    attention: tokio::sync::Notify,
    /// Set once the connection is closing; publishers then skip it.
    closing: AtomicBool,
    /// Set when the client may answer the requests it receives (allow_responses).
    tracks_responses: AtomicBool,
    /// Reply subjects of requests delivered to it, while it may answer them.
    responses: Mutex<ResponseTracker>,
    /// Sids of its subscriptions that were removed by another task (a delivery limit reached
    /// while another connection published), for the owner to forget.
    ended: Mutex<Vec<Box<[u8]>>>,
    /// Who the peer is, for monitoring.
    pub meta: Mutex<ConnMeta>,
    /// Counters the reader keeps, for monitoring.
    pub stats: ConnStats,
}

impl ConnMeta {
    /// A client's, as it connects from `peer` now, in the global account until it
    /// authenticates.
    pub fn arriving(peer: std::net::SocketAddr, tls_version: Option<String>) -> ConnMeta {
        ConnMeta {
            peer: Some(peer),
            start: Some(SystemTime::now()),
            account: crate::account::GLOBAL_ACCOUNT.to_string(),
            tls_version,
            ..ConnMeta::default()
        }
    }
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
    /// It came in over WebSocket.
    pub websocket: bool,
    /// An MQTT device, with its client id (empty until its CONNECT is accepted).
    pub mqtt_client: Option<String>,
    /// A route: who is at the other end.
    pub route: Option<RouteMeta>,
    /// A leaf link: who is at the other end.
    pub leaf: Option<LeafMeta>,
}

/// What monitoring shows about a leaf link's other side.
#[derive(Debug, Clone, Default)]
pub struct LeafMeta {
    /// The other server's name.
    pub remote_server: String,
    /// The other server's cluster, if it has one.
    pub remote_cluster: String,
    /// This server dialed the link (it is one of the remotes).
    pub solicited: bool,
    /// This server is the spoke of the link (the other side its hub).
    pub spoke: bool,
    /// Subjects (and queue groups) the other side has told this server about.
    pub subscriptions: u64,
}

/// What monitoring shows about a route's peer.
#[derive(Debug, Clone, Default)]
pub struct RouteMeta {
    /// The peer's server id.
    pub remote_id: String,
    /// This server dialed it.
    pub solicited: bool,
    /// It is one of the configured routes (not learned by gossip).
    pub configured: bool,
    /// Subscriptions the peer has told this server about.
    pub subscriptions: u64,
}

impl ConnMeta {
    /// The client type nats-server names in monitoring and advisories.
    pub fn client_type(&self) -> &'static str {
        if self.mqtt_client.is_some() {
            "mqtt"
        } else if self.websocket {
            "websocket"
        } else {
            "nats"
        }
    }
}

/// Per-connection counters, updated by the connection's reader once per read.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Messages received from the peer.
    pub in_msgs: AtomicU64,
    /// Payload bytes received from the peer.
    pub in_bytes: AtomicU64,
    /// Subscriptions it holds now.
    pub subscriptions: AtomicU64,
    /// Entries in the owner's own table of subscriptions by sid, as of its last read: the
    /// live ones, plus ended ones it has not forgotten yet. Stays close to `subscriptions`;
    /// a growing gap would be a leak.
    pub sids: AtomicU64,
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

impl ConnStats {
    /// Adds messages and payload bytes a link's reader took in since it last added them.
    pub fn add_in(&self, msgs: &mut u64, bytes: &mut u64) {
        if *msgs > 0 {
            self.in_msgs.fetch_add(*msgs, Ordering::Relaxed);
            self.in_bytes.fetch_add(*bytes, Ordering::Relaxed);
            (*msgs, *bytes) = (0, 0);
        }
    }
}

impl Connection {
    /// What a read from the peer's socket means for its read loop: bytes (noted as activity),
    /// or why the connection ends.
    pub fn after_read(&self, read: std::io::Result<usize>) -> Result<(), CloseReason> {
        match read {
            Ok(0) => Err(CloseReason::ClientClosed),
            Ok(_) => {
                self.stats.last_activity.store(unix_nanos(SystemTime::now()), Ordering::Relaxed);
                Ok(())
            }
            Err(_) => Err(CloseReason::ReadError),
        }
    }

    /// State for a new connection of `kind` with the given outbound limit.
    pub fn new(cid: u64, kind: Kind, max_pending: usize) -> Self {
        Connection {
            cid,
            kind,
            outbound: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
            info_updates: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            attention: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            tracks_responses: AtomicBool::new(false),
            responses: Mutex::new(ResponseTracker::default()),
            ended: Mutex::new(Vec::new()),
            meta: Mutex::new(ConnMeta::default()),
            stats: ConnStats::default(),
        }
    }

    /// Whether messages to this peer may carry headers (HMSG).
    #[inline]
    pub fn headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Records whether the peer understands headers.
    pub fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
    }

    /// Whether the client accepts INFO messages after the first (it sent protocol 1).
    pub fn info_updates(&self) -> bool {
        self.info_updates.load(Ordering::Relaxed)
    }

    /// Records whether the client accepts INFO updates.
    pub fn set_info_updates(&self, on: bool) {
        self.info_updates.store(on, Ordering::Relaxed);
    }

    /// Sets whether (and how) the client may answer requests it receives.
    pub fn set_response_permission(&self, permission: Option<ResponsePermission>) {
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

    /// Tells the owner that its subscription `sid` was removed by another task.
    pub fn subscription_ended(&self, sid: &[u8]) {
        let mut ended = self.ended.lock();
        ended.push(sid.into());
        if ended.len() >= ENDED_WAKE_AT {
            drop(ended);
            self.attention.notify_one();
        }
    }

    /// The sids of subscriptions removed by other tasks since the last call.
    pub fn take_ended(&self, into: &mut Vec<Box<[u8]>>) {
        let mut ended = self.ended.lock();
        if !ended.is_empty() {
            into.append(&mut ended);
            if ended.capacity() > ENDED_WAKE_AT {
                ended.shrink_to_fit();
            }
        }
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

    /// The signal [`Connection::attention`] and [`Connection::close`] raise, for the reader
    /// to wait on.
    pub fn attention_signal(&self) -> &tokio::sync::Notify {
        &self.attention
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }
}
