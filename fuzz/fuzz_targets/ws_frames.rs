//! The WebSocket frame reader on arbitrary client bytes: it never panics, and whatever the
//! socket's reads cut the bytes into, it decodes the same bytes and ends the same way.
#![no_main]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use courier::websocket::{Control, WsReader};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A socket that hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Everything the reader yields, and whether it ended in an error.
fn decode(data: &[u8], step: usize, mask: bool, compression: bool) -> (Vec<u8>, bool) {
    let inner = Trickle { data, step };
    let mut reader = WsReader::new(inner, Arc::new(Control::default()), mask, compression, 1 << 20);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = [0u8; 61];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut reader).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return (out, false),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(_)) => return (out, true),
            Poll::Pending => unreachable!("the socket is never pending"),
        }
        assert!(out.len() <= 64 << 20, "bounded output");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (mask, compression) = (flags & 1 == 1, flags & 2 == 2);
    let step = usize::from(flags >> 2) + 1;
    let whole = decode(rest, usize::MAX, mask, compression);
    let cut = decode(rest, step, mask, compression);
    assert_eq!(whole, cut, "the cut points changed the outcome");
});
