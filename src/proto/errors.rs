//! The `-ERR` texts nats-server sends, byte for byte, so that clients which match on them behave
//! the same with Courier.

/// Sent for an unknown or malformed operation, or a payload not ended by CRLF; closes.
pub const UNKNOWN_PROTOCOL_OPERATION: &str = "Unknown Protocol Operation";
/// Sent when a publish is larger than max_payload; closes.
pub const MAX_PAYLOAD_VIOLATION: &str = "Maximum Payload Violation";
/// Sent when a control line is longer than max_control_line; closes.
pub const MAX_CONTROL_LINE_EXCEEDED: &str = "maximum control line exceeded";
/// Sent when a subscription subject is malformed; the connection stays open.
pub const INVALID_SUBJECT: &str = "Invalid Subject";
/// Sent in pedantic mode for a publish to a malformed or wildcard subject; stays open.
pub const INVALID_PUBLISH_SUBJECT: &str = "Invalid Publish Subject";
/// Sent when a client answers fewer pings than ping_max allows; closes.
pub const STALE_CONNECTION: &str = "Stale Connection";
/// Sent after INFO when the server is full; closes.
pub const MAX_CONNECTIONS_EXCEEDED: &str = "maximum connections exceeded";
/// Sent when a connection would hold more than max_subscriptions; stays open.
pub const MAX_SUBSCRIPTIONS_EXCEEDED: &str = "maximum subscriptions exceeded";
/// Sent when CONNECT names a protocol version the server does not speak; closes.
pub const INVALID_CLIENT_PROTOCOL: &str = "invalid client protocol";
/// Sent when CONNECT asks for no_responders without headers; closes.
pub const NO_RESPONDERS_REQUIRES_HEADERS: &str = "no responders requires headers support";
/// Sent when authentication fails or an operation comes before CONNECT; closes.
pub const AUTHORIZATION_VIOLATION: &str = "Authorization Violation";
/// Sent when CONNECT does not arrive within the authentication timeout; closes.
pub const AUTHENTICATION_TIMEOUT: &str = "Authentication Timeout";
/// Sent when a client answers a TLS-only server in plain text; closes.
pub const SECURE_CONNECTION_TLS_REQUIRED: &str = "Secure Connection - TLS Required";
