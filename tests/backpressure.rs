//! Slow consumers and graceful shutdown: one client that stops reading must not hold up anyone
//! else, and a shutdown delivers what was already published.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{options, parse_frames, Frame, RawClient, TestServer, TIMEOUT};
use tokio::net::TcpStream;

/// A payload of `size` bytes that starts with its sequence number.
fn payload(seq: usize, size: usize) -> Vec<u8> {
    let mut p = format!("{seq:08}-").into_bytes();
    p.resize(size, b'x');
    p
}

fn seq_of(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[..8]).expect("sequence digits").parse().expect("sequence number")
}

/// `PUB subject` for messages `range`, all in one buffer.
fn pubs(subject: &str, range: std::ops::Range<usize>, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in range {
        out.extend_from_slice(format!("PUB {subject} {size}\r\n").as_bytes());
        out.extend_from_slice(&payload(seq, size));
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_others_get_everything() {
    const N: usize = 20_000;
    const SIZE: usize = 512;
    // The publisher stays at most this many messages ahead of the fast subscriber, far below
    // max_pending, so the fast one never backs up however the machine schedules the tasks.
    const WINDOW: usize = 200;
    let s = TestServer::start(courier::Options { max_pending: 256 * 1024, ..options() }).await;

    // Subscribes, then never reads; its small receive buffer fills at once.
    let mut slow = RawClient::connect_with_recv_buffer(s.addr, 4096).await;
    slow.send("CONNECT {\"verbose\":false}\r\nSUB data 1\r\n").await;
    slow.ping_pong().await;
    let mut fast = s.raw_quiet().await;
    fast.send("SUB data 7\r\n").await;
    fast.ping_pong().await;
    let mut publ = s.raw_quiet().await;

    for start in (0..N).step_by(WINDOW) {
        publ.send(pubs("data", start..start + WINDOW, SIZE)).await;
        for (i, m) in fast.read_msgs(WINDOW).await.into_iter().enumerate() {
            assert_eq!((m.subject.as_str(), m.sid.as_str(), m.reply.as_deref()), ("data", "7", None));
            assert_eq!(m.payload, payload(start + i, SIZE), "fast subscriber: message {} out of order", start + i);
        }
    }
    publ.ping_pong().await;
    fast.ping_pong().await;
    assert_eq!(s.stats().slow_consumers.load(Ordering::SeqCst), 1);
    common::eventually("the slow consumer's subscription is removed", || s.sub_count() == 1).await;

    // Draining the slow consumer's socket ends in EOF (or a reset), after a gap-free prefix of
    // the stream that stops well short of its end.
    let bytes = slow.read_to_close().await;
    let mut next = 0;
    for frame in parse_frames(&bytes) {
        match frame {
            Frame::Msg(m) => {
                assert_eq!(seq_of(&m.payload), next, "slow consumer: gap in what it was sent");
                next += 1;
            }
            Frame::Ping => {}
            f => panic!("slow consumer got {f:?}"),
        }
    }
    assert!(next < N, "the slow consumer got all {N} messages: it was never cut off");

    // The publisher and the fast subscriber carry on.
    publ.send(pubs("data", N..N + 1, SIZE)).await;
    publ.ping_pong().await;
    let after = fast.read_msgs(1).await;
    assert_eq!(after[0].payload, payload(N, SIZE));
    fast.ping_pong().await;
    assert_eq!(s.stats().slow_consumers.load(Ordering::SeqCst), 1);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_blocked_past_deadline_is_a_slow_consumer() {
    const N: usize = 8_000;
    const SIZE: usize = 1024;
    // max_pending stays at 64 MiB, so only the write deadline can cut this consumer off.
    let s = TestServer::start(courier::Options { write_deadline: Duration::from_millis(300), ..options() }).await;
    let mut slow = RawClient::connect_with_recv_buffer(s.addr, 4096).await;
    slow.send("CONNECT {\"verbose\":false}\r\nSUB data 1\r\n").await;
    slow.ping_pong().await;
    let mut publ = s.raw_quiet().await;
    publ.send(pubs("data", 0..N, SIZE)).await;
    publ.ping_pong().await;
    common::eventually("the blocked consumer is cut off", || s.stats().slow_consumers.load(Ordering::SeqCst) == 1)
        .await;
    common::eventually("its subscription is removed", || s.sub_count() == 0).await;
    // The write that ran out of time may have stopped inside a message: count whole ones.
    let bytes = slow.read_to_close().await;
    let (mut at, mut delivered) = (0, 0);
    while let Some((frame, used)) = common::parse_frame(&bytes[at..]) {
        at += used;
        if let Frame::Msg(m) = frame {
            assert_eq!(m.payload, payload(delivered, SIZE), "message {delivered}");
            delivered += 1;
        }
    }
    assert!(delivered < N, "all {N} messages were delivered: the writer never blocked");
    publ.ping_pong().await;
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_was_published_then_closes() {
    // More than the kernel buffers hold for a client with a small receive buffer, so most of it
    // is still in the server's outbound buffer when the shutdown starts.
    const N: usize = 6_000;
    const SIZE: usize = 1024;
    let s = TestServer::start_default().await;
    let mut sub = RawClient::connect_with_recv_buffer(s.addr, 4096).await;
    sub.send("CONNECT {\"verbose\":false}\r\nSUB news 1\r\n").await;
    sub.ping_pong().await;
    let mut publ = s.raw_quiet().await;
    publ.send(pubs("news", 0..N, SIZE)).await;
    publ.ping_pong().await;
    assert_eq!(s.stats().in_msgs.load(Ordering::SeqCst), N as u64);

    s.handle.shutdown();
    let bytes = sub.read_to_close().await;
    let frames = parse_frames(&bytes);
    let msgs: Vec<_> = frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Msg(m) => Some(m),
            Frame::Ping => None,
            f => panic!("unexpected {f:?}"),
        })
        .collect();
    assert_eq!(msgs.len(), N, "every message published before the shutdown is delivered");
    for (seq, m) in msgs.iter().enumerate() {
        assert_eq!(m.payload, payload(seq, SIZE), "message {seq}");
    }
    publ.expect_closed().await;

    let addr = s.addr;
    let handle = s.handle.clone();
    s.stop().await;
    assert_eq!(handle.state().stats.connections.load(Ordering::SeqCst), 0);
    // The listener is gone.
    let refused = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.expect("connect timed out");
    assert!(refused.is_err(), "a connection was accepted after shutdown");
}

#[tokio::test]
async fn shutdown_with_idle_clients_finishes_promptly() {
    let s = TestServer::start_default().await;
    let mut raw = s.raw_quiet().await;
    raw.send("SUB a 1\r\n").await;
    raw.ping_pong().await;
    let nats = s.nats().await;
    let _sub = nats.subscribe("b").await.unwrap();
    common::eventually("both subscriptions are registered", || s.sub_count() == 2).await;
    let started = tokio::time::Instant::now();
    let handle = s.handle.clone();
    s.stop().await;
    assert!(started.elapsed() < TIMEOUT);
    raw.expect_closed().await;
    assert_eq!(common::subscriptions(&handle), 0);
}
