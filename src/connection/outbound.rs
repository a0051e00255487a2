//! A connection's outbound queue and the writer task that flushes it.
//!
//! Publishers append encoded messages under a short lock and never touch the socket. Bytes
//! go into a queue of chunks: small while little is queued, up to 64 KiB during a burst, so a
//! backlog never means reallocating and copying one huge buffer. The writer takes the whole
//! queue under the same lock and flushes it with vectored writes, then hands the emptied chunks
//! back to a small pool, so a steady stream allocates nothing. The queued bytes (queued plus
//! being written) are the client's pending bytes: past `max_pending` the client is a slow
//! consumer and is cut off.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::proto::encode::{self, Hop, Message};

/// The smallest chunk: enough for INFO, a PONG or a few small messages.
const MIN_CHUNK: usize = 512;
/// The largest chunk made for small messages; a larger message gets a chunk of its own size.
const MAX_CHUNK: usize = 64 * 1024;
/// Emptied chunks a connection keeps for reuse.
const POOL_MAX: usize = 4;
/// Chunks handed to one vectored write.
const MAX_IOV: usize = 64;
/// A flush smaller than this that leaves nothing queued, after [`QUIET_AFTER`] without one,
/// means the connection is quiet: its pooled chunks are freed rather than kept.
const SMALL_FLUSH: usize = 2 * MIN_CHUNK;
/// How long without a flush makes a connection quiet.
pub const QUIET_AFTER: Duration = Duration::from_millis(500);

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
    /// Queued chunks, oldest first; only the last one is still being filled.
    chunks: VecDeque<BytesMut>,
    /// Bytes in `chunks`.
    queued: usize,
    /// Emptied chunks waiting to be reused.
    pool: Vec<BytesMut>,
    state: State,
    /// When the last flush finished, to tell a quiet connection from a busy one.
    last_flush: Option<std::time::Instant>,
}

impl Inner {
    /// The chunk to append `need` bytes to, starting a new one when the last has no room.
    #[inline]
    fn tail(&mut self, need: usize) -> &mut BytesMut {
        let room = self.chunks.back().map_or(0, |c| c.capacity() - c.len());
        if room < need {
            let want = need.max(self.queued.clamp(MIN_CHUNK, MAX_CHUNK));
            let chunk = match self.pool.iter().position(|c| c.capacity() >= want) {
                Some(i) => self.pool.swap_remove(i),
                None => BytesMut::with_capacity(want),
            };
            self.chunks.push_back(chunk);
        }
        match self.chunks.back_mut() {
            Some(chunk) => chunk,
            // A chunk was just pushed when there was none with room.
            None => unreachable!("outbound queue has a tail chunk"),
        }
    }
}

/// A client's queued outbound bytes, shared between publishers and the writer task.
pub struct Outbound {
    inner: Mutex<Inner>,
    /// Queued plus in-flight bytes, readable without the lock (for stalls and monitoring).
    pending: AtomicUsize,
    /// Pending bytes past which the client is a slow consumer; a reload may change it.
    max_pending: AtomicUsize,
    /// Wakes the writer.
    wake: Notify,
    /// Told after every flush, for producers stalled on this client.
    drained: Notify,
    /// Messages delivered, written only under the lock, read by monitoring without it.
    out_msgs: AtomicU64,
    /// Payload bytes delivered, likewise.
    out_bytes: AtomicU64,
    /// Set by [`Outbound::nudge`]: the writer flushes its sink once though nothing is queued.
    nudged: std::sync::atomic::AtomicBool,
}

