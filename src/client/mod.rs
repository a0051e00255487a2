//! One client connection, run by its read loop.
//!
//! Each connection runs two tasks. The reader ([`read_loop`]) parses what the client sends and
//! hands each operation to its handler ([`handlers`]); a publish goes straight into every
//! matching consumer's outbound queue, and once per read the reader wakes each consumer it wrote
//! to. The writer ([`crate::connection::outbound`]) waits to be woken and flushes the whole queue
//! in one write. Who the client is and what it may do is settled in [`auth`].
//!
//! Whatever way the reader ends (the client leaves, an error, a panic), the connection is cleaned
//! up the same way when its state is dropped: it is closed, its subscriptions leave the trie and
//! it leaves the registry.

mod auth;
mod handlers;
mod read_loop;
#[cfg(test)]
mod tests;

pub(crate) use auth::check_off_runtime;
pub use read_loop::ClientRead;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tracing::debug;

use crate::account::{Account, Removal};
use crate::auth::Permissions;
use crate::connection::outbound::{write_loop, WriterEnd};
use crate::connection::{unix_nanos, CloseReason, Connection, Kind};
use crate::delivery::Subscription;
use crate::options::Options;
use crate::proto::{ConnectOptions, Parser};
use crate::publish::Publisher;
use crate::state::ServerState;

/// What a new connection is greeted with: its INFO line (empty once already sent, as before a
/// TLS handshake) and the nonce in it.
pub struct Greeting {
    /// The INFO line still to send.
    pub info: Vec<u8>,
    /// The nonce nkey and JWT users sign; empty when not needed.
    pub nonce: String,
    /// The negotiated TLS version, for TLS connections.
    pub tls_version: Option<String>,
    /// It came in over WebSocket, with what its upgrade said.
    pub websocket: Option<Box<WebsocketClient>>,
    /// Called with the connection once it exists (a WebSocket's framing attaches to it).
    pub attach: Option<Attach>,
}

/// What a WebSocket client's upgrade request said that matters after it.
#[derive(Debug, Clone, Default)]
pub struct WebsocketClient {
    /// The user JWT from the configured cookie, used when CONNECT carries none.
    pub jwt_cookie: Option<String>,
}

/// A hook [`run`] calls with the new connection.
pub type Attach = Box<dyn FnOnce(&Arc<Connection>) + Send>;

/// Runs a client connection: sends INFO, starts the writer, reads until the connection ends,
/// then cleans up and waits for the writer to finish.
pub async fn run<R, W>(
    state: Arc<ServerState>,
    cid: u64,
    peer: std::net::SocketAddr,
    reader: R,
    writer: W,
    greeting: Greeting,
) where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Taken apart at once, so that nothing of it is kept across the connection's awaits.
    let Greeting { info, nonce, tls_version, websocket, attach } = greeting;
    let opts = state.opts();
    let shared = Arc::new(Connection::new(cid, Kind::Client, opts.max_pending));
    *shared.meta.lock() = crate::connection::ConnMeta {
        websocket: websocket.is_some(),
        ..crate::connection::ConnMeta::arriving(peer, tls_version)
    };
    if let Some(attach) = attach {
        attach(&shared);
    }
    shared.stats.last_activity.store(unix_nanos(std::time::SystemTime::now()), Ordering::Relaxed);
    if !info.is_empty() {
        let _ = shared.outbound.push_bytes(&info);
    }
    // Not kept for the connection's lifetime.
    drop(info);
    let writer_task = start_writer(&state, &shared, writer, opts.write_deadline);
    shared.outbound.wake();

    state.registry.insert(Arc::clone(&shared));
    if state.shutdown.is_cancelled() {
        // Shutdown began while this connection was being set up and did not see it.
        shared.close(CloseReason::ServerShutdown);
    }
    let mut conn = Conn::new(Arc::clone(&state), Arc::clone(&shared), cid, nonce);
    conn.websocket = websocket;
    let reason = conn.read_loop(reader).await;
    shared.close(reason);
    drop(conn);
    let _ = writer_task.await;
    let reason = shared.close_reason().unwrap_or(reason);
    debug!(cid, %peer, "Client connection closed: {reason}");
}

/// Starts the task that writes what is queued for `shared` to `writer` until it closes; a
/// write that takes longer than `deadline` closes it as a slow consumer.
pub fn start_writer<W>(
    state: &Arc<ServerState>,
    shared: &Arc<Connection>,
    writer: W,
    deadline: std::time::Duration,
) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(shared);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        match write_loop(&shared.outbound, writer, deadline).await {
            WriterEnd::Done => {}
            WriterEnd::WriteError => {
                shared.close(CloseReason::WriteError);
            }
            WriterEnd::Deadline => state.slow_consumer(&shared, CloseReason::SlowConsumerWriteDeadline),
        }
    })
}

