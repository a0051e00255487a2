//! Decentralised authentication with NATS JWTs, as nats-server does it with an operator and a
//! memory resolver: the operator JWT is trusted by configuration, account JWTs are signed by the
//! operator (or one of its signing keys), and a user JWT is signed by its account (or one of
//! the account's signing keys). A user proves it holds the JWT's key by signing the server's
//! nonce.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::options::accounts::{AccountLinks, Export, Import, Local, ResponseType, ServiceExport};

use super::permissions::{Permissions, ResponsePermission, Rule, SubjectRules};

/// Why a JWT or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts with JSON in the first two.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than ed25519-nkey.
    #[error("unsupported JWT algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not verify with the issuer's key.
    #[error("JWT signature does not verify")]
    BadSignature,
    /// The issuer is not one the verifier trusts for this kind of JWT.
    #[error("JWT issuer {0} is not trusted")]
    UntrustedIssuer(String),
    /// Expired, or not valid yet.
    #[error("JWT is expired or not yet valid")]
    Expired,
    /// A key that is not a valid nkey public key.
    #[error("invalid nkey {0}")]
    BadKey(String),
    /// The account named by a user JWT is not known.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// The nonce signature is missing or does not verify.
    #[error("nonce signature does not verify")]
    BadNonceSignature,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
}

/// The claims Courier reads from any NATS JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The key that signed it.
    pub iss: String,
    /// The key it is about.
    pub sub: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not valid before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The NATS-specific part.
    #[serde(default)]
    pub nats: NatsClaims,
    /// The claim type at the top level: set only in version 1 JWTs.
    #[serde(default, rename = "type")]
    pub v1_type: String,
}

impl Claims {
    /// The JWT format version, as nats-server tells it: 1 for a top-level `type`, otherwise
    /// `nats.version` (absent counts as 1).
    pub fn version(&self) -> u32 {
        if self.v1_type.is_empty() {
            self.nats.version
        } else {
            1
        }
    }
}

/// The `nats` object of a JWT.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NatsClaims {
    /// Other keys allowed to sign on this entity's behalf.
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    /// For a user JWT signed by an account signing key: the account.
    #[serde(default)]
    pub issuer_account: Option<String>,
    /// A bearer token user needs no nonce signature.
    #[serde(default)]
    pub bearer_token: bool,
    /// A user's publish permissions.
    #[serde(default)]
    pub r#pub: JwtRules,
    /// A user's subscribe permissions.
    #[serde(default)]
    pub sub: JwtRules,
    /// A user's permission to answer requests it receives.
    #[serde(default)]
    pub resp: Option<JwtResponses>,
    /// The JWT format version (2 for current JWTs).
    #[serde(default)]
    pub version: u32,
    /// An account's exports.
    #[serde(default)]
    pub exports: Vec<JwtExport>,
    /// An account's imports.
    #[serde(default)]
    pub imports: Vec<JwtImport>,
    /// An account's limits (JetStream's among them).
    #[serde(default)]
    pub limits: Option<JwtAccountLimits>,
}

/// The limits of an account JWT that Courier applies: JetStream's.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct JwtAccountLimits {
    /// Memory bytes for streams; 0 with `disk_storage` 0 means no JetStream, -1 no limit.
    #[serde(default)]
    pub mem_storage: i64,
    /// File bytes for streams.
    #[serde(default)]
    pub disk_storage: i64,
    /// Streams; 0 (or absent) means no limit.
    #[serde(default)]
    pub streams: i64,
    /// Consumers per stream; 0 (or absent) means no limit.
    #[serde(default)]
    pub consumer: i64,
}

impl JwtAccountLimits {
    /// The JetStream limits, when the account has JetStream (as nats-server decides: some
    /// memory or file storage allowed).
    pub fn jetstream(&self) -> Option<crate::options::JetStreamAccountLimits> {
        (self.mem_storage != 0 || self.disk_storage != 0).then_some(crate::options::JetStreamAccountLimits {
            max_memory: self.mem_storage.max(-1),
            max_store: self.disk_storage.max(-1),
            max_streams: self.streams.max(-1),
            max_consumers: self.consumer.max(-1),
        })
    }
}

