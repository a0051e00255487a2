//! One MQTT device's connection: CONNECT and its checks, the session taken over or resumed,
//! then PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PUBACK and PINGREQ until the device leaves, its
//! keep-alive runs out, or it breaks the protocol; then its will, and its session kept or
//! deleted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::store::{client_id_hash, AccountStore, PersistedSession};
use super::{ClientIdSlot, MqttServer};
use crate::account::{Account, Removal};
use crate::auth::{Authenticated, Permissions};
use crate::client::{ClientRead, ConnectionSlot};
use crate::connection::{unix_nanos, CloseReason, ConnMeta, Connection, Kind, Push};
use crate::delivery::{Message, Subscription, Target};
use crate::mqtt::subscribe::FAILURE as SUBSCRIBE_FAILED;
use crate::mqtt::topic::{filter_to_subject, topic_to_subject_in, TopicError};
use crate::mqtt::{self, Connect, DecodeError, Inflight, MqttTarget, Packet, Publish, Subscribe, Unsubscribe};
use crate::nuid::nuid;
use crate::options::{Listener, Options};
use crate::proto::ConnectOptions;
use crate::publish::{Origin, Publisher};
use crate::state::events::ConnectionEvent;
use crate::state::ServerState;

/// CONNACK return codes.
const ACCEPTED: u8 = 0;
const UNACCEPTABLE_PROTOCOL: u8 = 1;
const IDENTIFIER_REJECTED: u8 = 2;
const SERVER_UNAVAILABLE: u8 = 3;
const NOT_AUTHORIZED: u8 = 5;
/// How long a device taking over a client id waits for the old connection to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Bytes one read asks for at least.
const MIN_READ: usize = 512;

/// Runs one accepted MQTT connection to its end.
pub async fn serve<R, W>(server: Arc<MqttServer>, reader: R, writer: W, peer: SocketAddr, tls_version: Option<String>)
where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::clone(&server.state);
    let cid = state.registry.next_cid();
    let (_slot, count) = ConnectionSlot::take(&state);
    let opts = state.opts();
    let shared = Arc::new(Connection::new(cid, Kind::Client, opts.max_pending));
    *shared.meta.lock() = ConnMeta { mqtt_client: Some(String::new()), ..ConnMeta::arriving(peer, tls_version) };
    shared.stats.last_activity.store(unix_nanos(std::time::SystemTime::now()), Ordering::Relaxed);
    let writer_task = crate::client::start_writer(&state, &shared, writer, opts.write_deadline);
    if count > opts.max_connections {
        // MQTT has no way to say why: the device is told the server is unavailable.
        send_connack(&shared, false, SERVER_UNAVAILABLE);
        shared.close(CloseReason::MaxConnectionsExceeded);
        let _ = writer_task.await;
        return;
    }
    debug!(cid, %peer, "MQTT client connection created");
    state.registry.insert(Arc::clone(&shared));
    if state.shutdown.is_cancelled() {
        shared.close(CloseReason::ServerShutdown);
    }
    let mut conn = MqttConn::new(server, Arc::clone(&shared), opts);
    let reason = conn.read_loop(reader).await;
    shared.close(reason);
    drop(conn);
    let _ = writer_task.await;
    let reason = shared.close_reason().unwrap_or(reason);
    debug!(cid, %peer, "MQTT client connection closed: {reason}");
}

fn send_connack(conn: &Connection, session_present: bool, code: u8) {
    let mut out = Vec::with_capacity(4);
    mqtt::connect::encode_connack(&mut out, session_present, code);
    let _ = conn.outbound.push_bytes(&out);
    conn.outbound.wake();
}

/// A device's will, kept from CONNECT.
struct Will {
    topic: String,
    message: Vec<u8>,
    qos: u8,
    retain: bool,
}

/// One topic filter the device subscribed to: the subjects it maps to (two for `x/#`, which
/// also matches `x`), each with its plain subscription and, at QoS 1, its consumer.
struct FilterSubs {
    qos: u8,
    subjects: Vec<SubjectSub>,
}

