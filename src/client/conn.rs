//! The read loop of one connection and what it does with each operation.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use super::outbound::{write_loop, WriterEnd};
use super::{ClientShared, CloseReason, Subscription};
use crate::account::Account;
use crate::auth::Permissions;
use crate::options::Options;
use crate::proto::encode::{self, Message};
use crate::proto::errors;
use crate::proto::{ClientOp, ConnectOptions, Parser, Publish};
use crate::router::Router;
use crate::server::ServerState;
use crate::subject;

/// Most publish permission answers one connection caches.
const MAX_CACHED_PERMISSIONS: usize = 1024;

/// A subject as Go's `%q` prints it, as nats-server's permission errors do.
fn quoted(subject: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(subject))
}

fn sub_violation(subject: &[u8], queue: Option<&[u8]>) -> String {
    match queue {
        Some(q) => format!("Permissions Violation for Subscription to {} using queue {}", quoted(subject), quoted(q)),
        None => format!("Permissions Violation for Subscription to {}", quoted(subject)),
    }
}

/// First read buffer size, as nats-server.
const MIN_READ: usize = 512;
/// Largest read buffer size.
const MAX_READ: usize = 64 * 1024;
/// The first server PING comes this soon (or at ping_interval, if shorter).
const FIRST_PING: Duration = Duration::from_secs(2);

/// The INFO line for one client, with its nonce when there is one.
fn info_line(state: &ServerState, cid: u64, peer: SocketAddr, nonce: &str) -> Vec<u8> {
    let mut info = state.info();
    info.client_id = cid;
    info.client_ip = peer.ip().to_string();
    info.nonce = nonce.to_string();
    info.to_line()
}

/// A fresh nonce as nats-server makes them: 11 random bytes, base64url without padding.
fn new_nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 11]>())
}

/// What a new connection is greeted with: its INFO line (empty once already sent, as before a
/// TLS handshake) and the nonce in it.
pub(crate) struct Greeting {
    /// The INFO line still to send.
    pub(crate) info: Vec<u8>,
    /// The nonce nkey and JWT users sign; empty when not needed.
    pub(crate) nonce: String,
    /// The negotiated TLS version, for TLS connections.
    pub(crate) tls_version: Option<String>,
}

impl Greeting {
    pub(crate) fn new(state: &ServerState, cid: u64, peer: SocketAddr) -> Self {
        let nonce = if state.opts().authorization.needs_nonce() { new_nonce() } else { String::new() };
        Greeting { info: info_line(state, cid, peer, &nonce), nonce, tls_version: None }
    }
}

/// Tells a client the server is full, then closes it.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(state: &ServerState, cid: u64, peer: SocketAddr, mut writer: W) {
    let mut bytes = BytesMut::from(&info_line(state, cid, peer, "")[..]);
    encode::err(&mut bytes, errors::MAX_CONNECTIONS_EXCEEDED);
    let _ = tokio::time::timeout(state.opts().write_deadline, async {
        writer.write_all(&bytes).await?;
        writer.shutdown().await
    })
    .await;
    debug!(cid, %peer, "Client connection closed: {}", CloseReason::MaxConnectionsExceeded);
}

/// Runs a connection: sends INFO, starts the writer, reads until the connection ends, then
/// removes its subscriptions and waits for the writer to finish.
pub(crate) async fn run<R, W>(
    state: Arc<ServerState>,
    cid: u64,
    peer: SocketAddr,
    reader: R,
    writer: W,
    greeting: Greeting,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let opts = state.opts();
    let shared = Arc::new(ClientShared::new(cid, opts.max_pending));
    {
        let mut meta = shared.meta.lock();
        meta.peer = Some(peer);
        meta.start = Some(std::time::SystemTime::now());
        meta.account = crate::account::GLOBAL_ACCOUNT.to_string();
        meta.tls_version = greeting.tls_version.clone();
    }
    shared.stats.last_activity.store(super::unix_nanos(std::time::SystemTime::now()), Ordering::Relaxed);
    let Greeting { info, nonce, .. } = greeting;
    if !info.is_empty() {
        let _ = shared.outbound.push_bytes(&info);
    }
    let writer_task = {
        let shared = Arc::clone(&shared);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            match write_loop(&shared.outbound, writer, opts.write_deadline).await {
                WriterEnd::Done => {}
                WriterEnd::WriteError => {
                    shared.close(CloseReason::WriteError);
                }
                WriterEnd::Deadline => state.slow_consumer(&shared, CloseReason::SlowConsumerWriteDeadline),
            }
        })
    };
    shared.outbound.wake();

    state.clients.lock().insert(cid, Arc::clone(&shared));
    if state.shutdown.is_cancelled() {
        // Shutdown began while this connection was being set up and did not see it.
        shared.close(CloseReason::ServerShutdown);
    }
    let mut conn = Conn::new(Arc::clone(&state), Arc::clone(&shared), cid, nonce);
    let reason = conn.read_loop(reader).await;
    shared.close(reason);
    // The closed record keeps the subscription count the client had.
    state.record_closed(&shared);
    conn.remove_all_subscriptions();
    state.clients.lock().remove(&cid);
    let _ = writer_task.await;
    let reason = shared.close_reason().unwrap_or(reason);
    debug!(cid, %peer, "Client connection closed: {reason}");
}

