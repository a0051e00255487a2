//! `leafnodes {}`: the listener leaf nodes connect to (this server as their hub) and the
//! remotes this server connects to as a leaf node, as nats-server reads them.

use std::path::PathBuf;
use std::time::Duration;

use super::route_url::RouteUrl;
use crate::tls::TlsOptions;

/// How long a remote waits before dialing again after losing or failing to make its link
/// (nats-server's `reconnect` default).
pub const DEFAULT_LEAF_RECONNECT: Duration = Duration::from_secs(1);

/// The leaf node side of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafNodeOptions {
    /// Interface for leaf nodes to connect to; the client host when unset.
    pub host: Option<String>,
    /// Port leaf nodes connect to: `None` when this server accepts none (it only has
    /// remotes), 0 for a free one.
    pub port: Option<u16>,
    /// `host:port` leaf nodes are told to use instead of the listen address.
    pub advertise: Option<String>,
    /// Do not tell leaf nodes the addresses of this server's cluster.
    pub no_advertise: bool,
    /// `authorization { user, password, account }` or `users [...]`: who may connect as a
    /// leaf node, and the account each is bound to. Empty: the server's own authorization
    /// applies, as for clients.
    pub users: Vec<LeafUser>,
    /// How long a leaf node has to send its CONNECT.
    pub auth_timeout: Option<Duration>,
    /// TLS for leaf nodes connecting here (after this server's INFO, as nats-server does).
    pub tls: Option<TlsOptions>,
    /// How long a remote waits between attempts.
    pub reconnect: Duration,
    /// The hubs this server connects to as a leaf node.
    pub remotes: Vec<RemoteLeafOptions>,
}

impl Default for LeafNodeOptions {
    fn default() -> Self {
        LeafNodeOptions {
            host: None,
            port: None,
            advertise: None,
            no_advertise: false,
            users: Vec::new(),
            auth_timeout: None,
            tls: None,
            reconnect: DEFAULT_LEAF_RECONNECT,
            remotes: Vec::new(),
        }
    }
}

/// A user leaf nodes may connect as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafUser {
    /// The name sent in CONNECT.
    pub name: String,
    /// The password, plain or a bcrypt hash.
    pub password: String,
    /// The account the leaf node is bound to; the global account when unset.
    pub account: Option<String>,
}

/// One hub this server connects to as a leaf node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteLeafOptions {
    /// The hub's leaf node URLs (`nats-leaf://[user:password@]host:port`, `nats://`, `tls://`),
    /// tried in turn.
    pub urls: Vec<RouteUrl>,
    /// The local account the link is bound to; the global account when unset.
    pub account: Option<String>,
    /// A `.creds` file: the user JWT sent in CONNECT and the seed that signs the hub's nonce.
    pub credentials: Option<PathBuf>,
    /// TLS toward the hub: its CA, and a certificate when the hub verifies leaf nodes.
    pub tls: Option<TlsOptions>,
    /// A `tls://` URL asks for TLS even without a `tls {}` block.
    pub tls_required: bool,
    /// This server is the hub of the link (the other side the spoke).
    pub hub: bool,
    /// Subjects whose messages are not taken from the hub (nor interest in them sent).
    pub deny_imports: Vec<String>,
    /// Subjects whose messages are not sent to the hub (nor the hub's interest in them taken).
    pub deny_exports: Vec<String>,
}

impl RemoteLeafOptions {
    /// The local account the link is bound to.
    pub fn local_account(&self) -> &str {
        self.account.as_deref().unwrap_or(crate::account::GLOBAL_ACCOUNT)
    }
}
