//! One leaf link, on either side. Accepted (this server the hub): INFO first with a nonce, TLS
//! after it when configured, the leaf's CONNECT checked and bound to an account, the second INFO
//! with the account and permissions, then interest both ways. Dialed (this server the leaf):
//! the hub's INFO within a second, TLS when asked, CONNECT with credentials (a JWT and the
//! nonce signed with the seed of a `.creds` file, or a user and password), the hub's second
//! INFO, then interest both ways. Then `LS+`/`LS-`, `LMSG`/`HMSG`, PING/PONG until the link is
//! lost, a loop is detected, or the server stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::interest::{LeafInterest, LOOP_PREFIX};
use super::{creds, LeafNodes, LinkEntry, LEAF_MAX_PENDING, LOOP_DELAY};
use crate::account::{Account, Removal};
use crate::auth::permissions::{Rule, SubjectRules};
use crate::auth::{Authenticated, Permissions};
use crate::connection::heartbeat::Heartbeat;
use crate::connection::{CloseReason, ConnMeta, Connection, Kind, LeafMeta};
use crate::delivery::{Message, Subscription, Target};
use crate::options::route_url::RouteUrl;
use crate::proto::ConnectOptions;
use crate::publish::{Origin, Publisher};
use crate::route::parser::{self, Dialect, RouteOp, RoutedMsg};

/// Which side of a link this server is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRole {
    /// A leaf node connected to this server's leaf listener.
    Accepted,
    /// This server connected to one of its remotes.
    Dialed,
}

/// How a dialed link ended, for the remote's next attempt.
pub(super) struct DialEnd {
    /// The hub found a loop or refused the cluster name: wait longer before dialing again.
    pub delayed: bool,
}

/// How long a leaf waits for the hub's first INFO (nats-server's `DEFAULT_LEAFNODE_INFO_WAIT`).
const INFO_WAIT: Duration = Duration::from_secs(1);
/// How long a leaf waits for the hub's answer to its CONNECT.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// When the first PING goes out, to measure the round trip.
const FIRST_PING: Duration = Duration::from_secs(1);
/// The most members one remote queue subscription stands for in the trie (its weight).
const MAX_WEIGHT: u32 = 4096;
/// JetStream's API and the key-value and object stores stay on each side of a leaf link, as
/// nats-server keeps them without a JetStream domain.
const JETSTREAM_SUBJECTS: [&str; 3] = ["$JS.API.>", "$KV.>", "$OBJ.>"];

/// What the hub's INFO says that matters here.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HubInfo {
    server_id: String,
    server_name: String,
    cluster: String,
    client_id: u64,
    nonce: String,
    headers: bool,
    tls_required: bool,
    info_on_connect: bool,
    connect_info: bool,
    leafnode_urls: Option<Vec<String>>,
    remote_account: String,
    import: Option<RulesJson>,
    export: Option<RulesJson>,
}

/// nats-server's `SubjectPermission` in JSON.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
struct RulesJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
}

impl RulesJson {
    fn from_rules(r: &SubjectRules) -> RulesJson {
        let text = |rule: &Rule| match &rule.queue {
            Some(q) => format!("{} {q}", rule.subject),
            None => rule.subject.clone(),
        };
        RulesJson { allow: r.allow.iter().flatten().map(text).collect(), deny: r.deny.iter().map(text).collect() }
    }

    fn into_rules(self) -> SubjectRules {
        SubjectRules {
            allow: (!self.allow.is_empty()).then(|| self.allow.iter().map(|s| Rule::parse(s)).collect()),
            deny: self.deny.iter().map(|s| Rule::parse(s)).collect(),
        }
    }
}

/// What a leaf's CONNECT says that matters here (nats-server's `leafConnectInfo`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LeafConnect {
    jwt: Option<String>,
    sig: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    name: String,
    server_id: String,
    is_hub: bool,
    cluster: String,
    headers: bool,
    deny_pub: Vec<String>,
    gateway: Option<String>,
    lang: Option<String>,
}

/// Where a link is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Accepted: waiting for the leaf's CONNECT.
    AwaitConnect,
    /// Dialed: CONNECT sent, waiting for the hub's INFO that answers it.
    AwaitConnectInfo,
    /// Interest and messages flow.
    Ready,
}

/// Remote interest: the subscriptions standing for it, by subject and queue group.
type RemoteKey = (Box<[u8]>, Option<Box<[u8]>>);

