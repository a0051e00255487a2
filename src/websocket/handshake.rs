//! The HTTP upgrade to WebSocket, checked as nats-server checks it: GET, a Host, `Upgrade:
//! websocket`, `Connection: Upgrade`, a key, version 13, and the origin rules (`same_origin`,
//! `allowed_origins`, only when the request names an origin). A refusal is answered with
//! nats-server's status and body and logged with its reason.

use std::net::IpAddr;

use crate::options::WebsocketOptions;

/// The longest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Why an upgrade was refused, in nats-server's words (they follow "websocket handshake
/// error: " in its log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a GET.
    #[error("request method must be GET")]
    Method,
    /// No Host header.
    #[error("'Host' missing in request")]
    Host,
    /// No `Upgrade: websocket`.
    #[error("invalid value for header 'Upgrade'")]
    Upgrade,
    /// No `Connection: Upgrade`.
    #[error("invalid value for header 'Connection'")]
    Connection,
    /// No Sec-WebSocket-Key.
    #[error("key missing")]
    Key,
    /// Not version 13.
    #[error("invalid version")]
    Version,
    /// The origin is refused.
    #[error("origin not allowed: {0}")]
    Origin(&'static str),
    /// The request is not HTTP, or too long.
    #[error("malformed request")]
    Malformed,
    /// Bytes followed the request before the upgrade was answered.
    #[error("client sent data before handshake is complete")]
    EarlyData,
}

impl HandshakeError {
    /// The HTTP status nats-server answers with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HandshakeError::Method => (405, "Method Not Allowed"),
            HandshakeError::Origin(_) => (403, "Forbidden"),
            _ => (400, "Bad Request"),
        }
    }

    /// The whole HTTP response for this refusal.
    pub fn response(&self) -> Vec<u8> {
        let (code, text) = self.status();
        let body = format!("{text}\n");
        format!(
            "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// An origin: scheme, host and port (the scheme's default when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing path is ignored), as an origin header or an
    /// `allowed_origins` entry gives it.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next()?;
        let (host, port) = host_and_port(authority, scheme == "https" || scheme == "wss")?;
        (!host.is_empty()).then_some(Origin { scheme, host, port })
    }
}

/// `host[:port]` with the default port for the scheme; IPv6 literals in brackets.
fn host_and_port(authority: &str, tls: bool) -> Option<(String, u16)> {
    let default = if tls { 443 } else { 80 };
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_ascii_lowercase(), port.parse().ok()?)),
        None => Some((authority.to_ascii_lowercase(), default)),
    }
}

/// An accepted upgrade: what the response says and how the connection is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's key, for the accept header.
    pub key: String,
    /// permessage-deflate was offered and the server compresses.
    pub compress: bool,
    /// The client asked not to mask its frames (`Nats-No-Masking: true`).
    pub no_masking: bool,
    /// The client's address as a proxy forwarded it (`X-Forwarded-For`).
    pub forwarded_for: Option<IpAddr>,
    /// A browser (`User-Agent: Mozilla/...`): frames are kept to 4 KiB.
    pub browser: bool,
    /// Safari: compressed messages are not split into frames.
    pub no_compressed_fragments: bool,
    /// The value of the configured JWT cookie, when the request carried it.
    pub jwt_cookie: Option<String>,
}

