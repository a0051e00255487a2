//! A connection's outbound buffer and the writer task that flushes it.
//!
//! Publishers append encoded messages under a short lock and never touch the socket. The writer
//! swaps the whole buffer out under the same lock and writes it with one call, so one flush
//! carries every message queued since the last. Two buffers take turns, so a steady stream
//! allocates nothing. The queued bytes (buffered plus being written) are the client's pending
//! bytes: past `max_pending` the client is a slow consumer and is cut off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::proto::encode::{self, Message};

/// A buffer larger than this is given back after a flush instead of kept for the next one.
const KEEP_CAPACITY: usize = 256 * 1024;

/// The result of queueing bytes for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// Queued; the writer must be woken (once per batch is enough).
    Queued,
    /// The client is closing; nothing was queued.
    Closed,
    /// Queueing would pass max_pending: nothing was queued and the client must be closed as a
    /// slow consumer.
    SlowConsumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Flush what is queued, then close.
    Draining,
    /// Close without flushing.
    Dropped,
}

struct Inner {
    buf: BytesMut,
    state: State,
    out_msgs: u64,
    out_bytes: u64,
}

/// A client's queued outbound bytes, shared between publishers and the writer task.
pub struct Outbound {
    inner: Mutex<Inner>,
    /// Buffered plus in-flight bytes, readable without the lock (for stalls and monitoring).
    pending: AtomicUsize,
    /// Pending bytes past which the client is a slow consumer; a reload may change it.
    max_pending: AtomicUsize,
    /// Wakes the writer.
    wake: Notify,
    /// Told after every flush, for producers stalled on this client.
    drained: Notify,
}

impl Outbound {
    /// An empty buffer that refuses to grow past `max_pending` bytes.
    pub fn new(max_pending: usize) -> Self {
        Outbound {
            inner: Mutex::new(Inner { buf: BytesMut::new(), state: State::Open, out_msgs: 0, out_bytes: 0 }),
            pending: AtomicUsize::new(0),
            max_pending: AtomicUsize::new(max_pending),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Bytes queued or being written.
    #[inline]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Pending bytes past which the client is a slow consumer.
    #[inline]
    pub fn max_pending(&self) -> usize {
        self.max_pending.load(Ordering::Relaxed)
    }

    /// Changes the slow consumer limit (on reload).
    pub fn set_max_pending(&self, max: usize) {
        self.max_pending.store(max, Ordering::Relaxed);
    }

    /// Messages and bytes delivered to this client so far (queued counts as delivered).
    pub fn counters(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.out_msgs, inner.out_bytes)
    }

    /// Queues one message for subscription `sid`, as HMSG when `headers` allows.
    #[inline]
    pub fn push_msg(&self, m: &Message<'_>, sid: &[u8], headers: bool) -> Push {
        let mut inner = self.inner.lock();
        if inner.state != State::Open {
            return Push::Closed;
        }
        let before = inner.buf.len();
        if self.pending.load(Ordering::Relaxed) + m.encoded_len_hint(sid) > self.max_pending() {
            return Push::SlowConsumer;
        }
        encode::msg(&mut inner.buf, m, sid, headers);
        let added = inner.buf.len() - before;
        inner.out_msgs += 1;
        inner.out_bytes += m.payload.len() as u64;
        self.pending.fetch_add(added, Ordering::Relaxed);
        Push::Queued
    }

    /// Queues protocol bytes (PONG, +OK, -ERR, INFO, PING) written by `write`.
    pub fn push_with(&self, write: impl FnOnce(&mut BytesMut)) -> Push {
        let mut inner = self.inner.lock();
        if inner.state != State::Open {
            return Push::Closed;
        }
        let before = inner.buf.len();
        write(&mut inner.buf);
        let added = inner.buf.len() - before;
        self.pending.fetch_add(added, Ordering::Relaxed);
        Push::Queued
    }

    /// Queues raw protocol bytes.
    pub fn push_bytes(&self, bytes: &[u8]) -> Push {
        self.push_with(|b| b.extend_from_slice(bytes))
    }

    /// Wakes the writer to flush.
    #[inline]
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops taking messages; the writer flushes what is queued first when `flush` is true.
    pub(crate) fn close(&self, flush: bool) {
        {
            let mut inner = self.inner.lock();
            inner.state = match (inner.state, flush) {
                (State::Open, true) => State::Draining,
                _ => State::Dropped,
            };
        }
        self.wake.notify_one();
        self.drained.notify_waiters();
    }

    /// Waits until pending bytes are at most `level`, or `timeout` passes. Returns whether the
    /// level was reached.
    pub async fn wait_below(&self, level: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.pending() <= level || self.inner.lock().state != State::Open {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return false;
            }
        }
    }

    /// Takes everything queued into `spare` (which must be empty), or says why not.
    fn take(&self, spare: &mut BytesMut) -> Take {
        let mut inner = self.inner.lock();
        match inner.state {
            State::Dropped => Take::Stop,
            _ if !inner.buf.is_empty() => {
                std::mem::swap(&mut inner.buf, spare);
                Take::Data
            }
            State::Draining => Take::Stop,
            State::Open => Take::Empty,
        }
    }
}

enum Take {
    Data,
    Empty,
    Stop,
}

/// How the writer task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// Everything it was asked to send was sent (or dropped on purpose).
    Done,
    /// A write failed.
    WriteError,
    /// A write took longer than the write deadline.
    Deadline,
}

/// Flushes `out` to `sink` whenever woken, until the connection closes.
pub async fn write_loop<W>(out: &Outbound, mut sink: W, write_deadline: Duration) -> WriterEnd
where
    W: AsyncWrite + Unpin,
{
    let mut spare = BytesMut::new();
    let end = loop {
        match out.take(&mut spare) {
            Take::Stop => break WriterEnd::Done,
            Take::Empty => {
                out.wake.notified().await;
                continue;
            }
            Take::Data => {}
        }
        let len = spare.len();
        let result = tokio::time::timeout(write_deadline, sink.write_all(&spare)).await;
        out.pending.fetch_sub(len, Ordering::Relaxed);
        spare.clear();
        if spare.capacity() > KEEP_CAPACITY {
            spare = BytesMut::new();
        }
        out.drained.notify_waiters();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break WriterEnd::WriteError,
            Err(_) => break WriterEnd::Deadline,
        }
    };
    if end == WriterEnd::Done {
        let _ = tokio::time::timeout(write_deadline, sink.shutdown()).await;
    }
    end
}
