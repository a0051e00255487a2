//! Server URLs: routes' `nats-route://[user:password@]host:port` and leaf nodes'
//! `nats-leaf://…` (or `tls://…`), as nats-server reads them (`nats://` and a bare `host:port`
//! are taken too).

/// A parsed route URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Credentials for the peer's cluster authorization.
    pub user: Option<(String, String)>,
}

impl RouteUrl {
    /// Parses a route URL; `None` when it is not one.
    pub fn parse(url: &str) -> Option<RouteUrl> {
        Self::parse_with(url, &["nats-route", "nats"]).map(|(u, _)| u)
    }

    /// Parses a leaf node remote's URL, and whether its scheme asks for TLS (`tls://`).
    pub fn parse_leaf(url: &str) -> Option<(RouteUrl, bool)> {
        Self::parse_with(url, &["nats-leaf", "nats", "tls"])
    }

    fn parse_with(url: &str, schemes: &[&str]) -> Option<(RouteUrl, bool)> {
        let (rest, tls) = match url.split_once("://") {
            Some((scheme, rest)) if schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s)) => {
                (rest, scheme.eq_ignore_ascii_case("tls"))
            }
            Some(_) => return None,
            None => (url, false),
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((u.to_string(), p.to_string())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, p) = v6.split_once("]:")?;
                (h, p)
            }
            None => hostport.rsplit_once(':')?,
        };
        if host.is_empty() {
            return None;
        }
        // -1 asks for a free port, as nats-server's flags take it.
        let port = if port == "-1" { 0 } else { port.parse().ok()? };
        Some((RouteUrl { host: host.to_string(), port, user }, tls))
    }

    /// `host:port`, for dialing and logs.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `host:port` other servers dial for a listener bound at `addr` (loopback for an unspecified
/// address), when no advertise address is configured.
pub fn dialable(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    format!("{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_urls_parse_as_nats_server_reads_them() {
        let u = RouteUrl::parse("nats-route://ruser:T0pS3cr3t@otherdockerhost:6222").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("otherdockerhost", 6222));
        assert_eq!(u.user, Some(("ruser".into(), "T0pS3cr3t".into())));
        assert_eq!(RouteUrl::parse("nats://127.0.0.1:6222/").unwrap().addr(), "127.0.0.1:6222");
        assert_eq!(RouteUrl::parse("[::1]:7").unwrap().addr(), "[::1]:7");
        for bad in ["http://h:1", "nats-route://h", "nats-route://:1", "h:port"] {
            assert!(RouteUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn leaf_urls_parse_as_nats_server_reads_them() {
        let (u, tls) = RouteUrl::parse_leaf("nats-leaf://leaf:pw@hub.example:7422").unwrap();
        assert_eq!((u.addr(), u.user, tls), ("hub.example:7422".into(), Some(("leaf".into(), "pw".into())), false));
        assert!(RouteUrl::parse_leaf("tls://hub:7422").unwrap().1);
        assert!(RouteUrl::parse_leaf("nats-route://hub:7422").is_none());
        assert!(RouteUrl::parse("nats-leaf://hub:7422").is_none());
    }
}
