//! The server: the listener that accepts clients, the state every connection shares, and
//! graceful shutdown.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::account::Accounts;
use crate::client::{conn, ClientShared, CloseReason};
use crate::options::Options;
use crate::proto::info::ServerInfo;

/// Closed connections kept for monitoring, as nats-server's max_closed_clients default.
pub const MAX_CLOSED_CLIENTS: usize = 10_000;

/// A closed connection's last figures.
#[derive(Debug, Clone)]
pub struct ClosedConn {
    /// Connection id.
    pub cid: u64,
    /// Who it was.
    pub meta: crate::client::ConnMeta,
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

/// The nats-server version whose client-visible behaviour Courier follows, sent in INFO.
pub const COMPAT_VERSION: &str = "2.9.10";

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

/// What every connection shares: options, the subject trie, counters and the shutdown signal.
pub struct ServerState {
    /// The options in force; replaced whole by a reload.
    opts: RwLock<Arc<Options>>,
    /// INFO as every client gets it, before its own id and address are filled in.
    info: RwLock<ServerInfo>,
    /// Bumped by every reload, so that connections know to pick up the new options.
    reloads: AtomicU64,
    /// The subject namespaces, each with its subscriptions.
    pub accounts: Accounts,
    /// Counters.
    pub stats: ServerStats,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when the server enters lame duck mode.
    pub lame_duck: CancellationToken,
    /// TLS for client connections, when configured (set at start; a reload does not change it).
    tls: Option<TlsAcceptor>,
    /// Every open client connection, by id.
    pub clients: Mutex<FxHashMap<u64, Arc<ClientShared>>>,
    /// The most recently closed connections, for monitoring; the oldest drop off.
    pub closed: Mutex<VecDeque<ClosedConn>>,
    /// When the server started.
    pub start: SystemTime,
    /// The monitoring port, once bound (0 when monitoring is off).
    monitor_port: std::sync::atomic::AtomicU16,
    next_cid: AtomicU64,
}

impl ServerState {
    /// The options in force.
    pub fn opts(&self) -> Arc<Options> {
        Arc::clone(&self.opts.read())
    }

    /// INFO as a new client would get it, before its own id and address are filled in.
    pub fn info(&self) -> ServerInfo {
        self.info.read().clone()
    }

    /// How many reloads have happened; a connection compares it with the last one it saw.
    #[inline]
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// Subscriptions across every account.
    pub fn subscriptions(&self) -> usize {
        self.accounts.subscriptions()
    }

    /// Closes `client` as a slow consumer, counting and logging it once.
    pub fn slow_consumer(&self, client: &ClientShared, reason: CloseReason) {
        if client.close(reason) {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            match reason {
                CloseReason::SlowConsumerWriteDeadline => warn!(
                    cid = client.cid,
                    "Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                    self.opts().write_deadline
                ),
                _ => {
                    warn!(
                        cid = client.cid,
                        "Slow Consumer Detected: MaxPending of {} Exceeded",
                        client.outbound.max_pending()
                    )
                }
            }
        }
    }

    /// The port monitoring listens on; 0 when it is off.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port.load(Ordering::Relaxed)
    }

    /// Keeps a closed connection's last figures for monitoring.
    pub(crate) fn record_closed(&self, client: &ClientShared) {
        let closed = ClosedConn {
            cid: client.cid,
            meta: client.meta.lock().clone(),
            in_msgs: client.stats.in_msgs.load(Ordering::Relaxed),
            in_bytes: client.stats.in_bytes.load(Ordering::Relaxed),
            out: client.outbound.counters(),
            subscriptions: client.stats.subscriptions.load(Ordering::Relaxed),
            last_activity: client.stats.last_activity.load(Ordering::Relaxed),
            rtt_nanos: client.stats.rtt_nanos.load(Ordering::Relaxed),
            stop: SystemTime::now(),
            reason: client.close_reason().unwrap_or(CloseReason::ClientClosed),
        };
        let mut ring = self.closed.lock();
        if ring.len() >= MAX_CLOSED_CLIENTS {
            ring.pop_front();
        }
        ring.push_back(closed);
    }

    pub(crate) fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }
}

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
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    state: Arc<ServerState>,
    listener: TcpListener,
    /// The HTTP monitoring listener, when monitoring is on.
    monitor: Option<TcpListener>,
    tracker: TaskTracker,
}

