//! permessage-deflate (RFC 7692) without context takeover, as nats-server negotiates it: each
//! message is deflated on its own, and the trailing `00 00 ff ff` of a sync flush is left off
//! on the wire.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The bytes a sync flush ends with, left off compressed messages on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The bytes are not a deflate stream.
    #[error("invalid compressed data")]
    Invalid,
    /// It inflates to more than the limit.
    #[error("decompressed message too large")]
    TooLarge,
}

/// Deflates `data` as one message, appending the result to `out`.
pub fn compress(data: &[u8], out: &mut Vec<u8>) {
    let mut c = Compress::new(Compression::fast(), false);
    let start = out.len();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve((data.len() / 2).max(256));
        }
        let consumed = c.total_in() as usize;
        if c.compress_vec(&data[consumed..], out, FlushCompress::Sync).is_err() {
            break;
        }
        // The flush is complete once all input is in and the output did not fill up.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.len() >= start + TAIL.len() && out[out.len() - TAIL.len()..] == TAIL {
        out.truncate(out.len() - TAIL.len());
    }
}

/// Inflates one message (without its tail), appending at most `limit` bytes to `out`.
pub fn decompress(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    let mut d = Decompress::new(false);
    let mut input = Vec::with_capacity(data.len() + TAIL.len());
    input.extend_from_slice(data);
    input.extend_from_slice(&TAIL);
    let start = out.len();
    loop {
        if out.len() - start > limit {
            return Err(InflateError::TooLarge);
        }
        if out.capacity() - out.len() < 256 {
            out.reserve((data.len() * 2).clamp(1024, 64 * 1024));
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[in_before as usize..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Invalid)?;
        if status == Status::StreamEnd {
            break;
        }
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
        if d.total_in() == in_before && d.total_out() == out_before {
            return Err(InflateError::Invalid);
        }
    }
    if out.len() - start > limit {
        return Err(InflateError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for data in [&b""[..], b"PUB x 5\r\nhello\r\n", &[b'a'; 100_000][..]] {
            let mut z = Vec::new();
            compress(data, &mut z);
            assert!(!z.ends_with(&TAIL));
            let mut back = Vec::new();
            decompress(&z, 1 << 20, &mut back).expect("inflates");
            assert_eq!(back, data);
        }
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let mut z = Vec::new();
        compress(&vec![0u8; 1 << 20], &mut z);
        assert_eq!(decompress(&z, 1000, &mut Vec::new()), Err(InflateError::TooLarge));
        assert_eq!(decompress(&[0xff, 0xff, 0xff, 0xff, 0x01], 1000, &mut Vec::new()), Err(InflateError::Invalid));
    }
}
