//! The connection registry: every open connection by id, and the last closed ones.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;

use crate::connection::{CloseReason, ConnMeta, Connection, Kind};

/// Closed connections kept for monitoring, as nats-server's max_closed_clients default.
pub const MAX_CLOSED_CLIENTS: usize = 10_000;

/// A closed connection's last figures.
#[derive(Debug, Clone)]
pub struct ClosedConn {
    /// Connection id.
    pub cid: u64,
    /// What it was.
    pub kind: Kind,
    /// Who it was.
    pub meta: ConnMeta,
    /// Messages received.
    pub in_msgs: u64,
    /// Payload bytes received.
    pub in_bytes: u64,
    /// Messages and payload bytes delivered.
    pub out: (u64, u64),
    /// Subscriptions it held last.
    pub subscriptions: u64,
    /// Last activity, nanoseconds since the Unix epoch.
    pub last_activity: u64,
    /// Round-trip time measured, in nanoseconds.
    pub rtt_nanos: u64,
    /// When it closed.
    pub stop: SystemTime,
    /// Why it closed.
    pub reason: CloseReason,
}

/// Every open connection, of every kind, by id; and a ring of the most recently closed.
pub struct Registry {
    open: DashMap<u64, Arc<Connection>, FxBuildHasher>,
    closed: Mutex<VecDeque<ClosedConn>>,
    next_cid: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            open: DashMap::with_hasher(FxBuildHasher),
            closed: Mutex::new(VecDeque::new()),
            next_cid: AtomicU64::new(1),
        }
    }
}

impl Registry {
    /// A fresh connection id.
    pub fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an open connection.
    pub fn insert(&self, conn: Arc<Connection>) {
        self.open.insert(conn.cid, conn);
    }

    /// Forgets an open connection; returns whether it was registered.
    pub fn remove(&self, cid: u64) -> bool {
        self.open.remove(&cid).is_some()
    }

    /// The open connection with this id.
    pub fn get(&self, cid: u64) -> Option<Arc<Connection>> {
        self.open.get(&cid).map(|c| Arc::clone(&c))
    }

    /// Every open connection of `kind` (all kinds when `None`), in no particular order.
    pub fn snapshot(&self, kind: Option<Kind>) -> Vec<Arc<Connection>> {
        self.open.iter().filter(|c| kind.is_none_or(|k| c.kind == k)).map(|c| Arc::clone(c.value())).collect()
    }

    /// How many connections of `kind` are open.
    pub fn count(&self, kind: Kind) -> usize {
        self.open.iter().filter(|c| c.kind == kind).count()
    }

    /// Connections open now, of every kind.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Keeps a closed connection's last figures for monitoring, and returns them.
    pub fn record_closed(&self, conn: &Connection) -> ClosedConn {
        let closed = Self::closed_of(conn);
        let mut ring = self.closed.lock();
        if ring.len() >= MAX_CLOSED_CLIENTS {
            ring.pop_front();
        }
        ring.push_back(closed.clone());
        closed
    }

    /// A connection's last figures, as it closes.
    pub fn closed_of(conn: &Connection) -> ClosedConn {
        ClosedConn {
            cid: conn.cid,
            kind: conn.kind,
            meta: conn.meta.lock().clone(),
            in_msgs: conn.stats.in_msgs.load(Ordering::Relaxed),
            in_bytes: conn.stats.in_bytes.load(Ordering::Relaxed),
            out: conn.outbound.counters(),
            subscriptions: conn.stats.subscriptions.load(Ordering::Relaxed),
            last_activity: conn.stats.last_activity.load(Ordering::Relaxed),
            rtt_nanos: conn.stats.rtt_nanos.load(Ordering::Relaxed),
            stop: SystemTime::now(),
            reason: conn.close_reason().unwrap_or(CloseReason::ClientClosed),
        }
    }

    /// The closed connections kept, oldest first.
    pub fn closed(&self) -> Vec<ClosedConn> {
        self.closed.lock().iter().cloned().collect()
    }
}
