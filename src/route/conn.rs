//! One route: the handshake (the dialer sends CONNECT and INFO at once, the acceptor its INFO),
//! the checks nats-server makes on the peer's INFO (a route to itself, a cluster name that
//! differs, a peer already connected), then interest and messages both ways, PING/PONG, and
//! the gossip that tells the other routes about a newcomer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::interest::RouteInterest;
use super::parser::{self, RouteOp, RoutedMsg};
use super::{Cluster, RouteEntry, RouteUrl, ROUTE_MAX_PENDING};
use crate::account::{Account, Removal};
use crate::connection::heartbeat::Heartbeat;
use crate::connection::{CloseReason, ConnMeta, Connection, Kind, RouteMeta};
use crate::delivery::{Message, Subscription, Target};
use crate::publish::{Origin, Publisher};

/// How a route connection ended, for its dialer.
pub(super) enum RouteEnd {
    /// It was registered and later lost.
    Registered,
    /// The peer is already connected by another route; the token is cancelled when that one
    /// closes.
    Duplicate(CancellationToken),
    /// It led back to this server.
    SelfRoute,
    /// It failed before it was registered.
    Failed,
}

/// The most members one remote queue subscription stands for in the trie (its weight).
const MAX_WEIGHT: u32 = 4096;
/// When the first PING goes out, to measure the round trip.
const FIRST_PING: Duration = Duration::from_secs(1);

/// What a peer's INFO says that matters here.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PeerInfo {
    server_id: String,
    server_name: String,
    cluster: String,
    cluster_dynamic: bool,
    connect_urls: Vec<String>,
    headers: bool,
    ip: String,
    auth_required: bool,
}

/// What a peer's CONNECT says that matters here.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PeerConnect {
    user: Option<String>,
    pass: Option<String>,
    lang: Option<String>,
}

/// Remote interest: the subscriptions standing for it, by account, subject and queue group.
type RemoteKey = (Arc<str>, Box<[u8]>, Option<Box<[u8]>>);

struct RouteConn {
    cluster: Arc<Cluster>,
    shared: Arc<Connection>,
    /// The URL dialed, and whether it is configured; `None` for an accepted route.
    dialed: Option<(RouteUrl, bool)>,
    /// The peer's server id once registered.
    remote_id: Option<String>,
    /// Set once the acceptor has the peer's CONNECT.
    connected: bool,
    interests: Vec<(Arc<Account>, Arc<RouteInterest>)>,
    remote: FxHashMap<RemoteKey, Vec<Arc<Subscription>>>,
    publisher: Publisher,
    /// The last account a message or interest named, to skip the lookup for the next.
    last_account: Option<Arc<Account>>,
    /// Messages and bytes received since the counters were last added to the shared ones.
    in_msgs: u64,
    in_bytes: u64,
    heartbeat: Heartbeat,
    end: Option<RouteEnd>,
}

/// Runs one route connection to its end.
pub(super) async fn run<R, W>(
    cluster: Arc<Cluster>,
    reader: R,
    writer: W,
    peer: SocketAddr,
    dialed: Option<(RouteUrl, bool)>,
) -> RouteEnd
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::clone(&cluster.state);
    let cid = state.registry.next_cid();
    let shared = Arc::new(Connection::new(cid, Kind::Router, ROUTE_MAX_PENDING));
    *shared.meta.lock() = ConnMeta::arriving(peer, None);
    let opts = state.opts();
    let writer_task = crate::client::start_writer(&state, &shared, writer, opts.write_deadline);
    let mut route = RouteConn {
        cluster: Arc::clone(&cluster),
        shared: Arc::clone(&shared),
        dialed,
        remote_id: None,
        connected: false,
        interests: Vec::new(),
        remote: FxHashMap::default(),
        publisher: Publisher::new(cid ^ rand::random::<u64>()),
        last_account: None,
        in_msgs: 0,
        in_bytes: 0,
        heartbeat: Heartbeat::default(),
        end: None,
    };
    if let Some((url, _)) = &route.dialed {
        let connect = route.connect_json(url);
        let _ = shared.outbound.push_bytes(&connect);
    }
    let _ = shared.outbound.push_bytes(&route.info_line(true));
    shared.outbound.wake();
    state.registry.insert(Arc::clone(&shared));
    let reason = route.read_loop(reader).await;
    shared.close(reason);
    let end = route.finish();
    drop(route);
    let _ = writer_task.await;
    let reason = shared.close_reason().unwrap_or(reason);
    debug!(cid, %peer, "Route connection closed: {reason}");
    end
}

