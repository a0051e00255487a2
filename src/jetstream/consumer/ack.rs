//! The acknowledgement protocol: the `$JS.ACK` reply subject each delivered message carries, and
//! the ack kinds a client sends back on it.

/// What a client sent on an ack subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckKind<'a> {
    /// `+ACK`, `+OK` or an empty body.
    Ack,
    /// `-NAK`, with a delay in nanoseconds when one was given.
    Nak(Option<i64>),
    /// `+WPI`: still working, restart the ack timer.
    Progress,
    /// `+NXT`, then a pull request body.
    Next(&'a [u8]),
    /// `+TERM`: never deliver again.
    Term,
    /// Anything else: ignored, as by nats-server.
    Unknown,
}

/// Reads an ack body as nats-server does.
pub fn parse_kind(body: &[u8]) -> AckKind<'_> {
    match body {
        b"" | b"+ACK" | b"+OK" => AckKind::Ack,
        b"+WPI" => AckKind::Progress,
        _ if body.starts_with(b"+NXT") => AckKind::Next(&body[4..]),
        _ if body.starts_with(b"-NAK") => AckKind::Nak(nak_delay(&body[4..])),
        _ if body.starts_with(b"+TERM") => AckKind::Term,
        _ => AckKind::Unknown,
    }
}

/// The delay of a NAK: `{"delay": ns}` or a Go duration such as `500ms`.
fn nak_delay(arg: &[u8]) -> Option<i64> {
    let arg = std::str::from_utf8(arg).ok()?.trim();
    if arg.is_empty() {
        return None;
    }
    if arg.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Delay {
            #[serde(default)]
            delay: i64,
        }
        return serde_json::from_str::<Delay>(arg).ok().map(|d| d.delay);
    }
    parse_go_duration(arg)
}

/// A Go duration string (`1h2m3.5s`, `300ms`, `10us`, `-1s`) in nanoseconds.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (neg, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut any = false;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
        any = true;
    }
    any.then_some(if neg { -(total as i64) } else { total as i64 })
}

/// Where an ack subject points: `$JS.ACK.<stream>.<consumer>.<deliveries>.<sseq>.<dseq>.<ts>.<pending>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSubject {
    /// Times the message was delivered.
    pub deliveries: u64,
    /// Its stream sequence.
    pub sseq: u64,
    /// Its consumer sequence.
    pub dseq: u64,
}

/// Reads the numbers of an ack subject, in nats-server's v1 form (and the 11-token v2 form with
/// domain and account hash); `None` for anything else.
pub fn parse_subject(subject: &[u8]) -> Option<AckSubject> {
    let text = std::str::from_utf8(subject).ok()?;
    let tokens: Vec<&str> = text.split('.').collect();
    let numbers = match tokens.len() {
        9 => &tokens[4..7],
        n if n >= 11 => &tokens[6..9],
        _ => return None,
    };
    let n = |i: usize| numbers[i].parse::<u64>().ok();
    Some(AckSubject { deliveries: n(0)?, sseq: n(1)?, dseq: n(2)? })
}

/// Appends the ack subject for one delivery to `out`: `prefix` is `$JS.ACK.<stream>.<consumer>.`.
pub fn write_subject(out: &mut Vec<u8>, prefix: &[u8], deliveries: u64, sseq: u64, dseq: u64, ts: i64, pending: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(prefix);
    for (i, v) in [deliveries, sseq, dseq].into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(b.format(v).as_bytes());
    }
    out.push(b'.');
    out.extend_from_slice(b.format(ts).as_bytes());
    out.push(b'.');
    out.extend_from_slice(b.format(pending).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_ack_kind() {
        assert_eq!(parse_kind(b""), AckKind::Ack);
        assert_eq!(parse_kind(b"+ACK"), AckKind::Ack);
        assert_eq!(parse_kind(b"-NAK"), AckKind::Nak(None));
        assert_eq!(parse_kind(b"-NAK {\"delay\": 2000000000}"), AckKind::Nak(Some(2_000_000_000)));
        assert_eq!(parse_kind(b"-NAK 1.5s"), AckKind::Nak(Some(1_500_000_000)));
        assert_eq!(parse_kind(b"+WPI"), AckKind::Progress);
        assert_eq!(parse_kind(b"+NXT {\"batch\":2}"), AckKind::Next(b" {\"batch\":2}"));
        assert_eq!(parse_kind(b"+TERM"), AckKind::Term);
        assert_eq!(parse_kind(b"+TERM poison"), AckKind::Term);
        assert_eq!(parse_kind(b"what"), AckKind::Unknown);
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_go_duration("x"), None);
    }

    #[test]
    fn ack_subjects_round_trip_as_nats_server_writes_them() {
        let mut out = Vec::new();
        write_subject(&mut out, b"$JS.ACK.S.P.", 2, 2, 2, 1796111529520630999, 0);
        assert_eq!(out, b"$JS.ACK.S.P.2.2.2.1796111529520630999.0");
        assert_eq!(parse_subject(&out), Some(AckSubject { deliveries: 2, sseq: 2, dseq: 2 }));
        assert_eq!(parse_subject(b"$JS.ACK.S.P.x.2.2.1.0"), None);
        assert_eq!(parse_subject(b"$JS.ACK.S.P"), None);
    }
}
