//! The accept loop every listener shares.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// Accepts connections on `listener` until `shutdown` (or `lame_duck`, for clients: routes and
/// leaf nodes are still taken in lame duck mode), handing each to `serve`; an accept error (out
/// of file descriptors and the like) backs off instead of spinning.
pub async fn accept_each(
    listener: &TcpListener,
    what: &str,
    shutdown: &CancellationToken,
    lame_duck: Option<&CancellationToken>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async { if let Some(l) = lame_duck { l.cancelled().await } else { std::future::pending().await } } => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                serve(stream, peer);
            }
            Err(e) => {
                error!("Error accepting {what} connection: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
