//! The client protocol parser: a pure function over bytes, with no I/O and no allocation.
//!
//! [`Parser::parse`] looks at the start of a read buffer and returns the first whole operation
//! in it together with how many bytes it took, or `None` when more bytes are needed. The
//! returned operation borrows its subject, reply, sid and payload from the buffer: nothing is
//! copied here, and the payload is copied exactly once later, into each consumer's outbound
//! buffer. A publish whose control line arrived but whose payload did not is remembered, so that
//! a large payload trickling in over many reads is not parsed again each time.
//!
//! Control lines are split with `nom`; the rules follow nats-server's byte parser: operation
//! names are case-insensitive, fields are separated by spaces or tabs, a line ends with `\n`
//! (the `\r` before it is optional) and a payload must be followed by exactly `\r\n`.

use std::ops::Range;

use nom::bytes::complete::{take_while, take_while1};
use nom::sequence::preceded;
use nom::{IResult, Parser as _};

/// The most fields any control line has (HPUB: subject, reply, header size, total size).
const MAX_ARGS: usize = 4;

/// One operation sent by a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT {json}`: the client's options, as JSON text.
    Connect(&'a [u8]),
    /// `PUB` or `HPUB`.
    Pub(Publish<'a>),
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        /// Subject filter, possibly with wildcards (validated by the caller).
        subject: &'a [u8],
        /// Queue group, when given.
        queue: Option<&'a [u8]>,
        /// The client's id for this subscription, echoed in every MSG.
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max]`.
    Unsub {
        /// Which subscription.
        sid: &'a [u8],
        /// Stop after this many messages in all; `None` removes it now.
        max: Option<u64>,
    },
    /// `PING`: answered with PONG.
    Ping,
    /// `PONG`: the answer to a server PING.
    Pong,
    /// `+OK`: ignored, as nats-server does.
    Ok,
    /// `INFO`: ignored from clients.
    Info,
    /// `-ERR`: a client reporting an error; the server closes the connection.
    Err,
}

/// A message published by a client (`PUB`, or `HPUB` with headers).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Publish<'a> {
    /// Where it goes.
    pub subject: &'a [u8],
    /// Where replies go, for request-reply.
    pub reply: Option<&'a [u8]>,
    /// Length of the header block at the start of `payload`; 0 for PUB.
    pub header_len: usize,
    /// Headers and body together, without the trailing CRLF.
    pub payload: &'a [u8],
    /// True for HPUB (even with an empty header block).
    pub has_headers: bool,
}

/// Why the parser refused the input. Every variant ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not an operation the protocol knows, or a payload not followed by CRLF.
    #[error("unknown protocol operation")]
    UnknownOp,
    /// A control line longer than max_control_line.
    #[error("maximum control line exceeded")]
    ControlLineTooLong,
    /// A publish larger than max_payload.
    #[error("maximum payload exceeded")]
    MaxPayload,
    /// The right operation with the wrong fields; nats-server closes these without a `-ERR`.
    #[error("malformed {0} arguments")]
    BadArgs(&'static str),
}

impl ParseError {
    /// The `-ERR` text nats-server sends before closing, if it sends one.
    pub fn client_text(&self) -> Option<&'static str> {
        use super::errors::*;
        match self {
            ParseError::UnknownOp => Some(UNKNOWN_PROTOCOL_OPERATION),
            ParseError::ControlLineTooLong => Some(MAX_CONTROL_LINE_EXCEEDED),
            ParseError::MaxPayload => Some(MAX_PAYLOAD_VIOLATION),
            ParseError::BadArgs(_) => None,
        }
    }
}

/// A publish whose control line has been read but whose payload has not all arrived.
#[derive(Debug, Clone)]
struct PendingPub {
    subject: Range<usize>,
    reply: Option<Range<usize>>,
    header_len: usize,
    has_headers: bool,
    /// Where the payload starts (just past the control line).
    payload_start: usize,
    /// Payload length, headers included, CRLF excluded.
    size: usize,
}

impl PendingPub {
    fn frame_len(&self) -> usize {
        self.payload_start + self.size + 2
    }
}

/// Parses client operations from the front of a buffer, remembering a publish that is waiting
/// for its payload.
#[derive(Debug)]
pub struct Parser {
    max_control_line: usize,
    max_payload: usize,
    pending: Option<PendingPub>,
}

impl Parser {
    /// A parser that enforces the given control line and payload limits.
    pub fn new(max_control_line: usize, max_payload: usize) -> Self {
        Parser { max_control_line, max_payload, pending: None }
    }

    /// Changes the limits (on reload); a publish already waiting for its payload keeps the
    /// limits it was parsed under.
    pub fn set_limits(&mut self, max_control_line: usize, max_payload: usize) {
        self.max_control_line = max_control_line;
        self.max_payload = max_payload;
    }

    /// Bytes the buffer must hold before the next call can make progress: the whole frame of a
    /// publish whose payload is still arriving, else 0. The reader uses it to size its buffer.
    pub fn needed(&self) -> usize {
        self.pending.as_ref().map_or(0, PendingPub::frame_len)
    }

    /// Parses the first operation at the start of `buf`.
    ///
    /// Returns the operation and the number of bytes it took, `Ok(None)` when `buf` does not yet
    /// hold a whole operation, or an error when the input can never become valid. The caller
    /// must drop exactly the returned number of bytes from the front of its buffer before the
    /// next call, and must not otherwise change the front of the buffer between calls.
    pub fn parse<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(ClientOp<'a>, usize)>, ParseError> {
        if let Some(pending) = &self.pending {
            let used = pending.frame_len();
            let Some(op) = take_payload(buf, pending)? else { return Ok(None) };
            self.pending = None;
            return Ok(Some((op, used)));
        }
        let limit = self.max_control_line;
        // Room for the operation name and the blanks before the arguments, which nats-server
        // does not count against the limit.
        let window = &buf[..buf.len().min(limit.saturating_mul(2).saturating_add(64))];
        let nl = memchr::memchr(b'\n', window);
        let mut line = &window[..nl.unwrap_or(window.len())];
        // Without the line end yet, a trailing CR may be the first half of it.
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let (rest, name) = match op_name(line) {
            Ok(found) => found,
            Err(_) if line.is_empty() && nl.is_none() => return Ok(None),
            Err(_) => return Err(ParseError::UnknownOp),
        };
        if nl.is_none() && rest.is_empty() && name.len() < MAX_OP_NAME {
            // The name may still be growing, unless no operation starts this way.
            if !could_be_op(name) {
                return Err(ParseError::UnknownOp);
            }
            return Ok(None);
        }
        let op = classify(name)?;
        // Like nats-server, the limit applies to the arguments, not the name or line end.
        let args_len = line.len() - name.len() - (rest.len() - trim_start_blank(rest).len());
        if op.has_args() && args_len > limit {
            return Err(ParseError::ControlLineTooLong);
        }
        let Some(nl) = nl else {
            if window.len() == buf.len() {
                return Ok(None);
            }
            return Err(ParseError::ControlLineTooLong);
        };
        let line_len = nl + 1;
        let simple = |op| Ok(Some((op, line_len)));
        match op {
            Op::Ping => simple(ClientOp::Ping),
            Op::Pong => simple(ClientOp::Pong),
            Op::Ok => simple(ClientOp::Ok),
            Op::Err => simple(ClientOp::Err),
            Op::Info => simple(ClientOp::Info),
            Op::Connect => {
                let json = trim_blank(rest);
                simple(ClientOp::Connect(json))
            }
            Op::Sub => {
                let (args, n) = split_args(needs_blank(rest)?, "SUB")?;
                let op = match n {
                    2 => ClientOp::Sub { subject: args[0], queue: None, sid: args[1] },
                    3 => ClientOp::Sub { subject: args[0], queue: Some(args[1]), sid: args[2] },
                    _ => return Err(ParseError::BadArgs("SUB")),
                };
                simple(op)
            }
            Op::Unsub => {
                let (args, n) = split_args(needs_blank(rest)?, "UNSUB")?;
                let op = match n {
                    1 => ClientOp::Unsub { sid: args[0], max: None },
                    // A max that is not a positive number means no limit, as in nats-server.
                    2 => {
                        ClientOp::Unsub { sid: args[0], max: parse_size(args[1]).filter(|&m| m > 0).map(|m| m as u64) }
                    }
                    _ => return Err(ParseError::BadArgs("UNSUB")),
                };
                simple(op)
            }
            Op::Pub | Op::Hpub => {
                let hpub = op == Op::Hpub;
                let name = if hpub { "HPUB" } else { "PUB" };
                let (args, n) = split_args(needs_blank(rest)?, name)?;
                let base = line.as_ptr() as usize - buf.as_ptr() as usize;
                let range = |a: &[u8]| {
                    let start = a.as_ptr() as usize - buf.as_ptr() as usize;
                    debug_assert!(start >= base);
                    start..start + a.len()
                };
                let (subject, reply, sizes) = match (hpub, n) {
                    (false, 2) => (args[0], None, &args[1..2]),
                    (false, 3) => (args[0], Some(args[1]), &args[2..3]),
                    (true, 3) => (args[0], None, &args[1..3]),
                    (true, 4) => (args[0], Some(args[1]), &args[2..4]),
                    _ => return Err(ParseError::BadArgs(name)),
                };
                let size_arg = sizes[sizes.len() - 1];
                let size = parse_size(size_arg).ok_or(ParseError::BadArgs(name))?;
                let header_len = if hpub {
                    let h = parse_size(sizes[0]).ok_or(ParseError::BadArgs(name))?;
                    if h > size {
                        return Err(ParseError::BadArgs(name));
                    }
                    h
                } else {
                    0
                };
                if size > self.max_payload {
                    return Err(ParseError::MaxPayload);
                }
                let pending = PendingPub {
                    subject: range(subject),
                    reply: reply.map(range),
                    header_len,
                    has_headers: hpub,
                    payload_start: line_len,
                    size,
                };
                match take_payload(buf, &pending)? {
                    Some(op) => Ok(Some((op, pending.frame_len()))),
                    None => {
                        self.pending = Some(pending);
                        Ok(None)
                    }
                }
            }
        }
    }
}

/// Builds the publish once its whole frame is in `buf`, checking the CRLF after the payload.
fn take_payload<'a>(buf: &'a [u8], p: &PendingPub) -> Result<Option<ClientOp<'a>>, ParseError> {
    let end = p.payload_start + p.size;
    // A wrong byte after the payload is an error as soon as it arrives, as in nats-server,
    // rather than once two bytes are there.
    match buf.get(end..buf.len().min(end + 2)) {
        None | Some([]) => return Ok(None),
        Some([b'\r']) => return Ok(None),
        Some([b'\r', b'\n']) => {}
        Some(_) => return Err(ParseError::UnknownOp),
    }
    Ok(Some(ClientOp::Pub(Publish {
        subject: &buf[p.subject.clone()],
        reply: p.reply.clone().map(|r| &buf[r]),
        header_len: p.header_len,
        payload: &buf[p.payload_start..end],
        has_headers: p.has_headers,
    })))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect,
    Pub,
    Hpub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Ok,
    Err,
    Info,
}

/// Every operation name a client may send.
const OP_NAMES: [&[u8]; 10] =
    [b"PUB", b"HPUB", b"SUB", b"UNSUB", b"CONNECT", b"PING", b"PONG", b"INFO", b"+OK", b"-ERR"];

/// Whether `name` is the start of an operation name, or one of the names nats-server accepts
/// with anything after them up to the line end (`PINGX` is a PING).
fn could_be_op(name: &[u8]) -> bool {
    let prefix_of = |op: &[u8]| op.len() >= name.len() && op[..name.len()].eq_ignore_ascii_case(name);
    let starts_with = |op: &[u8]| name.len() >= op.len() && name[..op.len()].eq_ignore_ascii_case(op);
    OP_NAMES.iter().any(|op| prefix_of(op)) || [&b"PING"[..], b"PONG", b"+OK", b"-ERR"].iter().any(|op| starts_with(op))
}

/// Longer than any operation name; a longer run of letters is not an operation.
const MAX_OP_NAME: usize = 8;

impl Op {
    /// Whether the line carries arguments that count against max_control_line.
    fn has_args(self) -> bool {
        matches!(self, Op::Pub | Op::Hpub | Op::Sub | Op::Unsub | Op::Connect)
    }
}

fn trim_start_blank(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s {
        if !is_blank(*b) {
            break;
        }
        s = rest;
    }
    s
}

#[inline]
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The operation name: letters, or the `+`/`-` of `+OK`/`-ERR`.
fn op_name(line: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|b: u8| b.is_ascii_alphabetic() || b == b'+' || b == b'-').parse(line)
}

/// One field: blanks, then a run of non-blank bytes.
fn field(input: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(take_while(is_blank), take_while1(|b| !is_blank(b))).parse(input)
}

fn classify(name: &[u8]) -> Result<Op, ParseError> {
    let eq = |s: &[u8]| name.eq_ignore_ascii_case(s);
    let starts = |s: &[u8]| name.len() >= s.len() && name[..s.len()].eq_ignore_ascii_case(s);
    Ok(if eq(b"PUB") {
        Op::Pub
    } else if eq(b"HPUB") {
        Op::Hpub
    } else if eq(b"SUB") {
        Op::Sub
    } else if eq(b"UNSUB") {
        Op::Unsub
    } else if eq(b"CONNECT") {
        Op::Connect
    } else if starts(b"PING") {
        // nats-server answers anything from "PING" to the end of the line.
        Op::Ping
    } else if starts(b"PONG") {
        Op::Pong
    } else if eq(b"INFO") {
        Op::Info
    } else if starts(b"+OK") {
        Op::Ok
    } else if starts(b"-ERR") {
        Op::Err
    } else {
        return Err(ParseError::UnknownOp);
    })
}

/// Operations with fields need a blank after their name; `UNSUB\r\n` is an unknown operation.
fn needs_blank(rest: &[u8]) -> Result<&[u8], ParseError> {
    match rest.first() {
        Some(&b) if is_blank(b) => Ok(rest),
        _ => Err(ParseError::UnknownOp),
    }
}

fn trim_blank(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s {
        if !is_blank(*b) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., b] = s {
        if !is_blank(*b) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits the fields of a control line into a fixed array, without allocating.
fn split_args<'a>(mut rest: &'a [u8], op: &'static str) -> Result<([&'a [u8]; MAX_ARGS], usize), ParseError> {
    let mut args: [&[u8]; MAX_ARGS] = [&[]; MAX_ARGS];
    let mut n = 0;
    while let Ok((next, arg)) = field(rest) {
        if n == MAX_ARGS {
            return Err(ParseError::BadArgs(op));
        }
        args[n] = arg;
        n += 1;
        rest = next;
    }
    Ok((args, n))
}

/// A decimal size as nats-server reads it: digits only, at most 9 of them.
pub fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> Parser {
        Parser::new(4096, 1024 * 1024)
    }

    fn one(input: &[u8]) -> Result<Option<(ClientOp<'_>, usize)>, ParseError> {
        parser().parse(input)
    }

    #[test]
    fn simple_ops_case_insensitive() {
        assert_eq!(one(b"PING\r\n"), Ok(Some((ClientOp::Ping, 6))));
        assert_eq!(one(b"ping\n"), Ok(Some((ClientOp::Ping, 5))));
        assert_eq!(one(b"PONG\r\n"), Ok(Some((ClientOp::Pong, 6))));
        assert_eq!(one(b"+OK\r\n"), Ok(Some((ClientOp::Ok, 5))));
        assert_eq!(one(b"PING"), Ok(None));
    }

    #[test]
    fn pub_with_and_without_reply() {
        let (op, used) = one(b"PUB foo 5\r\nhello\r\nPING\r\n").unwrap().unwrap();
        assert_eq!(used, 18);
        assert_eq!(
            op,
            ClientOp::Pub(Publish {
                subject: b"foo",
                reply: None,
                header_len: 0,
                payload: b"hello",
                has_headers: false
            })
        );
        let (op, _) = one(b"pub\tfoo   bar\t5 \r\nhello\r\n").unwrap().unwrap();
        let ClientOp::Pub(p) = op else { panic!() };
        assert_eq!(p.reply, Some(&b"bar"[..]));
    }

    #[test]
    fn hpub() {
        let input = b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
        let (op, used) = one(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        let ClientOp::Pub(p) = op else { panic!() };
        assert_eq!((p.header_len, p.payload.len(), p.has_headers), (12, 14, true));
        assert_eq!(one(b"HPUB foo 3 2\r\n"), Err(ParseError::BadArgs("HPUB")));
    }

    #[test]
    fn sub_unsub() {
        let (op, _) = one(b"SUB foo.* q 7\r\n").unwrap().unwrap();
        assert_eq!(op, ClientOp::Sub { subject: b"foo.*", queue: Some(b"q"), sid: b"7" });
        let (op, _) = one(b"UNSUB 7 3\r\n").unwrap().unwrap();
        assert_eq!(op, ClientOp::Unsub { sid: b"7", max: Some(3) });
        let (op, _) = one(b"UNSUB 7 x\r\n").unwrap().unwrap();
        assert_eq!(op, ClientOp::Unsub { sid: b"7", max: None });
        assert_eq!(one(b"UNSUB\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"SUB a\r\n"), Err(ParseError::BadArgs("SUB")));
        assert_eq!(one(b"SUB a b c d\r\n"), Err(ParseError::BadArgs("SUB")));
    }

    #[test]
    fn errors() {
        assert_eq!(one(b"FOO\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b" PING\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"PUB a -1\r\n"), Err(ParseError::BadArgs("PUB")));
        assert_eq!(one(b"PUB a 99999999999999999999\r\n"), Err(ParseError::BadArgs("PUB")));
        assert_eq!(one(b"PUB a 2000000\r\n"), Err(ParseError::MaxPayload));
        assert_eq!(one(b"PUB a 2\r\nabc\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"PUB s 2\r\nhi\n"), Err(ParseError::UnknownOp), "at the first wrong byte");
        assert_eq!(one(b"PUB s 3\r\nhi\r\n"), Err(ParseError::UnknownOp), "at the first wrong byte");
        assert_eq!(one(b"PUB s 2\r\nhi\r"), Ok(None));
        let long = [b'a'; 5000];
        assert_eq!(one(&long), Err(ParseError::UnknownOp));
        let mut sub = b"SUB ".to_vec();
        sub.extend_from_slice(&[b's'; 5000]);
        assert_eq!(one(&sub), Err(ParseError::ControlLineTooLong), "no line end yet");
        assert_eq!(one(b"SUBX a 1\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"XYZ"), Err(ParseError::UnknownOp), "known at once, as nats-server");
        assert_eq!(one(b"PU"), Ok(None));
        assert_eq!(one(b"PINGX"), Ok(None), "a PING once the line ends");
        assert_eq!(one(b"\r\n"), Err(ParseError::UnknownOp), "an empty line");
        assert_eq!(one(b"\r"), Ok(None));
    }

    #[test]
    fn control_line_limit_counts_arguments_only() {
        let mut p = Parser::new(64, 1024);
        let line = format!("SUB {} 1\r\n", "s".repeat(62));
        assert!(matches!(p.parse(line.as_bytes()), Ok(Some((ClientOp::Sub { .. }, _)))));
        let line = format!("SUB {} 1\r\n", "s".repeat(63));
        assert_eq!(p.parse(line.as_bytes()), Err(ParseError::ControlLineTooLong));
        let line = format!("SUB{}a 1\r\n", " ".repeat(70));
        assert!(matches!(p.parse(line.as_bytes()), Ok(Some((ClientOp::Sub { .. }, _)))));
        let line = format!("SUB {} 1\r", "s".repeat(62));
        assert_eq!(p.parse(line.as_bytes()), Ok(None), "at the limit, waiting for the LF");
        let line = format!("PING {}\r\n", "x".repeat(100));
        assert_eq!(p.parse(line.as_bytes()), Ok(Some((ClientOp::Ping, line.len()))));
    }

    #[test]
    fn payload_split_across_reads() {
        let input = b"PUB foo 10\r\n0123456789\r\n";
        let mut p = parser();
        for cut in 0..input.len() {
            let mut p2 = parser();
            assert_eq!(p2.parse(&input[..cut]), Ok(None), "cut at {cut}");
            let (op, used) = p2.parse(input).unwrap().unwrap();
            assert_eq!(used, input.len());
            assert!(matches!(op, ClientOp::Pub(Publish { payload: b"0123456789", .. })));
        }
        assert_eq!(p.parse(&input[..15]), Ok(None));
        assert_eq!(p.needed(), input.len());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"01"), Some(1));
        assert_eq!(parse_size(b"+1"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"1234567890"), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// An owned copy of an operation, to compare runs over differently split input.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Op(String),
        Pub { subject: Vec<u8>, reply: Option<Vec<u8>>, header_len: usize, payload: Vec<u8> },
    }

    fn own(op: &ClientOp<'_>) -> Owned {
        match op {
            ClientOp::Pub(p) => Owned::Pub {
                subject: p.subject.to_vec(),
                reply: p.reply.map(<[u8]>::to_vec),
                header_len: p.header_len,
                payload: p.payload.to_vec(),
            },
            other => Owned::Op(format!("{other:?}")),
        }
    }

    /// Feeds `input` in chunks the way the read loop does: append, parse all, drop what was used.
    fn run(input: &[u8], cuts: &[usize]) -> (Vec<Owned>, Option<ParseError>) {
        let mut parser = Parser::new(4096, 64 * 1024);
        let mut buf: Vec<u8> = Vec::new();
        let mut ops = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        for end in points {
            if end < start {
                continue;
            }
            buf.extend_from_slice(&input[start..end]);
            start = end;
            loop {
                match parser.parse(&buf) {
                    Ok(Some((op, used))) => {
                        ops.push(own(&op));
                        buf.drain(..used);
                    }
                    Ok(None) => break,
                    Err(e) => return (ops, Some(e)),
                }
            }
        }
        (ops, None)
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_]{1,8}"
    }

    fn op() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"PING\r\n".to_vec()),
            Just(b"pong\r\n".to_vec()),
            (token(), token()).prop_map(|(s, sid)| format!("SUB {s}.> {sid}\r\n").into_bytes()),
            (token(), token(), token()).prop_map(|(s, q, sid)| format!("sub {s} {q}\t{sid}\r\n").into_bytes()),
            (token(), 0u32..5).prop_map(|(sid, max)| format!("UNSUB {sid} {max}\r\n").into_bytes()),
            (token(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(s, body)| {
                let mut v = format!("PUB {s} {}\r\n", body.len()).into_bytes();
                v.extend_from_slice(&body);
                v.extend_from_slice(b"\r\n");
                v
            }),
            (token(), token(), proptest::collection::vec(any::<u8>(), 0..100)).prop_map(|(s, r, body)| {
                let hdr = b"NATS/1.0\r\nA: b\r\n\r\n";
                let mut v = format!("HPUB {s} {r} {} {}\r\n", hdr.len(), hdr.len() + body.len()).into_bytes();
                v.extend_from_slice(hdr);
                v.extend_from_slice(&body);
                v.extend_from_slice(b"\r\n");
                v
            }),
            Just(b"CONNECT {\"verbose\":false}\r\n".to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// However the stream is cut into reads, the same operations come out.
        #[test]
        fn split_reads_parse_the_same(ops in proptest::collection::vec(op(), 1..20), cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let input: Vec<u8> = ops.concat();
            let (whole, err) = run(&input, &[]);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(whole.len(), ops.len());
            let (split, err) = run(&input, &cuts);
            prop_assert!(err.is_none());
            prop_assert_eq!(whole, split);
        }

        /// Arbitrary bytes never panic, and an error is final.
        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
            let _ = run(&input, &cuts);
        }
    }
}