/// A connection's protocol state, owned by its read loop. Dropping it cleans the connection up.
struct Conn {
    state: Arc<ServerState>,
    /// The subject namespace this client publishes and subscribes in.
    account: Arc<Account>,
    /// The server's options as of the last reload this connection saw.
    limits: Arc<Options>,
    /// Which reload `limits` came from.
    seen_reloads: u64,
    /// Which authorization (see [`crate::state::Live::auth_epoch`]) this client was checked
    /// against.
    auth_epoch: u64,
    shared: Arc<Connection>,
    opts: ConnectOptions,
    /// Live subscriptions by sid.
    subs: FxHashMap<Box<[u8]>, Arc<Subscription>>,
    /// Sids of subscriptions that ended elsewhere, drained from the shared state (kept to
    /// reuse its allocation).
    ended: Vec<Box<[u8]>>,
    publisher: Publisher,
    parser: Parser,
    pings_out: u32,
    /// Whether a CONNECT has been accepted (and authenticated, where that is required).
    connected: bool,
    /// The nonce sent in INFO, for nkey and JWT users to sign.
    nonce: String,
    /// What this client may publish and subscribe to; `None` means anything.
    perms: Option<Arc<Permissions>>,
    /// When the PING that measures the round-trip time was sent.
    rtt_ping: Option<Instant>,
    /// Publish permission answers by subject, so that a repeated subject costs one lookup.
    pub_allowed: FxHashMap<Box<[u8]>, bool>,
    /// Messages and bytes received since the counters were last added to the server's.
    in_msgs: u64,
    in_bytes: u64,
    /// Whether the cleanup on drop has run.
    cleaned: bool,
    /// Set for a WebSocket client: it is checked against the listener's authorization.
    websocket: Option<Box<WebsocketClient>>,
}

impl Conn {
    fn new(state: Arc<ServerState>, shared: Arc<Connection>, cid: u64, nonce: String) -> Self {
        let seen_reloads = state.reloads();
        let live = state.config.get();
        let limits = Arc::clone(&live.opts);
        let auth_epoch = live.auth_epoch;
        let parser = Parser::new(limits.max_control_line, limits.max_payload);
        Conn {
            account: Arc::clone(state.accounts.global()),
            state,
            limits,
            seen_reloads,
            auth_epoch,
            shared,
            opts: ConnectOptions::default(),
            subs: FxHashMap::default(),
            ended: Vec::new(),
            publisher: Publisher::new(cid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rand::random::<u64>()),
            parser,
            pings_out: 0,
            connected: false,
            nonce,
            perms: None,
            rtt_ping: None,
            pub_allowed: FxHashMap::default(),
            in_msgs: 0,
            in_bytes: 0,
            cleaned: false,
            websocket: None,
        }
    }

    /// What this client's credentials are checked against: the WebSocket listener's
    /// authorization for a WebSocket client that has one of its own, the server's otherwise.
    fn authorization(&self) -> &crate::auth::Authorization {
        self.limits.authorization_for(self.listener())
    }

    /// The listener this client came in on.
    fn listener(&self) -> crate::options::Listener {
        if self.websocket.is_some() {
            crate::options::Listener::Websocket
        } else {
            crate::options::Listener::Client
        }
    }

    /// Forgets subscriptions that ended in other tasks (a delivery limit reached while another
    /// connection published), so that one-shot subscriptions do not pile up.
    fn forget_ended(&mut self) {
        self.shared.take_ended(&mut self.ended);
        if self.ended.is_empty() {
            return;
        }
        for sid in self.ended.drain(..) {
            if self.subs.get(&sid).is_some_and(|s| s.is_removed()) {
                self.subs.remove(&sid);
            }
        }
        if self.subs.capacity() > 64 && self.subs.len() < self.subs.capacity() / 4 {
            self.subs.shrink_to_fit();
        }
    }

    fn remove_all_subscriptions(&mut self) {
        for (_, sub) in self.subs.drain() {
            self.account.remove_subscription(&sub, Removal::Owner);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.cleaned, true) {
            return;
        }
        if self.shared.close_reason().is_none() {
            // Only a panic leaves the read loop without a reason.
            self.shared.close(CloseReason::Internal);
        }
        // The closed record keeps the subscription count the client had.
        let closed = self.state.registry.record_closed(&self.shared);
        if self.connected && self.state.events.is_listened() {
            self.state.events.report(crate::state::events::ConnectionEvent::Disconnect(closed));
        }
        self.remove_all_subscriptions();
        self.state.registry.remove(self.shared.cid);
        self.publisher.flush(&self.state);
    }
}

/// Every client connection counted in the server's connection count holds one; dropping it (at
/// the end of the connection, or when its task panics) gives the place back.
pub struct ConnectionSlot {
    state: Arc<ServerState>,
}

impl ConnectionSlot {
    /// Counts a new connection; returns the slot and how many connections there are with it.
    pub fn take(state: &Arc<ServerState>) -> (ConnectionSlot, usize) {
        state.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let count = state.stats.connections.fetch_add(1, Ordering::AcqRel) + 1;
        (ConnectionSlot { state: Arc::clone(state) }, count)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
