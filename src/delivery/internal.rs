//! Consumers inside the server.

use super::{Message, Subscription};

/// A consumer inside the server that subscriptions can deliver to without a socket: a stream
/// store, a system service answering `$SYS` requests, an MQTT session.
///
/// [`InternalSink::deliver`] runs on the publisher's task, inside its read loop: it must not
/// block or wait. A sink that has slow work to do queues the message (as an
/// [`super::OwnedMessage`]) for a task of its own.
pub trait InternalSink: Send + Sync {
    /// Takes one message that matched `sub`. Returns whether it was taken (a refusal counts as
    /// not delivered, so a queue group tries its next member).
    fn deliver(&self, sub: &Subscription, msg: &Message<'_>) -> bool;

    /// Called once after the publisher has handed over a batch of messages (a whole read of a
    /// client, or one internal publish): a sink that buffers work (a store writing many
    /// messages with one write) finishes it here. Called on the publisher's task; the default
    /// does nothing.
    fn flush(&self) {}

    /// A name for monitoring and logs.
    fn name(&self) -> &str;
}
