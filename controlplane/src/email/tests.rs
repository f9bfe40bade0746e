//! The sender against a real SMTP sink on a socket, with a stepped clock:
//! accepted, retried after a 451 (the same message again), failed on a
//! 550; implicit TLS with AUTH; nothing sent twice by two senders.

use std::sync::Arc;
use std::time::Duration;

use super::sender::{self, SenderConfig};
use super::smtp::{Envelope, SmtpClient, SmtpError, SmtpUrl};
use super::smtp_sink::{Answer, Script, Sink, qp_decode};
use crate::clock::Clock;
use crate::store::testing::{self, T0, TENANT, TestDb};
use crate::store::{EmailRecord, EmailState, NewCall, Store};

fn script() -> Script {
    Arc::new(|to: &str, n: usize| match (to, n) {
        (t, 0) if t.starts_with("later") => Answer::AtEnd(451),
        (t, _) if t.starts_with("never") => Answer::AtRcpt(550),
        _ => Answer::Accept,
    })
}

fn config(retry: Duration) -> SenderConfig {
    SenderConfig {
        from: "codeb@[127.0.0.1]".into(),
        host: "[127.0.0.1]".into(),
        retry_delays: vec![retry],
        concurrency: 4,
        poll: Duration::from_millis(20),
        lease: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(2),
        retention: Duration::from_secs(30 * 24 * 3600),
    }
}

/// Queues the cancellation email of a new call to `email`.
async fn queue(s: &Store, n: u8, email: &str) -> String {
    let c = NewCall {
        display_name: "Dentist".into(),
        email: email.into(),
        ..testing::new_call(n, 0)
    };
    s.insert_call(&c).await.unwrap();
    s.hangup_unplaced(TENANT, &c.call_id, T0).await.unwrap();
    c.call_id.to_string()
}

async fn email(s: &Store, call: &str) -> EmailRecord {
    s.call_email(TENANT, call).await.unwrap().unwrap()
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .unwrap_or("")
}

async fn sends_retries_and_fails(db: TestDb) {
    let sink = Sink::start(script()).await;
    let s = &db.store;
    let ok = queue(s, 1, "ok@example.com").await;
    let later = queue(s, 2, "later@example.com").await;
    let never = queue(s, 3, "never@example.com").await;
    let clock = Clock::manual(T0);
    let client = SmtpClient::new(
        SmtpUrl::parse(&sink.url()).unwrap(),
        "[127.0.0.1]",
        Duration::from_secs(5),
    )
    .unwrap();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let h = sender::start(
        s.clone(),
        clock.clone(),
        client,
        config(Duration::from_secs(30)),
        Some(metrics.clone()),
    );
    eventually("all three tried once", || async {
        email(s, &ok).await.state == EmailState::Sent
            && email(s, &never).await.state == EmailState::Failed
            && email(s, &later).await.attempts == 1
    })
    .await;
    let n = email(s, &never).await;
    assert!(n.last_error.contains("RCPT TO: 550"), "{}", n.last_error);
    assert_eq!(n.attempts, 1, "a 5xx is not retried");
    let l = email(s, &later).await;
    assert_eq!(l.state, EmailState::Queued);
    assert!(l.last_error.contains("451"), "{}", l.last_error);
    assert_eq!(l.next_attempt_at, T0.plus_ms(30_000));
    // Not before its time ...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(email(s, &later).await.attempts, 1);
    // ... then sent.
    clock.advance_ms(30_000);
    eventually("the retry sent", || async {
        email(s, &later).await.state == EmailState::Sent
    })
    .await;
    assert_eq!(email(s, &later).await.attempts, 2);
    h.shutdown().await;
    // What the sink got: one accepted message each for ok and later, the
    // same message both times for later.
    let accepted = sink.accepted();
    let to: Vec<&str> = accepted.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to.len(), 2, "{to:?}");
    assert!(to.contains(&"ok@example.com") && to.contains(&"later@example.com"));
    let tries: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|r| r.to == "later@example.com")
        .collect();
    assert_eq!(tries.len(), 2);
    assert_eq!(
        header(&tries[0].data, "Message-ID"),
        header(&tries[1].data, "Message-ID")
    );
    assert_eq!(tries[0].data, tries[1].data, "a retry is the same message");
    let m = &accepted[0].data;
    assert_eq!(accepted[0].from, "codeb@[127.0.0.1]");
    assert!(header(m, "Message-ID").ends_with("@[127.0.0.1]>"));
    assert_eq!(header(m, "Date"), "Thu, 28 May 2026 20:26:40 +0000");
    let (_, body) = m.split_once("\r\n\r\n").unwrap();
    let body = qp_decode(body);
    assert!(body.contains("Status:      cancelled"), "{body}");
    let text = metrics.render();
    assert!(text.contains("codeb_emails_sent_total 2"), "{text}");
    assert!(text.contains("codeb_emails_failed_total 1"), "{text}");
    assert!(text.contains("codeb_email_retries_total 1"), "{text}");
}