impl RouteConn {
    /// The CONNECT a dialer sends: credentials from the URL, or the cluster's own.
    fn connect_json(&self, url: &RouteUrl) -> Vec<u8> {
        let state = &self.cluster.state;
        let info = state.info();
        let (user, pass) = url.user.clone().or_else(|| self.cluster.opts.user.clone()).unzip();
        let mut v = serde_json::json!({
            "echo": true,
            "verbose": false,
            "pedantic": false,
            "user": user,
            "pass": pass,
            "tls_required": self.cluster.opts.tls.is_some(),
            "headers": true,
            "name": info.server_id,
            "cluster": *state.cluster_name.read(),
        });
        if let Some(map) = v.as_object_mut() {
            map.retain(|_, value| !value.is_null());
        }
        let mut line = b"CONNECT ".to_vec();
        line.extend_from_slice(v.to_string().as_bytes());
        line.extend_from_slice(b"\r\n");
        line
    }

    /// This server's route INFO (the first one ends in a space before CRLF, as nats-server's).
    fn info_line(&self, first: bool) -> Vec<u8> {
        let state = &self.cluster.state;
        let info = state.info();
        let (host, port) = self.cluster.advertise.rsplit_once(':').unwrap_or(("127.0.0.1", "0"));
        let mut json = serde_json::json!({
            "server_id": info.server_id,
            "server_name": info.server_name,
            "version": info.version,
            "proto": 1,
            "go": info.go,
            "host": host,
            "port": port.parse::<u16>().unwrap_or(0),
            "headers": true,
            "max_payload": info.max_payload,
            "cluster": *state.cluster_name.read(),
        });
        if let Some(map) = json.as_object_mut() {
            if self.cluster.opts.user.is_some() {
                map.insert("auth_required".into(), true.into());
            }
            if let Some(t) = &self.cluster.opts.tls {
                map.insert("tls_required".into(), true.into());
                map.insert("tls_verify".into(), t.verify.into());
            }
            if !self.cluster.opts.no_advertise {
                map.insert("connect_urls".into(), vec![self.cluster.own_client_url()].into());
            }
            if self.cluster.opts.name.is_none() {
                map.insert("cluster_dynamic".into(), true.into());
            }
            if info.ldm {
                map.insert("ldm".into(), true.into());
            }
        }
        let mut line = b"INFO ".to_vec();
        line.extend_from_slice(json.to_string().as_bytes());
        line.extend_from_slice(if first { b" \r\n" } else { b"\r\n" });
        line
    }

    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> CloseReason {
        let state = Arc::clone(&self.cluster.state);
        let opts = state.opts();
        let shared = Arc::clone(&self.shared);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let auth_timeout = self.cluster.opts.auth_timeout.unwrap_or(opts.auth_timeout);
        let handshake_deadline = Instant::now() + auth_timeout.max(Duration::from_secs(1));
        let mut next_ping = Instant::now() + FIRST_PING;
        loop {
            loop {
                let (op, used) = match parser::parse(&buf, opts.max_payload, parser::Dialect::Route) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        error!(cid = shared.cid, "Route protocol error: {e}");
                        self.send_err(&e.to_string());
                        return CloseReason::ProtocolViolation;
                    }
                };
                let handled = self.handle(op);
                buf.advance(used);
                if let Err(reason) = handled {
                    self.publisher.flush(&state);
                    return reason;
                }
            }
            self.publisher.flush(&state);
            // Routed messages count for the route, not as messages from clients.
            shared.stats.add_in(&mut self.in_msgs, &mut self.in_bytes);
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            let timer = if self.remote_id.is_none() { handshake_deadline.min(next_ping) } else { next_ping };
            let read = tokio::select! {
                r = reader.read_buf(&mut buf) => r,
                _ = shared.attention_signal().notified() => {
                    match shared.close_reason() {
                        Some(reason) => return reason,
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(timer) => {
                    if self.remote_id.is_none() && Instant::now() >= handshake_deadline {
                        debug!(cid = shared.cid, "Route handshake timed out");
                        return CloseReason::AuthenticationTimeout;
                    }
                    if !self.heartbeat.ping(&shared, opts.ping_max) {
                        self.send_err("'Stale Connection'");
                        return CloseReason::StaleConnection;
                    }
                    next_ping = Instant::now() + opts.ping_interval;
                    continue;
                }
            };
            if let Err(reason) = shared.after_read(read) {
                return reason;
            }
        }
    }

