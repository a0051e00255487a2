//! Every server setting, with nats-server's defaults.
//!
//! `Options` is plain data: the command line and the config file fill it in, and the server reads
//! it when it starts. Keeping it free of behaviour lets tests build a server with exactly the
//! limits they want to exercise.

pub mod accounts;
pub mod leaf;
pub mod route_url;

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Authorization;
use crate::tls::TlsOptions;

/// The system account's name unless `system_account` names another, as in nats-server.
pub const SYSTEM_ACCOUNT: &str = "$SYS";
/// Default client port, as nats-server.
pub const DEFAULT_PORT: u16 = 4222;
/// Default largest payload a client may publish: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Default longest control line (a protocol line without its payload).
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// Default outbound bytes a consumer may have pending before it is cut off as slow: 64 MiB.
pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;
/// Default limit on concurrent client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64 * 1024;

/// How often file stores are synced to disk, as nats-server's `jetstream { sync_interval }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncInterval {
    /// fsync this often; what was acknowledged before is still in the operating system's
    /// hands after a crash of the server process, but not after a power loss.
    Every(Duration),
    /// fsync before every acknowledgement (`sync_interval: always`).
    Always,
}

/// JetStream's settings (`-js`, `--store_dir`, the `jetstream {}` block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// Where file streams live; `<store_dir>/jetstream/<account>/streams/<stream>`. `None`
    /// means nats-server's default, `$TMPDIR/nats`.
    pub store_dir: Option<PathBuf>,
    /// Bytes memory streams may hold in all; `None` means 75% of the machine's memory.
    pub max_memory: Option<u64>,
    /// Bytes file streams may hold in all; `None` means 75% of the free disk.
    pub max_store: Option<u64>,
    /// How often file stores are synced.
    pub sync_interval: SyncInterval,
    /// nats-server's `strict` (refuse API requests with unknown fields); accepted, and the API
    /// is as strict as nats-server 2.9.10 is.
    pub strict: bool,
}

/// The WebSocket listener (`websocket {}`), for browsers and web apps.
#[derive(Debug, Clone, PartialEq)]
pub struct WebsocketOptions {
    /// Interface to listen on; the client host when unset.
    pub host: Option<String>,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// The URL clients are told to use instead of the listen address.
    pub advertise: Option<String>,
    /// TLS for the listener; required unless `no_tls`.
    pub tls: Option<TlsOptions>,
    /// Serve without TLS (nats-server refuses to start otherwise).
    pub no_tls: bool,
    /// Accept an `Origin` only when it is the host the request was sent to.
    pub same_origin: bool,
    /// Origins (`scheme://host[:port]`) accepted; empty means any.
    pub allowed_origins: Vec<String>,
    /// Offer permessage-deflate.
    pub compression: bool,
    /// How long the HTTP upgrade may take.
    pub handshake_timeout: Duration,
    /// The listener's own `authorization { user, password | token, timeout }`.
    pub authorization: Option<Authorization>,
    /// The user (of the server's users) a WebSocket client without credentials connects as.
    pub no_auth_user: Option<String>,
    /// The cookie a browser's user JWT may come in, for clients that send none in CONNECT.
    pub jwt_cookie: Option<String>,
}

impl WebsocketOptions {
    /// The authorization WebSocket clients are checked against, when it is not the server's:
    /// the listener's own, or the server's with the listener's `no_auth_user`.
    pub fn effective_authorization(&self, server: &Authorization) -> Option<Authorization> {
        listener_authorization(self.authorization.as_ref(), self.no_auth_user.as_ref(), server)
    }
}

impl Default for WebsocketOptions {
    fn default() -> Self {
        WebsocketOptions {
            host: None,
            port: 0,
            advertise: None,
            tls: None,
            no_tls: false,
            same_origin: false,
            allowed_origins: Vec::new(),
            compression: false,
            handshake_timeout: Duration::from_secs(2),
            authorization: None,
            no_auth_user: None,
            jwt_cookie: None,
        }
    }
}

/// The cluster listener and its routes (`cluster {}`, `--cluster`, `--routes`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterOptions {
    /// The cluster's name; every server of a cluster must have the same. `None` until one is
    /// configured or learned from the first route.
    pub name: Option<String>,
    /// Interface for routes; the client host when unset.
    pub host: Option<String>,
    /// Port for routes; 0 picks a free one.
    pub port: u16,
    /// `host:port` other servers are told to dial instead of the listen address.
    pub advertise: Option<String>,
    /// Do not tell clients about the other servers of the cluster.
    pub no_advertise: bool,
    /// Seed routes, `nats-route://[user:password@]host:port` (or `nats://`).
    pub routes: Vec<String>,
    /// Attempts at a route learned by gossip before it is given up (configured routes are
    /// retried for as long as the server runs).
    pub connect_retries: u32,
    /// The user and password other servers must send in their CONNECT.
    pub user: Option<(String, String)>,
    /// How long a route has to send its CONNECT.
    pub auth_timeout: Option<Duration>,
    /// TLS on routes, both ways (the handshake comes first, as nats-server does it).
    pub tls: Option<TlsOptions>,
    /// `permissions { import, export }`: the subjects this server takes messages on from its
    /// routes (it tells them of its interest only there), and the subjects it sends them (it
    /// takes their interest only there); kept as publish and subscribe rules, as nats-server
    /// maps them.
    pub permissions: Option<crate::auth::Permissions>,
}

