//! Every listener the server has, bound and started from one place: the client port and HTTP
//! monitoring, WebSocket, MQTT, routes and leaf nodes.

mod client;
mod mqtt;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::jetstream::JetStream;
use crate::options::Options;
use crate::state::ServerState;

/// The TLS version a handshake settled on, as monitoring shows it ("1.3").
fn tls_version<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> Option<String> {
    stream.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "1.2".to_string(),
        other => format!("{other:?}"),
    })
}

/// The bound listeners, not yet accepting.
pub struct Listeners {
    client: TcpListener,
    /// HTTP monitoring, when it is on.
    monitor: Option<TcpListener>,
    /// WebSocket, when configured, with its TLS.
    websocket: Option<(TcpListener, Option<tokio_rustls::TlsAcceptor>, crate::options::WebsocketOptions)>,
    /// Routes, when a cluster is configured, with their TLS.
    cluster: Option<(TcpListener, Option<crate::route::RouteTls>)>,
    /// MQTT, when configured, with its TLS and handshake timeout.
    mqtt: Option<(TcpListener, Option<(tokio_rustls::TlsAcceptor, std::time::Duration)>)>,
    /// Leaf nodes, when configured: the listener (none when the server only has remotes) and
    /// its TLS.
    leaf: Option<crate::leaf::LeafBinding>,
}

impl Listeners {
    /// Binds every listener `opts` asks for. Port 0 picks a free port.
    pub async fn bind(opts: &Options) -> io::Result<Listeners> {
        let client = TcpListener::bind((opts.host.as_str(), opts.port)).await?;
        let monitor = match opts.http_port {
            Some(port) => {
                let host = opts.http_host.clone().unwrap_or_else(|| opts.host.clone());
                Some(TcpListener::bind((host.as_str(), port)).await?)
            }
            None => None,
        };
        let websocket = match &opts.websocket {
            Some(ws) => {
                let host = ws.host.clone().unwrap_or_else(|| opts.host.clone());
                let listener = TcpListener::bind((host.as_str(), ws.port)).await?;
                let tls = match &ws.tls {
                    Some(t) => Some(crate::tls::acceptor(t).map_err(io::Error::other)?),
                    None => None,
                };
                Some((listener, tls, ws.clone()))
            }
            None => None,
        };
        let mqtt = match &opts.mqtt {
            Some(m) => {
                let host = m.host.clone().unwrap_or_else(|| opts.host.clone());
                let listener = TcpListener::bind((host.as_str(), m.port)).await?;
                let tls = match &m.tls {
                    Some(t) => Some((crate::tls::acceptor(t).map_err(io::Error::other)?, t.timeout)),
                    None => None,
                };
                Some((listener, tls))
            }
            None => None,
        };
        let cluster = match &opts.cluster {
            Some(c) => {
                let host = c.host.clone().unwrap_or_else(|| opts.host.clone());
                let listener = TcpListener::bind((host.as_str(), c.port)).await?;
                let tls = match &c.tls {
                    Some(t) => Some((
                        crate::tls::acceptor(t).map_err(io::Error::other)?,
                        crate::tls::connector(t).map_err(io::Error::other)?,
                        t.timeout,
                    )),
                    None => None,
                };
                Some((listener, tls))
            }
            None => None,
        };
        let leaf = match &opts.leafnodes {
            Some(l) => {
                let listener = match l.port {
                    Some(port) => {
                        let host = l.host.clone().unwrap_or_else(|| opts.host.clone());
                        Some(TcpListener::bind((host.as_str(), port)).await?)
                    }
                    None => None,
                };
                let tls = match &l.tls {
                    Some(t) => Some((crate::tls::acceptor(t).map_err(io::Error::other)?, t.timeout)),
                    None => None,
                };
                let remote_tls = l
                    .remotes
                    .iter()
                    .map(|r| match &r.tls {
                        Some(t) => crate::tls::connector(t).map(Some),
                        None if r.tls_required => crate::tls::connector(&crate::tls::TlsOptions::default()).map(Some),
                        None => Ok(None),
                    })
                    .collect::<Result<_, _>>()
                    .map_err(io::Error::other)?;
                Some((listener, tls, remote_tls))
            }
            None => None,
        };
        Ok(Listeners { client, monitor, websocket, mqtt, cluster, leaf })
    }

    /// Where leaf nodes connect, when the server accepts them.
    pub fn leaf_addr(&self) -> Option<SocketAddr> {
        self.leaf.as_ref().and_then(|(l, _, _)| l.as_ref()).and_then(|l| l.local_addr().ok())
    }

    /// Where routes connect, when a cluster is configured.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where MQTT devices connect, when it is on.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where WebSocket clients connect, when it is on.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket.as_ref().and_then(|(l, _, _)| l.local_addr().ok())
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> io::Result<SocketAddr> {
        self.client.local_addr()
    }

    /// Where monitoring listens, when it is on.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts monitoring (with JetStream's figures when it is on), then accepts clients (each on a task of `tracker`) until shutdown or
    /// lame duck mode.
    pub async fn run(self, state: Arc<ServerState>, jetstream: Option<Arc<JetStream>>, tracker: TaskTracker) {
        let Listeners { client, monitor, websocket, mqtt, cluster, leaf } = self;
        if let (Some((listener, tls)), Some(opts)) = (cluster, state.opts().cluster.clone()) {
            match listener.local_addr() {
                Ok(addr) => {
                    let cluster = crate::route::Cluster::new(Arc::clone(&state), opts, tls, addr, tracker.clone());
                    tokio::spawn(cluster.run(listener));
                }
                Err(e) => tracing::error!("Cluster listener has no address: {e}"),
            }
        }
        if let (Some((listener, tls, remote_tls)), Some(opts)) = (leaf, state.opts().leafnodes.clone()) {
            let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
            if let Some(addr) = addr {
                info!("Listening for leafnode connections on {addr}");
                state.set_leaf_port(addr.port());
            }
            let leafs = crate::leaf::LeafNodes::new(Arc::clone(&state), opts, tls, remote_tls, addr, tracker.clone());
            tokio::spawn(leafs.run(listener));
        }
        if let Some(monitor) = monitor {
            tokio::spawn(crate::monitor::serve(state.view(), jetstream.clone(), monitor));
        }
        if let Some((listener, tls, opts)) = websocket {
            info!(
                "Listening for websocket clients on {}://{}",
                if tls.is_some() { "wss" } else { "ws" },
                listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
            );
            if tls.is_none() {
                tracing::warn!("Websocket not configured with TLS. DO NOT USE IN PRODUCTION!");
            }
            tokio::spawn(websocket::accept_loop(Arc::clone(&state), listener, tls, opts, tracker.clone()));
        }
        if let (Some((listener, tls)), Some(js)) = (mqtt, &jetstream) {
            info!(
                "Listening for MQTT clients on {}://{}",
                if tls.is_some() { "tls" } else { "tcp" },
                listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
            );
            let server = crate::mqtt_server::MqttServer::new(Arc::clone(&state), Arc::clone(js));
            tokio::spawn(mqtt::accept_loop(server, listener, tls, tracker.clone()));
        }
        info!(
            "Listening for client connections on {}",
            client.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        info!("Server is ready");
        client::accept_loop(state, client, tracker).await;
    }
}