struct SubjectSub {
    subject: String,
    plain: Arc<Subscription>,
    consumer: Option<ConsumerLink>,
}

/// A QoS 1 subscription's durable consumer and the subscription taking its deliveries.
struct ConsumerLink {
    name: String,
    deliveries: Arc<Subscription>,
    number: u32,
}

/// How a packet's handling ends the connection, when it does.
type Handled = Result<(), CloseReason>;

/// A device connection's state, owned by its read loop. Dropping it ends the session.
struct MqttConn {
    server: Arc<MqttServer>,
    state: Arc<ServerState>,
    shared: Arc<Connection>,
    opts: Arc<Options>,
    account: Arc<Account>,
    /// The account's MQTT streams, once connected.
    store: Option<Arc<AccountStore>>,
    publisher: Publisher,
    perms: Option<Arc<Permissions>>,
    client_id: String,
    clean: bool,
    /// Sent if the connection ends without DISCONNECT.
    will: Option<Will>,
    subs: BTreeMap<String, FilterSubs>,
    inflight: Arc<Inflight>,
    /// Read deadline after CONNECT: 1.5 times the keep-alive, in whole seconds.
    keep_alive: Option<Duration>,
    /// The client id's slot, held while connected.
    slot: Option<(String, Arc<ClientIdSlot>, tokio::sync::OwnedMutexGuard<()>)>,
    /// Reused for each publish: its subject, its header block and payload, and its subject in
    /// `$MQTT_msgs`.
    subject_buf: String,
    payload_buf: Vec<u8>,
    stored_buf: String,
    in_msgs: u64,
    in_bytes: u64,
    /// Numbers retained QoS 1 deliveries, which no consumer acknowledges.
    retained_seq: u64,
}

impl MqttConn {
    fn new(server: Arc<MqttServer>, shared: Arc<Connection>, opts: Arc<Options>) -> Self {
        let state = Arc::clone(&server.state);
        let cid = shared.cid;
        MqttConn {
            account: Arc::clone(state.accounts.global()),
            server,
            state,
            shared,
            opts,
            store: None,
            publisher: Publisher::new(cid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rand::random::<u64>()),
            perms: None,
            client_id: String::new(),
            clean: true,
            will: None,
            subs: BTreeMap::new(),
            inflight: Arc::new(Inflight::default()),
            keep_alive: None,
            slot: None,
            subject_buf: String::new(),
            payload_buf: Vec::new(),
            stored_buf: String::new(),
            in_msgs: 0,
            in_bytes: 0,
            retained_seq: 0,
        }
    }

    fn connected(&self) -> bool {
        self.store.is_some()
    }

