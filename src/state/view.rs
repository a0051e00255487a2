//! A read-only view of the server's state, for monitoring.

use std::sync::Arc;
use std::time::SystemTime;

use super::{ClosedConn, ServerState, ServerStats};
use crate::account::Account;
use crate::connection::{Connection, Kind};
use crate::options::Options;
use crate::proto::info::ServerInfo;

/// What monitoring may see of the server: it reads counters, options and snapshots, and can
/// change nothing.
#[derive(Clone)]
pub struct StateView {
    state: Arc<ServerState>,
}

impl StateView {
    pub(super) fn new(state: Arc<ServerState>) -> Self {
        StateView { state }
    }

    /// The options in force.
    pub fn opts(&self) -> Arc<Options> {
        self.state.opts()
    }

    /// INFO as a new client would get it.
    pub fn info(&self) -> ServerInfo {
        self.state.info()
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.state.stats
    }

    /// When the server started.
    pub fn start(&self) -> SystemTime {
        self.state.start
    }

    /// The monitoring port.
    pub fn monitor_port(&self) -> u16 {
        self.state.monitor_port()
    }

    /// The cluster port (0 without a cluster).
    pub fn cluster_port(&self) -> u16 {
        self.state.cluster_port()
    }

    /// The leaf node port (0 when leaf nodes are not accepted).
    pub fn leaf_port(&self) -> u16 {
        self.state.leaf_port()
    }

    /// The cluster's name (empty without a cluster).
    pub fn cluster_name(&self) -> String {
        self.state.cluster_name.read().clone()
    }

    /// Subscriptions across every account.
    pub fn subscriptions(&self) -> usize {
        self.state.subscriptions()
    }

    /// Open connections of `kind`.
    pub fn connections(&self, kind: Kind) -> Vec<Arc<Connection>> {
        self.state.registry.snapshot(Some(kind))
    }

    /// How many connections of `kind` are open.
    pub fn count(&self, kind: Kind) -> usize {
        self.state.registry.count(kind)
    }

    /// The closed connections kept, oldest first.
    pub fn closed(&self) -> Vec<ClosedConn> {
        self.state.registry.closed()
    }

    /// Every account.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        self.state.accounts.all()
    }

    /// Resolves when the server shuts down.
    pub async fn shutdown(&self) {
        self.state.shutdown.cancelled().await
    }
}
