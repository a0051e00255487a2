//! The NATS client protocol: what clients send (parsed without I/O), what the server sends back
//! (encoded into outbound buffers), and the exact `-ERR` texts clients see.

pub mod connect;
pub mod encode;
pub mod errors;
pub mod info;
pub mod parser;

pub use connect::ConnectOptions;
pub use parser::{ClientOp, ParseError, Parser, Publish};
