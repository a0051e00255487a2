//! The read loop of one connection: reading, its timers, and handing whole operations to the
//! handlers a bounded amount at a time.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::debug;

use super::Conn;
use crate::connection::outbound::QUIET_AFTER;
use crate::connection::{unix_nanos, CloseReason};
use crate::proto::errors;

/// First read buffer size, as nats-server.
const MIN_READ: usize = 512;
/// Largest read buffer size.
const MAX_READ: usize = 64 * 1024;
/// The first server PING comes this soon (or at ping_interval, if shorter).
const FIRST_PING: Duration = Duration::from_secs(2);
/// Operations handled before the reader lets other tasks on its thread run.
pub(super) const OPS_PER_TURN: u32 = 256;
/// Deliveries made before the reader lets other tasks on its thread run (fan-out counts).
pub(super) const DELIVERIES_PER_TURN: u64 = 2048;

/// What woke the read loop.
enum Event {
    Read(std::io::Result<usize>),
    /// The keepalive timer (or an authentication deadline that no longer applies).
    Timer,
    AuthTimeout,
    Attention,
}

/// How far [`Conn::process`] got through the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Every whole operation was handled; more bytes are needed.
    NeedMore,
    /// The work allowed for one turn is done; whole operations remain.
    Turn,
    /// A CONNECT needs its credentials checked off the runtime's threads before anything
    /// after it is handled.
    Authenticate,
}

