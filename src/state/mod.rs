//! The state every connection shares, in narrow parts: the live configuration, the connection
//! registry, the counters and the accounts, with the shutdown signals. The monitor reads it
//! through a read-only [`StateView`].

pub mod events;
pub mod live;
pub mod registry;
pub mod stats;
mod view;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::account::Accounts;
use crate::connection::{CloseReason, Connection};
use crate::options::Options;
use crate::proto::info::ServerInfo;

pub use live::{Live, LiveConfig};
pub use registry::{ClosedConn, Registry, MAX_CLOSED_CLIENTS};
pub use stats::ServerStats;
pub use view::StateView;

/// What every connection shares.
pub struct ServerState {
    /// The options, INFO and TLS in force.
    pub config: LiveConfig,
    /// Every open connection, and the last closed ones.
    pub registry: Registry,
    /// Counters.
    pub stats: ServerStats,
    /// The subject namespaces, each with its subscriptions.
    pub accounts: Accounts,
    /// Connection events for the system account.
    pub events: events::Events,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when the server enters lame duck mode.
    pub lame_duck: CancellationToken,
    /// When the server started.
    pub start: SystemTime,
    /// The monitoring port, once bound (0 when monitoring is off).
    monitor_port: AtomicU16,
    /// The cluster port, once bound (0 without a cluster).
    cluster_port: AtomicU16,
    /// The leaf node port, once bound (0 when leaf nodes are not accepted).
    leaf_port: AtomicU16,
    /// The cluster's name, as configured or learned from the first route.
    pub cluster_name: parking_lot::RwLock<String>,
}

impl ServerState {
    /// State for a server starting with `live`.
    pub fn new(live: Live) -> Self {
        ServerState {
            config: LiveConfig::new(live),
            registry: Registry::default(),
            stats: ServerStats::default(),
            accounts: Accounts::default(),
            events: events::Events::default(),
            shutdown: CancellationToken::new(),
            lame_duck: CancellationToken::new(),
            start: SystemTime::now(),
            monitor_port: AtomicU16::new(0),
            cluster_port: AtomicU16::new(0),
            leaf_port: AtomicU16::new(0),
            cluster_name: parking_lot::RwLock::new(String::new()),
        }
    }

    /// The options in force.
    pub fn opts(&self) -> Arc<Options> {
        self.config.opts()
    }

    /// INFO as a new client would get it, before its own id and address are filled in.
    pub fn info(&self) -> ServerInfo {
        self.config.get().info.clone()
    }

    /// How many reloads have happened.
    #[inline]
    pub fn reloads(&self) -> u64 {
        self.config.reloads()
    }

    /// Subscriptions across every account.
    pub fn subscriptions(&self) -> usize {
        self.accounts.subscriptions()
    }

    /// Adds messages and payload bytes received from `conn` to its counters and the server's.
    pub fn count_in(&self, conn: &Connection, msgs: u64, bytes: u64) {
        self.stats.add_in(msgs, bytes);
        conn.stats.in_msgs.fetch_add(msgs, Ordering::Relaxed);
        conn.stats.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Closes `conn` as a slow consumer, counting and logging it once.
    pub fn slow_consumer(&self, conn: &Connection, reason: CloseReason) {
        if conn.close(reason) {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            match reason {
                CloseReason::SlowConsumerWriteDeadline => warn!(
                    cid = conn.cid,
                    "Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                    self.opts().write_deadline
                ),
                _ => warn!(
                    cid = conn.cid,
                    "Slow Consumer Detected: MaxPending of {} Exceeded",
                    conn.outbound.max_pending()
                ),
            }
        }
    }

    /// The port monitoring listens on; 0 when it is off.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port.load(Ordering::Relaxed)
    }

    /// Records the port monitoring was bound to.
    pub fn set_monitor_port(&self, port: u16) {
        self.monitor_port.store(port, Ordering::Relaxed);
    }

    /// The cluster port (0 without a cluster).
    pub fn cluster_port(&self) -> u16 {
        self.cluster_port.load(Ordering::Relaxed)
    }

    /// Records the bound cluster port.
    pub fn set_cluster_port(&self, port: u16) {
        self.cluster_port.store(port, Ordering::Relaxed);
    }

    /// The leaf node port (0 when leaf nodes are not accepted).
    pub fn leaf_port(&self) -> u16 {
        self.leaf_port.load(Ordering::Relaxed)
    }

    /// Records the bound leaf node port.
    pub fn set_leaf_port(&self, port: u16) {
        self.leaf_port.store(port, Ordering::Relaxed);
    }

    /// A read-only view, for monitoring.
    pub fn view(self: &Arc<Self>) -> StateView {
        StateView::new(Arc::clone(self))
    }
}