/// An export in an account JWT.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwtExport {
    /// The exported subject.
    #[serde(default)]
    pub subject: String,
    /// `stream` or `service`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Whether importers need an activation token.
    #[serde(default)]
    pub token_req: bool,
    /// `Singleton`, `Stream` or `Chunked`, for services.
    #[serde(default)]
    pub response_type: String,
    /// How long responses may take, in nanoseconds.
    #[serde(default)]
    pub response_threshold: u64,
    /// The subject token that must be the importer's key.
    #[serde(default)]
    pub account_token_position: u32,
}

/// An import in an account JWT.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwtImport {
    /// The subject in the exporting account.
    #[serde(default)]
    pub subject: String,
    /// The exporting account's key.
    #[serde(default)]
    pub account: String,
    /// The older form of the local subject: a prefix for streams.
    #[serde(default)]
    pub to: String,
    /// The subject it appears on locally.
    #[serde(default)]
    pub local_subject: String,
    /// `stream` or `service`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl NatsClaims {
    /// The exports and imports of an account JWT, in the form the configuration file gives
    /// them, read as nats-server reads the claims.
    pub fn links(&self, account: &str) -> AccountLinks {
        let exports = self
            .exports
            .iter()
            .map(|e| Export {
                subject: e.subject.clone(),
                service: e.kind.eq_ignore_ascii_case("service").then(|| ServiceExport {
                    response: match e.response_type.to_ascii_lowercase().as_str() {
                        "stream" => ResponseType::Stream,
                        "chunked" => ResponseType::Chunked,
                        _ => ResponseType::Singleton,
                    },
                    threshold: match e.response_threshold {
                        0 => ServiceExport::default().threshold,
                        n => std::time::Duration::from_nanos(n),
                    },
                }),
                accounts: None,
                // Activation tokens and account token positions are not checked here: such
                // an export is not importable.
                token_required: e.token_req || e.account_token_position > 0,
            })
            .collect();
        let imports = self
            .imports
            .iter()
            .map(|i| {
                let service = i.kind.eq_ignore_ascii_case("service");
                let local = if !i.local_subject.is_empty() {
                    Local::To(i.local_subject.clone())
                } else if !i.to.is_empty() && !service {
                    Local::Prefix(i.to.clone())
                } else {
                    Local::Same
                };
                Import { account: i.account.clone(), subject: i.subject.clone(), service, local }
            })
            .collect();
        AccountLinks { name: account.to_string(), exports, imports }
    }
}

/// Allow and deny lists in a user JWT.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwtRules {
    /// Allowed subjects; empty means no restriction.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Denied subjects.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl JwtRules {
    fn to_rules(&self) -> Option<SubjectRules> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return None;
        }
        Some(SubjectRules {
            allow: (!self.allow.is_empty()).then(|| self.allow.iter().map(|s| Rule::parse(s)).collect()),
            deny: self.deny.iter().map(|s| Rule::parse(s)).collect(),
        })
    }
}

/// The response permission in a user JWT.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct JwtResponses {
    /// Responses per request.
    #[serde(default)]
    pub max: u32,
    /// How long they are allowed, in nanoseconds.
    #[serde(default)]
    pub ttl: u64,
}

/// A user authenticated by JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtUser {
    /// The account it belongs to.
    pub account: String,
    /// Its name (or its key when it has none).
    pub name: String,
    /// Its permissions, when the JWT restricts it.
    pub permissions: Option<Permissions>,
}

/// A signing key: a bare public key, or a scoped key object with a `key` field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    /// A public key.
    Key(String),
    /// A scoped signing key.
    Scoped {
        /// The public key.
        key: String,
    },
}

impl SigningKey {
    fn key(&self) -> &str {
        match self {
            SigningKey::Key(k) | SigningKey::Scoped { key: k } => k,
        }
    }
}

/// Decodes base64url (or standard base64), with or without padding.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD].iter().find_map(|e| e.decode(text).ok())
}

/// Verifies `signature` over `data` with the public nkey `key`.
pub fn verify_signature(key: &str, data: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    let pair = nkeys::KeyPair::from_public_key(key).map_err(|_| JwtError::BadKey(key.to_string()))?;
    pair.verify(data, signature).map_err(|_| JwtError::BadSignature)
}

