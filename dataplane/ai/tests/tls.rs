//! `wss://`: the simulator behind a self-signed certificate made at test
//! time; a client trusting it connects, one with the webpki roots does not.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;

use codeb_ai::sim::{SimServer, Vendor};
use codeb_ai::transport::tls_with_roots;
use codeb_ai::{Endpoints, EngineError, EngineEvent};
use common::*;

fn server_tls() -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    (Arc::new(cfg), roots)
}

#[tokio::test]
async fn gemini_over_tls_with_a_private_root() {
    let (server, roots) = server_tls();
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
