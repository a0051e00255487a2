//! Tests of a connection's lifecycle that need to reach inside it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::options::Options;
use crate::server::Server;

/// A CONNECT with this name makes the connection's task panic (in test builds only).
pub(super) const PANIC_NAME: &str = "courier-test-panic";

/// Reads from `stream` until it closes, for at most 5 s.
async fn read_to_close(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection");
}

#[tokio::test]
async fn a_panicking_connection_is_cleaned_up() {
    let server = Server::bind(Options { host: "127.0.0.1".into(), port: 0, ..Options::default() }).await.expect("bind");
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    let state = handle.state();
    let mut stream = tokio::net::TcpStream::connect(handle.local_addr()).await.expect("connect");
    let connect = format!("SUB a 1\r\nSUB b.> 2\r\nCONNECT {{\"verbose\":false,\"name\":\"{PANIC_NAME}\"}}\r\n");
    stream.write_all(connect.as_bytes()).await.expect("write");
    read_to_close(&mut stream).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while state.stats.connections.load(Ordering::SeqCst) > 0 || !state.registry.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "connection count or registry entry leaked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.subscriptions(), 0, "subscriptions leaked");
    let closed = state.registry.closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].reason, crate::connection::CloseReason::Internal);
    // The server still serves everyone else.
    let mut other = tokio::net::TcpStream::connect(handle.local_addr()).await.expect("connect");
    other.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"PONG\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), other.read(&mut buf)).await.expect("PONG").expect("read");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stop").expect("server task");
}

/// One read may hold thousands of operations; the reader hands them over a turn at a time
/// (and lets other tasks run in between), counting both operations and deliveries.
#[test]
fn work_is_handed_over_a_turn_at_a_time() {
    use super::read_loop::{Progress, DELIVERIES_PER_TURN, OPS_PER_TURN};
    use crate::connection::{Connection, Kind};
    use crate::delivery::{Subscription, Target};
    use crate::state::{Live, ServerState};
    use std::sync::Arc;

    let state = Arc::new(ServerState::new(Live::build(Options::default(), "NTEST", 4222).expect("live")));
    let consumer = Arc::new(Connection::new(1, Kind::Client, usize::MAX / 2));
    let account = Arc::clone(state.accounts.global());
    account.add_subscription(Arc::new(Subscription::new(Target::Client(Arc::clone(&consumer)), b"one", None, b"1")));
    for i in 0..500 {
        let sid = i.to_string();
        let target = Target::Client(Arc::clone(&consumer));
        account.add_subscription(Arc::new(Subscription::new(target, b"many", None, sid.as_bytes())));
    }
    let publisher = Arc::new(Connection::new(2, Kind::Client, 1 << 20));
    let mut conn = super::Conn::new(Arc::clone(&state), publisher, 2, String::new());

    let mut buf = bytes::BytesMut::from(&b"PUB one 2\r\nhi\r\n".repeat(1000)[..]);
    assert_eq!(conn.process(&mut buf), Ok(Progress::Turn));
    assert_eq!(buf.len(), (1000 - OPS_PER_TURN as usize) * 15, "exactly one turn's operations were taken");
    conn.publisher.flush(&state);

    let mut buf = bytes::BytesMut::from(&b"PUB many 2\r\nhi\r\n".repeat(100)[..]);
    assert_eq!(conn.process(&mut buf), Ok(Progress::Turn));
    let taken = 100 - buf.len() / 16;
    assert_eq!(taken as u64, DELIVERIES_PER_TURN.div_ceil(500), "fan-out counts against the turn");
    conn.publisher.flush(&state);

    let mut buf = bytes::BytesMut::from(&b"PUB one 2\r\nhi\r\n"[..]);
    assert_eq!(conn.process(&mut buf), Ok(Progress::NeedMore));
    assert!(buf.is_empty());
}
