//! What a subscription delivers to, by kind.

use std::sync::Arc;

use super::{Import, InternalSink};
use crate::connection::Connection;
use crate::mqtt::MqttTarget;

/// The consumer behind a subscription.
///
/// Each kind has its own encoding and its own policy, applied by the publisher:
/// - a client gets `MSG`/`HMSG` with its sid; a publishing client is stalled briefly while a
///   client it feeds is backed up, and a client past max_pending is cut as a slow consumer;
/// - a route gets `RMSG` (one per message, naming the queue groups it should serve) and a leaf
///   link (to a leaf node of this server, or to this server's hub) `LMSG`; they are cut at max_pending like clients, but a message arriving from a route
///   or leaf never stalls that link's read loop, since that would stall every client behind it;
/// - an MQTT device gets PUBLISH packets, at the QoS its subscription was granted, under the
///   same stall and slow-consumer policy as a client;
/// - an internal consumer is called with the borrowed message and decides for itself.
#[derive(Clone)]
pub enum Target {
    /// An application's connection.
    Client(Arc<Connection>),
    /// An MQTT device's subscription.
    Mqtt(Arc<MqttTarget>),
    /// A route to another server of the cluster.
    Route(Arc<Connection>),
    /// A leaf node connected to this server: this server is its hub, and tells it all the
    /// interest of the account the link is bound to.
    Leaf(Arc<Connection>),
    /// This server's link to its hub: this server is the leaf (the spoke), and tells the hub
    /// only its own interest; what arrives from the hub is not passed on to routes.
    Hub(Arc<Connection>),
    /// A consumer inside the server.
    Internal(Arc<dyn InternalSink>),
    /// An import: the message goes on into another account.
    Import(Arc<Import>),
}

/// The kind of a [`Target`], for interest bookkeeping and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A client connection.
    Client,
    /// An MQTT device.
    Mqtt,
    /// A route.
    Route,
    /// A leaf node connected to this server.
    Leaf,
    /// This server's hub.
    Hub,
    /// A consumer inside the server.
    Internal,
    /// An import into another account.
    Import,
}

impl Target {
    /// Its kind.
    #[inline]
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Client(_) => TargetKind::Client,
            Target::Mqtt(_) => TargetKind::Mqtt,
            Target::Route(_) => TargetKind::Route,
            Target::Leaf(_) => TargetKind::Leaf,
            Target::Hub(_) => TargetKind::Hub,
            Target::Internal(_) => TargetKind::Internal,
            Target::Import(_) => TargetKind::Import,
        }
    }

    /// The socket connection behind it, for every kind but internal consumers.
    #[inline]
    pub fn connection(&self) -> Option<&Arc<Connection>> {
        match self {
            Target::Client(c) | Target::Route(c) | Target::Leaf(c) | Target::Hub(c) => Some(c),
            Target::Mqtt(t) => Some(&t.conn),
            Target::Internal(_) | Target::Import(_) => None,
        }
    }

    /// For a leaf link (either side), its connection id: the source its interest is counted
    /// under, so that a link is never told its own interest back; 0 for every other kind.
    #[inline]
    pub fn link_source(&self) -> u64 {
        match self {
            Target::Leaf(c) | Target::Hub(c) => c.cid,
            _ => 0,
        }
    }

    /// True once its connection has started closing (never for internal consumers).
    #[inline]
    pub fn is_closing(&self) -> bool {
        self.connection().is_some_and(|c| c.is_closing())
    }

    /// Whether it delivers to `conn`.
    #[inline]
    pub fn is_connection(&self, conn: &Connection) -> bool {
        self.connection().is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), conn))
    }

    /// The connection id, or 0 for internal consumers.
    pub fn cid(&self) -> u64 {
        self.connection().map_or(0, |c| c.cid)
    }
}
