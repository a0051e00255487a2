//! Authentication: who may connect, checked once per connection at CONNECT.
//!
//! Passwords and tokens are compared in constant time, or checked against a bcrypt hash when
//! the configured secret is one (`$2a$`, `$2b$`, `$2x$`, `$2y$`), as nats-server does.

use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::proto::ConnectOptions;

/// One user allowed to connect with a name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name sent as `user` in CONNECT.
    pub name: String,
    /// The password, plain or a bcrypt hash.
    pub password: String,
}

/// Who may connect. With nothing configured, anyone may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// A shared token (plain or bcrypt), sent as `auth_token`.
    pub token: Option<String>,
    /// Users with passwords.
    pub users: Vec<User>,
    /// How long a client has to authenticate; the server's default when unset.
    pub timeout: Option<Duration>,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials did not match.
    #[error("credentials do not match")]
    BadCredentials,
}

impl Authorization {
    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }

    /// Checks a client's CONNECT credentials. Returns the authenticated user name, if any.
    pub fn check(&self, connect: &ConnectOptions) -> Result<Option<String>, AuthError> {
        if !self.required() {
            return Ok(None);
        }
        if let Some(token) = &self.token {
            let given = connect.auth_token.as_deref().unwrap_or_default();
            return if secret_matches(token, given) { Ok(None) } else { Err(AuthError::BadCredentials) };
        }
        let name = connect.user.as_deref().unwrap_or_default();
        let pass = connect.pass.as_deref().unwrap_or_default();
        match self.users.iter().find(|u| u.name == name) {
            Some(user) if secret_matches(&user.password, pass) => Ok(Some(user.name.clone())),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

/// True when `configured` is a bcrypt hash.
pub fn is_bcrypt(configured: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| configured.starts_with(p))
}

/// Compares a configured secret (plain or bcrypt) with what the client sent.
pub fn secret_matches(configured: &str, given: &str) -> bool {
    if is_bcrypt(configured) {
        bcrypt::verify(given, configured).unwrap_or(false)
    } else {
        configured.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(user: Option<&str>, pass: Option<&str>, token: Option<&str>) -> ConnectOptions {
        ConnectOptions {
            user: user.map(Into::into),
            pass: pass.map(Into::into),
            auth_token: token.map(Into::into),
            ..ConnectOptions::default()
        }
    }

    #[test]
    fn users_and_tokens() {
        let open = Authorization::default();
        assert_eq!(open.check(&connect(None, None, None)), Ok(None));

        let users = Authorization {
            users: vec![User { name: "derek".into(), password: "s3cr3t".into() }],
            ..Default::default()
        };
        assert_eq!(users.check(&connect(Some("derek"), Some("s3cr3t"), None)), Ok(Some("derek".into())));
        assert!(users.check(&connect(Some("derek"), Some("x"), None)).is_err());
        assert!(users.check(&connect(None, None, None)).is_err());

        let token = Authorization { token: Some("tok".into()), ..Default::default() };
        assert!(token.check(&connect(None, None, Some("tok"))).is_ok());
        assert!(token.check(&connect(None, None, Some("tok2"))).is_err());
    }

    #[test]
    fn bcrypt_secrets() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert!(secret_matches(&hash, "pw"));
        assert!(!secret_matches(&hash, "nope"));
        assert!(!secret_matches("$2a$broken", "pw"));
    }
}
