//! Authentication: who may connect, checked once per connection at CONNECT.
//!
//! Four ways, as nats-server: a token, users with passwords, users with nkeys (who sign the
//! nonce sent in INFO), and JWTs under a trusted operator ([`jwt`]).
//!
//! Passwords and tokens are compared in constant time, or checked against a bcrypt hash when
//! the configured secret is one (`$2a$`, `$2b$`, `$2x$`, `$2y$`), as nats-server does.

pub mod jwt;
pub mod permissions;

use std::time::Duration;

use subtle::ConstantTimeEq;

pub use jwt::Trust;
pub use permissions::Permissions;

use crate::proto::ConnectOptions;

/// One user allowed to connect with a name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name sent as `user` in CONNECT.
    pub name: String,
    /// The password, plain or a bcrypt hash.
    pub password: String,
    /// What the user may do; `None` falls back to the default permissions.
    pub permissions: Option<Permissions>,
}

/// Who may connect. With nothing configured, anyone may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// A shared token (plain or bcrypt), sent as `auth_token`.
    pub token: Option<String>,
    /// Users with passwords.
    pub users: Vec<User>,
    /// Users identified by a public nkey, who sign the server's nonce, with their permissions.
    pub nkeys: Vec<NkeyUser>,
    /// Permissions for users that have none of their own.
    pub default_permissions: Option<Permissions>,
    /// Trusted operators and accounts, for JWT users.
    pub trust: Option<Trust>,
    /// How long a client has to authenticate; the server's default when unset.
    pub timeout: Option<Duration>,
    /// The account of each user defined inside `accounts {}`, by user name or nkey; a user not
    /// listed is in the global account.
    pub accounts: std::collections::BTreeMap<String, String>,
    /// The user (name or nkey) a client without credentials connects as.
    pub no_auth_user: Option<String>,
}

/// A user identified by a public nkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NkeyUser {
    /// The user's public nkey (`U...`).
    pub nkey: String,
    /// What the user may do; `None` falls back to the default permissions.
    pub permissions: Option<Permissions>,
}

/// Who a client turned out to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticated {
    /// The user name, nkey or JWT name, when there is one.
    pub user: Option<String>,
    /// The account the client is bound to (JWT users); the global account otherwise.
    pub account: Option<String>,
    /// What the client may publish and subscribe to; `None` means anything.
    pub permissions: Option<Permissions>,
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials did not match.
    #[error("credentials do not match")]
    BadCredentials,
    /// A JWT or a nonce signature was refused.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
}