/// What woke the read loop.
enum Event {
    Read(std::io::Result<usize>),
    Ping,
    AuthTimeout,
    Attention,
}

/// A connection's protocol state, owned by its read loop.
struct Conn {
    state: Arc<ServerState>,
    /// The subject namespace this client publishes and subscribes in.
    account: Arc<Account>,
    /// The server's options as of the last reload this connection saw.
    limits: Arc<Options>,
    /// Which reload `limits` came from.
    seen_reloads: u64,
    shared: Arc<ClientShared>,
    opts: ConnectOptions,
    subs: FxHashMap<Box<[u8]>, Arc<Subscription>>,
    router: Router,
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
}

impl Conn {
    fn new(state: Arc<ServerState>, shared: Arc<ClientShared>, cid: u64, nonce: String) -> Self {
        let seen_reloads = state.reloads();
        let limits = state.opts();
        let parser = Parser::new(limits.max_control_line, limits.max_payload);
        Conn {
            account: Arc::clone(state.accounts.global()),
            state,
            limits,
            seen_reloads,
            shared,
            opts: ConnectOptions::default(),
            subs: FxHashMap::default(),
            router: Router::new(cid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rand::random::<u64>()),
            parser,
            pings_out: 0,
            connected: false,
            nonce,
            perms: None,
            rtt_ping: None,
            pub_allowed: FxHashMap::default(),
            in_msgs: 0,
            in_bytes: 0,
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> CloseReason {
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut read_size = MIN_READ;
        let ping = tokio::time::sleep(self.limits.ping_interval.min(FIRST_PING));
        tokio::pin!(ping);
        let mut first_ping = true;
        let auth_timeout = self.limits.authorization.timeout.unwrap_or(self.limits.auth_timeout);
        let auth_timer = tokio::time::sleep(auth_timeout);
        tokio::pin!(auth_timer);
        // One registration for the whole loop, not one per read.
        let shared = Arc::clone(&self.shared);
        let attention = shared.attention.notified();
        tokio::pin!(attention);
        loop {
            let want = self.parser.needed().saturating_sub(buf.len()).max(read_size);
            if buf.capacity() - buf.len() < want {
                buf.reserve(want);
            }
            let spare = buf.capacity() - buf.len();
            let event = tokio::select! {
                biased;
                _ = &mut attention => Event::Attention,
                _ = &mut ping => Event::Ping,
                _ = &mut auth_timer, if !self.connected && self.limits.authorization.required() => Event::AuthTimeout,
                r = reader.read_buf(&mut buf) => Event::Read(r),
            };
            let n = match event {
                Event::Attention => {
                    if let Some(reason) = self.shared.close_reason() {
                        return reason;
                    }
                    attention.set(shared.attention.notified());
                    let result = self.refresh();
                    self.router.flush(&self.state, self.high_water()).await;
                    match result {
                        Ok(()) => continue,
                        Err(reason) => return reason,
                    }
                }
                Event::Ping => {
                    let result = self.on_ping_timer(first_ping);
                    first_ping = false;
                    ping.as_mut().reset(Instant::now() + self.limits.ping_interval);
                    self.router.flush(&self.state, self.high_water()).await;
                    match result {
                        Ok(()) => continue,
                        Err(reason) => return reason,
                    }
                }
                Event::AuthTimeout => {
                    debug!(cid = self.shared.cid, "Authentication Timeout");
                    self.send_err(errors::AUTHENTICATION_TIMEOUT);
                    self.router.flush(&self.state, self.high_water()).await;
                    return CloseReason::AuthenticationTimeout;
                }
                Event::Read(Ok(0)) => return CloseReason::ClientClosed,
                Event::Read(Err(_)) => return CloseReason::ReadError,
                Event::Read(Ok(n)) => n,
            };
            self.shared.stats.last_activity.store(super::unix_nanos(std::time::SystemTime::now()), Ordering::Relaxed);
            let mut result = Ok(());
            if self.state.reloads() != self.seen_reloads {
                result = self.refresh();
            }
            if result.is_ok() {
                result = self.process(&mut buf);
            }
            self.state.stats.add_in(self.in_msgs, self.in_bytes);
            if self.in_msgs > 0 {
                self.shared.stats.in_msgs.fetch_add(self.in_msgs, Ordering::Relaxed);
                self.shared.stats.in_bytes.fetch_add(self.in_bytes, Ordering::Relaxed);
            }
            self.in_msgs = 0;
            self.in_bytes = 0;
            self.router.flush(&self.state, self.high_water()).await;
            if let Err(reason) = result {
                return reason;
            }
            // Grow the read size while reads fill the buffer, shrink it after short reads.
            if n >= spare {
                read_size = (read_size * 2).min(MAX_READ);
            } else if n < read_size / 2 {
                read_size = (read_size / 2).max(MIN_READ);
            }
            if buf.is_empty() && buf.capacity() > read_size * 2 {
                buf = BytesMut::with_capacity(read_size);
            }
        }
    }

    /// Handles every whole operation in `buf`, dropping the bytes each one took.
    fn process(&mut self, buf: &mut BytesMut) -> Result<(), CloseReason> {
        loop {
            let (used, result) = match self.parser.parse(&buf[..]) {
                Ok(Some((op, used))) => (used, self.handle(op)),
                Ok(None) => return Ok(()),
                Err(e) => {
                    debug!(cid = self.shared.cid, "Client parser ERROR: {e}");
                    if let Some(text) = e.client_text() {
                        self.send_err(text);
                    }
                    return Err(CloseReason::ProtocolViolation);
                }
            };
            buf.advance(used);
            result?;
        }
    }

    fn handle(&mut self, op: ClientOp<'_>) -> Result<(), CloseReason> {
        if !self.connected && !matches!(op, ClientOp::Connect(_)) && self.limits.authorization.required() {
            return Err(self.auth_violation());
        }
        match op {
            ClientOp::Pub(p) => self.on_pub(&p),
            ClientOp::Sub { subject, queue, sid } => {
                self.on_sub(subject, queue, sid);
                Ok(())
            }
            ClientOp::Unsub { sid, max } => {
                self.on_unsub(sid, max);
                Ok(())
            }
            ClientOp::Ping => {
                self.reply(encode::PONG);
                Ok(())
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.rtt_ping.take() {
                    self.shared.stats.rtt_nanos.store(sent.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
                }
                Ok(())
            }
            ClientOp::Connect(json) => self.on_connect(json),
            ClientOp::Ok | ClientOp::Info => Ok(()),
            ClientOp::Err => Err(CloseReason::ProtocolViolation),
        }
    }

    /// Queues protocol bytes for this client.
    fn reply(&mut self, bytes: &[u8]) {
        let _ = self.shared.outbound.push_bytes(bytes);
        self.router.touch(&self.shared);
    }

    fn send_err(&mut self, text: &str) {
        let _ = self.shared.outbound.push_with(text.len() + 9, |b| encode::err(b, text));
        self.router.touch(&self.shared);
    }

    fn ok(&mut self) {
        if self.opts.verbose {
            self.reply(encode::OK);
        }
    }

    fn on_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        if let Err(e) = self.opts.apply(json) {
            debug!(cid = self.shared.cid, "CONNECT refused: {e}");
            if let Some(text) = e.client_text() {
                self.send_err(text);
            }
            return Err(CloseReason::ProtocolViolation);
        }
        let who = match self.limits.authorization.check(&self.opts, self.nonce.as_bytes()) {
            Ok(who) => who,
            Err(e) => {
                let peer = self.shared.meta.lock().peer.map(|p| p.to_string()).unwrap_or_default();
                // The user name and the remote address, never the secret.
                tracing::warn!(
                    cid = self.shared.cid,
                    remote = peer.as_str(),
                    user = self.opts.user.as_deref().unwrap_or(""),
                    "Authorization failed: {e}"
                );
                return Err(self.auth_violation());
            }
        };
        self.set_permissions(who.permissions);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = self.opts.name.clone();
            meta.lang = self.opts.lang.clone();
            meta.version = self.opts.version.clone();
            meta.user = who.user.clone();
            if let Some(account) = &who.account {
                meta.account = account.clone();
            }
        }
        if let Some(account) = who.account {
            if account != self.account.name {
                if !self.subs.is_empty() {
                    // Subscriptions belong to the account they were made in; a client that moves drops them.
                    self.remove_all_subscriptions();
                }
                self.account = self.state.accounts.get_or_create(&account);
                self.router.reset_cache();
            }
        }
        self.connected = true;
        self.shared.set_headers(self.opts.headers);
        self.shared.set_info_updates(self.opts.protocol >= 1);
        self.ok();
        Ok(())
    }

    fn auth_violation(&mut self) -> CloseReason {
        self.state.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        self.send_err(errors::AUTHORIZATION_VIOLATION);
        CloseReason::AuthenticationViolation
    }

    fn on_pub(&mut self, p: &Publish<'_>) -> Result<(), CloseReason> {
        if p.has_headers && !self.opts.headers {
            return Err(CloseReason::ProtocolViolation);
        }
        self.in_msgs += 1;
        self.in_bytes += p.payload.len() as u64;
        if self.opts.pedantic && !subject::is_valid_literal(p.subject) {
            // nats-server reports it and still delivers the message.
            self.send_err(errors::INVALID_PUBLISH_SUBJECT);
        }
        if !self.may_publish(p.subject) {
            let text = format!("Permissions Violation for Publish to {}", quoted(p.subject));
            self.send_err(&text);
            return Ok(());
        }
        self.ok();
        let msg = Message { subject: p.subject, reply: p.reply, header_len: p.header_len, payload: p.payload };
        let delivered = self.router.publish(&self.state, &self.account, &self.shared, self.opts.echo, &msg);
        if !delivered && self.opts.no_responders {
            if let Some(reply) = p.reply {
                self.no_responders(reply);
            }
        }
        Ok(())
    }

    /// Answers a request that reached no one with a 503 status, on the requester's own
    /// subscription for the reply subject.
    fn no_responders(&mut self, reply: &[u8]) {
        let Some(sub) = self.subs.values().find(|s| !s.is_removed() && subject::matches(&s.subject, reply)) else {
            return;
        };
        let status = Message {
            subject: reply,
            reply: None,
            header_len: encode::NO_RESPONDERS_HEADER.len(),
            payload: encode::NO_RESPONDERS_HEADER,
        };
        let _ = self.shared.outbound.push_msg(&status, &sub.sid, true);
        self.router.touch(&self.shared);
    }

    fn on_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        // nats-server checks permissions first, then the limit, then the rest.
        if let Some(perms) = &self.perms {
            if !perms.can_subscribe(subject, queue) {
                let text = sub_violation(subject, queue);
                self.send_err(&text);
                return;
            }
        }
        let max_subs = self.limits.max_subscriptions;
        if max_subs > 0 && self.subs.len() >= max_subs {
            self.subs.retain(|_, s| !s.is_removed());
            if self.subs.len() >= max_subs {
                self.send_err(errors::MAX_SUBSCRIPTIONS_EXCEEDED);
                return;
            }
        }
        if !subject::is_valid_subscription(subject) || queue.is_some_and(|q| !subject::is_valid_queue(q)) {
            self.send_err(errors::INVALID_SUBJECT);
            return;
        }
        if let Some(existing) = self.subs.get(sid) {
            if !existing.is_removed() {
                // nats-server ignores a SUB that reuses a live sid.
                self.ok();
                return;
            }
            self.subs.remove(sid);
        }
        let deny = self.perms.as_ref().and_then(|p| p.delivery_filter(subject));
        let sub = Arc::new(Subscription::new(Arc::clone(&self.shared), subject, queue, sid).with_deny_filter(deny));
        self.account.sublist.insert(Arc::clone(&sub));
        self.subs.insert(sid.into(), sub);
        self.shared.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.ok();
    }

