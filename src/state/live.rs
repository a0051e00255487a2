//! The live configuration: the options in force, the INFO they make, and the TLS acceptor,
//! replaced together on reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_rustls::TlsAcceptor;

use crate::options::Options;
use crate::proto::info::ServerInfo;

/// One consistent configuration. A connection takes the whole of it at accept time, so a
/// reload that adds or removes TLS never leaves INFO saying one thing and the listener doing
/// another.
pub struct Live {
    /// The options.
    pub opts: Arc<Options>,
    /// INFO as every client gets it, before its own id, address and nonce are filled in.
    pub info: ServerInfo,
    /// TLS for client connections, when `opts.tls` is set.
    pub tls: Option<TlsAcceptor>,
    /// Changes only when a reload changes the authorization, so that connections re-check
    /// their credentials only then.
    pub auth_epoch: u64,
}

impl Live {
    /// Builds the configuration for `opts`: INFO for a server with `server_id` listening on
    /// `port`, and the TLS acceptor when TLS is configured (which fails when its files do not
    /// load).
    pub fn build(opts: Options, server_id: &str, port: u16) -> Result<Live, crate::tls::TlsError> {
        let tls = match &opts.tls {
            Some(t) => Some(crate::tls::acceptor(t)?),
            None => None,
        };
        let info = ServerInfo {
            server_name: if opts.server_name.is_empty() { server_id.to_string() } else { opts.server_name.clone() },
            server_id: server_id.to_string(),
            version: COMPAT_VERSION.to_string(),
            proto: 1,
            go: concat!("courier ", env!("CARGO_PKG_VERSION")).to_string(),
            host: opts.host.clone(),
            port,
            headers: true,
            auth_required: opts.authorization.required(),
            tls_required: opts.tls.is_some(),
            tls_verify: opts.tls.as_ref().is_some_and(|t| t.verify),
            max_payload: opts.max_payload,
            jetstream: opts.jetstream.is_some(),
            client_id: 0,
            client_ip: String::new(),
            nonce: String::new(),
            connect_urls: Vec::new(),
            ldm: false,
        };
        Ok(Live { opts: Arc::new(opts), info, tls, auth_epoch: 0 })
    }
}

/// The nats-server version whose client-visible behaviour Courier follows, sent in INFO.
pub const COMPAT_VERSION: &str = "2.9.10";

/// The configuration in force, swapped whole by a reload.
pub struct LiveConfig {
    current: RwLock<Arc<Live>>,
    /// Bumped by every reload, so that connections know to pick up the new options.
    reloads: AtomicU64,
}

impl LiveConfig {
    /// Starts with `live`.
    pub fn new(live: Live) -> Self {
        LiveConfig { current: RwLock::new(Arc::new(live)), reloads: AtomicU64::new(0) }
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<Live> {
        Arc::clone(&self.current.read())
    }

    /// The options in force.
    pub fn opts(&self) -> Arc<Options> {
        Arc::clone(&self.current.read().opts)
    }

    /// How many reloads have happened; a connection compares it with the last one it saw.
    #[inline]
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// Puts `live` in force.
    pub fn replace(&self, mut live: Live) {
        let mut current = self.current.write();
        live.auth_epoch = current.auth_epoch + u64::from(current.opts.authorization != live.opts.authorization);
        // What the cluster told this server is not configuration.
        live.info.connect_urls = current.info.connect_urls.clone();
        *current = Arc::new(live);
        drop(current);
        self.reloads.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes INFO in place (lame duck mode), without counting a reload.
    pub fn update_info(&self, change: impl FnOnce(&mut ServerInfo)) {
        let mut current = self.current.write();
        let mut info = current.info.clone();
        change(&mut info);
        *current = Arc::new(Live {
            opts: Arc::clone(&current.opts),
            info,
            tls: current.tls.clone(),
            auth_epoch: current.auth_epoch,
        });
    }
}
