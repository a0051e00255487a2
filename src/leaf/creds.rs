//! A `.creds` file, as nats-server's leaf node remotes read it: the user JWT sent in CONNECT
//! and the nkey seed that signs the hub's nonce.

use base64::Engine;

/// Why a credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum CredsError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// It does not hold a JWT and a seed between the usual marker lines.
    #[error("Credentials file malformed")]
    Malformed,
    /// The seed is not an nkey seed.
    #[error("Credentials file has malformed seed")]
    BadSeed,
}

/// The JWT and the signature of `nonce` (base64, URL alphabet, no padding) for CONNECT.
pub(super) fn sign(path: &std::path::Path, nonce: &[u8]) -> Result<(String, String), CredsError> {
    let text = std::fs::read_to_string(path)?;
    let (jwt, seed) = parse(&text).ok_or(CredsError::Malformed)?;
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| CredsError::BadSeed)?;
    let sig = pair.sign(nonce).map_err(|_| CredsError::BadSeed)?;
    Ok((jwt.to_string(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)))
}

/// The first two blocks between `-----…-----` marker lines: the JWT, then the seed.
fn parse(text: &str) -> Option<(&str, &str)> {
    let is_marker = |l: &str| l.len() >= 6 && l.starts_with("---") && l.ends_with("---");
    let mut blocks = Vec::with_capacity(2);
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if !is_marker(line) {
            continue;
        }
        let Some(content) = lines.next().filter(|l| !l.is_empty() && !is_marker(l)) else { continue };
        // The block's closing marker.
        if !lines.next().is_some_and(is_marker) {
            return None;
        }
        blocks.push(content);
        if blocks.len() == 2 {
            return Some((blocks[0], blocks[1]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_creds_file_and_signs_the_nonce() {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let text = format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOi.x.y\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.creds");
        std::fs::write(&path, text).unwrap();
        let (jwt, sig) = sign(&path, b"nonce123").unwrap();
        assert_eq!(jwt, "eyJhbGciOi.x.y");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert!(user.verify(b"nonce123", &raw).is_ok());
        std::fs::write(&path, "-----BEGIN NATS USER JWT-----\nabc\n").unwrap();
        assert!(matches!(sign(&path, b"n"), Err(CredsError::Malformed)));
        assert!(matches!(sign(&dir.path().join("none"), b"n"), Err(CredsError::Read(_))));
    }
}
