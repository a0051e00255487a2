//! Connection events for the system account: who connected, who left and why, who failed to
//! authenticate. Connections report them here; the system services turn them into
//! nats-server's advisories (`$SYS.ACCOUNT.<account>.CONNECT` and the rest), and only while
//! the services run and a client of the system account subscribes, so a server where nobody
//! listens pays one atomic load per event.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::ClosedConn;
use crate::connection::Connection;

/// Events queued for the system services beyond which new ones are dropped.
pub const MAX_QUEUED_EVENTS: usize = 8192;

/// One connection event.
pub enum ConnectionEvent {
    /// A client authenticated.
    Connect(Arc<Connection>),
    /// A client that had authenticated closed.
    Disconnect(ClosedConn),
    /// A client failed to authenticate and was closed.
    AuthError(ClosedConn),
}

/// Where connections report events.
#[derive(Default)]
pub struct Events {
    queue: OnceLock<mpsc::Sender<ConnectionEvent>>,
    /// Some client of the system account subscribes to something: events are worth building.
    wanted: std::sync::atomic::AtomicBool,
}

impl Events {
    /// Starts queueing events for the receiver returned; only the first call does.
    pub fn listen(&self) -> Option<mpsc::Receiver<ConnectionEvent>> {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
        self.queue.set(tx).ok().map(|_| rx)
    }

    /// Reports an event; dropped when nobody listens or the queue is full.
    pub fn report(&self, event: ConnectionEvent) {
        if let Some(queue) = self.queue.get() {
            let _ = queue.try_send(event);
        }
    }

    /// Whether anybody listens: the system services run and some client of the system
    /// account has a subscription.
    pub fn is_listened(&self) -> bool {
        self.wanted.load(std::sync::atomic::Ordering::Relaxed) && self.queue.get().is_some()
    }

    /// Says whether clients of the system account subscribe to anything.
    pub fn set_wanted(&self, wanted: bool) {
        self.wanted.store(wanted, std::sync::atomic::Ordering::Relaxed);
    }
}