async fn two_senders_send_each_email_once(db: TestDb) {
    let sink = Sink::start(script()).await;
    let a = db.store.clone();
    let b = Store::open(&db.url, db.dir.path()).await.unwrap();
    let mut calls = Vec::new();
    for n in 10..30u8 {
        calls.push(queue(&a, n, &format!("ok{n}@example.com")).await);
    }
    let clock = Clock::manual(T0);
    let client = || {
        SmtpClient::new(
            SmtpUrl::parse(&sink.url()).unwrap(),
            "[127.0.0.1]",
            Duration::from_secs(5),
        )
        .unwrap()
    };
    let ha = sender::start(
        a.clone(),
        clock.clone(),
        client(),
        config(Duration::from_secs(1)),
        None,
    );
    let hb = sender::start(
        b.clone(),
        clock.clone(),
        client(),
        config(Duration::from_secs(1)),
        None,
    );
    eventually("all sent", || async {
        a.email_backlog().await.unwrap() == 0
    })
    .await;
    ha.shutdown().await;
    hb.shutdown().await;
    let mut to: Vec<String> = sink.accepted().into_iter().map(|r| r.to).collect();
    assert_eq!(to.len(), 20);
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 20, "no email went out twice");
    for c in &calls {
        assert_eq!(email(&a, c).await.attempts, 1);
    }
    b.close().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(crate::store::testing::TestDb::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(db) = crate::store::testing::TestDb::postgres().await {
                    super::$name(db).await;
                }
            })*
        }
    };
}

both!(sends_retries_and_fails, two_senders_send_each_email_once);

#[tokio::test]
async fn implicit_tls_with_auth() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let sink = Sink::start_tls(script(), Arc::new(server)).await;
    let url = SmtpUrl::parse(&format!(
        "smtps://mailer%40t.example:s3cret%21@127.0.0.1:{}",
        sink.addr.port()
    ))
    .unwrap();
    let client =
        SmtpClient::with_roots(url.clone(), "[127.0.0.1]", Duration::from_secs(5), roots).unwrap();
    let env = Envelope {
        from: "codeb@t.example",
        to: "ok@example.com",
        message: "Subject: x\r\n\r\n.hi\r\n",
    };
    client.send(&env).await.unwrap();
    let got = sink.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].user.as_deref(), Some("mailer@t.example"));
    assert_eq!(
        got[0].data, "Subject: x\r\n\r\n.hi\r\n",
        "dot-stuffing undone"
    );
    // A client that does not trust the certificate sends nothing.
    let untrusting = SmtpClient::new(url, "[127.0.0.1]", Duration::from_secs(5)).unwrap();
    let err = untrusting.send(&env).await.unwrap_err();
    assert!(
        matches!(&err, SmtpError::Transient(m) if m.contains("TLS")),
        "{err:?}"
    );
    assert_eq!(sink.accepted().len(), 1);
}

#[tokio::test]
async fn a_silent_or_absent_relay_is_transient() {
    // Nobody listens: a connection failure, retried later.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = SmtpUrl::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
    let c = SmtpClient::new(url, "x", Duration::from_secs(2)).unwrap();
    let env = Envelope {
        from: "a@b.example",
        to: "c@d.example",
        message: "\r\n",
    };
    assert!(matches!(c.send(&env).await, Err(SmtpError::Transient(_))));
    // A peer that accepts and never greets: the step's time limit.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let url = SmtpUrl::parse(&format!("smtp://{addr}")).unwrap();
    let c = SmtpClient::new(url, "x", Duration::from_millis(200)).unwrap();
    let err = c.send(&env).await.unwrap_err();
    assert!(
        matches!(&err, SmtpError::Transient(m) if m.contains("in time")),
        "{err:?}"
    );
    hold.abort();
    // A non-ASCII recipient needs SMTPUTF8, which the sink does not offer.
    let sink = Sink::start(script()).await;
    let c = SmtpClient::new(
        SmtpUrl::parse(&sink.url()).unwrap(),
        "x",
        Duration::from_secs(2),
    )
    .unwrap();
    let utf = Envelope {
        to: "bücher@example.com",
        ..env
    };
    assert!(matches!(c.send(&utf).await, Err(SmtpError::Permanent(m)) if m.contains("SMTPUTF8")));
}
