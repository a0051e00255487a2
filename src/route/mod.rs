//! Clustering over nats-server's route protocol: a full mesh of servers sharing interest, so a
//! client on any node reaches subscribers on every node, next to nats-server nodes.
//!
//! Each route is a connection ([`conn`]) that tells its peer this server's interest per
//! account ([`interest`]: `RS+`/`RS-`, queue groups with their weights) and takes the peer's:
//! the peer's interest becomes subscriptions in the account's trie whose target is the route,
//! so the message path sends a message over a route only where the peer has interest, once per
//! route, naming the queue groups it was picked for there. What arrives from a route is
//! delivered here only, never sent on to another route. Seed routes are dialed and redialed for
//! as long as the server runs; the servers a peer tells of (INFO gossip) are dialed too, so a
//! node given one seed meets the whole mesh. Clients learn every node's client URL in INFO.

mod conn;
mod interest;
pub mod parser;

pub use crate::options::route_url::RouteUrl;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::connection::{Connection, Kind, Push};
use crate::options::ClusterOptions;
use crate::state::ServerState;

/// The longest a configured route waits between attempts.
const MAX_REDIAL: Duration = Duration::from_secs(5);
/// Bytes a route may have queued before the publishers feeding it are stalled and, past it,
/// the route cut; far more than a client's, since a fan-out burst to a whole cluster goes
/// through it.
const ROUTE_MAX_PENDING: usize = 256 << 20;

/// A registered route.
pub(crate) struct RouteEntry {
    conn: Arc<Connection>,
    /// Cancelled when the route closes, for a dialer waiting to try again.
    gone: CancellationToken,
    /// The peer's client URLs.
    connect_urls: Vec<String>,
    /// The peer's INFO with the address it is dialed at, for telling other servers of it.
    gossip: Vec<u8>,
}

/// TLS on routes: the acceptor for routes dialing in, the connector for routes dialed, and
/// how long a handshake may take.
pub type RouteTls = (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector, Duration);

/// The cluster side of a server: its routes and who dials whom.
pub struct Cluster {
    state: Arc<ServerState>,
    opts: ClusterOptions,
    tls: Option<RouteTls>,
    /// The address routes are accepted on, as told to peers.
    advertise: String,
    /// Routes by the peer's server id.
    routes: DashMap<String, RouteEntry>,
    /// Route URLs being dialed (configured or learned), so that each is dialed once.
    dialing: DashMap<String, ()>,
    tracker: TaskTracker,
}

impl Cluster {
    /// The cluster of a server whose route listener is bound at `addr`.
    pub fn new(
        state: Arc<ServerState>,
        opts: ClusterOptions,
        tls: Option<RouteTls>,
        addr: SocketAddr,
        tracker: TaskTracker,
    ) -> Arc<Cluster> {
        let advertise = opts.advertise.clone().unwrap_or_else(|| crate::options::route_url::dialable(addr));
        let name = opts.name.clone().unwrap_or_else(crate::nuid::nuid);
        *state.cluster_name.write() = name;
        state.set_cluster_port(addr.port());
        Arc::new(Cluster { state, opts, tls, advertise, routes: DashMap::new(), dialing: DashMap::new(), tracker })
    }

    /// Accepts routes on `listener` and dials the configured ones, until shutdown.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        info!("Cluster name is {}", self.state.cluster_name.read());
        info!(
            "Listening for route connections on {}",
            listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        for url in self.opts.routes.clone() {
            if let Some(u) = RouteUrl::parse(&url) {
                self.dial(u, true);
            }
        }
        crate::connection::accept::accept_each(&listener, "route", &self.state.shutdown, None, |stream, peer| {
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            self.tracker.spawn(async move { me.serve_accepted(stream, peer).await });
        })
        .await;
    }

