//! The client listener's accept loop and the start of each client connection: the connection
//! limit, the TLS handshake in nats-server's orders, and INFO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use crate::client::{self, ConnectionSlot, Greeting};
use crate::connection::accept::accept_each;
use crate::connection::CloseReason;
use crate::proto::encode;
use crate::proto::errors;
use crate::proto::info::ServerInfo;
use crate::state::{Live, ServerState};

/// Accepts clients until shutdown or lame duck mode, each on a task of `tracker`.
pub(super) async fn accept_loop(state: Arc<ServerState>, listener: TcpListener, tracker: TaskTracker) {
    let serving = Arc::clone(&state);
    accept_each(&listener, "client", &state.shutdown, Some(&state.lame_duck), |stream, peer| {
        tracker.spawn(serve(Arc::clone(&serving), stream, peer));
    })
    .await;
}

/// The INFO line for one client, with its nonce when there is one.
pub(super) fn info_line(info: &ServerInfo, cid: u64, peer: SocketAddr, nonce: &str) -> Vec<u8> {
    let mut info = info.clone();
    info.client_id = cid;
    info.client_ip = peer.ip().to_string();
    info.nonce = nonce.to_string();
    info.to_line()
}

fn greeting(live: &Live, cid: u64, peer: SocketAddr) -> Greeting {
    let nonce = if live.opts.authorization.needs_nonce() { crate::nuid::nonce() } else { String::new() };
    Greeting { info: info_line(&live.info, cid, peer, &nonce), nonce, tls_version: None, websocket: None, attach: None }
}

/// Tells a client the server is full, then closes it.
async fn refuse<W: AsyncWrite + Unpin>(live: &Live, cid: u64, peer: SocketAddr, mut writer: W) {
    let mut bytes = BytesMut::from(&info_line(&live.info, cid, peer, "")[..]);
    encode::err(&mut bytes, errors::MAX_CONNECTIONS_EXCEEDED);
    let _ = tokio::time::timeout(live.opts.write_deadline, async {
        writer.write_all(&bytes).await?;
        writer.shutdown().await
    })
    .await;
    debug!(cid, %peer, "Client connection closed: {}", CloseReason::MaxConnectionsExceeded);
}

/// Runs one accepted connection to its end, under the configuration in force when it arrived.
async fn serve(state: Arc<ServerState>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let cid = state.registry.next_cid();
    let (_slot, count) = ConnectionSlot::take(&state);
    let live = state.config.get();
    if count > live.opts.max_connections {
        let (_, writer) = stream.into_split();
        refuse(&live, cid, peer, writer).await;
    } else if let Some(acceptor) = live.tls.clone() {
        // Boxed: a TLS handshake's state is large, and plain connections should not carry
        // room for it.
        Box::pin(serve_tls(state, &live, acceptor, stream, cid, peer)).await;
    } else {
        debug!(cid, %peer, "Client connection created");
        let greeting = greeting(&live, cid, peer);
        drop(live);
        let (reader, writer) = stream.into_split();
        client::run(state, cid, peer, reader, writer, greeting).await;
    }
}

/// The first byte the client sent, without taking it; `None` at end of stream.
async fn first_byte(stream: &TcpStream) -> Option<u8> {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

/// A TLS connection: INFO and handshake in the configured order, then the usual protocol.
async fn serve_tls(
    state: Arc<ServerState>,
    live: &Live,
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    cid: u64,
    peer: SocketAddr,
) {
    use crate::tls::{HandshakeFirst, HANDSHAKE_RECORD};
    let opts = &live.opts;
    let Some(tls) = opts.tls.as_ref() else {
        // A configuration has an acceptor only when it has TLS options.
        error!(cid, %peer, "TLS acceptor without TLS options; closing");
        return;
    };
    let mut greeting = greeting(live, cid, peer);
    let tls_first = match tls.handshake_first {
        HandshakeFirst::On => true,
        HandshakeFirst::Off => false,
        HandshakeFirst::Auto(wait) => {
            matches!(tokio::time::timeout(wait, first_byte(&stream)).await, Ok(Some(HANDSHAKE_RECORD)))
        }
    };
    if !tls_first {
        let sent = tokio::time::timeout(opts.write_deadline, stream.write_all(&greeting.info)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        greeting.info.clear();
    }
    // The client gets as long to start as nats-server gives a TLS client to authenticate.
    match tokio::time::timeout(tls.timeout + Duration::from_secs(1), first_byte(&stream)).await {
        Ok(Some(HANDSHAKE_RECORD)) => {}
        Ok(Some(_)) => {
            debug!(cid, %peer, "Client sent plain text to a TLS-only server");
            let mut err = BytesMut::new();
            encode::err(&mut err, errors::SECURE_CONNECTION_TLS_REQUIRED);
            let _ = tokio::time::timeout(opts.write_deadline, async {
                stream.write_all(&err).await?;
                stream.shutdown().await
            })
            .await;
            return;
        }
        Ok(None) | Err(_) => {
            debug!(cid, %peer, "TLS handshake did not start in time");
            return;
        }
    }
    let tls_stream = match tokio::time::timeout(tls.timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(cid, %peer, "TLS handshake error: {e}");
            return;
        }
        Err(_) => {
            debug!(cid, %peer, "TLS handshake timeout");
            return;
        }
    };
    greeting.tls_version = super::tls_version(&tls_stream);
    debug!(cid, %peer, "Client connection created (TLS)");
    let (reader, writer) = tokio::io::split(tls_stream);
    client::run(state, cid, peer, reader, writer, greeting).await;
}