    fn send_err(&self, text: &str) {
        let _ = self.shared.outbound.push_bytes(format!("-ERR {text}\r\n").as_bytes());
        self.shared.outbound.wake();
    }

    fn handle(&mut self, op: RouteOp<'_>) -> Result<(), CloseReason> {
        match op {
            RouteOp::Ping => Heartbeat::answer(&self.shared),
            RouteOp::Pong => self.heartbeat.pong(&self.shared),
            RouteOp::Ok => {}
            RouteOp::Err(text) => {
                warn!(cid = self.shared.cid, "Route error: {}", String::from_utf8_lossy(text));
                return Err(CloseReason::ProtocolViolation);
            }
            RouteOp::Connect(json) => self.on_connect(json)?,
            RouteOp::Info(json) => self.on_info(json)?,
            RouteOp::Sub { account, subject, queue } => {
                if self.remote_id.is_some() {
                    self.remote_sub(account, subject, queue);
                }
            }
            RouteOp::Unsub { account, subject, queue } => {
                if self.remote_id.is_some() {
                    self.remote_unsub(account, subject, queue);
                }
            }
            RouteOp::Msg(m) => {
                if self.remote_id.is_some() {
                    self.routed(&m);
                }
            }
        }
        Ok(())
    }

    fn on_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let connect: PeerConnect = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                error!(cid = self.shared.cid, "Route CONNECT unreadable: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if connect.lang.is_some() {
            // A client dialed the cluster port.
            error!(cid = self.shared.cid, "Client connected to the route port");
            self.send_err("'Invalid Route Connection'");
            return Err(CloseReason::ProtocolViolation);
        }
        if let Some((user, pass)) = &self.cluster.opts.user {
            let ok = connect.user.as_deref() == Some(user.as_str()) && connect.pass.as_deref() == Some(pass.as_str());
            if !ok {
                error!(cid = self.shared.cid, "Route authorization failed");
                self.send_err("'Authorization Violation'");
                return Err(CloseReason::AuthenticationViolation);
            }
        }
        self.connected = true;
        Ok(())
    }

    fn on_info(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let info: PeerInfo = match serde_json::from_slice(json) {
            Ok(i) => i,
            Err(e) => {
                error!(cid = self.shared.cid, "Route INFO unreadable: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        match &self.remote_id {
            None => self.register(info, json),
            Some(id) if *id == info.server_id => {
                // An update from the peer itself (its client URLs, lame duck mode).
                if let Some(mut entry) = self.cluster.routes.get_mut(id) {
                    entry.connect_urls = info.connect_urls;
                }
                self.cluster.update_clients();
                Ok(())
            }
            Some(_) => {
                // Gossip: a server the peer met.
                self.gossiped(&info);
                Ok(())
            }
        }
    }

    /// The peer's first INFO: nats-server's checks, then the route joins.
    fn register(&mut self, info: PeerInfo, raw: &[u8]) -> Result<(), CloseReason> {
        let cluster = Arc::clone(&self.cluster);
        let state = &cluster.state;
        let own = state.info();
        if self.dialed.is_none() && !self.connected {
            error!(cid = self.shared.cid, "Route sent INFO before CONNECT");
            return Err(CloseReason::ProtocolViolation);
        }
        if info.server_id == own.server_id {
            debug!(cid = self.shared.cid, "Detected route to self, ignoring");
            self.end = Some(RouteEnd::SelfRoute);
            return Err(CloseReason::ClientClosed);
        }
        {
            let mut name = state.cluster_name.write();
            if *name != info.cluster {
                if cluster.opts.name.is_none() && !info.cluster.is_empty() {
                    // A made-up name gives way to the peer's.
                    *name = info.cluster.clone();
                } else if !info.cluster_dynamic {
                    error!(
                        cid = self.shared.cid,
                        "Rejecting connection, cluster name {:?} does not match {:?}", info.cluster, *name
                    );
                    return Err(CloseReason::ClusterNameConflict);
                }
            }
        }
        if !info.server_name.is_empty() && info.server_name == own.server_name {
            error!(cid = self.shared.cid, "Remote server has a duplicate name: {:?}", info.server_name);
            return Err(CloseReason::DuplicateServerName);
        }
        let gone = CancellationToken::new();
        let gossip = self.gossip_line(raw);
        match cluster.routes.entry(info.server_id.clone()) {
            dashmap::mapref::entry::Entry::Occupied(existing) => {
                debug!(cid = self.shared.cid, "Detected duplicate remote route {:?}", info.server_id);
                self.end = Some(RouteEnd::Duplicate(existing.get().gone.clone()));
                return Err(CloseReason::DuplicateRoute);
            }
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(RouteEntry {
                    conn: Arc::clone(&self.shared),
                    gone: gone.clone(),
                    connect_urls: info.connect_urls.clone(),
                    gossip: gossip.clone(),
                });
            }
        }
        self.remote_id = Some(info.server_id.clone());
        self.end = Some(RouteEnd::Registered);
        self.shared.set_headers(info.headers);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = info.server_name.clone();
            meta.route = Some(RouteMeta {
                remote_id: info.server_id.clone(),
                solicited: self.dialed.is_some(),
                configured: self.dialed.as_ref().is_some_and(|(_, c)| *c),
                subscriptions: 0,
            });
        }
        info!(
            cid = self.shared.cid,
            "Route connection created with {:?} ({})",
            info.server_name,
            if self.dialed.is_some() { "solicited" } else { "accepted" }
        );
        let permissions = cluster.opts.permissions.clone().map(Arc::new);
        for account in state.accounts.all() {
            let interest = RouteInterest::start(&self.shared, &account, permissions.clone());
            self.interests.push((account, interest));
        }
        self.gossip(&info.server_id, &gossip);
        cluster.update_clients();
        Ok(())
    }

    /// The peer's INFO with the address it can be dialed at: the URL dialed, or the address it
    /// came from with the port its INFO names.
    fn gossip_line(&self, raw: &[u8]) -> Vec<u8> {
        let mut json = serde_json::from_slice::<serde_json::Value>(raw).unwrap_or_default();
        let url = match &self.dialed {
            Some((url, _)) => format!("nats-route://{}/", url.addr()),
            None => {
                let ip = self.shared.meta.lock().peer.map(|p| p.ip()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
                let port = json.get("port").and_then(|p| p.as_u64()).unwrap_or(0);
                let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
                format!("nats-route://{host}:{port}/")
            }
        };
        if let Some(map) = json.as_object_mut() {
            map.insert("ip".into(), url.into());
        }
        let mut line = b"INFO ".to_vec();
        line.extend_from_slice(json.to_string().as_bytes());
        line.extend_from_slice(b"\r\n");
        line
    }

    /// Tells the other routes about the newcomer and the newcomer about the other routes, so
    /// that every server dials the ones it does not have and the mesh completes (nats-server
    /// only does the first, so a restarted server it had dialed by gossip stays apart).
    fn gossip(&self, newcomer: &str, line: &[u8]) {
        for r in self.cluster.routes.iter() {
            if r.key() == newcomer {
                continue;
            }
            if self.dialed.is_none() {
                let _ = r.conn.outbound.push_bytes(line);
                r.conn.outbound.wake();
            }
            let _ = self.shared.outbound.push_bytes(&r.gossip);
        }
        self.shared.outbound.wake();
    }

    /// Dials a server a peer told of, unless it is this one or already a route.
    fn gossiped(&self, info: &PeerInfo) {
        if info.server_id.is_empty()
            || info.server_id == self.cluster.state.info().server_id
            || self.cluster.routes.contains_key(&info.server_id)
        {
            return;
        }
        let Some(mut url) = RouteUrl::parse(&info.ip) else { return };
        if info.auth_required {
            url.user = self.cluster.opts.user.clone();
        }
        debug!("Dialing implicit route to {:?} at {}", info.server_name, url.addr());
        self.cluster.dial(url, false);
    }

    fn account(&mut self, name: &[u8]) -> Option<Arc<Account>> {
        if let Some(a) = &self.last_account {
            if a.name.as_bytes() == name {
                return Some(Arc::clone(a));
            }
        }
        let a = self.cluster.state.accounts.get(std::str::from_utf8(name).ok()?)?;
        self.last_account = Some(Arc::clone(&a));
        Some(a)
    }

    /// `RS+`: the peer has interest; a queue group's weight is how many of the subscriptions
    /// standing for it are in the trie, so that members are picked in proportion across the
    /// cluster.
    fn remote_sub(&mut self, account: &[u8], subject: &[u8], queue: Option<(&[u8], u32)>) {
        let Some(acc) = self.account(account) else {
            debug!(cid = self.shared.cid, "Route interest in unknown account {:?}", String::from_utf8_lossy(account));
            return;
        };
        if !crate::subject::is_valid_subscription(subject) {
            return;
        }
        if let Some(p) = &self.cluster.opts.permissions {
            // `export`: what this server sends its routes.
            if !p.can_subscribe(subject, None) {
                return;
            }
        }
        let weight = queue.map_or(1, |(_, w)| w.clamp(1, MAX_WEIGHT)) as usize;
        let key: RemoteKey = (acc.name.as_str().into(), subject.into(), queue.map(|(q, _)| q.into()));
        let subs = self.remote.entry(key).or_default();
        while subs.len() < weight {
            let sub = Arc::new(Subscription::new(
                Target::Route(Arc::clone(&self.shared)),
                subject,
                queue.map(|(q, _)| q),
                b"",
            ));
            acc.add_subscription(Arc::clone(&sub));
            subs.push(sub);
        }
        while subs.len() > weight {
            if let Some(sub) = subs.pop() {
                acc.remove_subscription(&sub, Removal::Owner);
            }
        }
        self.count_remote();
    }

    /// `RS-`: the peer has no interest left.
    fn remote_unsub(&mut self, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
        let Some(acc) = self.account(account) else { return };
        let key: RemoteKey = (acc.name.as_str().into(), subject.into(), queue.map(Into::into));
        if let Some(subs) = self.remote.remove(&key) {
            for sub in subs {
                acc.remove_subscription(&sub, Removal::Owner);
            }
        }
        self.count_remote();
    }

    fn count_remote(&self) {
        let n = self.remote.len() as u64;
        if let Some(route) = self.shared.meta.lock().route.as_mut() {
            route.subscriptions = n;
        }
    }

    /// `RMSG`/`HMSG`: delivered here only, to plain subscribers and the queue groups named.
    fn routed(&mut self, m: &RoutedMsg<'_>) {
        self.in_msgs += 1;
        self.in_bytes += m.payload.len() as u64;
        if let Some(p) = &self.cluster.opts.permissions {
            // `import`: what this server takes from its routes.
            if !p.can_publish(m.subject) {
                return;
            }
        }
        let Some(acc) = self.account(m.account) else { return };
        let msg = Message { subject: m.subject, reply: m.reply, header_len: m.header_len, payload: m.payload };
        let state = Arc::clone(&self.cluster.state);
        self.publisher.publish_routed(&state, &acc, Origin::Route(&self.shared), &msg, m.queues);
    }

    /// Cleans up: the peer's interest leaves the tries, this server's interest stops being
    /// sent, and the route leaves the cluster.
    fn finish(&mut self) -> RouteEnd {
        for (account, interest) in self.interests.drain(..) {
            account.unlisten(&(interest as Arc<dyn crate::account::InterestListener>));
        }
        for ((account, _, _), subs) in self.remote.drain() {
            if let Some(acc) = self.cluster.state.accounts.get(&account) {
                for sub in subs {
                    acc.remove_subscription(&sub, Removal::Owner);
                }
            }
        }
        let state = &self.cluster.state;
        state.registry.record_closed(&self.shared);
        state.registry.remove(self.shared.cid);
        self.publisher.flush(state);
        if let Some(id) = &self.remote_id {
            if let Some((_, entry)) = self.cluster.routes.remove_if(id, |_, e| Arc::ptr_eq(&e.conn, &self.shared)) {
                entry.gone.cancel();
                info!(cid = self.shared.cid, "Route connection to {id} closed");
            }
            self.cluster.update_clients();
        }
        self.end.take().unwrap_or(RouteEnd::Failed)
    }
}