impl Outbound {
    /// An empty queue that refuses to grow past `max_pending` bytes.
    pub fn new(max_pending: usize) -> Self {
        Outbound {
            inner: Mutex::new(Inner {
                chunks: VecDeque::new(),
                queued: 0,
                pool: Vec::new(),
                state: State::Open,
                last_flush: None,
            }),
            out_msgs: AtomicU64::new(0),
            out_bytes: AtomicU64::new(0),
            nudged: std::sync::atomic::AtomicBool::new(false),
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

    /// Messages and payload bytes delivered to this client so far (queued counts as delivered).
    pub fn counters(&self) -> (u64, u64) {
        (self.out_msgs.load(Ordering::Relaxed), self.out_bytes.load(Ordering::Relaxed))
    }

    /// Queues one message for subscription `sid`, as HMSG when `headers` allows.
    #[inline]
    pub fn push_msg(&self, m: &Message<'_>, sid: &[u8], headers: bool) -> Push {
        self.push_message(m.encoded_len_hint(sid), m.payload.len(), |chunk| encode::msg(chunk, m, sid, headers))
    }

    /// Queues one message that `write` encodes in at most `need` bytes, counting it as a
    /// delivery of `payload_len` payload bytes; refused past max_pending.
    #[inline]
    pub fn push_message(&self, need: usize, payload_len: usize, write: impl FnOnce(&mut BytesMut)) -> Push {
        if self.pending() + need > self.max_pending() {
            return if self.inner.lock().state == State::Open { Push::SlowConsumer } else { Push::Closed };
        }
        if !self.append(need, write) {
            return Push::Closed;
        }
        // Only writers holding the lock change these, so a load and a store are enough.
        self.out_msgs.store(self.out_msgs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.out_bytes.store(self.out_bytes.load(Ordering::Relaxed) + payload_len as u64, Ordering::Relaxed);
        Push::Queued
    }

    /// Queues protocol bytes (PONG, +OK, -ERR, INFO, PING) that `write` appends; `need` is an
    /// upper bound on how many.
    pub fn push_with(&self, need: usize, write: impl FnOnce(&mut BytesMut)) -> Push {
        if self.append(need, write) {
            Push::Queued
        } else {
            Push::Closed
        }
    }

    /// Appends what `write` encodes (at most `need` bytes) to the queue; false when the
    /// connection is closing.
    #[inline]
    fn append(&self, need: usize, write: impl FnOnce(&mut BytesMut)) -> bool {
        let mut inner = self.inner.lock();
        if inner.state != State::Open {
            return false;
        }
        let chunk = inner.tail(need);
        let before = chunk.len();
        write(chunk);
        let added = chunk.len() - before;
        inner.queued += added;
        drop(inner);
        self.pending.fetch_add(added, Ordering::Relaxed);
        true
    }

    /// Queues raw protocol bytes.
    pub fn push_bytes(&self, bytes: &[u8]) -> Push {
        self.push_with(bytes.len(), |b| b.extend_from_slice(bytes))
    }

    /// Queues an interest line for another server (`RS±` on a route, `LS±` on a leaf link); a
    /// queue group's `+` carries its weight.
    pub fn push_interest(&self, hop: Hop<'_>, gained: bool, subject: &[u8], queue: Option<(&[u8], Option<u32>)>) {
        let need = encode::interest_len_hint(hop, subject, queue.map(|(q, _)| q));
        let _ = self.push_with(need, |out| encode::interest(out, hop, gained, subject, queue));
    }

    /// Wakes the writer to flush.
    #[inline]
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Makes the writer flush its sink though nothing is queued: a sink with bytes of its own
    /// to send (a WebSocket answering a ping) gets to send them.
    pub fn nudge(&self) {
        self.nudged.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Stops taking messages; the writer flushes what is queued first when `flush` is true.
    /// Without a flush, the queued bytes are freed at once: a cut slow consumer may stay
    /// referenced for a while (by publishers' cached matches), but its backlog does not.
    pub(crate) fn close(&self, flush: bool) {
        {
            let mut inner = self.inner.lock();
            inner.state = match (inner.state, flush) {
                (State::Open, true) => State::Draining,
                _ => State::Dropped,
            };
            if inner.state == State::Dropped {
                let queued = std::mem::take(&mut inner.queued);
                inner.chunks = VecDeque::new();
                inner.pool = Vec::new();
                self.pending.fetch_sub(queued, Ordering::Relaxed);
            }
        }
        self.wake.notify_one();
        self.drained.notify_waiters();
    }

    /// Frees every buffer once the writer is done with the connection.
    fn release(&self) {
        let mut inner = self.inner.lock();
        let queued = std::mem::take(&mut inner.queued);
        inner.chunks = VecDeque::new();
        inner.pool = Vec::new();
        drop(inner);
        self.pending.fetch_sub(queued, Ordering::Relaxed);
    }

    /// Bytes of buffer memory the queue holds now (queued chunks and the pool), for tests
    /// and monitoring.
    pub fn buffered_capacity(&self) -> usize {
        let inner = self.inner.lock();
        inner.chunks.iter().chain(inner.pool.iter()).map(BytesMut::capacity).sum()
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

    /// Moves everything queued into `batch` (which must be empty), or says why not.
    fn take(&self, batch: &mut VecDeque<BytesMut>) -> Take {
        let mut inner = self.inner.lock();
        match inner.state {
            State::Dropped => Take::Stop,
            _ if inner.queued > 0 => {
                std::mem::swap(&mut inner.chunks, batch);
                let bytes = inner.queued;
                inner.queued = 0;
                Take::Data(bytes)
            }
            State::Draining => Take::Stop,
            State::Open => Take::Empty,
        }
    }

    /// True when nothing is queued and no chunk is pooled: the connection has gone quiet.
    fn is_quiet(&self) -> bool {
        let inner = self.inner.lock();
        inner.queued == 0 && inner.pool.is_empty()
    }

    /// Takes back written chunks for reuse and lowers the pending count. Chunks are kept only
    /// while the connection is busy: a small flush that leaves nothing queued and comes long
    /// after the one before (a keepalive on an idle connection) frees them, so an idle
    /// connection holds no outbound buffer, while a busy one allocates nothing per flush.
    fn recycle(&self, written: usize, done: &mut Vec<BytesMut>) {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock();
        let quiet = inner.last_flush.is_none_or(|at| now.duration_since(at) >= QUIET_AFTER);
        inner.last_flush = Some(now);
        if quiet && written < SMALL_FLUSH && inner.queued == 0 {
            inner.pool = Vec::new();
            if inner.chunks.capacity() > 0 {
                inner.chunks = VecDeque::new();
            }
            done.clear();
        }
        for mut chunk in done.drain(..) {
            if inner.pool.len() < POOL_MAX && chunk.capacity() <= MAX_CHUNK {
                chunk.clear();
                inner.pool.push(chunk);
            }
        }
        drop(inner);
        self.pending.fetch_sub(written, Ordering::Relaxed);
        self.drained.notify_waiters();
    }
}

impl Outbound {
    /// Writes everything queued to `sink` once, as the writer task would (for benchmarks).
    pub async fn flush_to<W: AsyncWrite + Unpin>(&self, mut sink: W) {
        let mut batch = VecDeque::new();
        let mut done = Vec::new();
        if let Take::Data(bytes) = self.take(&mut batch) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let _ = write_batch(&mut sink, &mut batch, &mut done, deadline).await;
            batch.clear();
            self.recycle(bytes, &mut done);
        }
    }
}

enum Take {
    Data(usize),
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
    /// A flush took longer than the write deadline.
    Deadline,
}

/// One vectored write of the first chunks of `batch` (the front one from `offset`). The
/// slices are made on the stack for each poll, so a waiting writer does not keep them.
fn poll_write_chunks<W: AsyncWrite + Unpin>(
    sink: &mut W,
    batch: &VecDeque<BytesMut>,
    offset: usize,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
    let mut count = 0;
    for (i, chunk) in batch.iter().take(MAX_IOV).enumerate() {
        slices[i] = IoSlice::new(if i == 0 { &chunk[offset..] } else { &chunk[..] });
        count += 1;
    }
    std::pin::Pin::new(sink).poll_write_vectored(cx, &slices[..count])
}

/// Writes every chunk of `batch` to `sink` with vectored writes, by `deadline`. The written
/// chunks are moved to `done`. A write that completes at once (the usual case) arms no timer.
async fn write_batch<W>(
    sink: &mut W,
    batch: &mut VecDeque<BytesMut>,
    done: &mut Vec<BytesMut>,
    deadline: tokio::time::Instant,
) -> Result<(), WriterEnd>
where
    W: AsyncWrite + Unpin,
{
    // Bytes of the front chunk already written.
    let mut offset = 0;
    while !batch.is_empty() {
        let result = {
            let queued: &VecDeque<BytesMut> = batch;
            let mut write = std::pin::pin!(std::future::poll_fn(|cx| poll_write_chunks(sink, queued, offset, cx)));
            match std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => match tokio::time::timeout_at(deadline, write).await {
                    Ok(result) => result,
                    Err(_) => return Err(WriterEnd::Deadline),
                },
            }
        };
        let n = match result {
            Ok(0) | Err(_) => return Err(WriterEnd::WriteError),
            Ok(n) => n,
        };
        let mut left = n;
        while let Some(front) = batch.front() {
            let rest = front.len() - offset;
            if left < rest {
                offset += left;
                break;
            }
            left -= rest;
            offset = 0;
            if let Some(chunk) = batch.pop_front() {
                done.push(chunk);
            }
        }
    }
    Ok(())
}

/// Flushes `out` to `sink` whenever woken, until the connection closes.
pub async fn write_loop<W>(out: &Outbound, mut sink: W, write_deadline: Duration) -> WriterEnd
where
    W: AsyncWrite + Unpin,
{
    let mut batch: VecDeque<BytesMut> = VecDeque::new();
    let mut done: Vec<BytesMut> = Vec::new();
    let end = loop {
        let bytes = match out.take(&mut batch) {
            Take::Stop => break WriterEnd::Done,
            Take::Empty => {
                if out.nudged.swap(false, Ordering::AcqRel) {
                    if sink.flush().await.is_err() {
                        break WriterEnd::WriteError;
                    }
                    continue;
                }
                if batch.capacity() > 0 && out.is_quiet() {
                    // Hold no buffers while waiting on a quiet connection.
                    batch = VecDeque::new();
                    done = Vec::new();
                }
                out.wake.notified().await;
                continue;
            }
            Take::Data(bytes) => bytes,
        };
        let deadline = tokio::time::Instant::now() + write_deadline;
        let result = write_batch(&mut sink, &mut batch, &mut done, deadline).await;
        batch.clear();
        out.recycle(bytes, &mut done);
        if let Err(end) = result {
            break end;
        }
        if sink.flush().await.is_err() {
            break WriterEnd::WriteError;
        }
    };
    out.release();
    if end == WriterEnd::Done {
        let _ = tokio::time::timeout(write_deadline, sink.shutdown()).await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &[u8]) -> Message<'_> {
        Message { subject: b"s", reply: None, header_len: 0, payload }
    }

    #[tokio::test]
    async fn flushes_everything_in_order_and_reuses_chunks() {
        let out = Outbound::new(64 * 1024 * 1024);
        let payload = vec![b'x'; 1000];
        let mut want = Vec::new();
        for i in 0..500u32 {
            let p = &payload[..(i as usize % 1000)];
            assert_eq!(out.push_msg(&msg(p), b"1", false), Push::Queued);
            let mut one = BytesMut::new();
            encode::msg(&mut one, &msg(p), b"1", false);
            want.extend_from_slice(&one);
        }
        assert_eq!(out.pending(), want.len());
        assert!(out.inner.lock().chunks.len() > 1, "a burst spans several chunks");
        out.close(true);
        let mut sink = Vec::new();
        assert_eq!(write_loop(&out, &mut sink, Duration::from_secs(5)).await, WriterEnd::Done);
        assert_eq!(sink, want);
        assert_eq!(out.pending(), 0);
        assert_eq!(out.buffered_capacity(), 0, "a closed queue holds no buffers");
    }

    #[tokio::test]
    async fn busy_queues_reuse_chunks_and_quiet_ones_free_them() {
        let out = Outbound::new(64 * 1024 * 1024);
        let payload = vec![b'x'; 1000];
        for _ in 0..200 {
            let _ = out.push_msg(&msg(&payload), b"1", false);
        }
        out.flush_to(tokio::io::sink()).await;
        assert!(!out.inner.lock().pool.is_empty(), "chunks of a big flush come back for reuse");
        let _ = out.push_bytes(b"PONG\r\n");
        out.flush_to(tokio::io::sink()).await;
        assert!(out.buffered_capacity() > 0, "a small flush right after another keeps the pool");
        // As if the connection had been quiet since.
        out.inner.lock().last_flush = Some(std::time::Instant::now() - QUIET_AFTER);
        let _ = out.push_bytes(b"PING\r\n");
        out.flush_to(tokio::io::sink()).await;
        assert_eq!(out.buffered_capacity(), 0, "a small flush after a quiet spell frees the pool");
    }

    #[test]
    fn a_cut_slow_consumer_frees_its_backlog_at_once() {
        let out = Outbound::new(64 * 1024 * 1024);
        for _ in 0..1000 {
            let _ = out.push_msg(&msg(&[0; 1000]), b"1", false);
        }
        assert!(out.buffered_capacity() >= 1_000_000);
        out.close(false);
        assert_eq!(out.buffered_capacity(), 0);
        assert_eq!(out.pending(), 0);
    }

    #[test]
    fn refuses_past_max_pending() {
        let out = Outbound::new(100);
        assert_eq!(out.push_msg(&msg(b"small"), b"1", false), Push::Queued);
        assert_eq!(out.push_msg(&msg(&[0; 200]), b"1", false), Push::SlowConsumer);
        out.close(false);
        assert_eq!(out.push_msg(&msg(b"x"), b"1", false), Push::Closed);
    }

    #[test]
    fn small_queues_use_small_chunks() {
        let out = Outbound::new(1 << 20);
        let _ = out.push_bytes(b"PONG\r\n");
        assert_eq!(out.inner.lock().chunks[0].capacity(), MIN_CHUNK);
    }
}
