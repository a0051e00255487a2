//! Arbitrary bytes through the client protocol parser, cut into reads the way a socket delivers
//! them.
//!
//! Input layout: the first byte says how many cut points follow (0 to 15), each a little-endian
//! `u16` taken modulo the stream length plus one; the rest is the stream. The stream is fed the
//! way the read loop feeds it: append the next read, parse until `None` or an error, drop the
//! bytes each operation took.
//!
//! Checked: every operation takes at least one byte and no more than the buffer holds; a parser
//! that asks for more bytes asks for more than it has, and one that waits for a control line has
//! no line end in its buffer; an error is final (the same buffer, and the buffer with the rest of
//! the stream appended, give the same error again); and the stream fed in one read gives the same
//! operations, error and leftover bytes as the stream fed in pieces.
#![no_main]

use courier::proto::{ClientOp, ParseError, Parser};
use libfuzzer_sys::fuzz_target;

const MAX_CONTROL_LINE: usize = 4096;
const MAX_PAYLOAD: usize = 1024 * 1024;
const MAX_CUTS: usize = 15;

/// An owned copy of an operation, to compare runs whose buffers differ.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Connect(Vec<u8>),
    Pub { subject: Vec<u8>, reply: Option<Vec<u8>>, header_len: usize, payload: Vec<u8>, has_headers: bool },
    Sub { subject: Vec<u8>, queue: Option<Vec<u8>>, sid: Vec<u8> },
    Unsub { sid: Vec<u8>, max: Option<u64> },
    Ping,
    Pong,
    Ok,
    Info,
    Err,
}

fn own(op: &ClientOp<'_>) -> Owned {
    match op {
        ClientOp::Connect(json) => Owned::Connect(json.to_vec()),
        ClientOp::Pub(p) => {
            assert!(p.header_len <= p.payload.len(), "header block longer than the payload: {p:?}");
            assert!(p.has_headers || p.header_len == 0, "PUB with a header length: {p:?}");
            assert!(p.payload.len() <= MAX_PAYLOAD, "payload over the limit: {}", p.payload.len());
            Owned::Pub {
                subject: p.subject.to_vec(),
                reply: p.reply.map(<[u8]>::to_vec),
                header_len: p.header_len,
                payload: p.payload.to_vec(),
                has_headers: p.has_headers,
            }
        }
        ClientOp::Sub { subject, queue, sid } => {
            Owned::Sub { subject: subject.to_vec(), queue: queue.map(<[u8]>::to_vec), sid: sid.to_vec() }
        }
        ClientOp::Unsub { sid, max } => Owned::Unsub { sid: sid.to_vec(), max: *max },
        ClientOp::Ping => Owned::Ping,
        ClientOp::Pong => Owned::Pong,
        ClientOp::Ok => Owned::Ok,
        ClientOp::Info => Owned::Info,
        ClientOp::Err => Owned::Err,
    }
}

/// What one run over the stream produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ops: Vec<Owned>,
    error: Option<ParseError>,
    /// Bytes left unparsed at the end, or in the buffer at the error.
    left: Vec<u8>,
}

/// Feeds `stream` to a fresh parser in reads ending at `ends` (ascending, the last one the
/// stream's length).
fn run(stream: &[u8], ends: &[usize]) -> Outcome {
    let mut parser = Parser::new(MAX_CONTROL_LINE, MAX_PAYLOAD);
    let mut buf: Vec<u8> = Vec::new();
    let mut ops = Vec::new();
    let mut start = 0;
    for &end in ends {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match parser.parse(&buf) {
                Ok(Some((op, used))) => {
                    assert!(used > 0, "an operation that took no bytes: {op:?}");
                    assert!(used <= buf.len(), "took {used} bytes of {}", buf.len());
                    ops.push(own(&op));
                    buf.drain(..used);
                }
                Ok(None) => {
                    let needed = parser.needed();
                    assert!(needed == 0 || needed > buf.len(), "needs {needed} bytes but has {}", buf.len());
                    // Waiting for more bytes is right only while the next control line is not
                    // whole yet; with a line end in the buffer the connection would be stuck.
                    assert!(needed > 0 || !buf.contains(&b'\n'), "waits with a whole line in the buffer");
                    break;
                }
                Err(e) => {
                    assert_eq!(parser.parse(&buf).err(), Some(e), "the same buffer parsed differently after an error");
                    let mut more = buf.clone();
                    more.extend_from_slice(&stream[start..]);
                    assert_eq!(parser.parse(&more).err(), Some(e), "more bytes undid an error");
                    return Outcome { ops, error: Some(e), left: buf };
                }
            }
        }
    }
    Outcome { ops, error: None, left: buf }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n) % (MAX_CUTS + 1);
    if rest.len() < n * 2 {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(n * 2);
    let mut ends: Vec<usize> =
        cut_bytes.chunks_exact(2).map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    ends.dedup();

    let split = run(stream, &ends);
    let whole = run(stream, &[stream.len()]);
    // After an error the split run has not been fed the rest of the stream, so its leftover
    // bytes are compared only when neither run failed.
    let same =
        split.ops == whole.ops && split.error == whole.error && (split.error.is_some() || split.left == whole.left);
    if !same {
        panic!(
            "split reads at {ends:?} parsed differently from one read\n split: {} ops, error {:?}, {} bytes left\n whole: {} ops, error {:?}, {} bytes left\n first differing op: {:?}",
            split.ops.len(),
            split.error,
            split.left.len(),
            whole.ops.len(),
            whole.error,
            whole.left.len(),
            split.ops.iter().zip(&whole.ops).position(|(a, b)| a != b),
        );
    }
});