    /// A route that dialed in: TLS first when configured, then the route protocol.
    async fn serve_accepted(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let Some((acceptor, _, timeout)) = self.tls.clone() else {
            let (reader, writer) = stream.into_split();
            conn::run(self, reader, writer, peer, None).await;
            return;
        };
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let (reader, writer) = tokio::io::split(tls);
                conn::run(self, reader, writer, peer, None).await;
            }
            Ok(Err(e)) => tracing::error!(%peer, "Route TLS handshake error: {e}"),
            Err(_) => tracing::error!(%peer, "Route TLS handshake timeout"),
        }
    }

    /// A route this server dialed: TLS first when configured (checking the peer's certificate
    /// against the URL's host), then the route protocol.
    async fn serve_dialed(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        url: &RouteUrl,
        configured: bool,
    ) -> conn::RouteEnd {
        let dialed = Some((url.clone(), configured));
        let Some((_, connector, timeout)) = self.tls.clone() else {
            let (reader, writer) = stream.into_split();
            return conn::run(Arc::clone(self), reader, writer, peer, dialed).await;
        };
        let Ok(name) = rustls::pki_types::ServerName::try_from(url.host.clone()) else {
            tracing::error!("Route TLS: {:?} is not a server name", url.host);
            return conn::RouteEnd::Failed;
        };
        match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => {
                let (reader, writer) = tokio::io::split(tls);
                conn::run(Arc::clone(self), reader, writer, peer, dialed).await
            }
            Ok(Err(e)) => {
                tracing::error!("Route TLS handshake error with {}: {e}", url.addr());
                conn::RouteEnd::Failed
            }
            Err(_) => {
                tracing::error!("Route TLS handshake timeout with {}", url.addr());
                conn::RouteEnd::Failed
            }
        }
    }

    /// Dials `url` (once at a time), again after each failure or loss: for as long as the
    /// server runs when `configured`, else `connect_retries` more times.
    fn dial(self: &Arc<Self>, url: RouteUrl, configured: bool) {
        let key = url.addr();
        if key == self.advertise || self.dialing.insert(key.clone(), ()).is_some() {
            return;
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let mut failures = 0u32;
            let mut wait = Duration::from_secs(1);
            loop {
                if me.state.shutdown.is_cancelled() {
                    break;
                }
                let connected = tokio::select! {
                    _ = me.state.shutdown.cancelled() => break,
                    r = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(url.addr())) => r,
                };
                match connected {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                        let end = me.serve_dialed(stream, peer, &url, configured).await;
                        match end {
                            conn::RouteEnd::Duplicate(gone) => {
                                // The peer is already a route: dial again only once it is lost.
                                tokio::select! {
                                    _ = me.state.shutdown.cancelled() => break,
                                    _ = gone.cancelled() => {}
                                }
                            }
                            conn::RouteEnd::SelfRoute => break,
                            conn::RouteEnd::Registered => {
                                failures = 0;
                                wait = Duration::from_secs(1);
                            }
                            conn::RouteEnd::Failed => failures += 1,
                        }
                    }
                    _ => {
                        failures += 1;
                        debug!("Error trying to connect to route {}", url.addr());
                    }
                }
                if !configured && failures > me.opts.connect_retries {
                    break;
                }
                let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                tokio::select! {
                    _ = me.state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait + jitter) => {}
                }
                if failures > 0 {
                    wait = (wait * 2).min(MAX_REDIAL);
                }
            }
            me.dialing.remove(&key);
        });
    }

    /// The client URLs of every server of the cluster, this one's first.
    fn connect_urls(&self) -> Vec<String> {
        let mut urls = vec![self.own_client_url()];
        for r in self.routes.iter() {
            for u in &r.connect_urls {
                if !urls.contains(u) {
                    urls.push(u.clone());
                }
            }
        }
        urls
    }

    fn own_client_url(&self) -> String {
        let info = self.state.info();
        let host = match info.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            _ => info.host.clone(),
        };
        format!("{host}:{}", info.port)
    }

    /// Tells clients that accept INFO updates the cluster's client URLs, after a route came or
    /// went, as nats-server does.
    fn update_clients(&self) {
        if self.opts.no_advertise {
            return;
        }
        let urls = if self.routes.is_empty() { Vec::new() } else { self.connect_urls() };
        if self.state.info().connect_urls == urls {
            return;
        }
        self.state.config.update_info(|info| info.connect_urls = urls);
        let mut info = self.state.info();
        info.client_id = 0;
        let mut line = info.to_line();
        // Updates end without the first INFO's space before CRLF.
        line.truncate(line.len() - 3);
        line.extend_from_slice(b"\r\n");
        for client in self.state.registry.snapshot(Some(Kind::Client)).iter().filter(|c| c.info_updates()) {
            if client.outbound.push_bytes(&line) == Push::Queued {
                client.outbound.wake();
            }
        }
    }
}