/// What a listener with an `authorization` or `no_auth_user` of its own checks its clients
/// against: its own authorization, or the server's with its `no_auth_user`; `None` when it has
/// neither and the server's applies.
fn listener_authorization(
    own: Option<&Authorization>,
    no_auth_user: Option<&String>,
    server: &Authorization,
) -> Option<Authorization> {
    if let Some(own) = own {
        return Some(own.clone());
    }
    Some(Authorization { no_auth_user: Some(no_auth_user?.clone()), ..server.clone() })
}

/// The MQTT listener (`mqtt {}`), for devices speaking MQTT 3.1.1.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttOptions {
    /// Interface to listen on; the client host when unset.
    pub host: Option<String>,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// TLS for the listener.
    pub tls: Option<TlsOptions>,
    /// The listener's own `authorization { user, password | token, timeout }`.
    pub authorization: Option<Authorization>,
    /// The user (of the server's users) a device without credentials connects as.
    pub no_auth_user: Option<String>,
    /// How long a QoS 1 message waits for its PUBACK before it is sent again.
    pub ack_wait: Duration,
    /// QoS 1 messages in flight to one subscription at most (65,535 per session in all).
    pub max_ack_pending: u16,
}

impl MqttOptions {
    /// The authorization devices are checked against, when it is not the server's: the
    /// listener's own, or the server's with the listener's `no_auth_user`.
    pub fn effective_authorization(&self, server: &Authorization) -> Option<Authorization> {
        listener_authorization(self.authorization.as_ref(), self.no_auth_user.as_ref(), server)
    }
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            host: None,
            port: 0,
            tls: None,
            authorization: None,
            no_auth_user: None,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
        }
    }
}

/// An account's JetStream limits (`jetstream { max_mem, max_file, max_streams, max_consumers }`
/// inside an account); -1 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamAccountLimits {
    /// Bytes its memory streams may hold.
    pub max_memory: i64,
    /// Bytes its file streams may hold.
    pub max_store: i64,
    /// Streams it may have.
    pub max_streams: i64,
    /// Consumers each of its streams may have.
    pub max_consumers: i64,
}

impl Default for JetStreamAccountLimits {
    fn default() -> Self {
        JetStreamAccountLimits { max_memory: -1, max_store: -1, max_streams: -1, max_consumers: -1 }
    }
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            store_dir: None,
            max_memory: None,
            max_store: None,
            sync_interval: SyncInterval::Every(Duration::from_secs(120)),
            strict: false,
        }
    }
}

/// The settings a server runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind the client listener to.
    pub host: String,
    /// Client port; 0 picks a free port (the command line's `-p -1`).
    pub port: u16,
    /// Name sent in INFO; defaults to the server id when empty.
    pub server_name: String,
    /// Largest payload (headers included) a client may publish.
    pub max_payload: usize,
    /// Longest protocol line accepted, payload excluded.
    pub max_control_line: usize,
    /// Outbound bytes a consumer may have queued before it is closed as a slow consumer.
    pub max_pending: usize,
    /// Concurrent client connections allowed; more are told so and closed (`usize::MAX`: no
    /// limit, which a negative value in the config file means).
    pub max_connections: usize,
    /// Subscriptions one connection may hold; 0 means no limit.
    pub max_subscriptions: usize,
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// Unanswered pings after which a client is a stale connection.
    pub ping_max: u32,
    /// How long one flush to a client may block before it counts as a slow consumer.
    pub write_deadline: Duration,
    /// How long a client has to send CONNECT when authentication is required; zero picks
    /// nats-server's default (2 s, or the TLS timeout and a second more with TLS).
    pub auth_timeout: Duration,
    /// How long a graceful shutdown waits for connections to flush before it gives up.
    pub shutdown_grace: Duration,
    /// Who may connect; empty means anyone.
    pub authorization: Authorization,
    /// TLS for client connections; plain text when unset.
    pub tls: Option<TlsOptions>,
    /// Log debug messages.
    pub debug: bool,
    /// Log protocol traces.
    pub trace: bool,
    /// Timestamps on log lines.
    pub logtime: bool,
    /// Log to this file instead of standard error.
    pub log_file: Option<PathBuf>,
    /// Write the process id here at start-up.
    pub pid_file: Option<PathBuf>,
    /// HTTP monitoring port; 0 picks a free port; `None` turns monitoring off.
    pub http_port: Option<u16>,
    /// Address for HTTP monitoring; the client host when unset.
    pub http_host: Option<String>,
    /// How long lame duck mode takes to close every client.
    pub lame_duck_duration: Duration,
    /// How long lame duck mode waits before it starts closing clients.
    pub lame_duck_grace_period: Duration,
    /// JetStream, when enabled.
    pub jetstream: Option<JetStreamOptions>,
    /// Accounts of the configuration file that have JetStream (`jetstream: enabled` inside the
    /// account); the global account has it whenever JetStream is on.
    pub jetstream_accounts: Vec<String>,
    /// The JetStream limits of those accounts that set some.
    pub jetstream_limits: Vec<(String, JetStreamAccountLimits)>,
    /// The WebSocket listener, when configured.
    pub websocket: Option<WebsocketOptions>,
    /// What WebSocket clients are checked against when it differs from `authorization`
    /// (derived from `websocket` by [`Options::apply_baseline`]).
    pub websocket_authorization: Option<Authorization>,
    /// The cluster listener and routes, when configured.
    pub cluster: Option<ClusterOptions>,
    /// The leaf node listener and remotes, when configured.
    pub leafnodes: Option<leaf::LeafNodeOptions>,
    /// The MQTT listener, when configured.
    pub mqtt: Option<MqttOptions>,
    /// What MQTT devices are checked against when it differs from `authorization` (derived
    /// from `mqtt` by [`Options::apply_baseline`]).
    pub mqtt_authorization: Option<Authorization>,
    /// Exports and imports of the configuration file's accounts.
    pub account_links: Vec<accounts::AccountLinks>,
    /// The account the server's own services and events live in (`system_account`).
    pub system_account: String,
    /// Threads that run connections (the command line's `--threads`, or `GOMAXPROCS` as for
    /// nats-server); 0 means one per CPU available. Fixed at start.
    pub worker_threads: usize,
}