struct LeafConn {
    leafs: Arc<LeafNodes>,
    shared: Arc<Connection>,
    role: LinkRole,
    /// The remote a dialed link serves, by its index in the options.
    remote_index: Option<usize>,
    /// This server is the spoke of the link.
    spoke: bool,
    stage: Stage,
    /// The nonce sent to an accepted leaf.
    nonce: String,
    account: Option<Arc<Account>>,
    loop_subject: Option<Arc<str>>,
    interest: Option<Arc<LeafInterest>>,
    /// The other side's permissions as if it were a client here: what it may publish here
    /// (and so which interest it is told), and what it may get from here.
    permissions: Option<Arc<Permissions>>,
    /// Whether messages from the other side are checked against what it may publish: only
    /// when the link has publish rules of its own (JetStream's subjects, denied on every link,
    /// are kept off by the interest this side tells and by the other side's filters).
    check_inbound: bool,
    remote: FxHashMap<RemoteKey, Vec<Arc<Subscription>>>,
    publisher: Publisher,
    in_msgs: u64,
    in_bytes: u64,
    heartbeat: Heartbeat,
    /// Set when the next dial must wait [`LOOP_DELAY`].
    delayed: bool,
    registered: bool,
}

/// Serves a leaf node that connected to the leaf listener.
pub(super) async fn accept(leafs: Arc<LeafNodes>, mut stream: TcpStream, peer: SocketAddr) {
    let state = Arc::clone(&leafs.state);
    let cid = state.registry.next_cid();
    let nonce = crate::nuid::nonce();
    let info = leafs.info_json(cid, &nonce, None);
    let opts = state.opts();
    let wrote = tokio::time::timeout(opts.write_deadline, stream.write_all(&info_line(&info, true))).await;
    if !matches!(wrote, Ok(Ok(()))) {
        debug!(%peer, "Leafnode INFO could not be written");
        return;
    }
    let link = LeafConn::new(&leafs, cid, LinkRole::Accepted, false, nonce, peer);
    match leafs.tls.clone() {
        None => {
            let (reader, writer) = stream.into_split();
            link.run(reader, writer, BytesMut::new()).await;
        }
        Some((acceptor, timeout)) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let (reader, writer) = tokio::io::split(tls);
                link.run(reader, writer, BytesMut::new()).await;
            }
            Ok(Err(e)) => error!(%peer, "Leafnode TLS handshake error: {e}"),
            Err(_) => error!(%peer, "Leafnode TLS handshake timeout"),
        },
    }
}

/// Serves the link to remote `index`, over `stream` dialed at `url`.
pub(super) async fn dial(leafs: Arc<LeafNodes>, mut stream: TcpStream, index: usize, url: &RouteUrl) -> DialEnd {
    let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let remote = &leafs.opts.remotes[index];
    let mut buf = BytesMut::with_capacity(4096);
    let first = match tokio::time::timeout(INFO_WAIT, read_line(&mut stream, &mut buf)).await {
        Ok(Some(line)) => line,
        _ => {
            error!("Leafnode connection to {} got no INFO in time", url.addr());
            return DialEnd { delayed: false };
        }
    };
    let info = match first.strip_prefix(b"INFO").map(|j| serde_json::from_slice::<HubInfo>(trim(j))) {
        Some(Ok(info)) if info.client_id != 0 && info.leafnode_urls.is_some() => info,
        _ => {
            error!("{}: attempted to connect to wrong port", url.addr());
            return DialEnd { delayed: false };
        }
    };
    leafs.learn_urls(index, info.leafnode_urls.as_deref().unwrap_or_default());
    let state = Arc::clone(&leafs.state);
    let cid = state.registry.next_cid();
    let mut link = LeafConn::new(&leafs, cid, LinkRole::Dialed, !remote.hub, String::new(), peer);
    link.remote_index = Some(index);
    let connect = match link.connect_line(index, url, &info) {
        Ok(line) => line,
        Err(e) => {
            error!("Leafnode connection to {}: {e}", url.addr());
            return DialEnd { delayed: false };
        }
    };
    link.shared.set_headers(info.headers);
    {
        let mut meta = link.shared.meta.lock();
        let name = if info.server_name.is_empty() { info.server_id.clone() } else { info.server_name.clone() };
        meta.name = name.clone();
        if let Some(leaf) = meta.leaf.as_mut() {
            leaf.remote_server = name;
            leaf.remote_cluster = info.cluster.clone();
        }
    }
    let _ = link.shared.outbound.push_bytes(&connect);
    link.stage = Stage::AwaitConnectInfo;
    let tls = leafs.remote_tls.get(index).cloned().flatten();
    if tls.is_none() && info.tls_required {
        error!("Leafnode hub {} requires TLS: configure the remote's tls with the hub's ca_file", url.addr());
        return DialEnd { delayed: false };
    }
    let delayed = match tls {
        None => {
            let (reader, writer) = stream.into_split();
            link.run(reader, writer, buf).await
        }
        Some(connector) => {
            let Ok(name) = rustls::pki_types::ServerName::try_from(url.host.clone()) else {
                error!("Leafnode TLS: {:?} is not a server name", url.host);
                return DialEnd { delayed: false };
            };
            let timeout = remote.tls.as_ref().map_or(Duration::from_secs(2), |t| t.timeout);
            match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
                Ok(Ok(tls)) => {
                    let (reader, writer) = tokio::io::split(tls);
                    link.run(reader, writer, BytesMut::new()).await
                }
                Ok(Err(e)) => {
                    error!("Leafnode TLS handshake error with {}: {e}", url.addr());
                    false
                }
                Err(_) => {
                    error!("Leafnode TLS handshake timeout with {}", url.addr());
                    false
                }
            }
        }
    };
    DialEnd { delayed }
}

