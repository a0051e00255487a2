//! The file store's record format: what a segment file is made of. Pure encoding and decoding,
//! no I/O, so that recovery and the fuzz target drive it directly.
//!
//! Every record starts with a magic number and its total length and ends with a CRC-32 of
//! everything before it, so a reader can tell a whole record from a torn or damaged one, and
//! can find the next good record after damage by looking for the magic number again.
//!
//! ```text
//! magic u16 | kind u8 | flags u8 | len u32 | seq u64 | ts i64 |   (24 bytes, little endian)
//!   message only: subject_len u16 | header_len u32 | subject | headers | data
//! crc32 u32 (over all bytes before it)
//! ```
//!
//! Kinds: a message; a delete of a sequence; a purge (everything below a sequence is gone); a
//! skip (a sequence given out without a message).

/// Marks the start of every record.
pub const MAGIC: u16 = 0xC07E;
/// Bytes before a message's subject (or a whole non-message record, less its checksum).
const FIXED: usize = 24;
/// A message's extra fixed fields: subject and header lengths.
const MSG_FIXED: usize = 6;
/// The checksum at the end.
const CRC: usize = 4;
/// The longest record accepted (a corrupt length field must not make a reader allocate).
pub const MAX_RECORD: usize = 80 * 1024 * 1024;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stored message.
    Message,
    /// The message with this sequence was removed.
    Delete,
    /// Every message below this sequence was removed; the next one gets at least it.
    Purge,
    /// This sequence was given out without a message.
    Skip,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::Delete => 2,
            Kind::Purge => 3,
            Kind::Skip => 4,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Message,
            2 => Kind::Delete,
            3 => Kind::Purge,
            4 => Kind::Skip,
            _ => return None,
        })
    }
}

/// A decoded record, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What it says.
    pub kind: Kind,
    /// The sequence it is about.
    pub seq: u64,
    /// When it was written, nanoseconds since the Unix epoch.
    pub ts: i64,
    /// A message's subject.
    pub subject: &'a [u8],
    /// A message's header block (empty when it has none).
    pub headers: &'a [u8],
    /// A message's payload.
    pub data: &'a [u8],
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record says it has: the end of a file cut mid-write, or more
    /// bytes to come.
    #[error("incomplete record")]
    Incomplete,
    /// The bytes are not a good record (wrong magic, impossible length, checksum mismatch).
    #[error("damaged record")]
    Damaged,
}

/// The length of a message record.
pub fn message_len(subject: &[u8], headers: &[u8], data: &[u8]) -> usize {
    FIXED + MSG_FIXED + subject.len() + headers.len() + data.len() + CRC
}

/// The length of a delete, purge or skip record.
pub const MARKER_LEN: usize = FIXED + CRC;

fn put_fixed(out: &mut Vec<u8>, kind: Kind, len: usize, seq: u64, ts: i64) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(kind.code());
    out.push(0);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
}

fn put_crc(out: &mut Vec<u8>, start: usize) {
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends a message record to `out`.
pub fn encode_message(out: &mut Vec<u8>, seq: u64, ts: i64, subject: &[u8], headers: &[u8], data: &[u8]) {
    let start = out.len();
    let len = message_len(subject, headers, data);
    out.reserve(len);
    put_fixed(out, Kind::Message, len, seq, ts);
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    out.extend_from_slice(subject);
    out.extend_from_slice(headers);
    out.extend_from_slice(data);
    put_crc(out, start);
}

/// Appends a delete, purge or skip record to `out`.
pub fn encode_marker(out: &mut Vec<u8>, kind: Kind, seq: u64, ts: i64) {
    let start = out.len();
    put_fixed(out, kind, MARKER_LEN, seq, ts);
    put_crc(out, start);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `buf`; returns it and its length.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    if buf.len() < 8 {
        return if buf.len() >= 2 && u16_at(buf, 0) != MAGIC {
            Err(DecodeError::Damaged)
        } else {
            Err(DecodeError::Incomplete)
        };
    }
    if u16_at(buf, 0) != MAGIC {
        return Err(DecodeError::Damaged);
    }
    let kind = Kind::from_code(buf[2]).ok_or(DecodeError::Damaged)?;
    let len = u32_at(buf, 4) as usize;
    let min = if kind == Kind::Message { FIXED + MSG_FIXED + CRC } else { MARKER_LEN };
    if len < min || len > MAX_RECORD || (kind != Kind::Message && len != MARKER_LEN) {
        return Err(DecodeError::Damaged);
    }
    if buf.len() < len {
        return Err(DecodeError::Incomplete);
    }
    let body = &buf[..len - CRC];
    if crc32fast::hash(body) != u32_at(buf, len - CRC) {
        return Err(DecodeError::Damaged);
    }
    let seq = u64_at(buf, 8);
    let ts = u64_at(buf, 16) as i64;
    let (subject, headers, data): (&[u8], &[u8], &[u8]) = if kind == Kind::Message {
        let slen = usize::from(u16_at(buf, FIXED));
        let hlen = u32_at(buf, FIXED + 2) as usize;
        let start = FIXED + MSG_FIXED;
        if start + slen + hlen > body.len() {
            return Err(DecodeError::Damaged);
        }
        (&body[start..start + slen], &body[start + slen..start + slen + hlen], &body[start + slen + hlen..])
    } else {
        (&[], &[], &[])
    };
    Ok((Record { kind, seq, ts, subject, headers, data }, len))
}

/// Where the payload of a message record starts, relative to the record, for erasing it in
/// place.
pub fn data_offset(subject_len: usize, headers_len: usize) -> usize {
    FIXED + MSG_FIXED + subject_len + headers_len
}

/// Recomputes the checksum of a whole record in `record` after its bytes changed in place.
pub fn reseal(record: &mut [u8]) {
    let n = record.len();
    if n < CRC {
        return;
    }
    let crc = crc32fast::hash(&record[..n - CRC]);
    record[n - CRC..].copy_from_slice(&crc.to_le_bytes());
}

/// The offset of the next position at or after `from` where a good record starts.
pub fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + 1 < buf.len() {
        let rel = memchr::memmem::find(&buf[at..], &magic)?;
        let pos = at + rel;
        if decode(&buf[pos..]).is_ok() {
            return Some(pos);
        }
        at = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut buf = Vec::new();
        encode_message(&mut buf, 7, 42, b"orders.new", b"NATS/1.0\r\nA: b\r\n\r\n", b"hello");
        encode_marker(&mut buf, Kind::Delete, 7, 43);
        let (r, n) = decode(&buf).unwrap();
        assert_eq!((r.kind, r.seq, r.ts, r.subject, r.data), (Kind::Message, 7, 42, &b"orders.new"[..], &b"hello"[..]));
        assert_eq!(r.headers, b"NATS/1.0\r\nA: b\r\n\r\n");
        assert_eq!(n, message_len(b"orders.new", b"NATS/1.0\r\nA: b\r\n\r\n", b"hello"));
        let (m, k) = decode(&buf[n..]).unwrap();
        assert_eq!((m.kind, m.seq, k), (Kind::Delete, 7, MARKER_LEN));
        assert_eq!(decode(&buf[..n - 1]), Err(DecodeError::Incomplete));
        let mut bad = buf.clone();
        bad[30] ^= 1;
        assert_eq!(decode(&bad), Err(DecodeError::Damaged));
        assert_eq!(resync(&bad, 1), Some(n), "the next good record is found after damage");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x1234_5678_u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
            let _ = resync(&bytes, 0);
        }
    }
}
