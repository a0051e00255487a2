//! Encoders for what the server sends, writing straight into an outbound buffer.

use bytes::{BufMut, BytesMut};

/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `+OK\r\n`, the verbose-mode acknowledgement.
pub const OK: &[u8] = b"+OK\r\n";
/// The header block of a no-responders status message, as nats-server 2.9 sends it.
pub const NO_RESPONDERS_HEADER: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Appends `-ERR '<text>'\r\n`.
pub fn err(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 9);
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

/// One message to deliver, as the publisher sent it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The subject it was published to.
    pub subject: &'a [u8],
    /// Reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// Bytes of header block at the start of `payload` (0: none).
    pub header_len: usize,
    /// Header block and body.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// Bytes this message takes in a consumer's buffer, an upper bound used for reserving.
    #[inline]
    pub fn encoded_len_hint(&self, sid: &[u8]) -> usize {
        // "HMSG " + subject + sid + reply + two sizes + spaces + CRLFs.
        self.subject.len() + sid.len() + self.reply.map_or(0, <[u8]>::len) + self.payload.len() + 48
    }
}

/// Appends the message as `MSG` or, when the consumer understands headers and the message has
/// them, `HMSG`. A consumer without header support gets the body only.
#[inline]
pub fn msg(out: &mut BytesMut, m: &Message<'_>, sid: &[u8], with_headers: bool) {
    out.reserve(m.encoded_len_hint(sid));
    let hdr = with_headers && m.header_len > 0;
    let body = if hdr || m.header_len == 0 { m.payload } else { &m.payload[m.header_len..] };
    out.put_slice(if hdr { b"HMSG " } else { b"MSG " });
    out.put_slice(m.subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = m.reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    sizes_and_body(out, hdr.then_some(m.header_len), body);
}

/// Ends a message line: the header size when there are headers, the total size, CRLF, the
/// payload and CRLF.
#[inline]
fn sizes_and_body(out: &mut BytesMut, header_len: Option<usize>, body: &[u8]) {
    let mut num = itoa::Buffer::new();
    if let Some(h) = header_len {
        out.put_slice(num.format(h).as_bytes());
        out.put_u8(b' ');
    }
    out.put_slice(num.format(body.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// How a message crosses to another server: over a route (with the account it belongs to) or
/// over a leaf connection (bound to one account, so none is named).
#[derive(Debug, Clone, Copy)]
pub enum Hop<'a> {
    /// `RMSG <account> ...`.
    Route {
        /// The account the message was published in.
        account: &'a [u8],
    },
    /// `LMSG ...`.
    Leaf,
}

/// Bytes an interest line takes, an upper bound used for reserving.
#[inline]
pub fn interest_len_hint(hop: Hop<'_>, subject: &[u8], queue: Option<&[u8]>) -> usize {
    let account = match hop {
        Hop::Route { account } => account.len() + 1,
        Hop::Leaf => 0,
    };
    4 + account + subject.len() + queue.map_or(0, |q| q.len() + 12) + 2
}

/// Appends interest for another server: `RS+`/`RS-` with the account on a route, `LS+`/`LS-`
/// on a leaf link; `gained` picks `+`. A queue group's `+` carries its weight.
pub fn interest(out: &mut BytesMut, hop: Hop<'_>, gained: bool, subject: &[u8], queue: Option<(&[u8], Option<u32>)>) {
    out.put_slice(match (hop, gained) {
        (Hop::Route { .. }, true) => b"RS+ ",
        (Hop::Route { .. }, false) => b"RS- ",
        (Hop::Leaf, true) => b"LS+ ",
        (Hop::Leaf, false) => b"LS- ",
    });
    if let Hop::Route { account } = hop {
        out.put_slice(account);
        out.put_u8(b' ');
    }
    out.put_slice(subject);
    if let Some((q, weight)) = queue {
        out.put_u8(b' ');
        out.put_slice(q);
        if let (Some(w), true) = (weight, gained) {
            out.put_u8(b' ');
            out.put_slice(itoa::Buffer::new().format(w).as_bytes());
        }
    }
    out.put_slice(b"\r\n");
}

/// Bytes a routed message takes, an upper bound used for reserving.
#[inline]
pub fn routed_len_hint<Q: AsRef<[u8]>>(hop: Hop<'_>, m: &Message<'_>, queues: &[Q]) -> usize {
    let account = match hop {
        Hop::Route { account } => account.len() + 1,
        Hop::Leaf => 0,
    };
    account + queues.iter().map(|q| q.as_ref().len() + 1).sum::<usize>() + m.encoded_len_hint(b"")
}

/// Appends a message for another server: `RMSG`/`LMSG`, or `HMSG` in the same layout when the
/// peer understands headers and the message has them. With queue groups, the reply (if any) is
/// marked by `+` and their absence by `|`, then the group names, as nats-server writes them.
pub fn routed<Q: AsRef<[u8]>>(out: &mut BytesMut, hop: Hop<'_>, m: &Message<'_>, queues: &[Q], with_headers: bool) {
    out.reserve(routed_len_hint(hop, m, queues));
    let hdr = with_headers && m.header_len > 0;
    let body = if hdr || m.header_len == 0 { m.payload } else { &m.payload[m.header_len..] };
    out.put_slice(match (hdr, hop) {
        (true, _) => b"HMSG ",
        (false, Hop::Route { .. }) => b"RMSG ",
        (false, Hop::Leaf) => b"LMSG ",
    });
    if let Hop::Route { account } = hop {
        out.put_slice(account);
        out.put_u8(b' ');
    }
    out.put_slice(m.subject);
    out.put_u8(b' ');
    if queues.is_empty() {
        if let Some(reply) = m.reply {
            out.put_slice(reply);
            out.put_u8(b' ');
        }
    } else {
        match m.reply {
            Some(reply) => {
                out.put_slice(b"+ ");
                out.put_slice(reply);
                out.put_u8(b' ');
            }
            None => out.put_slice(b"| "),
        }
        for q in queues {
            out.put_slice(q.as_ref());
            out.put_u8(b' ');
        }
    }
    sizes_and_body(out, hdr.then_some(m.header_len), body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_msg_and_hmsg() {
        let mut out = BytesMut::new();
        let m = Message { subject: b"a.b", reply: Some(b"r"), header_len: 0, payload: b"hi" };
        msg(&mut out, &m, b"1", true);
        assert_eq!(&out[..], b"MSG a.b 1 r 2\r\nhi\r\n");
        out.clear();
        let m = Message { subject: b"a", reply: None, header_len: 12, payload: b"NATS/1.0\r\n\r\nhi" };
        msg(&mut out, &m, b"9", true);
        assert_eq!(&out[..], b"HMSG a 9 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        out.clear();
        msg(&mut out, &m, b"9", false);
        assert_eq!(&out[..], b"MSG a 9 2\r\nhi\r\n");
        out.clear();
        err(&mut out, "Invalid Subject");
        assert_eq!(&out[..], b"-ERR 'Invalid Subject'\r\n");
    }

    /// The layouts nats-server 2.9.10 was captured sending over routes and leaf connections.
    #[test]
    fn encodes_routed_messages() {
        let route = Hop::Route { account: b"$G" };
        let case = |hop, subject: &'static [u8], reply, header_len, payload: &'static [u8], queues: &[&[u8]], h| {
            let mut out = BytesMut::new();
            routed(&mut out, hop, &Message { subject, reply, header_len, payload }, queues, h);
            assert!(out.len() <= routed_len_hint(hop, &Message { subject, reply, header_len, payload }, queues));
            out
        };
        assert_eq!(&case(route, b"plain", None, 0, b"abc", &[], true)[..], b"RMSG $G plain 3\r\nabc\r\n");
        assert_eq!(
            &case(route, b"plain", Some(b"_INBOX.x"), 0, b"abc", &[], true)[..],
            b"RMSG $G plain _INBOX.x 3\r\nabc\r\n"
        );
        assert_eq!(&case(route, b"foo", None, 0, b"hello", &[b"q1"], true)[..], b"RMSG $G foo | q1 5\r\nhello\r\n");
        assert_eq!(
            &case(route, b"foo", Some(b"_INBOX.r1"), 0, b"hi", &[b"q1"], true)[..],
            b"RMSG $G foo + _INBOX.r1 q1 2\r\nhi\r\n"
        );
        let hdr: &[u8] = b"NATS/1.0\r\nX-A: 1\r\n\r\nok";
        assert_eq!(
            &case(route, b"foo", Some(b"_INBOX.r2"), 20, hdr, &[b"q1"], true)[..],
            b"HMSG $G foo + _INBOX.r2 q1 20 22\r\nNATS/1.0\r\nX-A: 1\r\n\r\nok\r\n"
        );
        assert_eq!(&case(route, b"foo", None, 20, hdr, &[], false)[..], b"RMSG $G foo 2\r\nok\r\n");
        assert_eq!(&case(Hop::Leaf, b"hsub", None, 0, b"hi", &[], true)[..], b"LMSG hsub 2\r\nhi\r\n");
        let line = |hop, gained, queue| {
            let mut out = BytesMut::new();
            interest(&mut out, hop, gained, b"s.>", queue);
            out
        };
        let route = Hop::Route { account: b"$G" };
        assert_eq!(&line(route, true, None)[..], b"RS+ $G s.>\r\n");
        assert_eq!(&line(route, true, Some((&b"q"[..], Some(3))))[..], b"RS+ $G s.> q 3\r\n");
        assert_eq!(&line(Hop::Leaf, false, Some((&b"q"[..], None)))[..], b"LS- s.> q\r\n");
        assert_eq!(&line(Hop::Leaf, true, None)[..], b"LS+ s.>\r\n");
        assert_eq!(
            &case(Hop::Leaf, b"hq", Some(b"_INBOX.z"), 0, b"qq", &[b"grp"], true)[..],
            b"LMSG hq + _INBOX.z grp 2\r\nqq\r\n"
        );
        assert_eq!(&case(Hop::Leaf, b"lq", None, 0, b"q", &[b"g2"], true)[..], b"LMSG lq | g2 1\r\nq\r\n");
        assert_eq!(
            &case(Hop::Leaf, b"hsub", None, 20, hdr, &[], true)[..],
            &b"HMSG hsub 20 22\r\nNATS/1.0\r\nX-A: 1\r\n\r\nok\r\n"[..]
        );
    }
}