    async fn read_loop<R: ClientRead>(&mut self, mut reader: R) -> CloseReason {
        let mut buf = BytesMut::new();
        let max_packet = self.opts.max_payload + usize::from(u16::MAX) + 16;
        let auth_timeout = self
            .opts
            .mqtt
            .as_ref()
            .and_then(|m| m.authorization.as_ref())
            .and_then(|a| a.timeout)
            .unwrap_or(self.opts.auth_timeout);
        let mut deadline = Some(Instant::now() + auth_timeout);
        let shared = Arc::clone(&self.shared);
        loop {
            loop {
                let (packet, used) = match mqtt::decode(&buf, max_packet) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => return self.refuse(e),
                };
                let was_connected = self.connected();
                let handled = self.handle(packet).await;
                buf.advance(used);
                if let Err(reason) = handled {
                    self.flush().await;
                    return reason;
                }
                if !was_connected && self.connected() {
                    deadline = self.keep_alive.map(|k| Instant::now() + k);
                }
            }
            self.flush().await;
            if buf.is_empty() {
                // Between packets a device holds no read buffer: most devices are idle most of
                // the time.
                buf = BytesMut::new();
            }
            let read = tokio::select! {
                r = read_into(&mut reader, &mut buf) => r,
                _ = shared.attention_signal().notified() => {
                    match shared.close_reason() {
                        Some(reason) => return reason,
                        None => continue,
                    }
                }
                _ = sleep_until(deadline) => {
                    if self.connected() {
                        debug!(cid = shared.cid, "MQTT keep-alive timeout: closing");
                        return CloseReason::StaleConnection;
                    }
                    return CloseReason::AuthenticationTimeout;
                }
            };
            match shared.after_read(read) {
                Err(reason) => return reason,
                Ok(()) => {
                    if let (true, Some(k)) = (self.connected(), self.keep_alive) {
                        deadline = Some(Instant::now() + k);
                    }
                }
            }
        }
    }

    /// Closes for a packet that could not be decoded; a CONNECT for another protocol level is
    /// answered first, as nats-server does.
    fn refuse(&mut self, e: DecodeError) -> CloseReason {
        error!(cid = self.shared.cid, client = self.client_id.as_str(), "MQTT: {e}");
        if let DecodeError::ProtocolLevel(_) = e {
            if !self.connected() {
                send_connack(&self.shared, false, UNACCEPTABLE_PROTOCOL);
            }
        }
        CloseReason::ProtocolViolation
    }

    async fn handle(&mut self, packet: Packet<'_>) -> Handled {
        if !self.connected() {
            return match packet {
                // Boxed: the connect path is large and runs once; an idle device should not
                // carry room for it.
                Packet::Connect(c) => Box::pin(self.on_connect(c)).await,
                _ => {
                    error!(cid = self.shared.cid, "MQTT: the first packet should be a CONNECT");
                    Err(CloseReason::ProtocolViolation)
                }
            };
        }
        match packet {
            Packet::Connect(_) => {
                error!(
                    cid = self.shared.cid,
                    client = self.client_id.as_str(),
                    "MQTT: received a second CONNECT packet"
                );
                Err(CloseReason::ProtocolViolation)
            }
            Packet::Publish(p) => self.on_publish(&p),
            Packet::PubAck(id) => {
                self.on_puback(id);
                Ok(())
            }
            Packet::QoS2(kind, _) => {
                error!(
                    cid = self.shared.cid,
                    client = self.client_id.as_str(),
                    "MQTT: protocol {} not supported",
                    kind as u8
                );
                Err(CloseReason::ProtocolViolation)
            }
            Packet::Subscribe(s) => self.on_subscribe(&s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(&u);
                Ok(())
            }
            Packet::PingReq => {
                let _ = self.shared.outbound.push_bytes(&mqtt::PINGRESP);
                self.shared.outbound.wake();
                Ok(())
            }
            Packet::Disconnect => {
                self.will = None;
                Err(CloseReason::ClientClosed)
            }
        }
    }

    async fn on_connect(&mut self, c: Connect<'_>) -> Handled {
        let cid = self.shared.cid;
        if c.client_id.is_empty() && !c.clean_session {
            error!(cid, "MQTT: when client ID is empty, clean session flag must be set to 1");
            send_connack(&self.shared, false, IDENTIFIER_REJECTED);
            return Err(CloseReason::ProtocolViolation);
        }
        if let Some(w) = &c.will {
            if w.topic.is_empty() {
                error!(cid, "MQTT: empty Will topic not allowed");
                return Err(CloseReason::ProtocolViolation);
            }
        }
        if c.username == Some("") {
            error!(cid, "MQTT: empty user name not allowed");
            send_connack(&self.shared, false, 4);
            return Err(CloseReason::ProtocolViolation);
        }
        self.client_id = if c.client_id.is_empty() { nuid() } else { c.client_id.to_string() };
        self.clean = c.clean_session;
        let who = match self.authenticate(&c).await {
            Ok(who) => who,
            Err(reason) => {
                send_connack(&self.shared, false, NOT_AUTHORIZED);
                return Err(reason);
            }
        };
        if let Some(account) = &who.account {
            self.account = self.state.accounts.get_or_create(account);
        }
        self.perms = who.permissions.map(Arc::new);
        let Some(js) = self.server.jetstream.account(&self.account.name) else {
            error!(cid, "MQTT: account {:?} has no JetStream", self.account.name);
            send_connack(&self.shared, false, SERVER_UNAVAILABLE);
            return Err(CloseReason::ProtocolViolation);
        };
        let store = match self.server.store_for(js) {
            Ok(s) => s,
            Err(e) => {
                error!(
                    cid,
                    "MQTT: unable to open the MQTT streams of account {:?}: {}", self.account.name, e.description
                );
                send_connack(&self.shared, false, SERVER_UNAVAILABLE);
                return Err(CloseReason::ProtocolViolation);
            }
        };
        self.take_client_id().await?;
        let session = if self.clean {
            store.delete_session(&self.client_id);
            None
        } else {
            store.load_session(&self.client_id)
        };
        self.will = c.will.map(|w| Will {
            topic: w.topic.to_string(),
            message: w.message.to_vec(),
            qos: w.qos,
            retain: w.retain,
        });
        self.keep_alive = (c.keep_alive > 0)
            .then(|| Duration::from_secs(u64::from(c.keep_alive) * 3 / 2).max(Duration::from_secs(1)));
        {
            let mut meta = self.shared.meta.lock();
            meta.mqtt_client = Some(self.client_id.clone());
            meta.user = who.user;
            meta.account = self.account.name.clone();
        }
        self.store = Some(store);
        send_connack(&self.shared, session.is_some(), ACCEPTED);
        if self.state.events.is_listened() {
            self.state.events.report(ConnectionEvent::Connect(Arc::clone(&self.shared)));
        }
        if let Some(session) = session {
            self.resume(session);
        }
        Ok(())
    }

    /// Checks the device's credentials as a NATS client's: the user name and password, the
    /// password also as a token or a JWT (as nats-server takes them from MQTT).
    async fn authenticate(&mut self, c: &Connect<'_>) -> Result<Authenticated, CloseReason> {
        let password: Option<Box<str>> = c.password.map(|p| String::from_utf8_lossy(p).into());
        let auth = self.opts.authorization_for(Listener::Mqtt);
        let connect = ConnectOptions {
            user: c.username.map(Into::into),
            pass: password.clone(),
            auth_token: password.clone(),
            jwt: if auth.trust.is_some() { password } else { None },
            ..ConnectOptions::default()
        };
        let result = if auth.is_expensive(&connect) {
            crate::client::check_off_runtime(&self.opts, Listener::Mqtt, &connect, "").await
        } else {
            auth.check(&connect, b"")
        };
        result.map_err(|e| {
            let peer = self.shared.meta.lock().peer.map(|p| p.to_string()).unwrap_or_default();
            warn!(
                cid = self.shared.cid,
                remote = peer.as_str(),
                user = c.username.unwrap_or(""),
                client = self.client_id.as_str(),
                "MQTT authorization failed: {e}"
            );
            self.state.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            CloseReason::AuthenticationViolation
        })
    }

    /// Takes the client id in this account; a connection that holds it is closed first, and
    /// its session handed over once it has finished.
    async fn take_client_id(&mut self) -> Handled {
        let key = format!("{}\n{}", self.account.name, self.client_id);
        let slot = Arc::clone(&self.server.client_ids.entry(key.clone()).or_default());
        let old = slot.holder.lock().clone();
        if let Some(old) = old {
            debug!(
                cid = self.shared.cid,
                client = self.client_id.as_str(),
                "MQTT: client ID in use, closing the old connection"
            );
            old.close(CloseReason::DuplicateClientId);
        }
        let Ok(turn) = tokio::time::timeout(TAKEOVER_WAIT, Arc::clone(&slot.turn).lock_owned()).await else {
            error!(
                cid = self.shared.cid,
                "MQTT: other session with client ID {:?} is in the process of connecting", self.client_id
            );
            send_connack(&self.shared, false, SERVER_UNAVAILABLE);
            return Err(CloseReason::ProtocolViolation);
        };
        *slot.holder.lock() = Some(Arc::clone(&self.shared));
        self.slot = Some((key, slot, turn));
        Ok(())
    }

    /// Subscribes again to what a persistent session had, with its consumers.
    fn resume(&mut self, session: PersistedSession) {
        for (filter, qos) in &session.subs {
            match self.subscribe(filter, *qos, Some(&session.cons)) {
                Ok(_) => {}
                Err(e) => {
                    warn!(client = self.client_id.as_str(), "MQTT: session subscription {filter:?} not restored: {e}")
                }
            }
        }
        // Consumers the session no longer needs (a subscription refused now) are removed.
        if let Some(store) = &self.store {
            let kept: Vec<&str> = self.consumer_names().collect();
            for name in session.cons.values().filter(|n| !kept.contains(&n.as_str())) {
                store.delete_consumer(name);
            }
        }
        self.save_session();
    }

    fn consumer_names(&self) -> impl Iterator<Item = &str> {
        self.subs.values().flat_map(|f| f.subjects.iter()).filter_map(|s| s.consumer.as_ref()).map(|c| c.name.as_str())
    }

    fn on_publish(&mut self, p: &Publish<'_>) -> Handled {
        if p.qos == 2 {
            error!(cid = self.shared.cid, client = self.client_id.as_str(), "MQTT: publish QoS=2 not supported");
            return Err(CloseReason::ProtocolViolation);
        }
        let mut subject = std::mem::take(&mut self.subject_buf);
        if let Err(e) = topic_to_subject_in(p.topic, &mut subject) {
            error!(cid = self.shared.cid, client = self.client_id.as_str(), "MQTT: {}", publish_topic_error(&e));
            return Err(CloseReason::ProtocolViolation);
        }
        self.in_msgs += 1;
        self.in_bytes += p.payload.len() as u64;
        let result = if self.may_publish(subject.as_bytes()) {
            self.publish_as_device(&subject, p.qos, p.retain, p.payload)
        } else {
            warn!(
                cid = self.shared.cid,
                client = self.client_id.as_str(),
                "Publish Violation - User {:?}, Subject {:?}",
                self.shared.meta.lock().user.clone().unwrap_or_default(),
                subject
            );
            Ok(())
        };
        self.subject_buf = subject;
        result?;
        if let (1, Some(id)) = (p.qos, p.packet_id) {
            let [hi, lo] = id.to_be_bytes();
            let _ = self.shared.outbound.push_bytes(&[0x40, 0x02, hi, lo]);
            self.shared.outbound.wake();
        }
        Ok(())
    }

    fn may_publish(&self, subject: &[u8]) -> bool {
        self.perms.as_ref().is_none_or(|p| p.can_publish(subject))
    }

    /// Publishes what the device sent (or its will): to NATS subscribers and plain MQTT
    /// subscriptions with the `Nmqtt-Pub` header, into `$MQTT_msgs` at QoS 1, and as the
    /// subject's retained message when flagged so.
    fn publish_as_device(&mut self, subject: &str, qos: u8, retain: bool, body: &[u8]) -> Handled {
        let mut payload = std::mem::take(&mut self.payload_buf);
        payload.clear();
        payload.extend_from_slice(b"NATS/1.0\r\nNmqtt-Pub:");
        payload.push(b'0' + qos);
        payload.extend_from_slice(b"\r\n\r\n");
        let header_len = payload.len();
        payload.extend_from_slice(body);
        let msg = Message { subject: subject.as_bytes(), reply: None, header_len, payload: &payload };
        self.publisher.publish(&self.state, &self.account, Origin::Client { conn: &self.shared, echo: true }, &msg);
        let mut result = Ok(());
        if let Some(store) = &self.store {
            if qos > 0 {
                if let Err(e) = store.store_message(subject, &payload[..header_len], body, &mut self.stored_buf) {
                    error!(
                        client = self.client_id.as_str(),
                        "MQTT: unable to store the QoS 1 message on {subject:?}: {}", e.description
                    );
                    result = Err(CloseReason::ProtocolViolation);
                }
            }
            if retain {
                if body.is_empty() {
                    store.clear_retained(subject);
                } else if let Err(e) = store.set_retained(subject, qos, body) {
                    error!(
                        client = self.client_id.as_str(),
                        "MQTT: unable to store retained message for account {:?}, subject {subject:?}: {}",
                        self.account.name,
                        e.description
                    );
                }
            }
        }
        self.payload_buf = payload;
        result
    }

    fn on_puback(&mut self, packet_id: u16) {
        let Some(reply) = self.inflight.acknowledged(packet_id) else { return };
        if reply.is_empty() {
            return;
        }
        let ack = Message { subject: &reply, reply: None, header_len: 0, payload: b"" };
        self.publisher.publish(&self.state, &self.account, Origin::Client { conn: &self.shared, echo: true }, &ack);
    }

    fn on_subscribe(&mut self, s: &Subscribe<'_>) -> Handled {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut started = Vec::new();
        for (filter, qos) in &s.filters {
            match self.subscribe(filter, *qos, None) {
                Ok(granted) => {
                    codes.push(granted);
                    started.push(filter.to_string());
                }
                Err(TopicError::Empty) => {
                    error!(cid = self.shared.cid, "MQTT: topic filter cannot be empty");
                    return Err(CloseReason::ProtocolViolation);
                }
                Err(e) => {
                    debug!(cid = self.shared.cid, client = self.client_id.as_str(), "MQTT: subscription refused: {e}");
                    codes.push(SUBSCRIBE_FAILED);
                }
            }
        }
        self.save_session();
        let mut out = Vec::with_capacity(4 + codes.len());
        mqtt::subscribe::encode_suback(&mut out, s.packet_id, &codes);
        let _ = self.shared.outbound.push_bytes(&out);
        for filter in started {
            self.send_retained(&filter);
        }
        self.shared.outbound.wake();
        Ok(())
    }

    /// Subscribes to `filter` at `qos` (QoS 2 is granted as 1, as nats-server 2.9.10 does);
    /// `consumers` are a resumed session's, to reattach to. Returns the granted QoS.
    fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        consumers: Option<&BTreeMap<String, String>>,
    ) -> Result<u8, TopicError> {
        let subject = filter_to_subject(filter)?;
        let granted = qos.min(1);
        if let Some(perms) = &self.perms {
            if !perms.can_subscribe(subject.as_bytes(), None) {
                warn!(
                    cid = self.shared.cid,
                    client = self.client_id.as_str(),
                    "Subscription Violation - Subject {subject:?}"
                );
                return Err(TopicError::InvalidFilter(filter.to_string()));
            }
        }
        if let Some(existing) = self.subs.get(filter) {
            if existing.qos == granted {
                return Ok(granted);
            }
            if let Some(old) = self.subs.remove(filter) {
                self.end_filter(old);
            }
        }
        let mut subjects = vec![subject.clone()];
        if let Some(parent) = subject.strip_suffix(".>") {
            subjects.push(parent.to_string());
        }
        let mut made = FilterSubs { qos: granted, subjects: Vec::with_capacity(subjects.len()) };
        for (i, subject) in subjects.into_iter().enumerate() {
            let sid = if i == 0 { filter.to_string() } else { format!("{filter} fwc") };
            let consumer = if granted == 1 {
                match self.attach_consumer(&subject, &sid, consumers.and_then(|c| c.get(&subject))) {
                    Ok(link) => Some(link),
                    Err(e) => {
                        warn!(
                            client = self.client_id.as_str(),
                            "MQTT: unable to create the consumer for {subject:?}: {e}"
                        );
                        self.end_filter(made);
                        return Err(TopicError::InvalidFilter(filter.to_string()));
                    }
                }
            } else {
                None
            };
            let target = MqttTarget {
                conn: Arc::clone(&self.shared),
                qos: granted,
                consumer: None,
                inflight: Arc::clone(&self.inflight),
            };
            let plain =
                Arc::new(Subscription::new(Target::Mqtt(Arc::new(target)), subject.as_bytes(), None, sid.as_bytes()));
            self.account.add_subscription(Arc::clone(&plain));
            made.subjects.push(SubjectSub { subject, plain, consumer });
        }
        self.subs.insert(filter.to_string(), made);
        self.count_subscriptions();
        Ok(granted)
    }

    /// The durable consumer of a QoS 1 subscription to `subject` (the session's own when it
    /// still exists), and a subscription taking its deliveries.
    fn attach_consumer(&mut self, subject: &str, sid: &str, existing: Option<&String>) -> Result<ConsumerLink, String> {
        let Some(store) = &self.store else { return Err("not connected".into()) };
        let mqtt = self.opts.mqtt.clone().unwrap_or_default();
        let found = existing.and_then(|name| store.consumer(name).map(|c| (name.clone(), c)));
        let (name, deliver) = match found {
            Some((name, c)) => (name, c.config().deliver_subject),
            None => {
                let name = format!("{}_{}", client_id_hash(&self.client_id), nuid());
                let deliver = format!("$MQTT.sub.{}", nuid());
                store
                    .create_consumer(&name, subject, &deliver, mqtt.ack_wait, mqtt.max_ack_pending, self.clean)
                    .map_err(|e| e.description.clone())?;
                (name, deliver)
            }
        };
        let number = self.server.next_consumer_number();
        let target = MqttTarget {
            conn: Arc::clone(&self.shared),
            qos: 1,
            consumer: Some(number),
            inflight: Arc::clone(&self.inflight),
        };
        let deliveries =
            Arc::new(Subscription::new(Target::Mqtt(Arc::new(target)), deliver.as_bytes(), None, sid.as_bytes()));
        self.account.add_subscription(Arc::clone(&deliveries));
        Ok(ConsumerLink { name, deliveries, number })
    }

    /// Sends the retained messages matching a new subscription, flagged retained.
    fn send_retained(&mut self, filter: &str) {
        let (Some(store), Some(subs)) = (&self.store, self.subs.get(filter)) else { return };
        let granted = subs.qos;
        for sub in &subs.subjects {
            for r in store.retained_matching(&sub.subject) {
                let qos = r.qos.min(granted);
                let id = if qos > 0 {
                    self.retained_seq += 1;
                    match self.inflight.assign(u32::MAX, self.retained_seq, b"") {
                        Some((id, _)) => Some(id),
                        None => continue,
                    }
                } else {
                    None
                };
                if let Push::SlowConsumer =
                    mqtt::deliver::push_retained(&self.shared, r.subject.as_bytes(), qos, id, &r.body)
                {
                    self.state.slow_consumer(&self.shared, CloseReason::SlowConsumerPendingBytes);
                    return;
                }
            }
        }
    }

    fn on_unsubscribe(&mut self, u: &Unsubscribe<'_>) {
        for filter in &u.filters {
            if let Some(subs) = self.subs.remove(*filter) {
                self.end_filter(subs);
            }
        }
        self.count_subscriptions();
        self.save_session();
        let mut out = Vec::with_capacity(4);
        mqtt::subscribe::encode_unsuback(&mut out, u.packet_id);
        let _ = self.shared.outbound.push_bytes(&out);
        self.shared.outbound.wake();
    }

    /// Ends one filter's subscriptions and deletes their consumers.
    fn end_filter(&mut self, subs: FilterSubs) {
        for s in subs.subjects {
            self.account.remove_subscription(&s.plain, Removal::Owner);
            if let Some(c) = s.consumer {
                self.account.remove_subscription(&c.deliveries, Removal::Owner);
                self.inflight.forget_consumer(c.number);
                if let Some(store) = &self.store {
                    store.delete_consumer(&c.name);
                }
            }
        }
    }

    fn count_subscriptions(&self) {
        let n: usize = self.subs.values().map(|f| f.subjects.len()).sum();
        self.shared.stats.subscriptions.store(n as u64, Ordering::Relaxed);
        self.shared.stats.sids.store(n as u64, Ordering::Relaxed);
    }

    /// Saves a persistent session's subscriptions and consumers.
    fn save_session(&self) {
        let Some(store) = &self.store else { return };
        if self.clean {
            return;
        }
        let mut session = PersistedSession {
            origin: self.opts.server_name.clone(),
            id: self.client_id.clone(),
            ..Default::default()
        };
        for (filter, subs) in &self.subs {
            session.subs.insert(filter.clone(), subs.qos);
            for s in &subs.subjects {
                if let Some(c) = &s.consumer {
                    session.cons.insert(s.subject.clone(), c.name.clone());
                }
            }
        }
        if let Err(e) = store.save_session(&session) {
            error!(
                client = self.client_id.as_str(),
                "MQTT: unable to persist session {:?}: {}", self.client_id, e.description
            );
        }
    }

    /// Wakes the connections written to and adds the counters to the server's.
    async fn flush(&mut self) {
        if self.in_msgs > 0 {
            self.state.count_in(&self.shared, self.in_msgs, self.in_bytes);
            self.in_msgs = 0;
            self.in_bytes = 0;
        }
        let high_water = self.opts.max_pending / 4 * 3;
        self.publisher.flush_and_stall(&self.state, high_water).await;
    }
}

