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
    ///
    /// Must not be called from inside an internal consumer's delivery of a message published
    /// through this same publisher.
    pub fn publish(&self, account: &Account, msg: &Message<'_>) -> bool {
        let mut publisher = self.publisher.lock();
        let delivered = publisher.publish(&self.state, account, Origin::Internal, msg);
        publisher.flush(&self.state);
        delivered
    }
}
