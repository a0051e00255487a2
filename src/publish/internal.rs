//! Publishing from inside the server, without a socket.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Origin, Publisher};
use crate::account::Account;
use crate::delivery::Message;
use crate::state::ServerState;

/// A publisher for the server itself: JetStream API replies, advisories, `$SYS` answers. It
/// has no read loop, so each publish wakes its consumers at once and nothing stalls it.
pub struct InternalPublisher {
    state: Arc<ServerState>,
    publisher: Mutex<Publisher>,
}

impl InternalPublisher {
    /// A publisher into `state`'s accounts.
    pub fn new(state: Arc<ServerState>) -> Self {
        InternalPublisher { state, publisher: Mutex::new(Publisher::new(rand::random())) }
    }

    /// Publishes `msg` in `account`; returns whether anyone got it.
    pub fn publish(&self, account: &Account, msg: &Message<'_>) -> bool {
        // Re-entered from an internal consumer's flush (a store acknowledging what it wrote),
        // or busy on another thread: a publisher of its own for this one message.
        match self.publisher.try_lock() {
            Some(mut publisher) => self.publish_with(&mut publisher, account, msg),
            None => self.publish_with(&mut Publisher::new(rand::random()), account, msg),
        }
    }

    /// Publishes `msg` (with its own subject) to the subscriptions matching `route`; returns
    /// whether anyone got it.
    pub fn publish_to(&self, account: &Account, route: &[u8], msg: &Message<'_>) -> bool {
        let publish = |publisher: &mut Publisher| {
            let delivered = publisher.publish_to(&self.state, account, Origin::Internal, route, msg);
            publisher.flush(&self.state);
            delivered
        };
        match self.publisher.try_lock() {
            Some(mut publisher) => publish(&mut publisher),
            None => publish(&mut Publisher::new(rand::random())),
        }
    }

    /// Runs `f` with a publisher that delivers without waking anyone until `f` returns, so that
    /// a burst of messages (a consumer catching up) reaches each connection in one write.
    pub fn batch<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> R) -> R {
        let mut own;
        let mut guard = self.publisher.try_lock();
        let publisher: &mut Publisher = match guard.as_deref_mut() {
            Some(p) => p,
            None => {
                own = Publisher::new(rand::random());
                &mut own
            }
        };
        let mut batch = Batch { state: &self.state, publisher };
        let r = f(&mut batch);
        batch.publisher.flush(&self.state);
        r
    }

    fn publish_with(&self, publisher: &mut Publisher, account: &Account, msg: &Message<'_>) -> bool {
        let delivered = publisher.publish(&self.state, account, Origin::Internal, msg);
        publisher.flush(&self.state);
        delivered
    }
}

/// A burst of internal publishes, flushed once at its end ([`InternalPublisher::batch`]).
pub struct Batch<'a> {
    state: &'a ServerState,
    publisher: &'a mut Publisher,
}

impl Batch<'_> {
    /// Publishes `msg` (with its own subject) to the subscriptions matching `route`; returns
    /// whether anyone got it.
    pub fn publish_to(&mut self, account: &Account, route: &[u8], msg: &Message<'_>) -> bool {
        self.publisher.publish_to(self.state, account, Origin::Internal, route, msg)
    }
}