    fn on_unsub(&mut self, sid: &[u8], max: Option<u64>) {
        if let Some(sub) = self.subs.get(sid) {
            let remove_now = match max {
                Some(max) => sub.set_max(max),
                None => true,
            };
            if remove_now {
                if let Some(sub) = self.subs.remove(sid) {
                    self.account.remove_subscription(&sub);
                }
            }
        }
        self.ok();
    }

    fn on_ping_timer(&mut self, first: bool) -> Result<(), CloseReason> {
        let now = super::unix_nanos(std::time::SystemTime::now());
        let idle = Duration::from_nanos(now.saturating_sub(self.shared.stats.last_activity.load(Ordering::Relaxed)));
        if !first && idle < self.limits.ping_interval {
            return Ok(());
        }
        if self.pings_out + 1 > self.limits.ping_max {
            debug!(cid = self.shared.cid, "Stale Client Connection - Closing");
            self.send_err(errors::STALE_CONNECTION);
            self.state.stats.stale_connections.fetch_add(1, Ordering::Relaxed);
            return Err(CloseReason::StaleConnection);
        }
        self.reply(encode::PING);
        if self.shared.stats.rtt_nanos.load(Ordering::Relaxed) == 0 && self.rtt_ping.is_none() {
            self.rtt_ping = Some(Instant::now());
        }
        self.pings_out += 1;
        Ok(())
    }

