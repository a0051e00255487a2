//! Leaf nodes, next to nats-server on either side: this server as the hub that leaf nodes
//! connect to (the `leafnodes` listener), and as a leaf node connecting to its hubs (the
//! `remotes`), so that a server at the edge serves its devices by itself and passes over the
//! uplink only what someone on the other side is interested in.
//!
//! Each link ([`conn`]) is bound to one account on each side. The spoke tells the hub only its
//! own interest (its clients, devices, services and the leaf nodes it is the hub of); the hub
//! tells the spoke all the interest of the account ([`interest`]). Interest a link learns
//! becomes subscriptions whose target is the link, so the message path sends a message over a
//! link only where the other side has interest, once per link, naming the queue groups it was
//! picked for there. Each account has a loop detection subject (`$LDS.` and a nuid) that its
//! links announce: one that comes back means the links form a loop, and the link is refused.
//! A remote is redialed for as long as the server runs, after a loop 30 seconds later.

mod conn;
mod creds;
mod interest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use crate::connection::Connection;
use crate::options::leaf::LeafNodeOptions;
use crate::options::route_url::RouteUrl;
use crate::state::ServerState;

pub use conn::LinkRole;

/// How long a remote waits before dialing again after a loop was detected, or after the hub
/// refused its cluster name, as nats-server.
const LOOP_DELAY: Duration = Duration::from_secs(30);
/// Bytes a leaf link may have queued before it is cut as a slow consumer: like a route's, since
/// everything the other side is interested in goes through it.
const LEAF_MAX_PENDING: usize = 256 << 20;

/// TLS for leaf nodes connecting here: the acceptor and how long a handshake may take.
pub type LeafTls = (tokio_rustls::TlsAcceptor, Duration);

/// The bound leaf node side: the listener (none when the server only has remotes), its TLS,
/// and each remote's TLS connector (when it uses TLS).
pub type LeafBinding = (Option<TcpListener>, Option<LeafTls>, Vec<Option<tokio_rustls::TlsConnector>>);

/// A registered leaf link, for monitoring and for replacing a stale duplicate.
pub(crate) struct LinkEntry {
    conn: Arc<Connection>,
    role: LinkRole,
    /// The other server's name.
    remote_server: String,
    /// The other server's cluster, if it has one.
    remote_cluster: String,
    /// The local account the link is bound to.
    account: String,
}

/// The leaf node side of a server: its links, the listener leaf nodes connect to, and the
/// remotes it dials.
pub struct LeafNodes {
    state: Arc<ServerState>,
    opts: LeafNodeOptions,
    tls: Option<LeafTls>,
    /// The TLS connector of each remote that uses TLS (by its index in `opts.remotes`).
    remote_tls: Vec<Option<tokio_rustls::TlsConnector>>,
    /// `host:port` leaf nodes are told to connect to, when this server accepts them.
    advertise: Option<String>,
    /// Links by connection id.
    links: DashMap<u64, LinkEntry>,
    /// Each account's loop detection subject.
    loop_subjects: DashMap<String, Arc<str>>,
    /// The leaf URLs each remote's hub told of (the other servers of its cluster), by the
    /// remote's index: dialed in turn with the configured ones, so that the uplink fails over.
    learned: Vec<parking_lot::Mutex<Vec<RouteUrl>>>,
    tracker: TaskTracker,
}

impl LeafNodes {
    /// The leaf node side of a server whose leaf listener (if any) is bound at `addr`.
    pub fn new(
        state: Arc<ServerState>,
        opts: LeafNodeOptions,
        tls: Option<LeafTls>,
        remote_tls: Vec<Option<tokio_rustls::TlsConnector>>,
        addr: Option<SocketAddr>,
        tracker: TaskTracker,
    ) -> Arc<LeafNodes> {
        let advertise =
            addr.map(|addr| opts.advertise.clone().unwrap_or_else(|| crate::options::route_url::dialable(addr)));
        Arc::new(LeafNodes {
            learned: opts.remotes.iter().map(|_| parking_lot::Mutex::new(Vec::new())).collect(),
            state,
            opts,
            tls,
            remote_tls,
            advertise,
            links: DashMap::new(),
            loop_subjects: DashMap::new(),
            tracker,
        })
    }

