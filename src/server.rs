//! The server: binding its listeners, running until shutdown, reloads, lame duck mode and
//! graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::connection::{CloseReason, Connection, Kind, Push};
use crate::jetstream::JetStream;
use crate::listener::Listeners;
use crate::options::Options;
use crate::state::{Live, ServerState};

pub use crate::state::live::COMPAT_VERSION;
pub use crate::state::{ClosedConn, ServerStats, MAX_CLOSED_CLIENTS};

/// Why a reload was refused; the old options stay in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The listen address or port changed, which needs a restart.
    #[error("config reload not supported for listen address or port")]
    Listen,
    /// The new options do not hold together.
    #[error("{0}")]
    Invalid(&'static str),
    /// The new TLS settings could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    state: Arc<ServerState>,
    jetstream: Option<Arc<JetStream>>,
    listeners: Listeners,
    addr: SocketAddr,
    tracker: TaskTracker,
}

/// A handle to a running server: its address, its counters, and a way to stop it.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
    jetstream: Option<Arc<JetStream>>,
    addr: SocketAddr,
    websocket: Option<SocketAddr>,
    mqtt: Option<SocketAddr>,
    cluster: Option<SocketAddr>,
    leaf: Option<SocketAddr>,
}

impl ServerHandle {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where HTTP monitoring listens, when it is on.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        match self.state.monitor_port() {
            0 => None,
            port => Some(SocketAddr::new(self.addr.ip(), port)),
        }
    }

    /// Where WebSocket clients connect, when the listener is on.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket
    }

    /// Where routes connect, when a cluster is configured.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster
    }

    /// Where leaf nodes connect, when the server accepts them.
    pub fn leaf_addr(&self) -> Option<SocketAddr> {
        self.leaf
    }

    /// Where MQTT devices connect, when the listener is on.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt
    }

    /// Starts a graceful shutdown: stop accepting, flush and close every client.
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Enters lame duck mode: stop accepting, tell clients, then close them gradually over
    /// lame_duck_duration and shut down.
    pub fn enter_lame_duck(&self) {
        self.state.lame_duck.cancel();
    }

    /// Applies new options to the running server without dropping connections: limits, ping
    /// settings, lame duck timing, authorization and TLS (new connections get the new TLS
    /// settings; connections already open keep theirs). Clients whose credentials no longer
    /// pass are closed. The listen address cannot change. When the new options are refused,
    /// the old ones stay in force.
    pub fn reload(&self, new: Options) -> Result<(), ReloadError> {
        let state = &self.state;
        let mut new = new;
        new.apply_baseline();
        let current = state.config.get();
        if new.host != current.opts.host || (new.port != current.opts.port && new.port != 0) {
            return Err(ReloadError::Listen);
        }
        if new.max_payload > new.max_pending {
            return Err(ReloadError::Invalid("max_payload can not be larger than max_pending"));
        }
        new.port = current.opts.port;
        let mut live = Live::build(new, &current.info.server_id, current.info.port)
            .map_err(|e| ReloadError::Tls(e.to_string()))?;
        live.info.ldm = current.info.ldm;
        drop(current);
        state.accounts.link(&live.opts.all_account_links());
        if let Some(js) = &self.jetstream {
            // Accounts that gained JetStream; those that lost it keep their streams until restart.
            for name in &live.opts.jetstream_accounts {
                if js.account(name).is_none() {
                    let limits = live.opts.jetstream_limits.iter().find(|(n, _)| n == name).map(|(_, l)| *l);
                    js.enable_with(&state.accounts.get_or_create(name), limits.unwrap_or_default());
                }
            }
        }
        state.config.replace(live);
        for conn in state.registry.snapshot(None) {
            conn.attention();
        }
        info!("Reloaded server configuration");
        Ok(())
    }

    /// The shared state, for counters and monitoring.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// JetStream, when enabled.
    pub fn jetstream(&self) -> Option<&Arc<JetStream>> {
        self.jetstream.as_ref()
    }
}

/// A server id in nats-server's form: `N` and 55 base32 characters.
fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    std::iter::once('N').chain((0..55).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)).collect()
}