impl Upgrade {
    /// The 101 response.
    pub fn response(&self) -> Vec<u8> {
        let mut r = String::from("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
        r.push_str("Sec-WebSocket-Accept: ");
        r.push_str(&tungstenite::handshake::derive_accept_key(self.key.as_bytes()));
        r.push_str("\r\n");
        if self.compress {
            r.push_str("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n");
        }
        if self.no_masking {
            r.push_str("Nats-No-Masking: true\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Whether any value of header `name` holds the comma-separated token `token`.
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| std::str::from_utf8(h.value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

fn header<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

/// Where the request head ends in `buf`, when it is complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a complete request head. `tls` says whether it came over TLS (for the default port
/// of a same-origin check).
pub fn check(head: &[u8], opts: &WebsocketOptions, tls: bool) -> Result<Upgrade, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeError::Malformed),
    }
    if request.method != Some("GET") {
        return Err(HandshakeError::Method);
    }
    let headers = request.headers;
    let Some(host) = header(headers, "Host").filter(|h| !h.is_empty()) else { return Err(HandshakeError::Host) };
    if !has_token(headers, "Upgrade", "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !has_token(headers, "Connection", "Upgrade") {
        return Err(HandshakeError::Connection);
    }
    let Some(key) = header(headers, "Sec-WebSocket-Key").filter(|k| !k.is_empty()) else {
        return Err(HandshakeError::Key);
    };
    if !has_token(headers, "Sec-WebSocket-Version", "13") {
        return Err(HandshakeError::Version);
    }
    check_origin(headers, host, opts, tls)?;
    let compress = opts.compression
        && headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions")).any(|h| {
            std::str::from_utf8(h.value).is_ok_and(|v| {
                v.split(',').any(|ext| ext.split(';').any(|p| p.trim().eq_ignore_ascii_case("permessage-deflate")))
            })
        });
    let user_agent = header(headers, "User-Agent").unwrap_or("");
    let browser = user_agent.starts_with("Mozilla/");
    Ok(Upgrade {
        key: key.to_string(),
        compress,
        no_masking: header(headers, "Nats-No-Masking") == Some("true"),
        forwarded_for: header(headers, "X-Forwarded-For").and_then(|v| v.trim().parse().ok()),
        browser,
        no_compressed_fragments: browser
            && compress
            && user_agent.contains("Version/")
            && user_agent.contains("Safari/"),
        jwt_cookie: opts.jwt_cookie.as_deref().and_then(|name| cookie(headers, name)),
    })
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn check_origin(
    headers: &[httparse::Header<'_>],
    host: &str,
    opts: &WebsocketOptions,
    tls: bool,
) -> Result<(), HandshakeError> {
    if !opts.same_origin && opts.allowed_origins.is_empty() {
        return Ok(());
    }
    let origin = header(headers, "Origin").or_else(|| header(headers, "Sec-WebSocket-Origin")).unwrap_or("");
    if origin.is_empty() {
        return Ok(());
    }
    let Some(origin) = Origin::parse(origin) else { return Err(HandshakeError::Origin("invalid origin")) };
    if opts.same_origin {
        let Some((rh, rp)) = host_and_port(host, tls) else { return Err(HandshakeError::Origin("invalid host")) };
        if origin.host != rh || origin.port != rp {
            return Err(HandshakeError::Origin("not same origin"));
        }
    }
    if !opts.allowed_origins.is_empty()
        && !opts.allowed_origins.iter().filter_map(|a| Origin::parse(a)).any(|a| a == origin)
    {
        return Err(HandshakeError::Origin("not in the allowed list"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> WebsocketOptions {
        WebsocketOptions { no_tls: true, ..WebsocketOptions::default() }
    }

    const GOOD: &str =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn req(extra: &str) -> Vec<u8> {
        format!("{GOOD}{extra}\r\n").into_bytes()
    }

    #[test]
    fn accepts_and_answers_with_the_accept_key() {
        let up = check(&req(""), &opts(), false).expect("accepted");
        let response = String::from_utf8(up.response()).unwrap();
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
        assert!(!response.contains("permessage-deflate"));
    }

    #[test]
    fn refuses_as_nats_server() {
        let bad = |text: &str| check(text.as_bytes(), &opts(), false).unwrap_err();
        assert_eq!(bad("POST / HTTP/1.1\r\nHost: x\r\n\r\n"), HandshakeError::Method);
        assert_eq!(
            bad(&GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
            HandshakeError::Malformed
        );
        assert_eq!(
            bad(&format!("{}\r\n", GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""))),
            HandshakeError::Key
        );
        assert_eq!(bad(&format!("{}\r\n", GOOD.replace("Version: 13", "Version: 12"))), HandshakeError::Version);
        assert_eq!(
            bad(&format!("{}\r\n", GOOD.replace("Upgrade: websocket", "Upgrade: h2c"))),
            HandshakeError::Upgrade
        );
        let text = String::from_utf8(HandshakeError::Origin("x").response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n") && text.ends_with("\r\n\r\nForbidden\n"), "{text}");
    }

    #[test]
    fn origins() {
        let allowed = WebsocketOptions { allowed_origins: vec!["http://good.example:8080".into()], ..opts() };
        assert!(check(&req("Origin: http://good.example:8080\r\n"), &allowed, false).is_ok());
        assert!(check(&req(""), &allowed, false).is_ok(), "no origin: accepted");
        assert_eq!(
            check(&req("Origin: http://bad.example\r\n"), &allowed, false).unwrap_err(),
            HandshakeError::Origin("not in the allowed list")
        );
        let same = WebsocketOptions { same_origin: true, ..opts() };
        assert!(check(&req("Origin: http://127.0.0.1:8080\r\n"), &same, false).is_ok());
        assert_eq!(
            check(&req("Origin: http://127.0.0.1:9090\r\n"), &same, false).unwrap_err(),
            HandshakeError::Origin("not same origin")
        );
    }

    #[test]
    fn compression_masking_and_browsers() {
        let compressing = WebsocketOptions { compression: true, ..opts() };
        let up = check(
            &req("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nNats-No-Masking: true\r\n\
                  User-Agent: Mozilla/5.0 Version/17 Safari/605\r\nX-Forwarded-For: 10.1.2.3\r\n"),
            &compressing,
            false,
        )
        .unwrap();
        assert!(up.compress && up.no_masking && up.browser && up.no_compressed_fragments);
        assert_eq!(up.jwt_cookie, None);
        let with_cookie = WebsocketOptions { jwt_cookie: Some("jwt".into()), ..opts() };
        let cooked = check(&req("Cookie: theme=dark; jwt=eyJabc.def\r\n"), &with_cookie, false).unwrap();
        assert_eq!(cooked.jwt_cookie.as_deref(), Some("eyJabc.def"));
        assert_eq!(up.forwarded_for, Some("10.1.2.3".parse().unwrap()));
        let text = String::from_utf8(up.response()).unwrap();
        assert!(text.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\nNats-No-Masking: true\r\n\r\n"
        ));
    }
}