    /// Dials every remote, and accepts leaf nodes on `listener` when there is one, until
    /// shutdown.
    pub async fn run(self: Arc<Self>, listener: Option<TcpListener>) {
        for index in 0..self.opts.remotes.len() {
            let me = Arc::clone(&self);
            self.tracker.spawn(async move { me.keep_remote(index).await });
        }
        let Some(listener) = listener else { return };
        crate::connection::accept::accept_each(&listener, "leafnode", &self.state.shutdown, None, |stream, peer| {
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            self.tracker.spawn(async move { conn::accept(me, stream, peer).await });
        })
        .await;
    }

    /// Keeps remote `index` connected: dials its URLs in turn, again after each loss, waiting
    /// `reconnect` between attempts (longer after a loop or a refused cluster name).
    async fn keep_remote(self: Arc<Self>, index: usize) {
        let mut next_url = 0usize;
        let mut attempts = 0u64;
        loop {
            if self.state.shutdown.is_cancelled() {
                break;
            }
            let urls = self.remote_urls(index);
            let url = &urls[next_url % urls.len()];
            next_url += 1;
            let dialed = tokio::select! {
                _ = self.state.shutdown.cancelled() => break,
                r = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(url.addr())) => r,
            };
            let delay = match dialed {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    attempts = 0;
                    let end = conn::dial(Arc::clone(&self), stream, index, url).await;
                    if end.delayed {
                        LOOP_DELAY
                    } else {
                        self.opts.reconnect
                    }
                }
                Ok(Err(e)) => {
                    attempts += 1;
                    self.report_dial_error(url.addr(), attempts, &e.to_string());
                    self.opts.reconnect
                }
                Err(_) => {
                    attempts += 1;
                    self.report_dial_error(url.addr(), attempts, "timed out");
                    self.opts.reconnect
                }
            };
            tokio::select! {
                _ = self.state.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The URLs remote `index` dials in turn: the configured ones, then those its hub told of.
    fn remote_urls(&self, index: usize) -> Vec<RouteUrl> {
        let mut urls = self.opts.remotes[index].urls.clone();
        for u in self.learned[index].lock().iter() {
            if !urls.iter().any(|have| have.addr() == u.addr()) {
                urls.push(u.clone());
            }
        }
        urls
    }

    /// Remembers the leaf URLs remote `index`'s hub told of (`host:port`, no credentials: the
    /// configured URL's are used with them).
    fn learn_urls(&self, index: usize, told: &[String]) {
        if let Some(learned) = self.learned.get(index) {
            *learned.lock() = told.iter().filter_map(|u| RouteUrl::parse_leaf(u).map(|(url, _)| url)).collect();
        }
    }

    /// Logs a failed dial: the first, then once in a while, as nats-server does.
    fn report_dial_error(&self, addr: String, attempts: u64, why: &str) {
        let text = format!("Error trying to connect as leafnode to remote server {addr:?} (attempt {attempts}): {why}");
        if attempts == 1 || attempts.is_multiple_of(60) {
            error!("{text}");
        } else {
            debug!("{text}");
        }
    }

    /// The loop detection subject of `account`, made up on first use.
    fn loop_subject(&self, account: &str) -> Arc<str> {
        let entry = self.loop_subjects.entry(account.to_string());
        Arc::clone(entry.or_insert_with(|| format!("$LDS.{}", crate::nuid::nuid()).into()).value())
    }

    /// The leaf URLs told to leaf nodes in INFO: this server's, unless `no_advertise`.
    fn leafnode_urls(&self) -> Vec<String> {
        match (&self.advertise, self.opts.no_advertise) {
            (Some(a), false) => vec![a.clone()],
            _ => Vec::new(),
        }
    }
}
