//! Server-wide counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Server-wide counters, for monitoring. Publishers add to them once per read, not per message.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Messages received from clients.
    pub in_msgs: AtomicU64,
    /// Payload bytes received from clients.
    pub in_bytes: AtomicU64,
    /// Messages delivered to clients.
    pub out_msgs: AtomicU64,
    /// Payload bytes delivered to clients.
    pub out_bytes: AtomicU64,
    /// Clients closed as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Clients closed for not answering pings.
    pub stale_connections: AtomicU64,
    /// Times a publisher was stalled for a backed-up consumer.
    pub stalls: AtomicU64,
    /// Clients refused for bad or missing credentials.
    pub auth_failures: AtomicU64,
    /// Subject lookups answered from publishers' match caches.
    pub cache_hits: AtomicU64,
    /// Subject lookups in all.
    pub lookups: AtomicU64,
    /// The most subscribers one message reached.
    pub max_fanout: AtomicU64,
    /// Clients connected now.
    pub connections: AtomicUsize,
    /// Clients accepted since start.
    pub total_connections: AtomicU64,
}

impl ServerStats {
    /// Adds a batch of received messages.
    pub fn add_in(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.in_msgs.fetch_add(msgs, Ordering::Relaxed);
            self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Adds a batch of delivered messages.
    pub fn add_out(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.out_msgs.fetch_add(msgs, Ordering::Relaxed);
            self.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}
