//! The system account's services: monitoring over NATS.
//!
//! Tools that ask a server for its state over NATS (the `nats server` commands, fleet
//! dashboards) send requests to `$SYS.REQ.SERVER.PING` (every server answers with its
//! statistics), `$SYS.REQ.SERVER.PING.<ENDPOINT>` and `$SYS.REQ.SERVER.<id>.<ENDPOINT>` in the
//! system account. The answers are nats-server's: the same documents as the HTTP endpoints,
//! wrapped as `{"server": {...}, "data": {...}}` (`"statsz"` for statistics), with the
//! request's JSON body as the endpoint's options.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::json::{self, CpuSampler};
use super::{accountz, jsz};
use crate::delivery::{InternalSink, Message, OwnedMessage, Subscription, Target};
use crate::format::rfc3339;
use crate::jetstream::JetStream;
use crate::publish::InternalPublisher;
use crate::state::events::ConnectionEvent;
use crate::state::{ServerState, StateView};

/// The endpoints a request may name after `PING.` or the server id.
const ENDPOINTS: &[&str] =
    &["STATSZ", "VARZ", "CONNZ", "SUBSZ", "ROUTEZ", "GATEWAYZ", "LEAFZ", "ACCOUNTZ", "JSZ", "HEALTHZ"];

/// The endpoints of `$SYS.REQ.ACCOUNT.<account>.<ENDPOINT>`, about one account.
const ACCOUNT_ENDPOINTS: &[&str] = &["CONNZ", "STATZ", "SUBSZ", "JSZ", "INFO"];

/// Queued requests the service task has not answered yet, beyond which requests are dropped.
const MAX_QUEUED: usize = 1024;

/// Watches the system account for clients' subscriptions, so that connection events are only
/// built while somebody could hear them.
struct ClientInterest {
    state: std::sync::Weak<ServerState>,
    subjects: parking_lot::Mutex<rustc_hash::FxHashSet<InterestKey>>,
}

/// A subject and queue group with interest.
type InterestKey = (Vec<u8>, Option<Vec<u8>>);

impl crate::account::InterestListener for ClientInterest {
    fn interest_changed(&self, change: &crate::account::InterestChange<'_>) {
        if !matches!(
            change.kind,
            crate::delivery::TargetKind::Client
                | crate::delivery::TargetKind::Leaf
                | crate::delivery::TargetKind::Route
        ) {
            return;
        }
        let mut subjects = self.subjects.lock();
        let key = (change.subject.to_vec(), change.queue.map(<[u8]>::to_vec));
        if change.count == 0 {
            subjects.remove(&key);
        } else {
            subjects.insert(key);
        }
        if let Some(state) = self.state.upgrade() {
            state.events.set_wanted(!subjects.is_empty());
        }
    }
}

/// Takes requests on the publisher's task and queues them for the service task.
struct Requests {
    queue: mpsc::Sender<OwnedMessage>,
}

impl InternalSink for Requests {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        if msg.reply.is_none() {
            return false;
        }
        self.queue.try_send(OwnedMessage::copy_of(msg)).is_ok()
    }

    fn name(&self) -> &str {
        "system services"
    }
}

/// Subscribes the services in the system account and answers requests until shutdown.
pub fn start(state: &Arc<ServerState>, jetstream: Option<Arc<JetStream>>) {
    let account = state.accounts.get_or_create(&state.opts().system_account);
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    let sink: Arc<dyn InternalSink> = Arc::new(Requests { queue: tx });
    let id = state.info().server_id.clone();
    let mut subjects = vec!["$SYS.REQ.SERVER.PING".to_string()];
    for endpoint in ENDPOINTS {
        subjects.push(format!("$SYS.REQ.SERVER.PING.{endpoint}"));
        subjects.push(format!("$SYS.REQ.SERVER.{id}.{endpoint}"));
    }
    for endpoint in ACCOUNT_ENDPOINTS {
        subjects.push(format!("$SYS.REQ.ACCOUNT.*.{endpoint}"));
    }
    for subject in subjects {
        let sub = Subscription::new(Target::Internal(Arc::clone(&sink)), subject.as_bytes(), None, b"");
        state.accounts.add_plumbing(&account, Arc::new(sub));
    }
    let opts = state.opts();
    let links = opts.all_account_links();
    let names = std::iter::once(crate::account::GLOBAL_ACCOUNT).chain(links.iter().map(|l| l.name.as_str()));
    state.accounts.link_system(&opts.system_account, names);
    let events = state.events.listen();
    let watch: Arc<dyn crate::account::InterestListener> =
        Arc::new(ClientInterest { state: Arc::downgrade(state), subjects: Default::default() });
    for change in account.listen(Arc::clone(&watch)) {
        watch.interest_changed(&change.as_change());
    }
    let service =
        Service { state: Arc::clone(state), jetstream, sampler: CpuSampler::default(), seq: AtomicU64::new(0) };
    tokio::spawn(service.run(rx, events, account));
}