/// A handle to a running server: its address, its counters, and a way to stop it.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
    addr: SocketAddr,
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
    /// settings, lame duck timing and authorization. Clients whose credentials no longer pass
    /// are closed. The listen address cannot change.
    pub fn reload(&self, new: Options) -> Result<(), ReloadError> {
        let state = &self.state;
        {
            let old = state.opts();
            if new.host != old.host || (new.port != old.port && new.port != 0) {
                return Err(ReloadError::Listen);
            }
        }
        if new.max_payload > new.max_pending {
            return Err(ReloadError::Invalid("max_payload can not be larger than max_pending"));
        }
        let mut new = new;
        {
            let old = state.opts();
            new.port = old.port;
        }
        {
            let mut info = state.info.write();
            info.max_payload = new.max_payload;
            info.auth_required = new.authorization.required();
            if !new.server_name.is_empty() {
                info.server_name = new.server_name.clone();
            }
        }
        *state.opts.write() = Arc::new(new);
        state.reloads.fetch_add(1, Ordering::AcqRel);
        let clients: Vec<Arc<ClientShared>> = state.clients.lock().values().cloned().collect();
        for client in clients {
            client.attention();
        }
        info!("Reloaded server configuration");
        Ok(())
    }

    /// The shared state, for counters and monitoring.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }
}

/// A server id in nats-server's form: `N` and 55 base32 characters.
fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    std::iter::once('N').chain((0..55).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)).collect()
}

