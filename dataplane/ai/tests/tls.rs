//! `wss://`: the simulator behind a self-signed certificate made at test
//! time; a client trusting it connects, one with the webpki roots does not.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;

use codeb_ai::sim::{SimServer, Vendor, tls_config};
use codeb_ai::transport::{tls_also_trusting, tls_with_roots};
use codeb_ai::{Endpoints, EngineError, EngineEvent};
use common::*;

/// `der` as PEM text (rcgen is built without its PEM writer).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s + &format!("-----END {label}-----\n")
}

/// A server config for a fresh self-signed `localhost` certificate, a root
/// store trusting just it, and its PEM.
fn server_tls() -> (Arc<rustls::ServerConfig>, rustls::RootCertStore, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = pem("CERTIFICATE", cert.cert.der());
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    (tls_config(vec![der], key).unwrap(), roots, pem)
}

#[tokio::test]
async fn gemini_over_tls_with_a_private_root() {
    let (server, roots, _) = server_tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = SimServer::start(Vendor::Gemini, listener, sim_cfg(), Some(server)).unwrap();
    let url = format!("wss://localhost:{}", sim.addr().port());
    assert!(sim.url().starts_with("wss://"));

    let mut cfg = config(&sim, "", "sim-key", "chat");
    cfg.endpoints = Endpoints::parse(&url, &url).unwrap();
    cfg.tls = Some(tls_with_roots(roots).unwrap());
    let mut c = Caller::connect(cfg.clone()).await;
    c.until("ready", |e| *e == EngineEvent::Ready).await;
    c.ai_says().await;

    cfg.tls = None;
    let err = codeb_ai::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Transport(m) if m.contains("TLS")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_ca_file_is_trusted_beside_the_webpki_roots() {
    let (server, _, ours) = server_tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = SimServer::start(Vendor::OpenAi, listener, sim_cfg(), Some(server)).unwrap();
    let url = format!("wss://localhost:{}", sim.addr().port());
    let mut cfg = config(&sim, "openai/gpt-realtime", "sim-key", "chat");
    cfg.endpoints = Endpoints::parse(&url, &url).unwrap();
    // Another certificate first: a bundle is read whole.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    let other = pem("CERTIFICATE", other.cert.der());
    let bundle = format!("{other}\n{ours}");
    cfg.tls = Some(tls_also_trusting(bundle.as_bytes()).unwrap());
    let mut c = Caller::connect(cfg.clone()).await;
    c.until("ready", |e| *e == EngineEvent::Ready).await;
    c.ai_says().await;

    // Trusting only the other certificate is not enough.
    cfg.tls = Some(tls_also_trusting(other.as_bytes()).unwrap());
    let err = codeb_ai::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Transport(m) if m.contains("TLS")),
        "{err:?}"
    );
}

#[test]
fn a_ca_file_without_a_usable_certificate_is_refused() {
    let key = pem(
        "PRIVATE KEY",
        &rcgen::KeyPair::generate().unwrap().serialize_der(),
    );
    let cut = {
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let pem = pem("CERTIFICATE", cert.cert.der());
        pem[..pem.len() / 2].to_owned()
    };
    let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for (pem, says) in [
        ("", "no PEM certificate"),
        ("just text\n", "no PEM certificate"),
        (key.as_str(), "no PEM certificate"),
        (cut.as_str(), "certificate 1"),
        (not_a_cert, "certificate 1"),
    ] {
        match tls_also_trusting(pem.as_bytes()) {
            Err(EngineError::Config(m)) => assert!(m.contains(says), "{pem:?}: {m}"),
            other => panic!("{pem:?}: {other:?}"),
        }
    }
    let huge = vec![b'A'; codeb_ai::transport::MAX_CA_FILE_BYTES + 1];
    assert!(matches!(
        tls_also_trusting(&huge),
        Err(EngineError::Config(_))
    ));
}
