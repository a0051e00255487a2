//! The client's CONNECT options.
//!
//! nats-server starts every client with verbose, pedantic and echo on, and decodes each CONNECT
//! over the options it already has: a field the client leaves out keeps its value. Clients always
//! send `verbose:false`, so this only shows with hand-written clients, but it shows in the bytes.

use serde::Deserialize;

/// What a client asked for in CONNECT, as it stands after every CONNECT so far. Strings are
/// boxed (no spare capacity): a connection keeps this for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Acknowledge every operation with `+OK`.
    pub verbose: bool,
    /// Check publish subjects strictly.
    pub pedantic: bool,
    /// Deliver the client's own messages back to it when it is subscribed.
    pub echo: bool,
    /// The client understands HMSG.
    pub headers: bool,
    /// The client wants a 503 status message when a request reaches no one.
    pub no_responders: bool,
    /// Protocol version: 0 (original) or 1 (dynamic reconfiguration aware).
    pub protocol: i64,
    /// Client-chosen connection name, for logs and monitoring.
    pub name: Box<str>,
    /// Client library language, for monitoring.
    pub lang: Box<str>,
    /// Client library version, for monitoring.
    pub version: Box<str>,
    /// User name, for authentication.
    pub user: Option<Box<str>>,
    /// Password, for authentication.
    pub pass: Option<Box<str>>,
    /// Token, for authentication.
    pub auth_token: Option<Box<str>>,
    /// Public nkey, for nkey authentication.
    pub nkey: Option<Box<str>>,
    /// Signature of the server's nonce, for nkey and JWT authentication.
    pub sig: Option<Box<str>>,
    /// User JWT, for JWT authentication.
    pub jwt: Option<Box<str>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            name: Box::default(),
            lang: Box::default(),
            version: Box::default(),
            user: None,
            pass: None,
            auth_token: None,
            nkey: None,
            sig: None,
            jwt: None,
        }
    }
}

/// The wire form: every field optional, so that absent fields keep their earlier values.
#[derive(Deserialize)]
struct ConnectFields {
    verbose: Option<bool>,
    pedantic: Option<bool>,
    echo: Option<bool>,
    headers: Option<bool>,
    no_responders: Option<bool>,
    protocol: Option<i64>,
    name: Option<Box<str>>,
    lang: Option<Box<str>>,
    version: Option<Box<str>>,
    user: Option<Box<str>>,
    pass: Option<Box<str>>,
    auth_token: Option<Box<str>>,
    nkey: Option<Box<str>>,
    sig: Option<Box<str>>,
    jwt: Option<Box<str>>,
}

/// Why a CONNECT was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The JSON did not decode into the expected field types; closed without `-ERR`.
    #[error("malformed CONNECT: {0}")]
    Json(#[from] serde_json::Error),
    /// A protocol version other than 0 or 1.
    #[error("invalid client protocol")]
    InvalidProtocol,
    /// no_responders without headers.
    #[error("no responders requires headers support")]
    NoRespondersWithoutHeaders,
}

impl ConnectError {
    /// The `-ERR` text nats-server sends for this refusal, if any.
    pub fn client_text(&self) -> Option<&'static str> {
        use super::errors::*;
        match self {
            ConnectError::Json(_) => None,
            ConnectError::InvalidProtocol => Some(INVALID_CLIENT_PROTOCOL),
            ConnectError::NoRespondersWithoutHeaders => Some(NO_RESPONDERS_REQUIRES_HEADERS),
        }
    }
}

impl ConnectOptions {
    /// Applies one CONNECT's JSON over the current options.
    pub fn apply(&mut self, json: &[u8]) -> Result<(), ConnectError> {
        // Go's decoder, which nats-server uses, takes invalid UTF-8 in strings and replaces it.
        let f: ConnectFields = match std::str::from_utf8(json) {
            Ok(text) => serde_json::from_str(text)?,
            Err(_) => serde_json::from_str(&String::from_utf8_lossy(json))?,
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        take!(verbose, pedantic, echo, headers, no_responders, protocol, name, lang, version);
        if f.user.is_some() {
            self.user = f.user;
        }
        if f.pass.is_some() {
            self.pass = f.pass;
        }
        for (field, value) in [
            (&mut self.auth_token, f.auth_token),
            (&mut self.nkey, f.nkey),
            (&mut self.sig, f.sig),
            (&mut self.jwt, f.jwt),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if !(0..=1).contains(&self.protocol) {
            return Err(ConnectError::InvalidProtocol);
        }
        if self.no_responders && !self.headers {
            return Err(ConnectError::NoRespondersWithoutHeaders);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_keep_their_values() {
        let mut o = ConnectOptions::default();
        o.apply(br#"{"echo":false}"#).unwrap();
        assert!(o.verbose && o.pedantic && !o.echo);
        o.apply(br#"{"verbose":false,"headers":true,"no_responders":true,"name":"n"}"#).unwrap();
        assert!(!o.verbose && o.headers && o.no_responders && !o.echo);
        assert_eq!(&*o.name, "n");
    }

    #[test]
    fn invalid_utf8_in_strings_is_replaced() {
        let mut o = ConnectOptions::default();
        o.apply(b"{\"name\":\"a\xffb\",\"verbose\":false}").unwrap();
        assert_eq!(&*o.name, "a\u{fffd}b");
    }

    #[test]
    fn refusals() {
        let mut o = ConnectOptions::default();
        assert!(matches!(o.apply(br#"{"protocol":2}"#), Err(ConnectError::InvalidProtocol)));
        let mut o = ConnectOptions::default();
        assert!(matches!(o.apply(br#"{"no_responders":true}"#), Err(ConnectError::NoRespondersWithoutHeaders)));
        let mut o = ConnectOptions::default();
        assert!(matches!(o.apply(br#"{"verbose":1}"#), Err(ConnectError::Json(_))));
        assert!(matches!(o.apply(b"{bad"), Err(ConnectError::Json(_))));
        let deep = "[".repeat(10_000);
        assert!(matches!(o.apply(deep.as_bytes()), Err(ConnectError::Json(_))));
    }
}
