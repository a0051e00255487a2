//! Reading and writing NATS header blocks (`NATS/1.0\r\nName: value\r\n...\r\n`) the way
//! nats-server does for JetStream: a header is found by an exact, case-sensitive match of its
//! name at the start of a line, and only its first occurrence counts.

/// The value of header `name` in `block`, with leading spaces dropped.
pub fn get<'a>(block: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if block.is_empty() {
        return None;
    }
    let key = name.as_bytes();
    let mut from = 0;
    while let Some(rel) = memchr::memmem::find(&block[from..], key) {
        let at = from + rel;
        from = at + 1;
        let line_start = at >= 2 && &block[at - 2..at] == b"\r\n";
        let after = at + key.len();
        if !line_start || block.get(after) != Some(&b':') {
            continue;
        }
        let mut value = &block[after + 1..];
        while let [b' ' | b'\t', rest @ ..] = value {
            value = rest;
        }
        let end = memchr::memchr(b'\r', value).unwrap_or(value.len());
        return Some(&value[..end]);
    }
    None
}

/// The value of header `name` as text.
pub fn get_str<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    get(block, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// A header value as nats-server parses sequence numbers: digits only, else -1.
pub fn parse_i64(value: &[u8]) -> i64 {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return -1;
    }
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).unwrap_or(-1)
}

/// Builds a header block: `NATS/1.0[ status]\r\n`, then each `Name: value\r\n`, then `\r\n`.
pub fn build(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>());
    out.extend_from_slice(b"NATS/1.0");
    if !status.is_empty() {
        out.push(b' ');
        out.extend_from_slice(status.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    finish(out, headers)
}

/// `block` with more headers added before its final blank line (or a new block when empty).
pub fn append(block: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    if block.len() < 4 || !block.ends_with(b"\r\n\r\n") {
        return build("", headers);
    }
    finish(block[..block.len() - 2].to_vec(), headers)
}

/// Adds each `Name: value\r\n` and the closing blank line.
fn finish(mut out: Vec<u8>, headers: &[(&str, &str)]) -> Vec<u8> {
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_headers_like_nats_server() {
        let block = b"NATS/1.0\r\nNats-Msg-Id:  abc\r\nX-Nats-Msg-Id: no\r\nNats-Expected-Last-Sequence: 12\r\n\r\n";
        assert_eq!(get(block, "Nats-Msg-Id"), Some(&b"abc"[..]));
        assert_eq!(get(block, "nats-msg-id"), None, "case-sensitive");
        assert_eq!(parse_i64(get(block, "Nats-Expected-Last-Sequence").unwrap()), 12);
        assert_eq!(parse_i64(b"1x"), -1);
        assert_eq!(build("404 No Messages", &[]), b"NATS/1.0 404 No Messages\r\n\r\n");
        assert_eq!(append(b"NATS/1.0\r\nA: 1\r\n\r\n", &[("B", "2")]), b"NATS/1.0\r\nA: 1\r\nB: 2\r\n\r\n");
    }
}
