//! The SSRF guard on delivery: every address form of an internal target
//! is refused before a connection is made, a name that rebinds to an
//! internal address after creation is refused, and HTTPS goes to the
//! vetted address while verifying the certificate for the URL's name.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use codeb_types::EventName;
use serde_json::json;

use super::{Fx, QUIET, Receiver, SOON, always, fixed_names};
use crate::store::DeliveryState;
use crate::store::testing::TestDb;
use crate::webhooks::{Resolver, UrlGuard, WebhookClient};

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn internal_targets_are_refused_on_delivery() {
        super::internal_targets_are_refused_on_delivery(
            crate::store::testing::TestDb::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_goes_to_the_vetted_address() {
        super::https_goes_to_the_vetted_address(crate::store::testing::TestDb::sqlite().await)
            .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn internal_targets_are_refused_on_delivery() {
        if let Some(db) = crate::store::testing::TestDb::postgres().await {
            super::internal_targets_are_refused_on_delivery(db).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_goes_to_the_vetted_address() {
        if let Some(db) = crate::store::testing::TestDb::postgres().await {
            super::https_goes_to_the_vetted_address(db).await;
        }
    }
}

async fn internal_targets_are_refused_on_delivery(db: TestDb) {
    // A receiver that listens on loopback; no CODEB_WEBHOOK_ALLOW here, so
    // no form of its address may be reached.
    let rx = Receiver::start(always(200)).await;
    let port = rx.addr.port();
    // rebind.test answers public once (the creation check), then loopback.
    let lookups = Arc::new(AtomicUsize::new(0));
    let n = lookups.clone();
    let names = move |host: &str| -> Option<Vec<IpAddr>> {
        match host {
            "localhost.test" => Some(vec![[127, 0, 0, 1].into()]),
            "metadata.test" => Some(vec![[169, 254, 169, 254].into()]),
            "mixed.test" => Some(vec![[93, 184, 216, 34].into(), [127, 0, 0, 1].into()]),
            "rebind.test" if n.fetch_add(1, Ordering::SeqCst) == 0 => {
                Some(vec![[93, 184, 216, 34].into()])
            }
            "rebind.test" => Some(vec![[127, 0, 0, 1].into()]),
            _ => None,
        }
    };
    let guard = UrlGuard::new(vec![], vec![], Resolver::Fixed(Arc::new(names)));
    let rebind = format!("http://rebind.test:{port}/h");
    assert_eq!(
        guard
            .check_new_url(&url::Url::parse(&rebind).unwrap())
            .await,
        Ok(()),
        "looked public when the subscription was created"
    );
    let mut fx = Fx::with_guard(db, guard);
    let mut subs = Vec::new();
    for url in [
        format!("http://127.0.0.1:{port}/h"),
        format!("http://127.1:{port}/h"),
        format!("http://[::ffff:127.0.0.1]:{port}/h"),
        format!("http://[::ffff:7f00:1]:{port}/h"),
        format!("http://0.0.0.0:{port}/h"),
        format!("http://[::]:{port}/h"),
        format!("http://[::1]:{port}/h"),
        format!("http://[64:ff9b::7f00:1]:{port}/h"),
        format!("http://localhost.test:{port}/h"),
        format!("http://mixed.test:{port}/h"),
        rebind,
        "http://metadata.test/latest/meta-data".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/h".to_owned(),
        "http://100.64.0.1/h".to_owned(),
        "http://[fd00::1]/h".to_owned(),
    ] {
        // Stored as the API would store it (the URL crate's spelling).
        let stored = url::Url::parse(&url).unwrap().to_string();
        subs.push((url, fx.subscribe(&stored, &["*"]).await.0));
    }
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    for (url, sub) in &subs {
        let d = fx.until(sub, "attempt 1", |d| d[0].attempts == 1).await;
        assert_eq!(d[0].state, DeliveryState::Pending, "{url}");
        assert_eq!(d[0].log[0].status_code, None, "{url}");
        assert!(
            d[0].last_error.starts_with("refused: "),
            "{url}: {}",
            d[0].last_error
        );
    }
    let rebound = &fx.deliveries(&subs[10].1).await[0].last_error;
    assert!(
        rebound.contains("rebind.test resolved to 127.0.0.1, a loopback address"),
        "{rebound}"
    );
    rx.stays_at(0, QUIET).await;
    fx.stop().await;
}

/// A TLS receiver for `hooks.test` with a self-signed certificate.
async fn tls_receiver() -> (Receiver, rustls::RootCertStore) {
    let cert = rcgen::generate_simple_self_signed(vec!["hooks.test".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    // The receiver's plain-HTTP side, fed by a TLS terminator below.
    let rx = Receiver::start(always(200)).await;
    let inner = rx.addr;
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tls_listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(inner).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    let mut shown = rx;
    shown.addr = tls_addr;
    (shown, roots)
}

async fn https_goes_to_the_vetted_address(db: TestDb) {
    let (rx, roots) = tls_receiver().await;
    let port = rx.addr.port();
    let guard = UrlGuard::new(vec!["127.0.0.0/8".parse().unwrap()], vec![], fixed_names());
    let mut fx = Fx::with_guard(db, guard);
    fx.client = Some(WebhookClient::with_roots(fx.guard.clone(), fx.cfg.timeout, roots).unwrap());
    let (named, secret) = fx
        .subscribe(&format!("https://hooks.test:{port}/h"), &["*"])
        .await;
    // Same address, but the certificate is not for this name.
    let (by_ip, _) = fx
        .subscribe(&format!("https://127.0.0.1:{port}/h"), &["*"])
        .await;
    fx.start();
    fx.event(EventName::CallEnded, json!({"secure": true}), None)
        .await;
    let hit = rx.wait_for(1, SOON).await.remove(0);
    assert_eq!(hit.header("host"), format!("hooks.test:{port}"));
    assert!(super::verified(&secret, &hit));
    fx.until(&named, "success over TLS", |d| {
        d[0].state == DeliveryState::Succeeded
    })
    .await;
    let d = fx.until(&by_ip, "attempt 1", |d| d[0].attempts == 1).await;
    assert!(
        d[0].last_error.starts_with("TLS handshake failed"),
        "{}",
        d[0].last_error
    );
    rx.stays_at(1, QUIET).await;
    fx.stop().await;
}