impl Authorization {
    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty() || !self.nkeys.is_empty() || self.trust.is_some()
    }

    /// Whether INFO must carry a nonce for clients to sign.
    pub fn needs_nonce(&self) -> bool {
        !self.nkeys.is_empty() || self.trust.is_some()
    }

    /// Whether checking these credentials is slow (a bcrypt hash takes tens of milliseconds),
    /// so that the caller runs [`Authorization::check`] off the async runtime's threads.
    pub fn is_expensive(&self, connect: &ConnectOptions) -> bool {
        if !self.required() || self.trust.is_some() {
            return false;
        }
        if connect.nkey.is_some() && !self.nkeys.is_empty() {
            return false;
        }
        if let Some(token) = &self.token {
            return is_bcrypt(token);
        }
        let name = connect.user.as_deref().unwrap_or_default();
        self.users.iter().find(|u| u.name == name).is_some_and(|u| is_bcrypt(&u.password))
    }

    /// Checks a client's CONNECT credentials against the nonce it was sent.
    pub fn check(&self, connect: &ConnectOptions, nonce: &[u8]) -> Result<Authenticated, AuthError> {
        let mut who = self.identify(connect, nonce)?;
        if who.permissions.is_none() {
            who.permissions = self.default_permissions.clone();
        }
        Ok(who)
    }

    fn identify(&self, connect: &ConnectOptions, nonce: &[u8]) -> Result<Authenticated, AuthError> {
        if !self.required() {
            return Ok(Authenticated::default());
        }
        if let Some(who) = self.no_auth(connect) {
            return Ok(who);
        }
        if let Some(trust) = &self.trust {
            let jwt = connect.jwt.as_deref().ok_or(AuthError::BadCredentials)?;
            let user = trust.authenticate(jwt, nonce, connect.sig.as_deref())?;
            return Ok(Authenticated {
                user: Some(user.name),
                account: Some(user.account),
                permissions: user.permissions,
            });
        }
        if let Some(nkey) = connect.nkey.as_deref().filter(|_| !self.nkeys.is_empty()) {
            let user = self.nkeys.iter().find(|u| u.nkey == nkey).ok_or(AuthError::BadCredentials)?;
            let sig = connect.sig.as_deref().and_then(jwt::decode_base64).ok_or(AuthError::BadCredentials)?;
            jwt::verify_signature(nkey, nonce, &sig).map_err(|_| AuthError::BadCredentials)?;
            return Ok(Authenticated {
                user: Some(nkey.to_string()),
                account: self.accounts.get(nkey).cloned(),
                permissions: user.permissions.clone(),
            });
        }
        if let Some(token) = &self.token {
            let given = connect.auth_token.as_deref().unwrap_or_default();
            return if secret_matches(token, given) {
                Ok(Authenticated::default())
            } else {
                Err(AuthError::BadCredentials)
            };
        }
        let name = connect.user.as_deref().unwrap_or_default();
        let pass = connect.pass.as_deref().unwrap_or_default();
        match self.users.iter().find(|u| u.name == name) {
            Some(user) if secret_matches(&user.password, pass) => Ok(Authenticated {
                user: Some(user.name.clone()),
                account: self.accounts.get(&user.name).cloned(),
                permissions: user.permissions.clone(),
            }),
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// A client that sent no credentials at all, as the `no_auth_user`, when there is one.
    fn no_auth(&self, connect: &ConnectOptions) -> Option<Authenticated> {
        let name = self.no_auth_user.as_deref()?;
        let bare = connect.user.is_none()
            && connect.pass.is_none()
            && connect.auth_token.is_none()
            && connect.nkey.is_none()
            && connect.jwt.is_none();
        if !bare {
            return None;
        }
        let permissions = match self.users.iter().find(|u| u.name == name) {
            Some(u) => u.permissions.clone(),
            None => self.nkeys.iter().find(|u| u.nkey == name)?.permissions.clone(),
        };
        Some(Authenticated { user: Some(name.to_string()), account: self.accounts.get(name).cloned(), permissions })
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
        assert_eq!(open.check(&connect(None, None, None), b""), Ok(Authenticated::default()));

        let users = Authorization {
            users: vec![User { name: "derek".into(), password: "s3cr3t".into(), permissions: None }],
            ..Default::default()
        };
        assert_eq!(users.check(&connect(Some("derek"), Some("s3cr3t"), None), b"").unwrap().user, Some("derek".into()));
        assert!(users.check(&connect(Some("derek"), Some("x"), None), b"").is_err());
        assert!(users.check(&connect(None, None, None), b"").is_err());

        let token = Authorization { token: Some("tok".into()), ..Default::default() };
        assert!(token.check(&connect(None, None, Some("tok")), b"").is_ok());
        assert!(token.check(&connect(None, None, Some("tok2")), b"").is_err());
    }

    #[test]
    fn nkey_users_sign_the_nonce() {
        let user = nkeys::KeyPair::new_user();
        let auth = Authorization {
            nkeys: vec![NkeyUser { nkey: user.public_key(), permissions: None }],
            ..Default::default()
        };
        assert!(auth.needs_nonce());
        let nonce = b"nonce-123";
        let sig = "bm90IGEgc2lnbmF0dXJl".to_string();
        let mut c =
            ConnectOptions { nkey: Some(user.public_key().into()), sig: Some(sig.into()), ..Default::default() };
        assert!(auth.check(&c, nonce).is_err());
        use base64::Engine as _;
        c.sig = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.sign(nonce).unwrap()).into());
        assert_eq!(auth.check(&c, nonce).unwrap().user, Some(user.public_key()));
        assert!(auth.check(&c, b"another nonce").is_err());
        let stranger = nkeys::KeyPair::new_user();
        c.nkey = Some(stranger.public_key().into());
        c.sig = Some(base64::engine::general_purpose::STANDARD.encode(stranger.sign(nonce).unwrap()).into());
        assert!(auth.check(&c, nonce).is_err());
    }

    #[test]
    fn bcrypt_secrets() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert!(secret_matches(&hash, "pw"));
        assert!(!secret_matches(&hash, "nope"));
        assert!(!secret_matches("$2a$broken", "pw"));
    }
}
