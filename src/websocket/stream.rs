//! The framing: a reader that turns a client's frames into the bytes of the NATS protocol,
//! and a writer that sends the server's bytes as binary frames.
//!
//! Control frames the reader must answer (a pong for a ping, the close reply) and the close
//! frame the server sends when it ends a connection go through [`Control`], which the writer
//! empties before its next frame and when it shuts down; the reader nudges the connection's
//! writer so that an answer goes out on an otherwise idle connection.

use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{Control as ControlCode, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::deflate;
use crate::connection::{CloseReason, Connection};

/// Frames sent to browsers carry at most this much, as nats-server does.
pub const BROWSER_FRAME: usize = 4096;
/// The most one write puts in one frame.
pub const MAX_FRAME_BATCH: usize = 64 * 1024;
/// Batches smaller than this are sent uncompressed.
pub const COMPRESS_THRESHOLD: usize = 64;
/// The largest control frame payload.
const MAX_CONTROL: usize = 125;

/// Close status codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_NO_STATUS: u16 = 1005;
const CLOSE_ABNORMAL: u16 = 1006;
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL: u16 = 1011;

/// What the reader and the writer of one WebSocket connection share.
#[derive(Default)]
pub struct Control {
    /// Encoded control frames waiting for the writer.
    frames: Mutex<Vec<u8>>,
    /// A close frame has been queued: nothing follows it.
    closing: std::sync::atomic::AtomicBool,
    /// The connection, once it exists, for nudging its writer and reading why it closed.
    connection: OnceLock<Weak<Connection>>,
}

impl Control {
    /// Tells the shared state which connection it serves.
    pub fn attach(&self, conn: &Arc<Connection>) {
        let _ = self.connection.set(Arc::downgrade(conn));
    }

    fn queue(&self, code: ControlCode, payload: &[u8]) {
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if code == ControlCode::Close {
            self.closing.store(true, std::sync::atomic::Ordering::Release);
        }
        let mut frames = self.frames.lock();
        let header = FrameHeader { opcode: OpCode::Control(code), ..FrameHeader::default() };
        let _ = header.format(payload.len() as u64, &mut *frames);
        frames.extend_from_slice(payload);
        drop(frames);
        if let Some(conn) = self.connection.get().and_then(Weak::upgrade) {
            conn.outbound.nudge();
        }
    }

    /// Queues a close frame with `status` and `reason` (cut to fit a control frame).
    fn close(&self, status: u16, reason: &str) {
        let mut payload = status.to_be_bytes().to_vec();
        if reason.len() > MAX_CONTROL - 2 {
            let mut end = MAX_CONTROL - 5;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            payload.extend_from_slice(&reason.as_bytes()[..end]);
            payload.extend_from_slice(b"...");
        } else {
            payload.extend_from_slice(reason.as_bytes());
        }
        self.queue(ControlCode::Close, &payload);
    }

    fn take(&self, out: &mut Vec<u8>) {
        let mut frames = self.frames.lock();
        if !frames.is_empty() {
            out.append(&mut frames);
        }
    }

    /// The close frame for a connection the server ends, with nats-server's status for the
    /// reason.
    fn close_for_reason(&self) {
        let reason = self
            .connection
            .get()
            .and_then(Weak::upgrade)
            .and_then(|c| c.close_reason())
            .unwrap_or(CloseReason::ClientClosed);
        let status = match reason {
            CloseReason::ClientClosed => CLOSE_NORMAL,
            CloseReason::AuthenticationTimeout
            | CloseReason::AuthenticationViolation
            | CloseReason::SlowConsumerPendingBytes
            | CloseReason::SlowConsumerWriteDeadline
            | CloseReason::MaxConnectionsExceeded => CLOSE_POLICY,
            CloseReason::ProtocolViolation => CLOSE_PROTOCOL_ERROR,
            CloseReason::ServerShutdown => CLOSE_GOING_AWAY,
            CloseReason::WriteError | CloseReason::ReadError | CloseReason::StaleConnection => CLOSE_ABNORMAL,
            _ => CLOSE_INTERNAL,
        };
        self.close(status, &reason.to_string());
    }
}

/// Turns a client's frames into a byte stream.
pub struct WsReader<R> {
    inner: R,
    control: Arc<Control>,
    /// Bytes read from the socket, not yet decoded.
    raw: BytesMut,
    /// What compressed messages inflated to, handed out from `inflated_at`. (A plain frame's
    /// payload goes straight to the caller.)
    inflated: Vec<u8>,
    inflated_at: usize,
    /// Payload bytes of the current data frame still to come.
    frame_left: u64,
    /// Whether the last data frame ended its message (false inside a fragmented message).
    frame_final: bool,
    mask: Option<[u8; 4]>,
    mask_pos: usize,
    /// The current message is compressed; its bytes gather in `deflated`.
    compressed: bool,
    deflated: Vec<u8>,
    /// Frames must be masked.
    require_mask: bool,
    /// permessage-deflate was negotiated.
    compression: bool,
    /// The most a compressed message may inflate to.
    max_inflated: usize,
    /// The client closed, or broke the framing: end of stream after `ready`.
    done: bool,
    /// A framing error found after bytes were already handed over in the same read: reported
    /// on the next read, so that what came before it is not lost.
    failed: Option<io::Error>,
}

impl<R> WsReader<R> {
    /// A reader over `inner`, after an upgrade: frames must be masked when `require_mask`,
    /// may be compressed when `compression`, and a compressed message may inflate to at most
    /// `max_inflated` bytes.
    pub fn new(inner: R, control: Arc<Control>, require_mask: bool, compression: bool, max_inflated: usize) -> Self {
        WsReader {
            inner,
            control,
            raw: BytesMut::new(),
            inflated: Vec::new(),
            inflated_at: 0,
            frame_left: 0,
            frame_final: true,
            mask: None,
            mask_pos: 0,
            compressed: false,
            deflated: Vec::new(),
            require_mask,
            compression,
            max_inflated,
            done: false,
            failed: None,
        }
    }

    /// Refuses the framing: a close frame with a protocol error, and the end of the stream.
    fn protocol_error(&mut self, reason: &str) -> io::Error {
        self.control.close(CLOSE_PROTOCOL_ERROR, reason);
        self.done = true;
        io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
    }

    /// Decodes what `raw` holds (frame headers, control frames, compressed payloads); returns
    /// whether it made progress.
    fn decode(&mut self) -> io::Result<bool> {
        if self.frame_left > 0 {
            // Only a compressed frame's payload is left here; a plain one goes to the caller.
            let n = (self.frame_left.min(self.raw.len() as u64)) as usize;
            if n == 0 {
                return Ok(false);
            }
            if self.deflated.len() + n > self.max_inflated {
                return Err(self.protocol_error("compressed message too large"));
            }
            let start = self.deflated.len();
            self.deflated.extend_from_slice(&self.raw[..n]);
            self.raw.advance(n);
            if let Some(mask) = self.mask {
                self.mask_pos = unmask(&mut self.deflated[start..], mask, self.mask_pos);
            }
            self.frame_left -= n as u64;
            if self.frame_left == 0 {
                self.end_of_frame()?;
            }
            return Ok(true);
        }
        let mut cursor = Cursor::new(&self.raw[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(false),
            Err(_) => {
                let code = self.raw.first().map_or(0, |b| b & 0x0f);
                return Err(self.protocol_error(&format!("unknown opcode {code}")));
            }
        };
        let header_len = cursor.position() as usize;
        if self.require_mask && header.mask.is_none() {
            return Err(self.protocol_error("mask bit missing"));
        }
        match header.opcode {
            OpCode::Control(code) => {
                if len > MAX_CONTROL as u64 {
                    return Err(self.protocol_error("control frame length bigger than maximum allowed of 125 bytes"));
                }
                if !header.is_final {
                    return Err(self.protocol_error("control frame does not have final bit set"));
                }
                if self.raw.len() < header_len + len as usize {
                    return Ok(false);
                }
                self.raw.advance(header_len);
                let mut payload = self.raw.split_to(len as usize);
                if let Some(mask) = header.mask {
                    unmask(&mut payload, mask, 0);
                }
                self.control_frame(code, &payload);
                return Ok(true);
            }
            OpCode::Data(Data::Continue) => {
                if self.frame_final || header.rsv1 {
                    return Err(self.protocol_error("invalid continuation frame"));
                }
            }
            OpCode::Data(_) => {
                if !self.frame_final {
                    return Err(
                        self.protocol_error("new message started before final frame for previous message was received")
                    );
                }
                if header.rsv1 && !self.compression {
                    return Err(self.protocol_error("compressed frame without compression negotiated"));
                }
                self.compressed = header.rsv1;
            }
        }
        self.raw.advance(header_len);
        self.frame_final = header.is_final;
        self.frame_left = len;
        self.mask = header.mask;
        self.mask_pos = 0;
        if len == 0 {
            self.end_of_frame()?;
        }
        Ok(true)
    }

    /// A data frame is complete: a compressed message that ends here is inflated.
    fn end_of_frame(&mut self) -> io::Result<()> {
        if self.frame_final && self.compressed {
            if self.inflated_at == self.inflated.len() {
                self.inflated.clear();
                self.inflated_at = 0;
            }
            let before = self.inflated.len();
            if deflate::decompress(&self.deflated, self.max_inflated, &mut self.inflated).is_err() {
                // Nothing of a message that does not inflate is handed on.
                self.inflated.truncate(before);
                return Err(self.protocol_error("invalid compressed message"));
            }
            self.deflated = Vec::new();
            self.compressed = false;
        }
        Ok(())
    }

    fn control_frame(&mut self, code: ControlCode, payload: &[u8]) {
        match code {
            ControlCode::Close => {
                let (status, reason) = match payload.len() {
                    0 | 1 => (CLOSE_NO_STATUS, String::new()),
                    _ => {
                        let status = u16::from_be_bytes([payload[0], payload[1]]);
                        match std::str::from_utf8(&payload[2..]) {
                            Ok(text) => (status, text.to_string()),
                            Err(_) => (CLOSE_INVALID_PAYLOAD, "invalid utf8 body in close frame".to_string()),
                        }
                    }
                };
                self.control.close(status, &reason);
                self.done = true;
            }
            ControlCode::Ping => self.control.queue(ControlCode::Pong, payload),
            _ => {}
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for WsReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let start = buf.filled().len();
        match this.poll_decoded(cx, buf, start) {
            Poll::Ready(Err(e)) if buf.filled().len() > start => {
                this.failed = Some(e);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<R: AsyncRead + Unpin> WsReader<R> {
    /// Accounts for payload bytes of a plain frame just put in the caller's buffer: unmasks
    /// them there and ends the frame when they were its last.
    fn took_payload(&mut self, bytes: &mut [u8]) -> io::Result<()> {
        if let Some(mask) = self.mask {
            self.mask_pos = unmask(bytes, mask, self.mask_pos);
        }
        self.frame_left -= bytes.len() as u64;
        if self.frame_left == 0 {
            self.end_of_frame()?;
        }
        Ok(())
    }

    fn poll_decoded(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>, start: usize) -> Poll<io::Result<()>> {
        let this = self;
        if this.inflated_at == this.inflated.len() {
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            // What a compressed message inflated to.
            if this.inflated_at < this.inflated.len() {
                let n = (this.inflated.len() - this.inflated_at).min(buf.remaining());
                buf.put_slice(&this.inflated[this.inflated_at..this.inflated_at + n]);
                this.inflated_at += n;
                if this.inflated_at == this.inflated.len() && this.inflated.capacity() > 64 * 1024 {
                    this.inflated = Vec::new();
                    this.inflated_at = 0;
                }
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // A plain data frame's payload goes straight into the caller's buffer, unmasked
            // there: one copy from the socket's bytes to the parser's.
            if this.frame_left > 0 && !this.compressed && !this.raw.is_empty() {
                let n = (this.frame_left.min(this.raw.len() as u64) as usize).min(buf.remaining());
                let at = buf.filled().len();
                buf.put_slice(&this.raw[..n]);
                this.raw.advance(n);
                this.took_payload(&mut buf.filled_mut()[at..])?;
                continue;
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            if this.decode()? {
                continue;
            }
            if buf.filled().len() > start {
                // Hand over what there is rather than wait for more.
                return Poll::Ready(Ok(()));
            }
            if this.frame_left > 0 && !this.compressed && this.raw.is_empty() {
                // Inside a plain frame with nothing buffered: read its payload from the socket
                // straight into the caller's buffer.
                let want = (this.frame_left.min(buf.remaining() as u64)) as usize;
                let at = buf.filled().len();
                let mut part = buf.take(want);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    this.done = true;
                    continue;
                }
                // SAFETY: the read initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                this.took_payload(&mut buf.filled_mut()[at..])?;
                continue;
            }
            if this.raw.capacity() - this.raw.len() < 8 * 1024 {
                this.raw.reserve(64 * 1024);
            }
            let spare = this.raw.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.done = true;
                continue;
            }
            // SAFETY: `n` bytes of the spare capacity were just initialised by the read.
            unsafe { this.raw.set_len(this.raw.len() + n) };
            if this.raw.is_empty() {
                continue;
            }
        }
    }
}

/// XORs `buf` with `mask`, starting `pos` bytes into the masked payload; returns the position
/// after it. Eight bytes at a time, since a payload is masked byte by byte otherwise.
pub fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) -> usize {
    let r = pos & 3;
    let turned = [mask[r], mask[(r + 1) & 3], mask[(r + 2) & 3], mask[(r + 3) & 3]];
    let word =
        u64::from_ne_bytes([turned[0], turned[1], turned[2], turned[3], turned[0], turned[1], turned[2], turned[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= turned[i & 3];
    }
    pos + buf.len()
}

impl<R: AsyncRead + Unpin + Send> crate::client::ClientRead for WsReader<R> {
    async fn ready(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends the server's bytes as binary frames.
pub struct WsWriter<W> {
    inner: W,
    control: Arc<Control>,
    /// Encoded frames not yet written.
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    compression: bool,
    browser: bool,
    no_compressed_fragments: bool,
    /// Scratch space for a batch being compressed.
    scratch: Vec<u8>,
    shut: bool,
    /// Mask every frame (the client's side of the protocol, for tools and tests).
    mask: bool,
    /// Payload bytes of the frame being written straight from the caller's buffers.
    direct_left: usize,
    /// That frame's header, and how much of it is written.
    direct_head: [u8; 14],
    direct_head_len: usize,
    direct_head_pos: usize,
}

impl<W> WsWriter<W> {
    /// A writer over `inner`, after an upgrade.
    pub fn new(inner: W, control: Arc<Control>, upgrade: &super::Upgrade) -> Self {
        WsWriter {
            inner,
            control,
            pending: Vec::new(),
            written: 0,
            compression: upgrade.compress,
            browser: upgrade.browser,
            no_compressed_fragments: upgrade.no_compressed_fragments,
            scratch: Vec::new(),
            shut: false,
            mask: false,
            direct_left: 0,
            direct_head: [0; 14],
            direct_head_len: 0,
            direct_head_pos: 0,
        }
    }

    /// A writer for the client's side of a connection: binary frames, masked unless the server
    /// agreed to `Nats-No-Masking`, and no close frame of its own at the end.
    pub fn client(inner: W, mask: bool) -> Self {
        let plain = super::Upgrade {
            key: String::new(),
            compress: false,
            no_masking: !mask,
            forwarded_for: None,
            browser: false,
            no_compressed_fragments: false,
            jwt_cookie: None,
        };
        WsWriter { shut: true, mask, ..WsWriter::new(inner, Arc::new(Control::default()), &plain) }
    }

    /// A frame header for `len` bytes, masked on the client's side; returns the mask.
    fn header(&mut self, header: FrameHeader, len: usize) -> Option<[u8; 4]> {
        let mask = self.mask.then(rand::random::<[u8; 4]>);
        let header = FrameHeader { mask, ..header };
        let _ = header.format(len as u64, &mut self.pending);
        mask
    }

    /// Masks the payload bytes appended since `start`.
    fn apply_mask(&mut self, mask: Option<[u8; 4]>, start: usize) {
        if let Some(mask) = mask {
            unmask(&mut self.pending[start..], mask, 0);
        }
    }

    /// Appends the first `total` bytes of `parts` as one message: binary frames (split for
    /// browsers), the first marked compressed when `compressed`.
    fn frame(&mut self, parts: &[IoSlice<'_>], total: usize, compressed: bool) {
        let max =
            if self.browser && !(compressed && self.no_compressed_fragments) { BROWSER_FRAME } else { usize::MAX };
        let (mut part, mut offset) = (0, 0);
        let mut left = total;
        let mut first = true;
        while left > 0 {
            let n = left.min(max);
            let header = FrameHeader {
                is_final: n == left,
                rsv1: compressed && first,
                opcode: OpCode::Data(if first { Data::Binary } else { Data::Continue }),
                ..FrameHeader::default()
            };
            let mask = self.header(header, n);
            let start = self.pending.len();
            let mut need = n;
            while need > 0 {
                let rest = &parts[part][offset..];
                let take = rest.len().min(need);
                self.pending.extend_from_slice(&rest[..take]);
                need -= take;
                offset += take;
                if offset == parts[part].len() {
                    part += 1;
                    offset = 0;
                }
            }
            self.apply_mask(mask, start);
            left -= n;
            first = false;
        }
    }

    /// Appends the first `total` bytes of `bufs` as one message, compressed when that was
    /// negotiated and the message is worth it.
    fn encode(&mut self, bufs: &[IoSlice<'_>], total: usize) {
        if !self.compression || total < COMPRESS_THRESHOLD {
            self.frame(bufs, total, false);
            return;
        }
        let mut plain = std::mem::take(&mut self.scratch);
        plain.clear();
        for b in bufs {
            let take = b.len().min(total - plain.len());
            plain.extend_from_slice(&b[..take]);
        }
        let mut packed = Vec::with_capacity(total / 2 + 16);
        deflate::compress(&plain, &mut packed);
        self.frame(&[IoSlice::new(&packed)], packed.len(), true);
        if plain.capacity() <= 256 * 1024 {
            self.scratch = plain;
        }
    }
}

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    /// Writes what is pending; ready once it is all out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        if self.pending.capacity() > 256 * 1024 {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    /// Writes the current frame's header and payload straight from `bufs` (no copy); returns
    /// how many payload bytes were taken.
    fn poll_direct(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            let mut slices: [IoSlice<'_>; 16] = [IoSlice::new(&[]); 16];
            let mut n = 0;
            let head = &self.direct_head[self.direct_head_pos..self.direct_head_len];
            if !head.is_empty() {
                slices[0] = IoSlice::new(head);
                n = 1;
            }
            let mut room = self.direct_left;
            for b in bufs {
                if room == 0 || n == slices.len() {
                    break;
                }
                let take = b.len().min(room);
                slices[n] = IoSlice::new(&b[..take]);
                n += 1;
                room -= take;
            }
            let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = written.min(self.direct_head_len - self.direct_head_pos);
            self.direct_head_pos += from_head;
            let payload = written - from_head;
            if payload > 0 {
                self.direct_left -= payload;
                return Poll::Ready(Ok(payload));
            }
            // Only header bytes went out: go on until some payload does.
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WsWriter<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.direct_left > 0 {
            // In the middle of a frame written from the caller's buffers: go on with it.
            return this.poll_direct(cx, bufs);
        }
        ready!(this.poll_drain(cx))?;
        if this.control.closing.load(std::sync::atomic::Ordering::Acquire) {
            // Nothing may follow a close frame; the bytes are dropped.
            this.control.take(&mut this.pending);
            let total = bufs.iter().map(|b| b.len()).sum();
            let _ = this.poll_drain(cx)?;
            return Poll::Ready(Ok(total));
        }
        this.control.take(&mut this.pending);
        if !this.compression && !this.mask && !this.browser {
            ready!(this.poll_drain(cx))?;
            let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_FRAME_BATCH);
            if total == 0 {
                return Poll::Ready(Ok(0));
            }
            let header = FrameHeader { opcode: OpCode::Data(Data::Binary), ..FrameHeader::default() };
            let mut head = Cursor::new(&mut this.direct_head[..]);
            let _ = header.format(total as u64, &mut head);
            this.direct_head_len = head.position() as usize;
            this.direct_head_pos = 0;
            this.direct_left = total;
            return this.poll_direct(cx, bufs);
        }
        // At most MAX_FRAME_BATCH bytes per frame, so that the frame buffer is reused rather
        // than grown and freed batch after batch; the caller writes the rest next.
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_FRAME_BATCH);
        if total > 0 {
            this.encode(bufs, total);
        }
        // Start writing now; what does not go out goes with the next call or the flush.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.direct_left > 0 {
            // A frame is half written; control frames wait for its end.
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        this.control.take(&mut this.pending);
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.direct_left > 0 {
            // A frame cut short cannot be followed by a close frame.
            this.shut = true;
        }
        if !this.shut {
            this.shut = true;
            this.control.close_for_reason();
            this.control.take(&mut this.pending);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    async fn read_all(bytes: Vec<u8>, require_mask: bool) -> (io::Result<Vec<u8>>, Arc<Control>) {
        let control = Arc::new(Control::default());
        let mut reader = WsReader::new(&bytes[..], Arc::clone(&control), require_mask, true, 1 << 20);
        let mut out = Vec::new();
        let r = reader.read_to_end(&mut out).await.map(|_| out);
        (r, control)
    }

    #[test]
    fn unmasking_by_words_matches_byte_by_byte() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..100u8).collect();
        for pos in 0..5 {
            for len in [0, 1, 7, 8, 9, 31, 100] {
                let mut fast = data[..len].to_vec();
                let end = unmask(&mut fast, mask, pos);
                let slow: Vec<u8> = data[..len].iter().enumerate().map(|(i, b)| b ^ mask[(pos + i) % 4]).collect();
                assert_eq!(fast, slow, "pos {pos} len {len}");
                assert_eq!(end, pos + len);
            }
        }
    }

    #[tokio::test]
    async fn frames_are_a_byte_stream() {
        let k = Some([1, 2, 3, 4]);
        let mut wire = client_frame(2, true, b"PUB x 5\r\nhe", k);
        wire.extend(client_frame(9, true, b"ping!", k));
        wire.extend(client_frame(1, false, b"llo\r", k));
        wire.extend(client_frame(0, true, b"\n", k));
        let (got, control) = read_all(wire, true).await;
        assert_eq!(got.unwrap(), b"PUB x 5\r\nhello\r\n");
        let mut frames = Vec::new();
        control.take(&mut frames);
        assert_eq!(frames, [&[0x8a, 5][..], b"ping!"].concat(), "a pong with the ping's payload");
    }

    #[tokio::test]
    async fn an_unmasked_frame_is_refused() {
        let (got, control) = read_all(client_frame(2, true, b"PING\r\n", None), true).await;
        assert!(got.is_err());
        let mut frames = Vec::new();
        control.take(&mut frames);
        assert_eq!(&frames[..2], &[0x88, 2 + "mask bit missing".len() as u8]);
        assert_eq!(&frames[2..4], &CLOSE_PROTOCOL_ERROR.to_be_bytes());
        assert_eq!(&frames[4..], b"mask bit missing");
        // Unless the client asked for no masking.
        let (got, _) = read_all(client_frame(2, true, b"PING\r\n", None), false).await;
        assert_eq!(got.unwrap(), b"PING\r\n");
    }

    #[tokio::test]
    async fn compressed_messages_inflate() {
        let mut z = Vec::new();
        deflate::compress(b"PUB a 2\r\nok\r\n", &mut z);
        let mut frame = client_frame(2, true, &z, Some([9, 8, 7, 6]));
        frame[0] |= 0x40;
        let (got, _) = read_all(frame, true).await;
        assert_eq!(got.unwrap(), b"PUB a 2\r\nok\r\n");
    }

    #[tokio::test]
    async fn a_close_frame_is_answered_and_ends_the_stream() {
        let mut wire = client_frame(8, true, &[0x03, 0xe8, b'b', b'y', b'e'], Some([0, 0, 0, 0]));
        wire.extend(client_frame(2, true, b"after", Some([0, 0, 0, 0])));
        let (got, control) = read_all(wire, true).await;
        assert_eq!(got.unwrap(), b"");
        let mut frames = Vec::new();
        control.take(&mut frames);
        assert_eq!(frames, [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    }

    /// A socket that takes at most `step` bytes per write.
    struct Narrow {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Narrow {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_written_straight_from_the_callers_buffers_survive_short_writes() {
        let up = super::super::Upgrade {
            key: String::new(),
            compress: false,
            no_masking: false,
            forwarded_for: None,
            browser: false,
            no_compressed_fragments: false,
            jwt_cookie: None,
        };
        let control = Arc::new(Control::default());
        let mut w = WsWriter::new(Narrow { out: Vec::new(), step: 3 }, Arc::clone(&control), &up);
        let big = vec![b'x'; 70_000];
        w.write_all(b"PING\r\n").await.unwrap();
        control.queue(ControlCode::Pong, b"p");
        w.write_all(&big).await.unwrap();
        w.flush().await.unwrap();
        // Read the frames back as a client would.
        let out = std::mem::take(&mut w.inner.out);
        let mut reader = WsReader::new(&out[..], Arc::new(Control::default()), false, false, 1 << 20);
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 6 + 70_000);
        assert!(back.starts_with(b"PING\r\n") && back[6..].iter().all(|&b| b == b'x'));
        // The pong went out between frames, whole.
        assert!(out.windows(3).any(|w| w == [0x8a, 1, b'p']));
    }

    #[tokio::test]
    async fn the_writer_sends_one_binary_frame_per_write_and_splits_for_browsers() {
        let up = super::super::Upgrade {
            key: String::new(),
            compress: false,
            no_masking: false,
            forwarded_for: None,
            browser: true,
            no_compressed_fragments: false,
            jwt_cookie: None,
        };
        let mut out = Vec::new();
        {
            let mut w = WsWriter::new(&mut out, Arc::new(Control::default()), &up);
            w.write_all(b"MSG x 1 5\r\nhello\r\n").await.unwrap();
            w.write_all(&vec![b'z'; 5000]).await.unwrap();
            w.flush().await.unwrap();
        }
        assert_eq!(&out[..2], &[0x82, 18]);
        assert_eq!(&out[2..20], b"MSG x 1 5\r\nhello\r\n");
        // 5,000 bytes for a browser: 4,096 in a first frame, the rest in a continuation.
        assert_eq!(&out[20..24], &[0x02, 126, 0x10, 0x00]);
        let second = 24 + 4096;
        assert_eq!(&out[second..second + 4], &[0x80, 126, 0x03, 0x88]);
    }
}