/// Decodes a JWT and checks its signature against its own `iss`, and its validity period.
pub fn decode_verified(jwt: &str) -> Result<Claims, JwtError> {
    let jwt = jwt.trim();
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not three parts"));
    };
    let header: Header = decode_json(h)?;
    if header.alg != "ed25519-nkey" && header.alg != "ed25519" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let claims: Claims = decode_json(p)?;
    let sig = decode_base64(s).ok_or(JwtError::Malformed("signature is not base64"))?;
    // Version 2 JWTs sign `header.payload`; version 1 JWTs (`"alg":"ed25519"`, a top-level
    // `type`) sign the payload alone. The form the version names is tried first.
    let whole = &jwt[..h.len() + 1 + p.len()];
    let (first, second) = if claims.version() <= 1 { (p, whole) } else { (whole, p) };
    verify_signature(&claims.iss, first.as_bytes(), &sig)
        .or_else(|_| verify_signature(&claims.iss, second.as_bytes(), &sig))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if claims.exp.is_some_and(|exp| exp > 0 && now > exp) || claims.nbf.is_some_and(|nbf| nbf > 0 && now < nbf) {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = decode_base64(part).ok_or(JwtError::Malformed("part is not base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("part is not the expected JSON"))
}

/// A trusted account: its key and the keys that may sign users for it.
#[derive(Debug, Clone)]
struct TrustedAccount {
    signing_keys: Vec<String>,
}

/// The operators and accounts a server trusts (`operator` and `resolver_preload`).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    accounts: FxHashMap<String, TrustedAccount>,
    /// Each trusted account's exports and imports.
    links: Vec<AccountLinks>,
    /// The trusted accounts with JetStream, and their limits.
    jetstream: Vec<(String, crate::options::JetStreamAccountLimits)>,
}

impl PartialEq for Trust {
    fn eq(&self, other: &Self) -> bool {
        let mut a: Vec<&String> = self.accounts.keys().collect();
        let mut b: Vec<&String> = other.accounts.keys().collect();
        a.sort();
        b.sort();
        a == b
    }
}

impl Eq for Trust {}

impl Trust {
    /// Builds the trust chain from operator JWTs and account JWTs (keyed by account key).
    /// Every account must be signed by one of the operators or their signing keys.
    pub fn new<'a>(
        operators: impl IntoIterator<Item = &'a str>,
        accounts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Trust, JwtError> {
        let mut operator_keys = Vec::new();
        for jwt in operators {
            let claims = decode_verified(jwt)?;
            if claims.iss != claims.sub || !claims.sub.starts_with('O') {
                return Err(JwtError::UntrustedIssuer(claims.iss));
            }
            operator_keys.push(claims.sub.clone());
            operator_keys.extend(claims.nats.signing_keys.iter().map(|k| k.key().to_string()));
        }
        let mut trust = Trust::default();
        for (key, jwt) in accounts {
            let claims = decode_verified(jwt)?;
            if !operator_keys.contains(&claims.iss) {
                return Err(JwtError::UntrustedIssuer(claims.iss));
            }
            if claims.sub != key {
                return Err(JwtError::Malformed("account JWT subject differs from its key"));
            }
            let signing_keys = claims.nats.signing_keys.iter().map(|k| k.key().to_string()).collect();
            trust.accounts.insert(key.to_string(), TrustedAccount { signing_keys });
            trust.links.push(claims.nats.links(key));
            if let Some(js) = claims.nats.limits.and_then(|l| l.jetstream()) {
                trust.jetstream.push((key.to_string(), js));
            }
        }
        Ok(trust)
    }

    /// Whether the account with this key is trusted.
    pub fn has_account(&self, key: &str) -> bool {
        self.accounts.contains_key(key)
    }

    /// The trusted accounts whose JWTs allow JetStream, with their limits.
    pub fn jetstream_accounts(&self) -> &[(String, crate::options::JetStreamAccountLimits)] {
        &self.jetstream
    }

    /// The exports and imports of the trusted accounts.
    pub fn links(&self) -> &[AccountLinks] {
        &self.links
    }

    /// Checks a user JWT and its nonce signature; returns who the user is.
    pub fn authenticate(&self, user_jwt: &str, nonce: &[u8], sig: Option<&str>) -> Result<JwtUser, JwtError> {
        let claims = decode_verified(user_jwt)?;
        let account = claims.nats.issuer_account.clone().unwrap_or_else(|| claims.iss.clone());
        let trusted = self.accounts.get(&account).ok_or_else(|| JwtError::UnknownAccount(account.clone()))?;
        if claims.iss != account && !trusted.signing_keys.contains(&claims.iss) {
            return Err(JwtError::UntrustedIssuer(claims.iss));
        }
        if !claims.nats.bearer_token {
            let sig = sig.and_then(decode_base64).ok_or(JwtError::BadNonceSignature)?;
            verify_signature(&claims.sub, nonce, &sig).map_err(|_| JwtError::BadNonceSignature)?;
        }
        let n = &claims.nats;
        let permissions = Permissions {
            publish: n.r#pub.to_rules(),
            subscribe: n.sub.to_rules(),
            allow_responses: n
                .resp
                .map(|r| ResponsePermission { max: r.max.max(1), expires: std::time::Duration::from_nanos(r.ttl) }),
        };
        let restricted = permissions != Permissions::default();
        let name = if claims.name.is_empty() { claims.sub } else { claims.name };
        Ok(JwtUser { account, name, permissions: restricted.then_some(permissions) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(claims: &serde_json::Value, signer: &nkeys::KeyPair) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{h}.{p}");
        let sig = signer.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn chain_of_trust() {
        let op = nkeys::KeyPair::new_operator();
        let acc = nkeys::KeyPair::new_account();
        let acc_signer = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let op_jwt = encode(&serde_json::json!({"iss": op.public_key(), "sub": op.public_key(), "nats": {}}), &op);
        let acc_jwt = encode(
            &serde_json::json!({"iss": op.public_key(), "sub": acc.public_key(),
                "nats": {"signing_keys": [acc_signer.public_key()]}}),
            &op,
        );
        let trust = Trust::new([op_jwt.as_str()], [(acc.public_key().as_str(), acc_jwt.as_str())]).unwrap();

        let user_jwt =
            encode(&serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "name": "u"}), &acc);
        let nonce = b"abcdefg";
        let sig = URL_SAFE_NO_PAD.encode(user.sign(nonce).unwrap());
        let who = trust.authenticate(&user_jwt, nonce, Some(&sig)).unwrap();
        assert_eq!((who.account, who.name, who.permissions), (acc.public_key(), "u".to_string(), None));
        let limited = encode(
            &serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(),
                "nats": {"pub": {"allow": ["a.>"]}, "sub": {"deny": ["secret"]}, "resp": {"max": 2, "ttl": 0}}}),
            &acc,
        );
        let perms = trust.authenticate(&limited, nonce, Some(&sig)).unwrap().permissions.unwrap();
        assert!(perms.can_publish(b"a.b") && !perms.can_publish(b"b"));
        assert!(!perms.can_subscribe(b"secret", None) && perms.can_subscribe(b"open", None));
        assert_eq!(perms.allow_responses.map(|r| r.max), Some(2));
        assert_eq!(trust.authenticate(&user_jwt, b"other", Some(&sig)), Err(JwtError::BadNonceSignature));
        assert_eq!(trust.authenticate(&user_jwt, nonce, None), Err(JwtError::BadNonceSignature));

        // Signed by the account's signing key, naming the account.
        let scoped = encode(
            &serde_json::json!({"iss": acc_signer.public_key(), "sub": user.public_key(),
                "nats": {"issuer_account": acc.public_key()}}),
            &acc_signer,
        );
        assert!(trust.authenticate(&scoped, nonce, Some(&sig)).is_ok());

        // Signed by an account the operator never signed.
        let rogue = nkeys::KeyPair::new_account();
        let bad = encode(&serde_json::json!({"iss": rogue.public_key(), "sub": user.public_key()}), &rogue);
        assert!(matches!(trust.authenticate(&bad, nonce, Some(&sig)), Err(JwtError::UnknownAccount(_))));

        // Tampered payload.
        let mut parts: Vec<&str> = user_jwt.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": acc.public_key(), "sub": rogue.public_key()}).to_string());
        parts[1] = &forged;
        assert_eq!(trust.authenticate(&parts.join("."), nonce, Some(&sig)), Err(JwtError::BadSignature));

        // Expired.
        let old = encode(&serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "exp": 1}), &acc);
        assert_eq!(trust.authenticate(&old, nonce, Some(&sig)), Err(JwtError::Expired));
    }
}
