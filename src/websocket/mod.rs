//! WebSocket for browsers and web apps: the HTTP upgrade with nats-server's checks
//! ([`handshake`]), and the framing that carries the NATS protocol as a byte stream
//! ([`stream`]), with permessage-deflate ([`deflate`]).
//!
//! A WebSocket client speaks the same protocol as a TCP client; only the transport differs.
//! So the upgraded connection is wrapped in a reader and a writer that turn frames into bytes
//! and bytes into frames, and the client code runs over them unchanged. The reader takes
//! frames of any size and kind as nats-server does (an operation may span frames; text and
//! binary are both accepted); the writer sends one binary frame per flush of the outbound
//! queue, so batching survives, split at 4 KiB for browsers and compressed when that was
//! negotiated and the batch is worth it.
//!
//! Frame headers are read and written with `tungstenite`'s frame codec; the message layer
//! above it is not needed, since NATS does not use WebSocket messages as units.

pub mod deflate;
pub mod handshake;
pub mod stream;

pub use handshake::{HandshakeError, Origin, Upgrade};
pub use stream::{Control, WsReader, WsWriter};