/// A source of client bytes.
pub trait ClientRead: AsyncRead + Unpin + Send {
    /// Waits until the source has bytes to read, without a buffer, so that an idle connection
    /// holds no read buffer. Sources that cannot tell return at once.
    fn ready(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl ClientRead for tokio::net::tcp::OwnedReadHalf {
    async fn ready(&mut self) -> std::io::Result<()> {
        self.readable().await
    }
}

impl<S: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientRead for tokio::io::ReadHalf<S> {
    async fn ready(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads into `buf`, waiting for readiness first when there is no buffer yet.
async fn read_into<R: ClientRead>(reader: &mut R, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        reader.ready().await?;
    }
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    reader.read_buf(buf).await
}

impl Conn {
    pub(super) async fn read_loop<R: ClientRead>(&mut self, mut reader: R) -> CloseReason {
        let mut buf = BytesMut::new();
        let mut read_size = MIN_READ;
        // One timer serves the keepalive and the authentication timeout: it is set to whichever
        // comes first.
        let start = Instant::now();
        let mut next_ping = start + self.limits.ping_interval.min(FIRST_PING);
        let auth_deadline = start + self.authorization().timeout.unwrap_or(self.limits.auth_timeout);
        let timer = tokio::time::sleep_until(self.next_timer(next_ping, auth_deadline));
        tokio::pin!(timer);
        let mut first_ping = true;
        // One registration for the whole loop, not one per read.
        let shared = Arc::clone(&self.shared);
        let attention = shared.attention_signal().notified();
        tokio::pin!(attention);
        loop {
            let want = self.parser.needed().saturating_sub(buf.len()).max(read_size);
            let event = tokio::select! {
                biased;
                _ = &mut attention => Event::Attention,
                _ = &mut timer => {
                    if self.awaiting_auth() && Instant::now() >= auth_deadline {
                        Event::AuthTimeout
                    } else {
                        Event::Timer
                    }
                }
                r = read_into(&mut reader, &mut buf, want) => Event::Read(r),
            };
            let n = match event {
                Event::Attention => {
                    if let Some(reason) = self.shared.close_reason() {
                        return reason;
                    }
                    attention.set(shared.attention_signal().notified());
                    self.forget_ended();
                    if self.state.reloads() != self.seen_reloads {
                        let result = Box::pin(self.refresh()).await;
                        self.flush().await;
                        if let Err(reason) = result {
                            return reason;
                        }
                    }
                    continue;
                }
                Event::Timer => {
                    let mut result = Ok(());
                    if Instant::now() >= next_ping {
                        result = self.on_ping_timer(first_ping);
                        first_ping = false;
                        next_ping = Instant::now() + self.limits.ping_interval;
                    }
                    timer.as_mut().reset(self.next_timer(next_ping, auth_deadline));
                    self.flush().await;
                    match result {
                        Ok(()) => continue,
                        Err(reason) => return reason,
                    }
                }
                Event::AuthTimeout => {
                    debug!(cid = self.shared.cid, "Authentication Timeout");
                    self.send_err(errors::AUTHENTICATION_TIMEOUT);
                    self.flush().await;
                    return CloseReason::AuthenticationTimeout;
                }
                Event::Read(Ok(0)) => return CloseReason::ClientClosed,
                Event::Read(Err(_)) => return CloseReason::ReadError,
                Event::Read(Ok(n)) => n,
            };
            let now = unix_nanos(std::time::SystemTime::now());
            let before = self.shared.stats.last_activity.swap(now, Ordering::Relaxed);
            let quiet = now.saturating_sub(before) >= QUIET_AFTER.as_nanos() as u64;
            let mut result = Ok(());
            if self.state.reloads() != self.seen_reloads {
                result = Box::pin(self.refresh()).await;
            }
            if result.is_ok() {
                result = self.process_all(&mut buf).await;
            } else {
                self.flush().await;
            }
            if let Err(reason) = result {
                return reason;
            }
            // Grow the read size while reads fill the buffer, shrink it after short reads.
            if n >= read_size {
                read_size = (read_size * 2).min(MAX_READ);
            } else if n < read_size / 2 {
                read_size = (read_size / 2).max(MIN_READ);
            }
            if buf.is_empty() && ((quiet && n < MIN_READ) || buf.capacity() > read_size * 2) {
                // A short read after a long silence: hold no buffer while waiting for the next.
                buf = BytesMut::new();
            }
        }
    }

    /// Handles every whole operation in `buf`, a turn at a time: between turns it wakes the
    /// consumers written to and lets other tasks run, so that one busy publisher cannot
    /// starve the other connections on its thread.
    async fn process_all(&mut self, buf: &mut BytesMut) -> Result<(), CloseReason> {
        loop {
            self.forget_ended();
            let progress = self.process(buf);
            self.count_in();
            self.shared.stats.sids.store(self.subs.len() as u64, Ordering::Relaxed);
            match progress {
                Ok(Progress::NeedMore) => {
                    self.flush().await;
                    return Ok(());
                }
                Ok(Progress::Turn) => {
                    self.flush().await;
                    tokio::task::yield_now().await;
                }
                Ok(Progress::Authenticate) => {
                    self.flush().await;
                    // Boxed, like the reload below: rare, and large.
                    let result = Box::pin(self.authenticate()).await;
                    if result.is_err() {
                        self.flush().await;
                    }
                    result?;
                }
                Err(reason) => {
                    self.flush().await;
                    return Err(reason);
                }
            }
        }
    }

    /// Handles whole operations at the start of `buf` until more bytes are needed or a turn's
    /// work is done, dropping the bytes each one took.
    pub(super) fn process(&mut self, buf: &mut BytesMut) -> Result<Progress, CloseReason> {
        let mut ops = 0u32;
        let delivered_before = self.publisher.deliveries();
        loop {
            if !buf.is_empty() && self.awaiting_auth() && !matches!(buf[0], b'C' | b'c') {
                // As nats-server: before CONNECT, with authentication required, the first byte
                // of anything else is a violation, whatever follows it.
                return Err(self.auth_violation());
            }
            let (used, result) = match self.parser.parse(&buf[..]) {
                Ok(Some((op, used))) => (used, self.handle(op)),
                Ok(None) => return Ok(Progress::NeedMore),
                Err(e) => {
                    debug!(cid = self.shared.cid, "Client parser ERROR: {e}");
                    if let Some(text) = e.client_text() {
                        self.send_err(text);
                    }
                    return Err(CloseReason::ProtocolViolation);
                }
            };
            buf.advance(used);
            match result? {
                super::handlers::Handled::Done => {}
                super::handlers::Handled::Authenticate => return Ok(Progress::Authenticate),
            }
            ops += 1;
            if ops >= OPS_PER_TURN || self.publisher.deliveries() - delivered_before >= DELIVERIES_PER_TURN {
                return Ok(if buf.is_empty() { Progress::NeedMore } else { Progress::Turn });
            }
        }
    }

    /// Adds the messages received since the last call to the counters.
    fn count_in(&mut self) {
        if self.in_msgs > 0 {
            self.state.count_in(&self.shared, self.in_msgs, self.in_bytes);
            self.in_msgs = 0;
            self.in_bytes = 0;
        }
    }

    /// Wakes the consumers written to, stalling this client briefly if one is backed up.
    pub(super) async fn flush(&mut self) {
        let high_water = self.limits.max_pending / 4 * 3;
        self.publisher.flush_and_stall(&self.state, high_water).await;
    }

    /// When the read loop's timer should fire next.
    fn next_timer(&self, next_ping: Instant, auth_deadline: Instant) -> Instant {
        if self.awaiting_auth() {
            next_ping.min(auth_deadline)
        } else {
            next_ping
        }
    }

    fn awaiting_auth(&self) -> bool {
        !self.connected && self.authorization().required()
    }

    fn on_ping_timer(&mut self, first: bool) -> Result<(), CloseReason> {
        let now = unix_nanos(std::time::SystemTime::now());
        let idle = Duration::from_nanos(now.saturating_sub(self.shared.stats.last_activity.load(Ordering::Relaxed)));
        if !first && idle < self.limits.ping_interval {
            return Ok(());
        }
        if self.pings_out + 1 > self.limits.ping_max {
            debug!(cid = self.shared.cid, "Stale Client Connection - Closing");
            self.send_err(errors::STALE_CONNECTION);
            self.state.stats.stale_connections.fetch_add(1, Ordering::Relaxed);
            return Err(CloseReason::StaleConnection);
        }
        self.reply(crate::proto::encode::PING);
        if self.shared.stats.rtt_nanos.load(Ordering::Relaxed) == 0 && self.rtt_ping.is_none() {
            self.rtt_ping = Some(Instant::now());
        }
        self.pings_out += 1;
        Ok(())
    }
}