impl Server {
    /// Binds the client listener. `opts.port` 0 picks a free port.
    pub async fn bind(opts: Options) -> io::Result<Server> {
        let tls = match &opts.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(io::Error::other)?),
            None => None,
        };
        let listener = TcpListener::bind((opts.host.as_str(), opts.port)).await?;
        let addr = listener.local_addr()?;
        let server_id = new_server_id();
        let info = ServerInfo {
            server_name: if opts.server_name.is_empty() { server_id.clone() } else { opts.server_name.clone() },
            server_id,
            version: COMPAT_VERSION.to_string(),
            proto: 1,
            go: concat!("courier ", env!("CARGO_PKG_VERSION")).to_string(),
            host: opts.host.clone(),
            port: addr.port(),
            headers: true,
            auth_required: opts.authorization.required(),
            tls_required: opts.tls.is_some(),
            tls_verify: opts.tls.as_ref().is_some_and(|t| t.verify),
            max_payload: opts.max_payload,
            client_id: 0,
            client_ip: String::new(),
            nonce: String::new(),
            ldm: false,
        };
        let state = Arc::new(ServerState {
            opts: RwLock::new(Arc::new(opts)),
            info: RwLock::new(info),
            reloads: AtomicU64::new(0),
            accounts: Accounts::default(),
            stats: ServerStats::default(),
            shutdown: CancellationToken::new(),
            lame_duck: CancellationToken::new(),
            tls,
            clients: Mutex::new(FxHashMap::default()),
            closed: Mutex::new(VecDeque::new()),
            start: SystemTime::now(),
            monitor_port: std::sync::atomic::AtomicU16::new(0),
            next_cid: AtomicU64::new(1),
        });
        let monitor = match state.opts().http_port {
            Some(port) => {
                let opts = state.opts();
                let host = opts.http_host.clone().unwrap_or_else(|| opts.host.clone());
                let listener = TcpListener::bind((host.as_str(), port)).await?;
                state.monitor_port.store(listener.local_addr()?.port(), Ordering::Relaxed);
                Some(listener)
            }
            None => None,
        };
        Ok(Server { state, listener, monitor, tracker: TaskTracker::new() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // The listener was bound successfully, so its address is known.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// A handle for stopping the server and reading its counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { state: Arc::clone(&self.state), addr: self.local_addr() }
    }

    /// Accepts clients until shutdown, then waits (up to the shutdown grace period) for every
    /// connection to flush and close.
    pub async fn run(self) {
        let Server { state, listener, monitor, tracker } = self;
        if let Some(monitor) = monitor {
            tokio::spawn(crate::monitor::serve(Arc::clone(&state), monitor));
        }
        info!(
            "Listening for client connections on {}",
            listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        info!("Server is ready");
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = state.lame_duck.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let state = Arc::clone(&state);
                    tracker.spawn(serve(state, stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    error!("Error accepting client connection: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        if state.lame_duck.is_cancelled() && !state.shutdown.is_cancelled() {
            lame_duck(&state).await;
            state.shutdown.cancel();
        }
        tracker.close();
        info!("Initiating Shutdown...");
        // Each connection hears of it through its own signal, so that no read waits on a
        // signal shared by every connection.
        let clients: Vec<Arc<ClientShared>> = state.clients.lock().values().cloned().collect();
        for client in clients {
            client.close(CloseReason::ServerShutdown);
        }
        if tokio::time::timeout(state.opts().shutdown_grace, tracker.wait()).await.is_err() {
            warn!(
                "Shutdown grace period passed with {} connections open",
                state.stats.connections.load(Ordering::Relaxed)
            );
        }
        info!("Server Exiting..");
    }
}

/// Lame duck mode, once the listener is closed: tell every client, wait the grace period, then
/// close clients a few at a time so that they reconnect elsewhere without a stampede.
async fn lame_duck(state: &ServerState) {
    let opts = state.opts();
    info!("Entering lame duck mode, stop accepting new clients");
    let mut info = state.info();
    info.ldm = true;
    let line = info.to_line();
    let clients: Vec<Arc<ClientShared>> = state.clients.lock().values().cloned().collect();
    for client in clients.iter().filter(|c| c.info_updates()) {
        if client.outbound.push_bytes(&line) == crate::client::Push::Queued {
            client.outbound.wake();
        }
    }
    let grace = opts.lame_duck_grace_period.min(opts.lame_duck_duration);
    tokio::select! {
        _ = state.shutdown.cancelled() => return,
        _ = tokio::time::sleep(grace) => {}
    }
    let clients: Vec<Arc<ClientShared>> = state.clients.lock().values().cloned().collect();
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

/// Runs one accepted connection to its end.
async fn serve(state: Arc<ServerState>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let cid = state.next_cid();
    state.stats.total_connections.fetch_add(1, Ordering::Relaxed);
    let count = state.stats.connections.fetch_add(1, Ordering::AcqRel) + 1;
    if count > state.opts().max_connections {
        let (_, writer) = stream.into_split();
        conn::refuse(&state, cid, peer, writer).await;
    } else if let Some(acceptor) = state.tls.clone() {
        serve_tls(Arc::clone(&state), acceptor, stream, cid, peer).await;
    } else {
        debug!(cid, %peer, "Client connection created");
        let greeting = conn::Greeting::new(&state, cid, peer);
        let (reader, writer) = stream.into_split();
        conn::run(Arc::clone(&state), cid, peer, reader, writer, greeting).await;
    }
    state.stats.connections.fetch_sub(1, Ordering::AcqRel);
}

/// The first byte the client sent, without taking it; `None` at end of stream.
async fn first_byte(stream: &TcpStream) -> Option<u8> {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

/// A TLS connection: INFO and handshake in the configured order, then the usual protocol.
async fn serve_tls(state: Arc<ServerState>, acceptor: TlsAcceptor, mut stream: TcpStream, cid: u64, peer: SocketAddr) {
    use crate::tls::{HandshakeFirst, HANDSHAKE_RECORD};
    use tokio::io::AsyncWriteExt;
    let opts = state.opts();
    let Some(tls) = opts.tls.as_ref() else { return };
    let mut greeting = conn::Greeting::new(&state, cid, peer);
    let tls_first = match tls.handshake_first {
        HandshakeFirst::On => true,
        HandshakeFirst::Off => false,
        HandshakeFirst::Auto(wait) => {
            matches!(tokio::time::timeout(wait, first_byte(&stream)).await, Ok(Some(HANDSHAKE_RECORD)))
        }
    };
    if !tls_first {
        let sent = tokio::time::timeout(opts.write_deadline, stream.write_all(&greeting.info)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        greeting.info.clear();
    }
    // The client gets as long to start as nats-server gives a TLS client to authenticate.
    match tokio::time::timeout(tls.timeout + Duration::from_secs(1), first_byte(&stream)).await {
        Ok(Some(HANDSHAKE_RECORD)) => {}
        Ok(Some(_)) => {
            debug!(cid, %peer, "Client sent plain text to a TLS-only server");
            let mut err = bytes::BytesMut::new();
            crate::proto::encode::err(&mut err, crate::proto::errors::SECURE_CONNECTION_TLS_REQUIRED);
            let _ = tokio::time::timeout(opts.write_deadline, async {
                stream.write_all(&err).await?;
                stream.shutdown().await
            })
            .await;
            return;
        }
        Ok(None) | Err(_) => {
            debug!(cid, %peer, "TLS handshake did not start in time");
            return;
        }
    }
    let tls_stream = match tokio::time::timeout(tls.timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(cid, %peer, "TLS handshake error: {e}");
            return;
        }
        Err(_) => {
            debug!(cid, %peer, "TLS handshake timeout");
            return;
        }
    };
    greeting.tls_version = tls_stream.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "1.2".to_string(),
        other => format!("{other:?}"),
    });
    debug!(cid, %peer, "Client connection created (TLS)");
    let (reader, writer) = tokio::io::split(tls_stream);
    conn::run(Arc::clone(&state), cid, peer, reader, writer, greeting).await;
}
