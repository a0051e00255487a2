//! The WebSocket listener: TLS when configured, the HTTP upgrade, then a client connection
//! over the framing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use super::client::info_line;
use crate::client::{self, ConnectionSlot, Greeting};
use crate::connection::accept::accept_each;
use crate::options::WebsocketOptions;
use crate::state::ServerState;
use crate::websocket::{handshake, Control, HandshakeError, Upgrade, WsReader, WsWriter};

/// Accepts WebSocket clients until shutdown or lame duck mode.
pub(super) async fn accept_loop(
    state: Arc<ServerState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: WebsocketOptions,
    tracker: TaskTracker,
) {
    let opts = Arc::new(opts);
    let serving = Arc::clone(&state);
    accept_each(&listener, "websocket", &state.shutdown, Some(&state.lame_duck), |stream, peer| {
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve(Arc::clone(&serving), stream, peer, tls.clone(), Arc::clone(&opts)));
    })
    .await;
}

async fn serve(
    state: Arc<ServerState>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    opts: Arc<WebsocketOptions>,
) {
    match tls {
        Some(acceptor) => {
            let timeout = opts.tls.as_ref().map_or(Duration::from_secs(2), |t| t.timeout);
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let version = super::tls_version(&tls_stream);
                    Box::pin(upgrade_and_run(state, tls_stream, peer, &opts, true, version)).await
                }
                Ok(Err(e)) => debug!(%peer, "websocket TLS handshake error: {e}"),
                Err(_) => debug!(%peer, "websocket TLS handshake timeout"),
            }
        }
        None => upgrade_and_run(state, stream, peer, &opts, false, None).await,
    }
}

/// Reads the request head (bounded in size and time); returns it and any bytes after it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Vec<u8>, usize), HandshakeError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(n) = handshake::head_len(&buf) {
            return Ok((buf.to_vec(), n));
        }
        if buf.len() >= handshake::MAX_REQUEST {
            return Err(HandshakeError::Malformed);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HandshakeError::Malformed),
            Ok(_) => {}
        }
    }
}

async fn upgrade_and_run<S>(
    state: Arc<ServerState>,
    mut stream: S,
    peer: SocketAddr,
    opts: &WebsocketOptions,
    tls: bool,
    tls_version: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = tokio::time::timeout(opts.handshake_timeout, read_head(&mut stream)).await;
    let checked: Result<Upgrade, HandshakeError> = match head {
        Err(_) => {
            debug!(%peer, "websocket handshake timeout");
            return;
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok((head, len))) if len < head.len() => {
            let _ = handshake::check(&head[..len], opts, tls);
            Err(HandshakeError::EarlyData)
        }
        Ok(Ok((head, _))) => handshake::check(&head, opts, tls),
    };
    let write_deadline = state.opts().write_deadline;
    let upgrade = match checked {
        Ok(u) => u,
        Err(e) => {
            error!("{peer} - websocket handshake error: {e}");
            let _ = tokio::time::timeout(write_deadline, async {
                stream.write_all(&e.response()).await?;
                stream.shutdown().await
            })
            .await;
            return;
        }
    };
    let cid = state.registry.next_cid();
    let (_slot, count) = ConnectionSlot::take(&state);
    let live = state.config.get();
    let client_peer = SocketAddr::new(upgrade.forwarded_for.unwrap_or(peer.ip()), peer.port());
    let over = count > live.opts.max_connections;
    let mut info = live.info.clone();
    // TLS, if any, is the WebSocket's: the NATS protocol inside it is plain.
    info.tls_required = false;
    info.tls_verify = false;
    let auth = live.opts.websocket_authorization.as_ref().unwrap_or(&live.opts.authorization);
    info.auth_required = auth.required();
    let nonce = if auth.needs_nonce() { crate::nuid::nonce() } else { String::new() };
    let mut info = info_line(&info, cid, client_peer, &nonce);
    drop(live);
    if over {
        let mut err = BytesMut::new();
        crate::proto::encode::err(&mut err, crate::proto::errors::MAX_CONNECTIONS_EXCEEDED);
        info.extend_from_slice(&err);
    }
    if tokio::time::timeout(write_deadline, stream.write_all(&upgrade.response())).await.is_err() {
        return;
    }
    let control = Arc::new(Control::default());
    let (read_half, write_half) = tokio::io::split(stream);
    let max_inflated = state.opts().max_pending;
    let reader = WsReader::new(read_half, Arc::clone(&control), !upgrade.no_masking, upgrade.compress, max_inflated);
    let mut writer = WsWriter::new(write_half, Arc::clone(&control), &upgrade);
    if over {
        let _ = tokio::time::timeout(write_deadline, async {
            writer.write_all(&info).await?;
            writer.shutdown().await
        })
        .await;
        return;
    }
    debug!(cid, %client_peer, "WebSocket client connection created");
    let attach = {
        let control = Arc::clone(&control);
        Box::new(move |conn: &Arc<crate::connection::Connection>| control.attach(conn))
    };
    let client = crate::client::WebsocketClient { jwt_cookie: upgrade.jwt_cookie.clone() };
    let greeting = Greeting { info, nonce, tls_version, websocket: Some(Box::new(client)), attach: Some(attach) };
    client::run(state, cid, client_peer, reader, writer, greeting).await;
}