    /// Pending bytes past which a consumer stalls this publisher: 75% of max_pending.
    fn high_water(&self) -> usize {
        self.limits.max_pending / 4 * 3
    }

    /// Picks up reloaded options; a client whose credentials no longer pass is closed.
    fn refresh(&mut self) -> Result<(), CloseReason> {
        self.seen_reloads = self.state.reloads();
        self.limits = self.state.opts();
        self.parser.set_limits(self.limits.max_control_line, self.limits.max_payload);
        self.shared.outbound.set_max_pending(self.limits.max_pending);
        if self.connected {
            match self.limits.authorization.check(&self.opts, self.nonce.as_bytes()) {
                Ok(who) => self.set_permissions(who.permissions),
                Err(e) => {
                    debug!(cid = self.shared.cid, "Authorization no longer valid after reload: {e}");
                    return Err(self.auth_violation());
                }
            }
            // Subscriptions the new permissions no longer allow are removed, as nats-server does.
            if let Some(perms) = self.perms.clone() {
                let denied: Vec<Box<[u8]>> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| !s.is_removed() && !perms.can_subscribe(&s.subject, s.queue.as_deref()))
                    .map(|(sid, _)| sid.clone())
                    .collect();
                for sid in denied {
                    if let Some(sub) = self.subs.remove(&sid) {
                        self.account.remove_subscription(&sub);
                        let text = sub_violation(&sub.subject, sub.queue.as_deref());
                        self.send_err(&text);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a user's permissions to this connection.
    fn set_permissions(&mut self, perms: Option<crate::auth::Permissions>) {
        self.shared.set_response_permission(perms.as_ref().and_then(|p| p.allow_responses));
        self.perms = perms.map(Arc::new);
        self.pub_allowed.clear();
    }

    /// Whether this client may publish to `subject`: by its permissions (cached per subject), or
    /// as an allowed response to a request it received.
    fn may_publish(&mut self, subject: &[u8]) -> bool {
        let Some(perms) = &self.perms else { return true };
        let allowed = match self.pub_allowed.get(subject) {
            Some(&allowed) => allowed,
            None => {
                let allowed = perms.can_publish(subject);
                if self.pub_allowed.len() >= MAX_CACHED_PERMISSIONS {
                    self.pub_allowed.clear();
                }
                self.pub_allowed.insert(subject.into(), allowed);
                allowed
            }
        };
        allowed || self.shared.take_response(subject)
    }

    fn remove_all_subscriptions(&mut self) {
        for (_, sub) in self.subs.drain() {
            self.account.remove_subscription(&sub);
        }
    }
}