/// Reads one line (the hub's first INFO) without reading past it more than the socket gave.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Vec<u8>> {
    loop {
        if let Some(nl) = memchr::memchr(b'\n', buf) {
            let line = buf.split_to(nl + 1);
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            return Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
        }
        if buf.len() > parser::MAX_ROUTE_LINE {
            return None;
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

/// `INFO {json}` and CRLF (the first one with nats-server's space before it).
fn info_line(json: &serde_json::Value, first: bool) -> Vec<u8> {
    let mut line = b"INFO ".to_vec();
    line.extend_from_slice(json.to_string().as_bytes());
    line.extend_from_slice(if first { b" \r\n" } else { b"\r\n" });
    line
}

impl LeafNodes {
    /// The INFO a leaf node is sent: nats-server's fields, with `client_id` and the nonce; the
    /// second one (`connect` set) also names the bound account and the leaf's permissions.
    fn info_json(&self, cid: u64, nonce: &str, connect: Option<(&str, Option<&Permissions>)>) -> serde_json::Value {
        let info = self.state.info();
        let (host, port) = self
            .advertise
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .map_or(("127.0.0.1", 0), |(h, p)| (h, p.parse::<u16>().unwrap_or(0)));
        let mut json = serde_json::json!({
            "server_id": info.server_id,
            "server_name": info.server_name,
            "version": info.version,
            "proto": 1,
            "go": info.go,
            "host": host,
            "port": port,
            "headers": true,
            "auth_required": true,
            "max_payload": info.max_payload,
            "ip": format!("{host}:{port}"),
            "client_id": cid,
            "nonce": nonce,
            "info_on_connect": true,
            "leafnode_urls": self.leafnode_urls(),
        });
        if let Some(map) = json.as_object_mut() {
            if let Some(t) = &self.opts.tls {
                map.insert("tls_required".into(), true.into());
                if t.verify {
                    map.insert("tls_verify".into(), true.into());
                }
            }
            if info.jetstream {
                map.insert("jetstream".into(), true.into());
            }
            let cluster = self.state.cluster_name.read().clone();
            if !cluster.is_empty() {
                map.insert("cluster".into(), cluster.into());
            }
            if let Some((account, permissions)) = connect {
                map.insert("connect_info".into(), true.into());
                map.insert("remote_account".into(), account.into());
                if let Some(p) = permissions {
                    // Sent as the leaf reads them: what it may subscribe to and publish.
                    if let Some(s) = &p.subscribe {
                        map.insert("import".into(), serde_json::to_value(RulesJson::from_rules(s)).unwrap_or_default());
                    }
                    if let Some(s) = &p.publish {
                        map.insert("export".into(), serde_json::to_value(RulesJson::from_rules(s)).unwrap_or_default());
                    }
                }
            }
        }
        json
    }
}

/// `rules` with `deny` added to its deny list (a rule set allowing anything when `rules` is
/// `None`).
fn with_denies(rules: Option<SubjectRules>, deny: impl IntoIterator<Item = String>) -> Option<SubjectRules> {
    let mut deny = deny.into_iter().peekable();
    if deny.peek().is_none() {
        return rules;
    }
    let mut rules = rules.unwrap_or_default();
    rules.deny.extend(deny.map(|s| Rule::parse(&s)));
    Some(rules)
}

/// The permissions a link enforces: `base` (the other side as if it were a client here) with
/// JetStream's subjects kept on each side.
fn link_permissions(base: Permissions) -> Permissions {
    let js = || JETSTREAM_SUBJECTS.iter().map(|s| s.to_string());
    Permissions {
        publish: with_denies(base.publish, js()),
        subscribe: with_denies(base.subscribe, js()),
        allow_responses: None,
    }
}

impl LeafConn {
    fn new(leafs: &Arc<LeafNodes>, cid: u64, role: LinkRole, spoke: bool, nonce: String, peer: SocketAddr) -> LeafConn {
        let shared = Arc::new(Connection::new(cid, Kind::Leaf, LEAF_MAX_PENDING));
        *shared.meta.lock() = ConnMeta {
            leaf: Some(LeafMeta { solicited: role == LinkRole::Dialed, spoke, ..LeafMeta::default() }),
            ..ConnMeta::arriving(peer, None)
        };
        LeafConn {
            leafs: Arc::clone(leafs),
            shared,
            role,
            remote_index: None,
            spoke,
            stage: Stage::AwaitConnect,
            nonce,
            account: None,
            loop_subject: None,
            interest: None,
            permissions: None,
            check_inbound: false,
            remote: FxHashMap::default(),
            publisher: Publisher::new(cid ^ rand::random::<u64>()),
            in_msgs: 0,
            in_bytes: 0,
            heartbeat: Heartbeat::default(),
            delayed: false,
            registered: false,
        }
    }

    /// The CONNECT a leaf sends its hub: credentials from the `.creds` file (the nonce signed),
    /// else the URL's user and password.
    fn connect_line(&self, index: usize, url: &RouteUrl, hub: &HubInfo) -> Result<Vec<u8>, creds::CredsError> {
        let state = &self.leafs.state;
        let info = state.info();
        let remote = &self.leafs.opts.remotes[index];
        let cluster = {
            let name = state.cluster_name.read();
            if name.is_empty() {
                info.server_name.clone()
            } else {
                name.clone()
            }
        };
        let mut v = serde_json::json!({
            "version": info.version,
            "tls_required": remote.tls.is_some() || remote.tls_required || hub.tls_required,
            "server_id": info.server_id,
            "name": info.server_name,
            "cluster": cluster,
            "headers": true,
        });
        if let Some(map) = v.as_object_mut() {
            if let Some(path) = &remote.credentials {
                let (jwt, sig) = creds::sign(path, hub.nonce.as_bytes())?;
                map.insert("jwt".into(), jwt.into());
                map.insert("sig".into(), sig.into());
            } else if let Some((user, pass)) =
                url.user.clone().or_else(|| remote.urls.iter().find_map(|u| u.user.clone()))
            {
                map.insert("user".into(), user.into());
                map.insert("pass".into(), pass.into());
            }
            if remote.hub {
                map.insert("is_hub".into(), true.into());
            }
            if !remote.deny_imports.is_empty() {
                map.insert("deny_pub".into(), remote.deny_imports.clone().into());
            }
        }
        let mut line = b"CONNECT ".to_vec();
        line.extend_from_slice(v.to_string().as_bytes());
        line.extend_from_slice(b"\r\n");
        Ok(line)
    }

    /// Runs the link to its end; returns whether the next dial must wait longer.
    async fn run<R, W>(mut self, reader: R, writer: W, leftover: BytesMut) -> bool
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::clone(&self.leafs.state);
        let opts = state.opts();
        let writer_task = crate::client::start_writer(&state, &self.shared, writer, opts.write_deadline);
        self.shared.outbound.wake();
        state.registry.insert(Arc::clone(&self.shared));
        let reason = self.read_loop(reader, leftover).await;
        self.shared.close(reason);
        self.finish();
        let shared = Arc::clone(&self.shared);
        let delayed = self.delayed;
        drop(self);
        let _ = writer_task.await;
        let reason = shared.close_reason().unwrap_or(reason);
        debug!(cid = shared.cid, "Leafnode connection closed: {reason}");
        delayed
    }

    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut reader: R, leftover: BytesMut) -> CloseReason {
        let state = Arc::clone(&self.leafs.state);
        let opts = state.opts();
        let shared = Arc::clone(&self.shared);
        let mut buf = leftover;
        buf.reserve(64 * 1024);
        let wait = match self.role {
            LinkRole::Accepted => self.leafs.opts.auth_timeout.unwrap_or(opts.auth_timeout).max(Duration::from_secs(1)),
            LinkRole::Dialed => CONNECT_WAIT,
        };
        let handshake_deadline = Instant::now() + wait;
        let mut next_ping = Instant::now() + FIRST_PING;
        loop {
            loop {
                let (op, used) = match parser::parse(&buf, opts.max_payload, Dialect::Leaf) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        error!(cid = shared.cid, "Leafnode protocol error: {e}");
                        self.send_err(&e.to_string());
                        return CloseReason::ProtocolViolation;
                    }
                };
                let handled = match op {
                    RouteOp::Connect(json) => {
                        let json = json.to_vec();
                        buf.advance(used);
                        self.on_connect(&json).await
                    }
                    op => {
                        let r = self.handle(op);
                        buf.advance(used);
                        r
                    }
                };
                if let Err(reason) = handled {
                    self.publisher.flush(&state);
                    return reason;
                }
            }
            self.publisher.flush(&state);
            shared.stats.add_in(&mut self.in_msgs, &mut self.in_bytes);
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            let ready = self.stage == Stage::Ready;
            let timer = if ready { next_ping } else { handshake_deadline };
            let read = tokio::select! {
                r = reader.read_buf(&mut buf) => r,
                _ = shared.attention_signal().notified() => {
                    match shared.close_reason() {
                        Some(reason) => return reason,
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(timer) => {
                    if !ready {
                        debug!(cid = shared.cid, "Leafnode handshake timed out");
                        if self.role == LinkRole::Dialed {
                            self.send_err("Stale Leaf Node Connection - Closing");
                            return CloseReason::StaleConnection;
                        }
                        self.send_err("Authentication Timeout");
                        return CloseReason::AuthenticationTimeout;
                    }
                    if !self.heartbeat.ping(&shared, opts.ping_max) {
                        self.send_err("Stale Connection");
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

    /// `-ERR '<text>'`, as nats-server quotes it.
    fn send_err(&self, text: &str) {
        let _ = self.shared.outbound.push_bytes(format!("-ERR '{text}'\r\n").as_bytes());
        self.shared.outbound.wake();
    }

    fn handle(&mut self, op: RouteOp<'_>) -> Result<(), CloseReason> {
        match op {
            RouteOp::Ping => Heartbeat::answer(&self.shared),
            RouteOp::Pong => self.heartbeat.pong(&self.shared),
            RouteOp::Ok => {}
            RouteOp::Err(text) => self.on_err(text)?,
            RouteOp::Connect(_) => {}
            RouteOp::Info(json) => self.on_info(json)?,
            RouteOp::Sub { subject, queue, .. } if self.stage == Stage::Ready => self.remote_sub(subject, queue)?,
            RouteOp::Unsub { subject, queue, .. } if self.stage == Stage::Ready => self.remote_unsub(subject, queue),
            RouteOp::Msg(m) if self.stage == Stage::Ready => self.inbound(&m),
            RouteOp::Sub { .. } | RouteOp::Unsub { .. } | RouteOp::Msg(_) => {
                error!(cid = self.shared.cid, "Leafnode sent interest or messages before its handshake");
                return Err(CloseReason::ProtocolViolation);
            }
        }
        Ok(())
    }

    /// `-ERR` from the other side. As in nats-server, an error does not end a leaf link by
    /// itself (the side that sent it closes when it means to), but after a loop or a refused
    /// cluster name the next dial waits, and a loop ends the link here too.
    fn on_err(&mut self, text: &[u8]) -> Result<(), CloseReason> {
        let text = String::from_utf8_lossy(text);
        let is_loop = text.contains("Loop detected");
        if (is_loop || text.contains("remote leafnode has same cluster name")) && self.role == LinkRole::Dialed {
            self.delayed = true;
            error!(
                cid = self.shared.cid,
                "Leafnode connection refused: {text}. Delaying attempt to reconnect for {:?}", LOOP_DELAY
            );
        } else {
            error!(cid = self.shared.cid, "Leafnode Error {text}");
        }
        if is_loop {
            return Err(CloseReason::ProtocolViolation);
        }
        Ok(())
    }

    /// INFO from the hub: the answer to CONNECT finishes a dialed handshake; every one may
    /// tell the leaf URLs of the hub's cluster, for the next dial.
    fn on_info(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let Some(index) = self.remote_index else { return Ok(()) };
        let info: HubInfo = match serde_json::from_slice(json) {
            Ok(i) => i,
            Err(e) => {
                error!(cid = self.shared.cid, "Leafnode INFO unreadable: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if let Some(urls) = &info.leafnode_urls {
            self.leafs.learn_urls(index, urls);
        }
        if self.stage != Stage::AwaitConnectInfo || !info.connect_info {
            return Ok(());
        }
        let Some(remote) = self.remote_opts().cloned() else { return Err(CloseReason::Internal) };
        let base = Permissions {
            // The hub may send here what this server may subscribe to there, and get from here
            // what this server may publish there; the remote's own denials come on top.
            publish: with_denies(info.import.map(RulesJson::into_rules), remote.deny_imports.iter().cloned()),
            subscribe: with_denies(info.export.map(RulesJson::into_rules), remote.deny_exports.iter().cloned()),
            allow_responses: None,
        };
        let account = self.leafs.state.accounts.get_or_create(remote.local_account());
        info!(
            cid = self.shared.cid,
            "Leafnode connection created for account: {} (remote account {:?})", account.name, info.remote_account
        );
        self.bind(account, base, String::new());
        Ok(())
    }

    /// The remote a dialed link serves.
    fn remote_opts(&self) -> Option<&crate::options::leaf::RemoteLeafOptions> {
        self.remote_index.and_then(|i| self.leafs.opts.remotes.get(i))
    }

    /// The leaf's CONNECT: nats-server's checks, authentication, the account it is bound to,
    /// a stale link from the same server replaced, then the second INFO and interest.
    async fn on_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        if self.role != LinkRole::Accepted || self.stage != Stage::AwaitConnect {
            return Ok(());
        }
        let connect: LeafConnect = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                error!(cid = self.shared.cid, "Leafnode CONNECT unreadable: {e}");
                self.send_err("Invalid Leafnode CONNECT");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if connect.lang.is_some() {
            error!(cid = self.shared.cid, "attempted to connect to leaf node port");
            self.send_err("attempted to connect to leaf node port");
            return Err(CloseReason::ProtocolViolation);
        }
        let own_cluster = self.leafs.state.cluster_name.read().clone();
        if !own_cluster.is_empty() && connect.cluster == own_cluster {
            error!(cid = self.shared.cid, "remote leafnode has same cluster name");
            self.send_err("remote leafnode has same cluster name");
            return Err(CloseReason::ClusterNameConflict);
        }
        if let Some(gateway) = &connect.gateway {
            let text = format!("Rejecting connection from gateway {gateway:?} on the leafnode port");
            error!(cid = self.shared.cid, "{text}");
            self.send_err(&text);
            return Err(CloseReason::ProtocolViolation);
        }
        let who = match self.authenticate(&connect).await {
            Ok(who) => who,
            Err(()) => {
                error!(cid = self.shared.cid, "Leafnode authorization failed");
                self.send_err("Authorization Violation");
                return Err(CloseReason::AuthenticationViolation);
            }
        };
        let state = Arc::clone(&self.leafs.state);
        let account_name = who.account.clone().unwrap_or_else(|| crate::account::GLOBAL_ACCOUNT.to_string());
        let account = state.accounts.get_or_create(&account_name);
        self.spoke = connect.is_hub;
        self.shared.set_headers(connect.headers);
        {
            let mut meta = self.shared.meta.lock();
            let name = if connect.name.is_empty() { connect.server_id.clone() } else { connect.name.clone() };
            meta.name = name.clone();
            meta.user = who.user.clone();
            meta.account = account.name.clone();
            if let Some(leaf) = meta.leaf.as_mut() {
                leaf.remote_server = name;
                leaf.remote_cluster = connect.cluster.clone();
                leaf.spoke = connect.is_hub;
            }
        }
        let user_perms = who.permissions.clone();
        let mut base = user_perms.clone().unwrap_or_default();
        // What the leaf denies itself importing is not sent to it.
        base.subscribe = with_denies(base.subscribe, connect.deny_pub.iter().cloned());
        self.replace_duplicate(&connect, &account.name);
        let info = self.leafs.info_json(self.shared.cid, &self.nonce, Some((&account.name, user_perms.as_ref())));
        let _ = self.shared.outbound.push_bytes(&info_line(&info, false));
        info!(
            cid = self.shared.cid,
            "Leafnode connection created for account: {} from {:?}", account.name, connect.name
        );
        self.bind(account, base, connect.cluster);
        Ok(())
    }

    /// Checks the CONNECT's credentials: against `leafnodes { authorization }` when it has
    /// users, else as a client of this server would be checked (JWTs signed over the nonce,
    /// nkeys, users, tokens).
    async fn authenticate(&self, connect: &LeafConnect) -> Result<Authenticated, ()> {
        let users = &self.leafs.opts.users;
        if !users.is_empty() {
            let name = connect.user.as_deref().unwrap_or_default();
            let pass = connect.pass.clone().unwrap_or_default();
            let user = users.iter().find(|u| u.name == name).ok_or(())?;
            let configured = user.password.clone();
            let ok = tokio::task::spawn_blocking(move || crate::auth::secret_matches(&configured, &pass))
                .await
                .unwrap_or(false);
            return if ok {
                Ok(Authenticated { user: Some(user.name.clone()), account: user.account.clone(), permissions: None })
            } else {
                Err(())
            };
        }
        let opts = self.leafs.state.opts();
        let client = ConnectOptions {
            user: connect.user.as_deref().map(Into::into),
            pass: connect.pass.as_deref().map(Into::into),
            jwt: connect.jwt.as_deref().map(Into::into),
            sig: connect.sig.as_deref().map(Into::into),
            ..ConnectOptions::default()
        };
        crate::client::check_off_runtime(&opts, crate::options::Listener::Client, &client, &self.nonce)
            .await
            .map_err(|_| ())
    }

    /// A leaf reconnecting before this server noticed its old link was gone: the new link
    /// wins, as in nats-server.
    fn replace_duplicate(&self, connect: &LeafConnect, account: &str) {
        if connect.name.is_empty() {
            return;
        }
        let stale: Vec<Arc<Connection>> = self
            .leafs
            .links
            .iter()
            .filter(|e| {
                e.role == LinkRole::Accepted
                    && e.remote_server == connect.name
                    && e.remote_cluster == connect.cluster
                    && e.account == account
            })
            .map(|e| Arc::clone(&e.conn))
            .collect();
        for old in stale {
            let _ = old.outbound.push_bytes(b"-ERR 'Duplicate Remote LeafNode Connection'\r\n");
            old.outbound.wake();
            old.close(CloseReason::DuplicateLeaf);
            warn!(cid = self.shared.cid, "Replacing connection from same server");
        }
    }

    /// The link joins: bound to `account` with `base` (the other side's permissions as if it
    /// were a client here), registered, and interest starts both ways.
    fn bind(&mut self, account: Arc<Account>, base: Permissions, remote_cluster: String) {
        let loop_subject = self.leafs.loop_subject(&account.name);
        self.check_inbound = base.publish.is_some();
        let permissions = Arc::new(link_permissions(base));
        let (remote_server, cluster) = {
            let meta = self.shared.meta.lock();
            let leaf = meta.leaf.clone().unwrap_or_default();
            let cluster = if remote_cluster.is_empty() { leaf.remote_cluster } else { remote_cluster };
            (leaf.remote_server, cluster)
        };
        self.shared.meta.lock().account = account.name.clone();
        self.leafs.links.insert(
            self.shared.cid,
            LinkEntry {
                conn: Arc::clone(&self.shared),
                role: self.role,
                remote_server,
                remote_cluster: cluster,
                account: account.name.clone(),
            },
        );
        self.registered = true;
        self.interest = Some(LeafInterest::start(
            &self.shared,
            &account,
            self.spoke,
            Some(Arc::clone(&permissions)),
            &loop_subject,
        ));
        self.permissions = Some(permissions);
        self.loop_subject = Some(loop_subject);
        self.account = Some(account);
        self.stage = Stage::Ready;
    }

    /// `LS+`: the other side has interest. A loop detection subject of this server's own means
    /// the links form a loop; a literal subject the other side may not get is refused by the
    /// hub (and ignored by a spoke, which was told its permissions).
    fn remote_sub(&mut self, subject: &[u8], queue: Option<(&[u8], u32)>) -> Result<(), CloseReason> {
        let Some(account) = self.account.clone() else { return Ok(()) };
        if self.loop_subject.as_deref().is_some_and(|l| l.as_bytes() == subject) {
            let text = format!(
                "Loop detected for leafnode account={:?}. Delaying attempt to reconnect for {:?}",
                account.name, LOOP_DELAY
            );
            error!(cid = self.shared.cid, "{text}");
            self.send_err(&text);
            if self.role == LinkRole::Dialed {
                self.delayed = true;
            }
            return Err(CloseReason::ProtocolViolation);
        }
        if !crate::subject::is_valid_subscription(subject) {
            return Ok(());
        }
        let mut filter = None;
        if let (Some(p), false) = (&self.permissions, subject.starts_with(LOOP_PREFIX)) {
            let literal = !subject.split(|b| *b == b'.').any(|t| t == b"*" || t == b">");
            if literal && !p.can_subscribe(subject, queue.map(|(q, _)| q)) {
                if self.spoke {
                    return Ok(());
                }
                let text = format!("Permissions Violation for Subscription to {:?}", String::from_utf8_lossy(subject));
                error!(cid = self.shared.cid, "{text}");
                self.send_err(&text);
                return Err(CloseReason::ProtocolViolation);
            }
            filter = p.delivery_filter(subject);
        }
        let weight = queue.map_or(1, |(_, w)| w.clamp(1, MAX_WEIGHT)) as usize;
        let key: RemoteKey = (subject.into(), queue.map(|(q, _)| q.into()));
        let subs = self.remote.entry(key).or_default();
        while subs.len() < weight {
            let target =
                if self.spoke { Target::Hub(Arc::clone(&self.shared)) } else { Target::Leaf(Arc::clone(&self.shared)) };
            let sub = Arc::new(
                Subscription::new(target, subject, queue.map(|(q, _)| q), b"").with_deny_filter(filter.clone()),
            );
            account.add_subscription(Arc::clone(&sub));
            subs.push(sub);
        }
        while subs.len() > weight {
            if let Some(sub) = subs.pop() {
                account.remove_subscription(&sub, Removal::Owner);
            }
        }
        self.count_remote();
        Ok(())
    }

    /// `LS-`: the other side has no interest left.
    fn remote_unsub(&mut self, subject: &[u8], queue: Option<&[u8]>) {
        let Some(account) = &self.account else { return };
        let key: RemoteKey = (subject.into(), queue.map(Into::into));
        if let Some(subs) = self.remote.remove(&key) {
            for sub in subs {
                account.remove_subscription(&sub, Removal::Owner);
            }
        }
        self.count_remote();
    }

    fn count_remote(&self) {
        let n = self.remote.len() as u64;
        if let Some(leaf) = self.shared.meta.lock().leaf.as_mut() {
            leaf.subscriptions = n;
        }
    }

    /// `LMSG`/`HMSG`: delivered in the bound account to plain subscribers and the queue groups
    /// named, and on to routes and other leaf nodes by the message path's rules.
    fn inbound(&mut self, m: &RoutedMsg<'_>) {
        self.in_msgs += 1;
        self.in_bytes += m.payload.len() as u64;
        let Some(account) = self.account.clone() else { return };
        if self.check_inbound && self.permissions.as_ref().is_some_and(|p| !p.can_publish(m.subject)) {
            return;
        }
        let msg = Message { subject: m.subject, reply: m.reply, header_len: m.header_len, payload: m.payload };
        let origin = if self.spoke { Origin::Hub(&self.shared) } else { Origin::Leaf(&self.shared) };
        let state = Arc::clone(&self.leafs.state);
        self.publisher.publish_routed(&state, &account, origin, &msg, m.queues);
    }

    /// Cleans up: the other side's interest leaves the trie, this server's stops being sent,
    /// and the link leaves the registry.
    fn finish(&mut self) {
        if let (Some(account), Some(interest)) = (&self.account, self.interest.take()) {
            account.unlisten(&(interest as Arc<dyn crate::account::InterestListener>));
        }
        if let Some(account) = &self.account {
            for (_, subs) in self.remote.drain() {
                for sub in subs {
                    account.remove_subscription(&sub, Removal::Owner);
                }
            }
        }
        let state = &self.leafs.state;
        state.registry.record_closed(&self.shared);
        state.registry.remove(self.shared.cid);
        self.publisher.flush(state);
        if self.registered {
            self.leafs.links.remove(&self.shared.cid);
            info!(cid = self.shared.cid, "Leafnode connection closed");
        }
    }
}