impl Drop for MqttConn {
    fn drop(&mut self) {
        if self.shared.close_reason().is_none() {
            self.shared.close(CloseReason::Internal);
        }
        if let Some(will) = self.will.take() {
            let mut subject = String::new();
            match topic_to_subject_in(&will.topic, &mut subject) {
                Ok(()) if self.may_publish(subject.as_bytes()) => {
                    let _ = self.publish_as_device(&subject, will.qos.min(1), will.retain, &will.message);
                }
                Ok(()) => {}
                Err(e) => debug!(client = self.client_id.as_str(), "MQTT: will not sent: {e}"),
            }
        }
        let closed = self.state.registry.record_closed(&self.shared);
        if self.connected() && self.state.events.is_listened() {
            self.state.events.report(ConnectionEvent::Disconnect(closed));
        }
        let subs = std::mem::take(&mut self.subs);
        let mut consumers = Vec::new();
        for (_, f) in subs {
            for s in f.subjects {
                self.account.remove_subscription(&s.plain, Removal::Owner);
                if let Some(c) = s.consumer {
                    self.account.remove_subscription(&c.deliveries, Removal::Owner);
                    consumers.push(c.name);
                }
            }
        }
        if let (Some(store), true) = (&self.store, self.clean) {
            // A clean session ends with its connection, consumers and all.
            for name in consumers {
                store.delete_consumer(&name);
            }
            store.delete_session(&self.client_id);
        }
        self.state.registry.remove(self.shared.cid);
        self.publisher.flush(&self.state);
        if let Some((key, slot, turn)) = self.slot.take() {
            {
                let mut holder = slot.holder.lock();
                if holder.as_ref().is_some_and(|h| Arc::ptr_eq(h, &self.shared)) {
                    *holder = None;
                }
            }
            drop(turn);
            self.server.client_ids.remove_if(&key, |_, s| Arc::strong_count(s) <= 2 && s.holder.lock().is_none());
        }
    }
}

/// Reads into `buf`, waiting for bytes before taking a buffer when there is none.
async fn read_into<R: ClientRead>(reader: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        reader.ready().await?;
    }
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(MIN_READ);
    }
    reader.read_buf(buf).await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// nats-server's words for a PUBLISH topic it refuses.
fn publish_topic_error(e: &TopicError) -> String {
    match e {
        TopicError::Empty => "topic cannot be empty".to_string(),
        TopicError::Unmappable(_) => "characters ' ' and '.' not supported for MQTT topics".to_string(),
        other => other.to_string(),
    }
}
