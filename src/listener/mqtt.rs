//! The MQTT listener: TLS when configured, then a device connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::connection::accept::accept_each;
use crate::mqtt_server::{self, MqttServer};

/// Accepts MQTT devices until shutdown or lame duck mode.
pub(super) async fn accept_loop(
    server: Arc<MqttServer>,
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    tracker: TaskTracker,
) {
    let state = Arc::clone(server.state());
    accept_each(&listener, "mqtt", &state.shutdown, Some(&state.lame_duck), |stream, peer| {
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve(Arc::clone(&server), stream, peer, tls.clone()));
    })
    .await;
}

async fn serve(server: Arc<MqttServer>, stream: TcpStream, peer: SocketAddr, tls: Option<(TlsAcceptor, Duration)>) {
    let Some((acceptor, timeout)) = tls else {
        let (reader, writer) = stream.into_split();
        return mqtt_server::serve(server, reader, writer, peer, None).await;
    };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let version = super::tls_version(&tls_stream);
            let (reader, writer) = tokio::io::split(tls_stream);
            Box::pin(mqtt_server::serve(server, reader, writer, peer, version)).await
        }
        Ok(Err(e)) => debug!(%peer, "MQTT TLS handshake error: {e}"),
        Err(_) => debug!(%peer, "MQTT TLS handshake timeout"),
    }
}