struct Service {
    state: Arc<ServerState>,
    jetstream: Option<Arc<JetStream>>,
    sampler: CpuSampler,
    seq: AtomicU64,
}

/// Who answers, as nats-server names itself in each answer.
#[derive(Serialize)]
struct ServerIdentity {
    name: String,
    host: String,
    id: String,
    ver: String,
    seq: u64,
    jetstream: bool,
    time: String,
}

#[derive(Serialize)]
struct Answer<T: Serialize> {
    server: ServerIdentity,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statsz: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ApiError>,
}

#[derive(Serialize)]
struct ApiError {
    code: u16,
    description: String,
}

#[derive(Serialize)]
struct MsgBytes {
    msgs: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct Statsz {
    start: String,
    mem: u64,
    cores: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    active_accounts: usize,
    subscriptions: usize,
    sent: MsgBytes,
    received: MsgBytes,
    slow_consumers: u64,
    active_servers: u32,
}

impl Service {
    async fn run(
        self,
        mut requests: mpsc::Receiver<OwnedMessage>,
        mut events: Option<mpsc::Receiver<ConnectionEvent>>,
        account: Arc<crate::account::Account>,
    ) {
        let publisher = InternalPublisher::new(Arc::clone(&self.state));
        let shutdown = self.state.shutdown.clone();
        loop {
            let next_event = async {
                match events.as_mut() {
                    Some(e) => e.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = requests.recv() => {
                    let Some(request) = r else { return };
                    let Some(reply) = request.reply.clone() else { continue };
                    let Some(body) = self.answer(&request) else { continue };
                    publisher.publish(&account, &Message { subject: &reply, reply: None, header_len: 0, payload: &body });
                }
                e = next_event => match e {
                    Some(event) => self.advise(&publisher, &account, event),
                    None => events = None,
                },
            }
        }
    }

    /// Publishes nats-server's advisories for a connection event, each only when somebody
    /// in the system account listens for it.
    fn advise(&self, publisher: &InternalPublisher, account: &crate::account::Account, event: ConnectionEvent) {
        let listened = |subject: &str| {
            let m = account.sublist.matches(subject.as_bytes());
            !m.psubs.is_empty() || !m.qsubs.is_empty()
        };
        let publish = |subject: &str, body: &[u8]| {
            publisher
                .publish(account, &Message { subject: subject.as_bytes(), reply: None, header_len: 0, payload: body });
        };
        let view = self.state.view();
        let (of, client, kind) = match &event {
            ConnectionEvent::Connect(conn) => {
                let meta = conn.meta.lock().clone();
                (meta.account.clone(), ClientEvent::of_open(conn.cid, &meta), "client_connect")
            }
            ConnectionEvent::Disconnect(closed) | ConnectionEvent::AuthError(closed) => {
                (closed.meta.account.clone(), ClientEvent::of_closed(closed), "client_disconnect")
            }
        };
        if let ConnectionEvent::AuthError(closed) = &event {
            let subject = format!("$SYS.SERVER.{}.CLIENT.AUTH.ERR", self.state.info().server_id);
            if listened(&subject) {
                publish(&subject, &self.disconnect_body(client, closed));
            }
            return;
        }
        let conns = [format!("$SYS.SERVER.ACCOUNT.{of}.CONNS"), format!("$SYS.ACCOUNT.{of}.SERVER.CONNS")];
        if conns.iter().any(|s| listened(s)) {
            let id = event_id();
            let timestamp = rfc3339(std::time::SystemTime::now());
            for subject in &conns {
                let Some(statz) = account_statz(&view, &of).account_statz.pop() else { continue };
                let body = serde_json::to_vec(&AccountConns {
                    kind: "io.nats.server.advisory.v1.account_connections",
                    id: id.clone(),
                    timestamp: timestamp.clone(),
                    server: self.identity(),
                    statz,
                })
                .unwrap_or_default();
                publish(subject, &body);
            }
        }
        match &event {
            ConnectionEvent::Connect(_) => {
                let subject = format!("$SYS.ACCOUNT.{of}.CONNECT");
                if listened(&subject) {
                    let body = serde_json::to_vec(&ConnectAdvisory {
                        kind: format!("io.nats.server.advisory.v1.{kind}"),
                        id: event_id(),
                        timestamp: rfc3339(std::time::SystemTime::now()),
                        server: self.identity(),
                        client,
                    })
                    .unwrap_or_default();
                    publish(&subject, &body);
                }
            }
            ConnectionEvent::Disconnect(closed) => {
                let subject = format!("$SYS.ACCOUNT.{of}.DISCONNECT");
                if listened(&subject) {
                    publish(&subject, &self.disconnect_body(client, closed));
                }
            }
            ConnectionEvent::AuthError(_) => {}
        }
    }

    fn disconnect_body(&self, client: ClientEvent, closed: &crate::state::ClosedConn) -> Vec<u8> {
        serde_json::to_vec(&DisconnectAdvisory {
            kind: "io.nats.server.advisory.v1.client_disconnect",
            id: event_id(),
            timestamp: rfc3339(closed.stop),
            server: self.identity(),
            client,
            // As nats-server: what the client sent, and what it was sent.
            sent: MsgBytes { msgs: closed.in_msgs, bytes: closed.in_bytes },
            received: MsgBytes { msgs: closed.out.0, bytes: closed.out.1 },
            reason: closed.reason.to_string(),
        })
        .unwrap_or_default()
    }

    fn identity(&self) -> ServerIdentity {
        let info = self.state.info();
        let opts = self.state.opts();
        ServerIdentity {
            name: info.server_name.clone(),
            host: opts.host.clone(),
            id: info.server_id.clone(),
            ver: info.version.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            jetstream: self.jetstream.is_some(),
            time: rfc3339(std::time::SystemTime::now()),
        }
    }

    /// The answer to one request, serialised; `None` when the request's filter (`server_name`,
    /// `host`) leaves this server out.
    fn answer(&self, request: &OwnedMessage) -> Option<Vec<u8>> {
        let subject = std::str::from_utf8(&request.subject).unwrap_or("");
        let endpoint = subject.rsplit('.').next().unwrap_or("");
        let endpoint = if endpoint == "PING" { "STATSZ" } else { endpoint };
        // `$SYS.REQ.ACCOUNT.<account>.<ENDPOINT>`: about that account only.
        let about = subject.strip_prefix("$SYS.REQ.ACCOUNT.").and_then(|rest| rest.rsplit_once('.')).map(|(a, _)| a);
        let body = &request.payload[request.header_len.min(request.payload.len())..];
        let mut params = match options_of(body) {
            Ok(p) => p,
            Err(e) => return Some(self.error(400, e)),
        };
        if let Some(account) = about {
            params.insert("acc".to_string(), account.to_string());
        }
        let info = self.state.info();
        let filtered_out = |key: &str, ours: &str| params.get(key).is_some_and(|v| !v.is_empty() && v != ours);
        if filtered_out("server_name", &info.server_name) || filtered_out("host", &self.state.opts().host) {
            return None;
        }
        let view = self.state.view();
        let js = self.jetstream.as_deref();
        let data = |value: Result<Raw, String>| match value {
            Ok(v) => self.wrap(Some(v), None),
            // The options were understood but the endpoint refused them.
            Err(e) => self.error(500, e),
        };
        if let Some(account) = about {
            return Some(match endpoint {
                "CONNZ" => data(json::ConnzQuery::parse(&params).and_then(|q| to_value(&json::connz(&view, &q)))),
                "SUBSZ" => data(json::SubszQuery::parse(&params).and_then(|q| to_value(&json::subsz(&view, &q)))),
                "JSZ" => data(to_value(&jsz::jsz(&view, js, &jsz::JszQuery::parse(&params)))),
                "INFO" => data(accountz::detail(&view, js, account).and_then(|d| to_value(&d))),
                "STATZ" => data(to_value(&account_statz(&view, account))),
                _ => self.error(404, format!("unknown endpoint {endpoint}")),
            });
        }
        Some(match endpoint {
            "STATSZ" => self.wrap(None, self.statsz(&view)),
            "VARZ" => data(to_value(&json::varz(&view, &self.sampler, js))),
            "CONNZ" => data(json::ConnzQuery::parse(&params).and_then(|q| to_value(&json::connz(&view, &q)))),
            "SUBSZ" => data(json::SubszQuery::parse(&params).and_then(|q| to_value(&json::subsz(&view, &q)))),
            "ROUTEZ" => data(to_value(&json::routez(&view, None))),
            "LEAFZ" => data(to_value(&json::leafz(
                &view,
                params.get("subs").is_some_and(|s| s == "true"),
                params.get("acc").map(String::as_str),
            ))),
            "ACCOUNTZ" => data(accountz::accountz(&view, js, &params).and_then(|a| to_value(&a))),
            "GATEWAYZ" => data(to_value(&serde_json::json!({
                "server_id": view.info().server_id,
                "now": rfc3339(std::time::SystemTime::now()),
                "outbound_gateways": {},
                "inbound_gateways": {},
            }))),
            "JSZ" => data(to_value(&jsz::jsz(&view, js, &jsz::JszQuery::parse(&params)))),
            "HEALTHZ" => data(to_value(&serde_json::json!({"status": "ok"}))),
            _ => self.error(404, format!("unknown endpoint {endpoint}")),
        })
    }

    fn statsz(&self, view: &StateView) -> Option<Raw> {
        let stats = view.stats();
        let process = json::process_stats();
        let statsz = Statsz {
            start: rfc3339(view.start()),
            mem: process.rss,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: self.sampler.percent(process.cpu),
            connections: view.count(crate::connection::Kind::Client),
            total_connections: stats.total_connections.load(Ordering::Relaxed),
            active_accounts: view.accounts().iter().filter(|a| a.sublist.count() > 0).count(),
            subscriptions: view.subscriptions(),
            sent: MsgBytes {
                msgs: stats.out_msgs.load(Ordering::Relaxed),
                bytes: stats.out_bytes.load(Ordering::Relaxed),
            },
            received: MsgBytes {
                msgs: stats.in_msgs.load(Ordering::Relaxed),
                bytes: stats.in_bytes.load(Ordering::Relaxed),
            },
            slow_consumers: stats.slow_consumers.load(Ordering::Relaxed),
            active_servers: 1,
        };
        to_value(&statsz).ok()
    }

    fn wrap(&self, data: Option<Raw>, statsz: Option<Raw>) -> Vec<u8> {
        let answer = Answer { server: self.identity(), data, statsz, error: None };
        serde_json::to_vec(&answer).unwrap_or_default()
    }

    fn error(&self, code: u16, description: String) -> Vec<u8> {
        let answer: Answer<Raw> =
            Answer { server: self.identity(), data: None, statsz: None, error: Some(ApiError { code, description }) };
        serde_json::to_vec(&answer).unwrap_or_default()
    }
}

/// The client in a connection advisory.
#[derive(Serialize)]
struct ClientEvent {
    start: String,
    host: String,
    id: u64,
    acc: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    lang: String,
    ver: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    kind: &'static str,
    client_type: &'static str,
}

impl ClientEvent {
    fn of_open(cid: u64, meta: &crate::connection::ConnMeta) -> Self {
        ClientEvent {
            start: meta.start.map(rfc3339).unwrap_or_default(),
            host: meta.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            id: cid,
            acc: meta.account.clone(),
            user: meta.user.clone().unwrap_or_default(),
            name: meta.name.clone(),
            lang: meta.lang.clone(),
            ver: meta.version.clone(),
            rtt: None,
            stop: None,
            kind: "Client",
            client_type: meta.client_type(),
        }
    }

