//! The server-to-server protocols, as one server reads another's bytes: INFO, CONNECT, PING,
//! PONG, +OK, -ERR, and for routes `RS+`/`RS-` (interest, with accounts and queue weights) and
//! `RMSG`/`HMSG` (messages with an account and the queue groups they were picked for); for leaf
//! nodes the same without the account (`LS+`/`LS-`, `LMSG`/`HMSG`), since a leaf link is bound
//! to one account. Borrowed from the read buffer, no I/O; operation names are case-insensitive
//! and runs of spaces or tabs separate arguments, as in nats-server.

/// The longest control line taken from a route (a message's queue list can be long).
pub const MAX_ROUTE_LINE: usize = 64 * 1024;

/// Which of the two protocols a link speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A route: interest and messages name their account.
    Route,
    /// A leaf node link: bound to one account, named nowhere.
    Leaf,
}

/// One operation from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp<'a> {
    /// INFO and its JSON.
    Info(&'a [u8]),
    /// CONNECT and its JSON.
    Connect(&'a [u8]),
    /// PING.
    Ping,
    /// PONG.
    Pong,
    /// +OK.
    Ok,
    /// -ERR and its text.
    Err(&'a [u8]),
    /// `RS+ <account> <subject> [<queue> <weight>]`, or `LS+ <subject> [<queue> <weight>]`.
    Sub {
        /// The account (empty on a leaf link).
        account: &'a [u8],
        /// The subject filter.
        subject: &'a [u8],
        /// The queue group and its weight (the peer's member count).
        queue: Option<(&'a [u8], u32)>,
    },
    /// `RS- <account> <subject> [<queue>]`, or `LS- <subject> [<queue>]`.
    Unsub {
        /// The account (empty on a leaf link).
        account: &'a [u8],
        /// The subject filter.
        subject: &'a [u8],
        /// The queue group.
        queue: Option<&'a [u8]>,
    },
    /// `RMSG`, `LMSG` or `HMSG`.
    Msg(RoutedMsg<'a>),
}

/// A message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMsg<'a> {
    /// The account it was published in (empty on a leaf link).
    pub account: &'a [u8],
    /// Its subject.
    pub subject: &'a [u8],
    /// Its reply subject.
    pub reply: Option<&'a [u8]>,
    /// The queue groups it was picked for here, separated by spaces (empty: none).
    pub queues: &'a [u8],
    /// Header bytes at the start of `payload` (0 for RMSG).
    pub header_len: usize,
    /// Headers and body.
    pub payload: &'a [u8],
}

impl RoutedMsg<'_> {
    /// Whether the peer picked this message for queue group `name` here.
    pub fn for_queue(&self, name: &[u8]) -> bool {
        tokens(self.queues).any(|q| q == name)
    }
}

/// Why a peer's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteParseError {
    /// A control line longer than [`MAX_ROUTE_LINE`].
    #[error("maximum control line exceeded")]
    LineTooLong,
    /// An operation nats-server's route protocol does not have (or one Courier did not ask
    /// for, as LS+/LMSG without `lnoc`).
    #[error("unknown route protocol operation")]
    UnknownOp,
    /// Arguments that do not make the operation.
    #[error("processing {0}")]
    BadArgs(&'static str),
    /// A payload larger than the server takes.
    #[error("maximum payload exceeded")]
    TooLarge,
    /// The payload is not followed by CRLF.
    #[error("message payload not terminated")]
    BadPayload,
}

fn tokens(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|b| *b == b' ' || *b == b'\t').filter(|t| !t.is_empty())
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|b| *b != b' ' && *b != b'\t').map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Splits the first argument off `s`.
fn first(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let end = s.iter().position(|b| *b == b' ' || *b == b'\t').unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// Splits the last argument off `s`.
fn last(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let start = s.iter().rposition(|b| *b == b' ' || *b == b'\t').map_or(0, |p| p + 1);
    Some((&s[..start], &s[start..]))
}

/// Splits the account off `s` on a route; a leaf link names none.
fn account_of(s: &[u8], leaf: bool) -> Option<(&[u8], &[u8])> {
    if leaf {
        Some((&b""[..], s))
    } else {
        first(s)
    }
}

fn number(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses the operation at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// operation and the bytes it took. Payloads over `max_payload` are refused.
pub fn parse(
    buf: &[u8],
    max_payload: usize,
    dialect: Dialect,
) -> Result<Option<(RouteOp<'_>, usize)>, RouteParseError> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_ROUTE_LINE { Err(RouteParseError::LineTooLong) } else { Ok(None) };
    };
    if nl > MAX_ROUTE_LINE {
        return Err(RouteParseError::LineTooLong);
    }
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let after = nl + 1;
    let (op, args) = match first(line) {
        Some(x) => x,
        None => return Err(RouteParseError::UnknownOp),
    };
    let simple = |o| Ok(Some((o, after)));
    let leaf = dialect == Dialect::Leaf;
    let upper = op.to_ascii_uppercase();
    // `RS±`/`RMSG` on a route, `LS±`/`LMSG` on a leaf link, `HMSG` on both.
    let fits = |u: &[u8]| u == b"HMSG" || (u[0] == b'L') == leaf;
    match upper.as_slice() {
        b"PING" => simple(RouteOp::Ping),
        b"PONG" => simple(RouteOp::Pong),
        b"+OK" => simple(RouteOp::Ok),
        b"-ERR" => simple(RouteOp::Err(trim(args))),
        b"INFO" => simple(RouteOp::Info(trim(args))),
        b"CONNECT" => simple(RouteOp::Connect(trim(args))),
        b"RS+" | b"LS+" if fits(&upper) => {
            let what = if leaf { "LS+" } else { "RS+" };
            let (account, rest) = account_of(args, leaf).ok_or(RouteParseError::BadArgs(what))?;
            let (subject, rest) = first(rest).ok_or(RouteParseError::BadArgs(what))?;
            let queue = match first(rest) {
                None => None,
                Some((queue, rest)) => {
                    let weight = match first(rest) {
                        Some((w, tail)) if trim(tail).is_empty() => number(w).ok_or(RouteParseError::BadArgs(what))?,
                        None => 1,
                        Some(_) => return Err(RouteParseError::BadArgs(what)),
                    };
                    Some((queue, u32::try_from(weight).unwrap_or(u32::MAX)))
                }
            };
            simple(RouteOp::Sub { account, subject, queue })
        }
        b"RS-" | b"LS-" if fits(&upper) => {
            let what = if leaf { "LS-" } else { "RS-" };
            let (account, rest) = account_of(args, leaf).ok_or(RouteParseError::BadArgs(what))?;
            let (subject, rest) = first(rest).ok_or(RouteParseError::BadArgs(what))?;
            let queue = first(rest).map(|(q, _)| q);
            simple(RouteOp::Unsub { account, subject, queue })
        }
        b"RMSG" | b"LMSG" | b"HMSG" if fits(&upper) => {
            let headers = upper == b"HMSG";
            let what = match (headers, leaf) {
                (true, _) => "HMSG",
                (false, true) => "LMSG",
                (false, false) => "RMSG",
            };
            let (account, rest) = account_of(args, leaf).ok_or(RouteParseError::BadArgs(what))?;
            let (subject, rest) = first(rest).ok_or(RouteParseError::BadArgs(what))?;
            let (rest, total) = last(rest).ok_or(RouteParseError::BadArgs(what))?;
            let total = number(total).ok_or(RouteParseError::BadArgs(what))?;
            let (middle, header_len) = if headers {
                let (rest, h) = last(rest).ok_or(RouteParseError::BadArgs(what))?;
                (rest, number(h).ok_or(RouteParseError::BadArgs(what))?)
            } else {
                (rest, 0)
            };
            if header_len > total {
                return Err(RouteParseError::BadArgs(what));
            }
            let (reply, queues) = match first(middle) {
                None => (None, &b""[..]),
                Some((b"+", rest)) => {
                    let (reply, queues) = first(rest).ok_or(RouteParseError::BadArgs(what))?;
                    (Some(reply), trim(queues))
                }
                Some((b"|", queues)) => (None, trim(queues)),
                Some((reply, tail)) if trim(tail).is_empty() => (Some(reply), &b""[..]),
                Some(_) => return Err(RouteParseError::BadArgs(what)),
            };
            if total > max_payload {
                return Err(RouteParseError::TooLarge);
            }
            let end = after + total;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RouteParseError::BadPayload);
            }
            let msg = RoutedMsg { account, subject, reply, queues, header_len, payload: &buf[after..end] };
            Ok(Some((RouteOp::Msg(msg), end + 2)))
        }
        _ => Err(RouteParseError::UnknownOp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> RouteOp<'_> {
        let (op, used) = parse(bytes, 1 << 20, Dialect::Route).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "{}", String::from_utf8_lossy(bytes));
        op
    }

    #[test]
    fn interest_as_nats_server_sends_it() {
        assert_eq!(one(b"RS+ $G foo\r\n"), RouteOp::Sub { account: b"$G", subject: b"foo", queue: None });
        assert_eq!(
            one(b"RS+ $G foo q1 2\r\n"),
            RouteOp::Sub { account: b"$G", subject: b"foo", queue: Some((b"q1", 2)) }
        );
        assert_eq!(one(b"rs-  $G\tbar.*\r\n"), RouteOp::Unsub { account: b"$G", subject: b"bar.*", queue: None });
        assert_eq!(one(b"RS- $G foo q1\r\n"), RouteOp::Unsub { account: b"$G", subject: b"foo", queue: Some(b"q1") });
        assert_eq!(parse(b"RS+ $G\r\n", 10, Dialect::Route), Err(RouteParseError::BadArgs("RS+")));
    }

    #[test]
    fn messages_in_every_form_nats_server_writes() {
        let m = |b: &'static [u8]| match one(b) {
            RouteOp::Msg(m) => m,
            other => panic!("{other:?}"),
        };
        let plain = m(b"RMSG $G plain 3\r\nabc\r\n");
        assert_eq!((plain.reply, plain.queues, plain.payload), (None, &b""[..], &b"abc"[..]));
        assert_eq!(m(b"RMSG $G plain _INBOX.x 3\r\nabc\r\n").reply, Some(&b"_INBOX.x"[..]));
        let q = m(b"RMSG $G foo | q1 5\r\nhello\r\n");
        assert_eq!((q.reply, q.queues), (None, &b"q1"[..]));
        assert!(q.for_queue(b"q1") && !q.for_queue(b"q2"));
        let qr = m(b"RMSG $G foo + _INBOX.r1 q1 q2 2\r\nhi\r\n");
        assert_eq!((qr.reply, qr.queues), (Some(&b"_INBOX.r1"[..]), &b"q1 q2"[..]));
        let h = m(b"HMSG $G foo + _INBOX.r2 q1 20 22\r\nNATS/1.0\r\nX-A: 1\r\n\r\nok\r\n");
        assert_eq!((h.header_len, h.payload.len(), h.reply), (20, 22, Some(&b"_INBOX.r2"[..])));
        let h = m(b"HMSG $G foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        assert_eq!((h.header_len, h.reply), (12, None));
    }

    #[test]
    fn leaf_links_as_nats_server_writes_them() {
        let leaf = |b: &'static [u8]| {
            let (op, used) = parse(b, 1 << 20, Dialect::Leaf).unwrap().unwrap();
            assert_eq!(used, b.len());
            op
        };
        assert_eq!(leaf(b"LS+ lsub\r\n"), RouteOp::Sub { account: b"", subject: b"lsub", queue: None });
        assert_eq!(leaf(b"LS+ lq g2 1\r\n"), RouteOp::Sub { account: b"", subject: b"lq", queue: Some((b"g2", 1)) });
        assert_eq!(leaf(b"LS- lq g2\r\n"), RouteOp::Unsub { account: b"", subject: b"lq", queue: Some(b"g2") });
        let RouteOp::Msg(m) = leaf(b"LMSG hq + _INBOX.z grp 2\r\nqq\r\n") else { panic!() };
        assert_eq!(
            (m.subject, m.reply, m.queues, m.payload),
            (&b"hq"[..], Some(&b"_INBOX.z"[..]), &b"grp"[..], &b"qq"[..])
        );
        let RouteOp::Msg(m) = leaf(b"LMSG lq | g2 1\r\nq\r\n") else { panic!() };
        assert_eq!((m.reply, m.queues), (None, &b"g2"[..]));
        let RouteOp::Msg(m) = leaf(b"HMSG hsub 20 22\r\nNATS/1.0\r\nX-A: 1\r\n\r\nok\r\n") else { panic!() };
        assert_eq!((m.account, m.subject, m.header_len), (&b""[..], &b"hsub"[..], 20));
        assert_eq!(parse(b"RS+ $G foo\r\n", 100, Dialect::Leaf), Err(RouteParseError::UnknownOp));
        assert_eq!(parse(b"RMSG $G a 2\r\nhi\r\n", 100, Dialect::Leaf), Err(RouteParseError::UnknownOp));
        assert_eq!(parse(b"LS+\r\n", 100, Dialect::Leaf), Err(RouteParseError::BadArgs("LS+")));
    }

    #[test]
    fn incomplete_and_refused() {
        assert_eq!(parse(b"RMSG $G a 5\r\nab", 100, Dialect::Route), Ok(None));
        assert_eq!(parse(b"PIN", 100, Dialect::Route), Ok(None));
        assert_eq!(parse(b"RMSG $G a 5\r\nabcdeXY", 100, Dialect::Route), Err(RouteParseError::BadPayload));
        assert_eq!(parse(b"RMSG $G a 500\r\n", 100, Dialect::Route), Err(RouteParseError::TooLarge));
        assert_eq!(parse(b"HMSG $G a 9 5\r\n", 100, Dialect::Route), Err(RouteParseError::BadArgs("HMSG")));
        assert_eq!(parse(b"LMSG a 0 2\r\nhi\r\n", 100, Dialect::Route), Err(RouteParseError::UnknownOp));
        assert_eq!(parse(b"RMSG $G a x\r\n", 100, Dialect::Route), Err(RouteParseError::BadArgs("RMSG")));
        assert_eq!(one(b"INFO {\"a\":1} \r\n"), RouteOp::Info(b"{\"a\":1}"));
        assert_eq!(one(b"-ERR 'Stale Connection'\r\n"), RouteOp::Err(b"'Stale Connection'"));
    }
}
