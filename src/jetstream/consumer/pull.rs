//! Pull requests: what a `CONSUMER.MSG.NEXT` request asks for, the queue of requests waiting
//! for messages, and the status messages nats-server answers them with.

use std::collections::VecDeque;

use serde::Deserialize;

/// A pull request as the client sends it (JSON form).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NextRequest {
    batch: i64,
    expires: i64,
    max_bytes: i64,
    no_wait: bool,
    idle_heartbeat: i64,
}

/// A pull request waiting for messages.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Where the messages go.
    pub reply: Vec<u8>,
    /// Messages still wanted.
    pub batch: i64,
    /// Bytes still allowed (0: no limit).
    pub max_bytes: i64,
    /// Messages sent to it so far.
    pub delivered: i64,
    /// When it expires, ns since the epoch (0: never).
    pub expires: i64,
    /// Answer at once when there is nothing.
    pub no_wait: bool,
    /// Heartbeat interval, ns (0: none).
    pub heartbeat: i64,
    /// When the next heartbeat is due.
    pub next_heartbeat: i64,
}

/// Reads a MSG.NEXT body at `now`: empty (one message), a bare number, or JSON. `Err` is the
/// text of the 400 status.
pub fn parse_request(body: &[u8], reply: &[u8], now: i64) -> Result<Waiting, String> {
    let req = trim(body);
    let mut w = Waiting {
        reply: reply.to_vec(),
        batch: 1,
        max_bytes: 0,
        delivered: 0,
        expires: 0,
        no_wait: false,
        heartbeat: 0,
        next_heartbeat: 0,
    };
    if req.is_empty() {
        return Ok(w);
    }
    if req[0] == b'{' {
        let r: NextRequest = serde_json::from_slice(req).map_err(|e| format!("Bad Request - {}", go_json_error(&e)))?;
        if r.idle_heartbeat > 0 && r.idle_heartbeat.saturating_mul(2) > r.expires {
            return Err("Bad Request - heartbeat value too large".into());
        }
        w.batch = r.batch;
        w.max_bytes = r.max_bytes;
        w.no_wait = r.no_wait;
        w.heartbeat = r.idle_heartbeat.max(0);
        if r.idle_heartbeat > 0 {
            w.next_heartbeat = now + r.idle_heartbeat;
        }
        if r.expires != 0 {
            w.expires = now.saturating_add(r.expires);
        }
        return Ok(w);
    }
    if let Ok(n) = std::str::from_utf8(req).unwrap_or("x").parse::<i64>() {
        w.batch = n;
    }
    Ok(w)
}

/// What Go's JSON decoder says about a bad request, as near as serde can tell it.
fn go_json_error(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        "invalid character in request".into()
    } else {
        "json: cannot unmarshal request".into()
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// A status message with no other headers: `NATS/1.0 404 No Messages\r\n\r\n`.
pub fn status(code: u16, text: &str) -> Vec<u8> {
    format!("NATS/1.0 {code} {text}\r\n\r\n").into_bytes()
}

/// A status message that says what the request still wanted.
pub fn status_with_pending(code: u16, text: &str, msgs: i64, bytes: i64) -> Vec<u8> {
    format!("NATS/1.0 {code} {text}\r\nNats-Pending-Messages: {msgs}\r\nNats-Pending-Bytes: {bytes}\r\n\r\n")
        .into_bytes()
}

/// The idle heartbeat: `Nats-Last-Consumer` and `Nats-Last-Stream` say where delivery stands,
/// and `Nats-Consumer-Stalled` names the flow control reply that is awaited.
pub fn heartbeat(last_dseq: u64, last_sseq: u64, stalled: Option<&str>) -> Vec<u8> {
    let mut h =
        format!("NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: {last_dseq}\r\nNats-Last-Stream: {last_sseq}\r\n");
    if let Some(fc) = stalled {
        h.push_str("Nats-Consumer-Stalled: ");
        h.push_str(fc);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// The requests waiting, in the order they are served (round robin, as nats-server).
#[derive(Debug, Default)]
pub struct WaitQueue {
    reqs: VecDeque<Waiting>,
}

impl WaitQueue {
    /// How many wait.
    pub fn len(&self) -> usize {
        self.reqs.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Adds a request at the back.
    pub fn push(&mut self, w: Waiting) {
        self.reqs.push_back(w);
    }

    /// The request to serve next.
    pub fn front_mut(&mut self) -> Option<&mut Waiting> {
        self.reqs.front_mut()
    }

    /// Takes the front request away.
    pub fn pop_front(&mut self) -> Option<Waiting> {
        self.reqs.pop_front()
    }

    /// After a delivery to the front request: drops it when it is done, else moves it to the
    /// back so that the next request gets the next message.
    pub fn served(&mut self) {
        if let Some(w) = self.reqs.pop_front() {
            if w.batch > 0 && w.max_bytes >= 0 {
                self.reqs.push_back(w);
            }
        }
    }

    /// Messages the waiting requests still want.
    pub fn wanted(&self) -> i64 {
        self.reqs.iter().map(|w| w.batch).sum()
    }

    /// Takes out the requests `done` says are finished.
    pub fn take_where(&mut self, mut done: impl FnMut(&Waiting) -> bool) -> Vec<Waiting> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.reqs.len());
        for w in self.reqs.drain(..) {
            if done(&w) {
                out.push(w);
            } else {
                keep.push_back(w);
            }
        }
        self.reqs = keep;
        out
    }

    /// Every request, for heartbeats and timers.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Waiting> {
        self.reqs.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_as_nats_server() {
        let w = parse_request(b"", b"r", 0).unwrap();
        assert_eq!((w.batch, w.expires, w.no_wait), (1, 0, false));
        assert_eq!(parse_request(b" 10 ", b"r", 0).unwrap().batch, 10);
        let w = parse_request(br#"{"batch":5,"expires":1000,"no_wait":true,"max_bytes":9}"#, b"r", 7).unwrap();
        assert_eq!((w.batch, w.expires, w.no_wait, w.max_bytes), (5, 1007, true, 9));
        assert_eq!(
            parse_request(br#"{"batch":1,"expires":100,"idle_heartbeat":60}"#, b"r", 0).unwrap_err(),
            "Bad Request - heartbeat value too large"
        );
        assert!(parse_request(b"{nope", b"r", 0).is_err());
    }

    #[test]
    fn status_bytes() {
        assert_eq!(status(404, "No Messages"), b"NATS/1.0 404 No Messages\r\n\r\n");
        assert_eq!(
            status_with_pending(408, "Request Timeout", 3, 0),
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"
        );
        assert_eq!(
            heartbeat(4, 9, Some("$JS.FC.S.C.abcd")),
            b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 4\r\nNats-Last-Stream: 9\r\nNats-Consumer-Stalled: $JS.FC.S.C.abcd\r\n\r\n"
        );
    }
}