    fn of_closed(closed: &crate::state::ClosedConn) -> Self {
        let mut client = ClientEvent::of_open(closed.cid, &closed.meta);
        client.rtt = (closed.rtt_nanos > 0).then_some(closed.rtt_nanos);
        client.stop = Some(rfc3339(closed.stop));
        client
    }
}

#[derive(Serialize)]
struct ConnectAdvisory {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    timestamp: String,
    server: ServerIdentity,
    client: ClientEvent,
}

#[derive(Serialize)]
struct DisconnectAdvisory {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerIdentity,
    client: ClientEvent,
    sent: MsgBytes,
    received: MsgBytes,
    reason: String,
}

#[derive(Serialize)]
struct AccountConns {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerIdentity,
    #[serde(flatten)]
    statz: AccountStatz,
}

/// A unique id for an advisory, 22 characters as nats-server's.
fn event_id() -> String {
    crate::nuid::nuid()
}

#[derive(Serialize)]
struct AccountStatz {
    acc: String,
    conns: usize,
    leafnodes: usize,
    total_conns: usize,
    sent: MsgBytes,
    received: MsgBytes,
    slow_consumers: u64,
}

#[derive(Serialize)]
struct AccountStatzList {
    server_id: String,
    now: String,
    account_statz: Vec<AccountStatz>,
}

/// One account's connections and traffic. Traffic is summed over its open connections (the
/// server keeps no per-account totals of closed ones).
fn account_statz(view: &StateView, account: &str) -> AccountStatzList {
    let mut statz = AccountStatz {
        acc: account.to_string(),
        conns: 0,
        leafnodes: 0,
        total_conns: 0,
        sent: MsgBytes { msgs: 0, bytes: 0 },
        received: MsgBytes { msgs: 0, bytes: 0 },
        slow_consumers: 0,
    };
    for kind in [crate::connection::Kind::Client, crate::connection::Kind::Leaf] {
        for conn in view.connections(kind) {
            if conn.meta.lock().account != account {
                continue;
            }
            if kind == crate::connection::Kind::Leaf {
                statz.leafnodes += 1;
            } else {
                statz.conns += 1;
            }
            statz.total_conns += 1;
            let (out_msgs, out_bytes) = conn.outbound.counters();
            statz.sent.msgs += out_msgs;
            statz.sent.bytes += out_bytes;
            statz.received.msgs += conn.stats.in_msgs.load(Ordering::Relaxed);
            statz.received.bytes += conn.stats.in_bytes.load(Ordering::Relaxed);
        }
    }
    AccountStatzList {
        server_id: view.info().server_id,
        now: rfc3339(std::time::SystemTime::now()),
        account_statz: vec![statz],
    }
}

/// A document serialised in its own field order (a `serde_json::Value` would sort the fields).
type Raw = Box<serde_json::value::RawValue>;

fn to_value<T: Serialize>(value: &T) -> Result<Raw, String> {
    serde_json::value::to_raw_value(value).map_err(|e| e.to_string())
}

/// A request's JSON options as the HTTP endpoints' query parameters: `{"subscriptions": true}`
/// becomes `subs=true`, `{"subscriptions_detail": true}` `subs=detail`, `{"account": "A"}`
/// `acc=A`; other fields keep their names.
fn options_of(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))?;
    let serde_json::Value::Object(map) = value else { return Err("invalid request: expected a JSON object".into()) };
    for (key, value) in map {
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => continue,
        };
        match key.as_str() {
            "subscriptions" if text == "true" => {
                params.entry("subs".to_string()).or_insert(text);
            }
            "subscriptions_detail" if text == "true" => {
                params.insert("subs".to_string(), "detail".to_string());
            }
            "account" => {
                params.insert("acc".to_string(), text);
            }
            _ => {
                params.insert(key, text);
            }
        }
    }
    Ok(params)
}
