//! TLS: certificates made at test time (rcgen), a real async-nats client over TLS, client
//! certificates, and the exact error a plain-text client gets.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{options, TestServer, TIMEOUT};
use courier::tls::{HandshakeFirst, TlsOptions};
use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}-cert.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        };
        issue(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
        issue(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth, "client");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, verify: bool) -> TlsOptions {
        TlsOptions {
            cert_file: self.path("server-cert.pem"),
            key_file: self.path("server-key.pem"),
            ca_file: Some(self.path("ca.pem")),
            verify,
            timeout: Duration::from_secs(2),
            handshake_first: HandshakeFirst::Off,
        }
    }
}

async fn tls_server(pki: &Pki, verify: bool, first: HandshakeFirst) -> TestServer {
    let mut tls = pki.tls(verify);
    tls.handshake_first = first;
    TestServer::start(courier::Options { tls: Some(tls), ..options() }).await
}

fn client_opts(ca: &Path) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new().add_root_certificates(ca.to_path_buf()).require_tls(true)
}

async fn round_trip(client: &async_nats::Client) {
    let mut sub = client.subscribe("tls.check").await.unwrap();
    client.publish("tls.check", "over tls".into()).await.unwrap();
    let msg = tokio::time::timeout(TIMEOUT, sub.next()).await.expect("message in time").expect("message");
    assert_eq!(&msg.payload[..], b"over tls");
}

#[tokio::test]
async fn async_nats_over_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, false, HandshakeFirst::Off).await;
    let url = format!("tls://localhost:{}", server.addr.port());
    let client = client_opts(&pki.path("ca.pem")).connect(&url).await.expect("TLS connect");
    assert!(client.server_info().tls_required);
    round_trip(&client).await;
}

#[tokio::test]
async fn client_certificates_are_required_when_verify_is_on() {
    let pki = Pki::new();
    let server = tls_server(&pki, true, HandshakeFirst::Off).await;
    let url = format!("tls://localhost:{}", server.addr.port());
    let with_cert = client_opts(&pki.path("ca.pem"))
        .add_client_certificate(pki.path("client-cert.pem"), pki.path("client-key.pem"))
        .connect(&url)
        .await
        .expect("a client with a certificate connects");
    round_trip(&with_cert).await;

    let refused = tokio::time::timeout(TIMEOUT, client_opts(&pki.path("ca.pem")).connect(&url)).await;
    assert!(refused.expect("answer in time").is_err(), "a client without a certificate is refused");
}

#[tokio::test]
async fn handshake_first() {
    let pki = Pki::new();
    let server = tls_server(&pki, false, HandshakeFirst::On).await;
    let url = format!("tls://localhost:{}", server.addr.port());
    let client = client_opts(&pki.path("ca.pem")).tls_first().connect(&url).await.expect("TLS-first connect");
    round_trip(&client).await;

    // Auto: a TLS-first client and a usual one both get in.
    let server = tls_server(&pki, false, HandshakeFirst::Auto(Duration::from_millis(200))).await;
    let url = format!("tls://localhost:{}", server.addr.port());
    let first = client_opts(&pki.path("ca.pem")).tls_first().connect(&url).await.expect("TLS-first connect");
    round_trip(&first).await;
    let usual = client_opts(&pki.path("ca.pem")).connect(&url).await.expect("INFO-first connect");
    round_trip(&usual).await;
}

#[tokio::test]
async fn plain_text_client_is_told_tls_is_required() {
    let pki = Pki::new();
    let server = tls_server(&pki, false, HandshakeFirst::Off).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // INFO arrives in plain text and says TLS is required.
    while !got.ends_with(b"\r\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before INFO");
        got.extend_from_slice(&buf[..n]);
    }
    let info = String::from_utf8_lossy(&got);
    assert!(info.starts_with("INFO ") && info.contains("\"tls_required\":true"), "{info}");
    stream.write_all(b"CONNECT {}\r\nPING\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, b"-ERR 'Secure Connection - TLS Required'\r\n");
    server.assert_healthy_tls(&pki.path("ca.pem")).await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_up_others() {
    let pki = Pki::new();
    let server = tls_server(&pki, false, HandshakeFirst::Off).await;
    // Many connections that never start their handshake...
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // ...while a real client connects and works at once.
    let url = format!("tls://localhost:{}", server.addr.port());
    let client = tokio::time::timeout(Duration::from_secs(1), client_opts(&pki.path("ca.pem")).connect(&url))
        .await
        .expect("not held up")
        .expect("connect");
    round_trip(&client).await;
    drop(idle);
}

trait TlsHealth {
    async fn assert_healthy_tls(&self, ca: &Path);
}

impl TlsHealth for TestServer {
    async fn assert_healthy_tls(&self, ca: &Path) {
        let url = format!("tls://localhost:{}", self.addr.port());
        let client = client_opts(ca).connect(&url).await.expect("a fresh TLS client connects");
        round_trip(&client).await;
    }
}

/// Removing `tls {}` on reload serves new clients in plain text; adding it back serves them
/// over TLS again. A connection open across the reload keeps working.
#[tokio::test]
async fn reload_removes_and_adds_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, false, HandshakeFirst::Off).await;
    let url = format!("tls://localhost:{}", server.addr.port());
    let before = client_opts(&pki.path("ca.pem")).connect(&url).await.expect("TLS connect");
    round_trip(&before).await;

    let plain = courier::Options { tls: None, ..options() };
    server.handle.reload(plain.clone()).expect("reload without TLS");
    let mut c = server.raw().await;
    assert!(!String::from_utf8_lossy(&c.info_line).contains("tls_required"), "INFO still asks for TLS");
    c.send("CONNECT {\"verbose\":false}\r\n").await;
    c.ping_pong().await;
    let client = server.nats().await;
    round_trip(&client).await;
    round_trip(&before).await;

    server.handle.reload(courier::Options { tls: Some(pki.tls(false)), ..plain.clone() }).expect("reload with TLS");
    let c = server.raw().await;
    assert!(String::from_utf8_lossy(&c.info_line).contains("\"tls_required\":true"));
    let after = client_opts(&pki.path("ca.pem")).connect(&url).await.expect("TLS connect after reload");
    round_trip(&after).await;

    // TLS files that do not load are refused, and the server keeps its TLS settings.
    let broken = TlsOptions { cert_file: pki.path("missing.pem"), ..pki.tls(false) };
    let err = server.handle.reload(courier::Options { tls: Some(broken), ..plain }).expect_err("bad TLS refused");
    assert!(err.to_string().starts_with("tls:"), "{err}");
    let again = client_opts(&pki.path("ca.pem")).connect(&url).await.expect("TLS still served");
    round_trip(&again).await;
}
