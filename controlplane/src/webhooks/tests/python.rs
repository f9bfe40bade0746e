//! The spec's own Flask receiver (`tests/webhook_receiver.py`, the
//! "Verifying signatures" recipe verbatim) accepts what we send, byte for
//! byte, and refuses a forgery. Needs `python3` with Flask
//! (`pip install flask`; `.ci/run` installs it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_types::EventName;
use serde_json::{Value, json};

use super::{Fx, SOON, TENANT, closed_port, on_both};
use crate::store::{DeliveryState, event_body};

on_both!(the_spec_flask_recipe_verifies_every_delivery);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_receiver.py");

async fn start_flask(port: u16, secret: &str, log: &std::path::Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(log)
        .env("CODEB_SECRET", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed for the Flask receiver test");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = e.read_to_string(&mut err).await;
            }
            panic!(
                "the Flask receiver exited ({status}); it needs python3 with Flask \
                 (pip install flask):\n{err}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the Flask receiver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_spec_flask_recipe_verifies_every_delivery(mut fx: Fx) {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("received.jsonl");
    let url = format!("http://127.0.0.1:{port}/codeb-webhook");
    let (sub, secret) = fx.subscribe(&url, &["*"]).await;
    let _flask = start_flask(port, &secret, &log).await;
    fx.start();
    let at = fx.clock.now();
    let ended = json!({
        "callId": "vnum0123456789ab", "number": "1234", "outcome": "finished",
        "note": "Grüße, 日本語 — \"quoted\"\ttab\nnewline  and  spaces ✓",
    });
    let saved = json!({"callId": "vnum0123456789ab", "file": "vnum-1234-x.txt"});
    fx.event(
        EventName::CallEnded,
        ended.clone(),
        Some("vnum0123456789ab"),
    )
    .await;
    fx.event(
        EventName::TranscriptSaved,
        saved.clone(),
        Some("vnum0123456789ab"),
    )
    .await;
    let d = fx
        .until(&sub, "both accepted by Flask", |d| {
            d.len() == 2 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
        })
        .await;
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, (delivery, (name, data))) in lines.iter().zip(d.iter().zip([
        (EventName::CallEnded, &ended),
        (EventName::TranscriptSaved, &saved),
    ])) {
        assert_eq!(line["event"], name.as_str());
        assert_eq!(line["delivery"], delivery.id.as_str());
        assert_eq!(line["attempt"], "1");
        assert_eq!(line["payload"]["data"], *data);
        let body = event_body(TENANT, name, data, at).unwrap();
        assert_eq!(
            line["bodySha256"],
            crate::crypto::sha256_hex(body.as_bytes()),
            "Flask saw exactly the bytes recorded"
        );
    }
    // A forged request (wrong secret) is refused with 401, as the spec says.
    let client = crate::webhooks::WebhookClient::new(fx.guard.clone(), SOON).unwrap();
    let forged = br#"{"event":"call.ended","tenant":"x","ts":"","data":{}}"#;
    let reply = client
        .post(
            &url,
            &[(
                "x-codeb-signature",
                super::codeb_sig("whsec_not-the-secret", forged),
            )],
            Bytes::from_static(forged),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    fx.stop().await;
}
