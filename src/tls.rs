//! TLS for client connections (rustls), configured as nats-server's `tls {}` block.
//!
//! The usual order is nats-server's: INFO in plain text (saying `tls_required`), then the
//! client starts the handshake. With `handshake_first` the handshake comes before INFO; with a
//! handshake_first duration, the server waits that long for a client that starts with TLS and
//! falls back to the usual order otherwise. A client that answers INFO with plain text is told
//! `Secure Connection - TLS Required` and closed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

/// When the handshake happens relative to INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandshakeFirst {
    /// INFO first, then the handshake (nats-server's default).
    #[default]
    Off,
    /// The handshake first, then INFO over TLS.
    On,
    /// Wait this long for the client to start a handshake; otherwise INFO first.
    Auto(Duration),
}

/// The `tls {}` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates for verifying client certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub verify: bool,
    /// How long a handshake may take.
    pub timeout: Duration,
    /// When the handshake happens.
    pub handshake_first: HandshakeFirst,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: None,
            verify: false,
            timeout: Duration::from_secs(2),
            handshake_first: HandshakeFirst::Off,
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &std::path::Path, reason: impl ToString) -> TlsError {
    TlsError::File { path: path.to_path_buf(), reason: reason.to_string() }
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificates found"));
    }
    Ok(certs)
}

/// Builds the acceptor for these settings, reading the certificate files.
pub fn acceptor(opts: &TlsOptions) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&opts.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&opts.key_file).map_err(|e| file_err(&opts.key_file, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if opts.verify {
        let ca_file = opts.ca_file.as_ref().ok_or_else(|| TlsError::Config("verify needs a ca_file".into()))?;
        let mut roots = RootCertStore::empty();
        for cert in certs(ca_file)? {
            roots.add(cert).map_err(|e| file_err(ca_file, e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS client for connections this server dials (routes, leaf node remotes): it trusts the
/// `ca_file`'s certificates (and presents its own certificate when it has one, for peers that
/// verify), so both sides of a link can check each other as nats-server's TLS does.
pub fn connector(opts: &TlsOptions) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_file =
        opts.ca_file.as_ref().ok_or_else(|| TlsError::Config("TLS toward another server needs a ca_file".into()))?;
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert).map_err(|e| file_err(ca_file, e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    // A leaf node remote may go without a certificate of its own.
    let config = if opts.cert_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain = certs(&opts.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&opts.key_file).map_err(|e| file_err(&opts.key_file, e))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The first byte of a TLS handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;