impl Server {
    /// Binds every listener the options ask for. `opts.port` 0 picks a free port. Zero limits
    /// mean nats-server's defaults.
    pub async fn bind(opts: Options) -> io::Result<Server> {
        let mut opts = opts;
        opts.apply_baseline();
        if opts.cluster.is_some() && opts.jetstream.is_some() {
            return Err(io::Error::other(
                "JetStream in a cluster is not supported yet: run JetStream on a server outside the cluster",
            ));
        }
        if opts.mqtt.is_some() {
            if opts.server_name.is_empty() {
                return Err(io::Error::other("mqtt requires server name to be explicitly set"));
            }
            if opts.jetstream.is_none() {
                return Err(io::Error::other("mqtt requires JetStream to be enabled if running in standalone mode"));
            }
        }
        let listeners = Listeners::bind(&opts).await?;
        let addr = listeners.client_addr()?;
        let live = Live::build(opts, &new_server_id(), addr.port()).map_err(io::Error::other)?;
        let state = Arc::new(ServerState::new(live));
        if let Some(monitor) = listeners.monitor_addr() {
            state.set_monitor_port(monitor.port());
        }
        state.accounts.link(&state.opts().all_account_links());
        let jetstream = match &state.opts().jetstream {
            Some(js) => {
                let js = JetStream::start(&state, js)?;
                // Accounts of the configuration file with `jetstream: enabled`.
                let opts = state.opts();
                for name in &opts.jetstream_accounts {
                    let limits = opts.jetstream_limits.iter().find(|(n, _)| n == name).map(|(_, l)| *l);
                    js.enable_with(&state.accounts.get_or_create(name), limits.unwrap_or_default());
                }
                // Account JWTs that allow JetStream.
                if let Some(trust) = &opts.authorization.trust {
                    for (key, limits) in trust.jetstream_accounts() {
                        js.enable_with(&state.accounts.get_or_create(key), *limits);
                    }
                }
                Some(js)
            }
            None => None,
        };
        Ok(Server { state, jetstream, listeners, addr, tracker: TaskTracker::new() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle for stopping the server and reading its counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: Arc::clone(&self.state),
            jetstream: self.jetstream.clone(),
            addr: self.addr,
            websocket: self.listeners.websocket_addr(),
            mqtt: self.listeners.mqtt_addr(),
            cluster: self.listeners.cluster_addr(),
            leaf: self.listeners.leaf_addr(),
        }
    }

    /// Accepts clients until shutdown, then waits (up to the shutdown grace period) for every
    /// connection to flush and close.
    pub async fn run(self) {
        let Server { state, listeners, tracker, jetstream, .. } = self;
        if let Some(js) = &jetstream {
            tokio::spawn(Arc::clone(js).housekeeping(state.shutdown.clone()));
        }
        crate::monitor::system::start(&state, jetstream.clone());
        listeners.run(Arc::clone(&state), jetstream.clone(), tracker.clone()).await;
        if state.lame_duck.is_cancelled() && !state.shutdown.is_cancelled() {
            lame_duck(&state).await;
            state.shutdown.cancel();
        }
        tracker.close();
        info!("Initiating Shutdown...");
        // Each connection hears of it through its own signal, so that no read waits on a
        // signal shared by every connection.
        for conn in state.registry.snapshot(None) {
            conn.close(CloseReason::ServerShutdown);
        }
        if tokio::time::timeout(state.opts().shutdown_grace, tracker.wait()).await.is_err() {
            warn!(
                "Shutdown grace period passed with {} connections open",
                state.stats.connections.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        if let Some(js) = &jetstream {
            js.shutdown();
        }
        info!("Server Exiting..");
    }
}

/// Lame duck mode, once the listener is closed: tell every client, wait the grace period, then
/// close clients a few at a time so that they reconnect elsewhere without a stampede.
async fn lame_duck(state: &ServerState) {
    let opts = state.opts();
    info!("Entering lame duck mode, stop accepting new clients");
    state.config.update_info(|info| info.ldm = true);
    let line = state.info().to_line();
    let clients: Vec<Arc<Connection>> = state.registry.snapshot(Some(Kind::Client));
    for client in clients.iter().filter(|c| c.info_updates()) {
        if client.outbound.push_bytes(&line) == Push::Queued {
            client.outbound.wake();
        }
    }
    let grace = opts.lame_duck_grace_period.min(opts.lame_duck_duration);
    tokio::select! {
        _ = state.shutdown.cancelled() => return,
        _ = tokio::time::sleep(grace) => {}
    }
    let clients = state.registry.snapshot(Some(Kind::Client));
    if clients.is_empty() {
        return;
    }
    info!("Closing {} existing clients", clients.len());
    let spread = opts.lame_duck_duration.saturating_sub(grace);
    let step = spread / u32::try_from(clients.len()).unwrap_or(u32::MAX);
    for client in clients {
        client.close(CloseReason::ServerShutdown);
        if !step.is_zero() {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(step) => {}
            }
        }
    }
}
