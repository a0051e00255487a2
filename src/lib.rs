//! Courier: a message broker that speaks the NATS client protocol, so that the official NATS
//! clients (async-nats, nats.py, nats.js, nats.go) connect to it unchanged.
//!
//! # Layout
//! - [`options`]: every setting, with nats-server's defaults.
//! - [`conf`]: the NATS config file format, parsed into a tree of values; [`config`] maps it
//!   onto options.
//! - [`auth`]: who may connect: users, passwords, tokens, nkeys, JWTs.
//! - [`account`]: subject namespaces; a client sees only its own account's messages.
//! - [`proto`]: the client protocol: the parser (no I/O), the encoders, the `-ERR` texts,
//!   CONNECT and INFO.
//! - [`subject`]: subject validation and matching rules.
//! - [`sublist`]: the subject trie that finds the subscriptions a subject matches, and the
//!   per-publisher match cache.
//! - [`client`]: one connection: its shared state, subscriptions, outbound buffer, writer task
//!   and read loop.
//! - [`router`]: publish → match → deliver, queue picks, wake-ups and publisher stalls.
//! - [`server`]: the listener, the state all connections share, counters and shutdown.
//! - [`tls`]: TLS for client connections (rustls), with nats-server's handshake orders.
//! - [`monitor`]: HTTP monitoring: nats-server's JSON endpoints, Prometheus metrics, a live page.
//! - [`logging`]: log output in nats-server's format.
#![warn(missing_docs, unreachable_pub)]

pub mod account;
pub mod auth;
pub mod client;
/// The NATS config file format.
pub mod conf;
pub mod config;
pub mod logging;
pub mod monitor;
pub mod options;
pub mod proto;
pub mod router;
pub mod server;
pub mod subject;
pub mod sublist;
pub mod tls;

pub use options::Options;
pub use server::{Server, ServerHandle};