/// The listener a client came in on, which decides the authorization it is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The client port.
    Client,
    /// The WebSocket listener.
    Websocket,
    /// The MQTT listener.
    Mqtt,
}

impl Options {
    /// What a client of `listener` is checked against: that listener's own authorization when
    /// it has one, the server's otherwise.
    pub fn authorization_for(&self, listener: Listener) -> &Authorization {
        let own = match listener {
            Listener::Client => None,
            Listener::Websocket => self.websocket_authorization.as_ref(),
            Listener::Mqtt => self.mqtt_authorization.as_ref(),
        };
        own.unwrap_or(&self.authorization)
    }

    /// The exports and imports of every account: the configuration file's and those in the
    /// trusted account JWTs.
    pub fn all_account_links(&self) -> Vec<accounts::AccountLinks> {
        let mut all = self.account_links.clone();
        if let Some(trust) = &self.authorization.trust {
            all.extend(trust.links().iter().cloned());
        }
        all
    }

    /// Replaces zero values with the defaults, as nats-server does before it starts (a config
    /// file's `ping_max: 0` or `max_connections: 0` means "the default", not "none").
    pub fn apply_baseline(&mut self) {
        let d = Options::default();
        self.websocket_authorization =
            self.websocket.as_ref().and_then(|ws| ws.effective_authorization(&self.authorization));
        self.mqtt_authorization = self.mqtt.as_ref().and_then(|m| m.effective_authorization(&self.authorization));
        if self.max_payload == 0 {
            self.max_payload = d.max_payload;
        }
        if self.max_control_line == 0 {
            self.max_control_line = d.max_control_line;
        }
        if self.max_pending == 0 {
            self.max_pending = d.max_pending;
        }
        if self.max_connections == 0 {
            self.max_connections = d.max_connections;
        }
        if self.ping_interval.is_zero() {
            self.ping_interval = d.ping_interval;
        }
        if self.ping_max == 0 {
            self.ping_max = d.ping_max;
        }
        if self.write_deadline.is_zero() {
            self.write_deadline = d.write_deadline;
        }
        if self.lame_duck_duration.is_zero() {
            self.lame_duck_duration = d.lame_duck_duration;
        }
        if self.lame_duck_grace_period.is_zero() {
            self.lame_duck_grace_period = d.lame_duck_grace_period;
        }
        if let Some(tls) = &mut self.tls {
            if tls.timeout.is_zero() {
                tls.timeout = TlsOptions::default().timeout;
            }
        }
        if self.authorization.timeout.is_some_and(|t| t.is_zero()) {
            self.authorization.timeout = None;
        }
        if self.auth_timeout.is_zero() {
            // As nats-server: a TLS client gets the TLS timeout and a second more.
            self.auth_timeout = match &self.tls {
                Some(tls) => tls.timeout + Duration::from_secs(1),
                None => d.auth_timeout,
            };
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "0.0.0.0".to_string(),
            port: DEFAULT_PORT,
            server_name: String::new(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_pending: DEFAULT_MAX_PENDING,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: 0,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            authorization: Authorization::default(),
            tls: None,
            debug: false,
            trace: false,
            logtime: true,
            log_file: None,
            pid_file: None,
            http_port: None,
            http_host: None,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            worker_threads: 0,
            jetstream: None,
            jetstream_accounts: Vec::new(),
            jetstream_limits: Vec::new(),
            account_links: Vec::new(),
            websocket: None,
            websocket_authorization: None,
            cluster: None,
            leafnodes: None,
            mqtt: None,
            mqtt_authorization: None,
            system_account: SYSTEM_ACCOUNT.to_string(),
        }
    }
}
