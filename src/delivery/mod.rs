//! Where a matched message goes: subscriptions and the targets they deliver to.
//!
//! A [`Subscription`] in an account's trie points at a [`Target`], chosen by kind: a client
//! connection, a route, a leaf connection, an internal consumer inside the server (a stream
//! store, a system service), or an import into another account ([`Import`]). The kinds are an enum, so the hot path dispatches statically; each
//! kind encodes for itself (`MSG`/`HMSG` for clients, `RMSG` for routes, `LMSG` for leaf nodes,
//! a callback for internal consumers) and has its own stall and slow-consumer policy, which the
//! publisher ([`crate::publish`]) applies.
//!
//! Messages are passed borrowed ([`Message`], pointing into the publisher's read buffer) and
//! copied once, into each consumer's outbound queue. A consumer that must keep a message past
//! the delivery (a store, a forwarder) makes an [`OwnedMessage`] of it.

mod import;
mod internal;
mod message;
mod subscription;
mod target;

pub use import::{Import, ResponseRouter, WayBack};
pub use internal::InternalSink;
pub use message::OwnedMessage;
pub use subscription::{Admit, Subscription};
pub use target::{Target, TargetKind};

pub use crate::proto::encode::Message;
