//! Courier: a message broker that speaks the NATS client protocol, so that the official NATS
//! clients (async-nats, nats.py, nats.js, nats.go) connect to it unchanged.
//!
//! # Layout
//! Each module depends only on the ones listed before it.
//! - [`nuid`]: random names and ids as nats-server makes them.
//! - [`subject`]: subject validation and matching rules, and transforms between namespaces.
//! - [`options`]: every setting, with nats-server's defaults.
//! - [`conf`]: the NATS config file format, parsed into a tree of values; [`config`] maps it
//!   onto options.
//! - [`logging`]: log output in nats-server's format.
//! - [`auth`]: who may connect: users, passwords, tokens, nkeys, JWTs; subject permissions.
//! - [`tls`]: TLS for client connections (rustls), with nats-server's handshake orders.
//! - [`proto`]: the client protocol: the parser (no I/O), the encoders (including the route
//!   and leaf forms of a message), the `-ERR` texts, CONNECT and INFO.
//! - [`format`]: time and duration text as nats-server writes it in JSON.
//! - [`sublist`]: the subject trie that finds the subscriptions a subject matches, its shared
//!   match cache (patched on every insert and remove) and each publisher's view of it.
//! - [`connection`]: what any socket connection shares with other tasks: its outbound queue and
//!   writer, how it closes, its counters; the accept loop every listener shares and the
//!   heartbeat of links to other servers.
//! - [`mqtt`]: the MQTT 3.1.1 packet codec, the topic ↔ subject mapping, and how a message is
//!   sent to an MQTT subscription (QoS 0, or QoS 1 with packet ids in flight).
//! - [`delivery`]: subscriptions and the targets they deliver to, by kind (client, MQTT device,
//!   route, leaf, internal consumer, import into another account), and the owned form of a
//!   message.
//! - [`account`]: subject namespaces, the one path by which subscriptions are added and
//!   removed, the interest events routes and leaf nodes will follow, and the exports and
//!   imports that link accounts.
//! - [`state`]: what every connection shares, in narrow parts: the live configuration (swapped
//!   on reload), the connection registry, counters, accounts; a read-only view for monitoring.
//! - [`publish`]: publish → match → deliver for any origin (client, route, leaf, the server
//!   itself), queue picks, wake-ups and publisher stalls.
//! - [`jetstream`]: streams on their stores (memory, segment files), consumers delivering them
//!   at least once, and the `$JS.API` that serves both.
//! - [`client`]: one client connection: its read loop and timers, protocol handlers, and
//!   authentication and permissions.
//! - [`mqtt_server`]: MQTT devices' connections, and their sessions, held QoS 1 messages and
//!   retained messages in the account's streams.
//! - [`route`]: clustering over nats-server's route protocol: the route connections, the
//!   interest they exchange, the mesh they form by gossip.
//! - [`leaf`]: leaf nodes, as the hub they connect to and as a leaf of other hubs: the links,
//!   the interest each side tells the other, loop detection, remotes redialed.
//! - [`websocket`]: the HTTP upgrade with nats-server's checks, and the frames that carry a
//!   client's byte stream (with permessage-deflate), so a WebSocket client runs as any client.
//! - [`monitor`]: HTTP monitoring: nats-server's JSON endpoints, Prometheus metrics, a live
//!   page, and the system account's services over NATS.
//! - [`listener`]: every listener, bound and started from one place: client TCP/TLS,
//!   WebSocket, MQTT, routes, leaf nodes, HTTP.
//! - [`server`]: binding, running, reload, lame duck mode and shutdown.
#![warn(missing_docs, unreachable_pub)]

pub mod account;
pub mod auth;
pub mod client;
/// The NATS config file format.
pub mod conf;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod format;
pub mod jetstream;
pub mod leaf;
pub mod listener;
pub mod logging;
pub mod monitor;
pub mod mqtt;
pub mod mqtt_server;
pub mod nuid;
pub mod options;
pub mod proto;
pub mod publish;
pub mod route;
pub mod server;
pub mod state;
pub mod subject;
pub mod sublist;
pub mod tls;
pub mod websocket;

pub use options::Options;
pub use server::{Server, ServerHandle};
