//! The INFO message a server sends first on every connection.

use serde::Serialize;

/// The fields nats-server sends in INFO, in its order, with the ones that do not apply left out.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Unique id of this server process.
    pub server_id: String,
    /// Configured name, else the id.
    pub server_name: String,
    /// The nats-server version whose behaviour Courier follows; clients gate features on it.
    pub version: String,
    /// Protocol level: 1.
    pub proto: u32,
    /// What nats-server reports as its Go version; Courier names its own build here.
    pub go: String,
    /// Listening host.
    pub host: String,
    /// Listening port.
    pub port: u16,
    /// The server understands HPUB/HMSG.
    pub headers: bool,
    /// Clients must authenticate in CONNECT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// Clients must upgrade to TLS.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    /// Clients must present a certificate the server verifies.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
    /// Largest payload accepted.
    pub max_payload: usize,
    /// JetStream is enabled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub jetstream: bool,
    /// This connection's id (left out of the INFO sent to every client at once).
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// The address the client connected from.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Random bytes for nkey and JWT users to sign, when those are configured.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// The client URLs of the servers in the cluster, for clients to discover and fail over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server is about to go away.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ldm: bool,
}

impl ServerInfo {
    /// The INFO line: `INFO {json} \r\n`, with the space before CRLF that nats-server writes.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = b"INFO ".to_vec();
        // Serializing plain strings and numbers cannot fail.
        if serde_json::to_writer(&mut line, self).is_err() {
            line.extend_from_slice(b"{}");
        }
        line.extend_from_slice(b" \r\n");
        line
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
