//! The gRPC control link against the real binary, with a tonic client in
//! the control plane's seat and SIPp as the trunk's far end: a placed call
//! answered and hung up, the event journal across SIGKILL and Ack, and a
//! pushed configuration routing inbound calls (and surviving a restart).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::time::Duration;

use codeb_proto::v1::switch_client::SwitchClient;
use codeb_proto::v1::{self, event, inbound_route};
use common::{Switch, scenario, sipp_client, sipp_server};
use tonic::transport::Channel;

fn carrier_config(carrier_port: u16) -> String {
    format!(
        r#"
[[trunks]]
id = "tr_00000000000000ca"
host = "127.0.0.1"
port = {carrier_port}
default = true
options_interval = 0
"#
    )
}

async fn client(sw: &Switch) -> SwitchClient<Channel> {
    SwitchClient::connect(sw.grpc_url()).await.unwrap()
}

fn place(call_id: &str) -> v1::PlaceCallRequest {
    v1::PlaceCallRequest {
        call_id: call_id.into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        display_name: "Test".into(),
        attempt: 1,
        ..Default::default()
    }
}

/// The next event of a stream, within `wait`.
async fn next(s: &mut tonic::Streaming<v1::Event>, wait: Duration) -> Option<v1::Event> {
    tokio::time::timeout(wait, s.message())
        .await
        .ok()
        .and_then(|r| r.unwrap())
}

async fn subscribe(
    c: &mut SwitchClient<Channel>,
    journal_id: &str,
    after_seq: u64,
) -> tonic::Streaming<v1::Event> {
    c.subscribe(v1::SubscribeRequest {
        journal_id: journal_id.into(),
        after_seq,
    })
    .await
    .unwrap()
    .into_inner()
}

fn ended(ev: &v1::Event) -> &v1::CallEnded {
    match &ev.kind {
        Some(event::Kind::Ended(e)) => e,
        k => panic!("expected CallEnded, got {k:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_call_is_answered_and_hung_up_with_events() {
    let mut carrier = sipp_server(&["-sn", "uas", "-m", "1"]);
    let sw = Switch::start(&carrier_config(carrier.port), &[]);
    let mut c = client(&sw).await;
    let stats = c.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert!(!stats.node_id.is_empty() && !stats.journal_id.is_empty());
    assert_eq!(stats.max_calls, 20_000);
    let mut events = subscribe(&mut c, "", 0).await;

    let placed = c
        .place_call(place("oac-e2e-0001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.trunk_id, "tr_00000000000000ca");
    assert!(!placed.duplicate);
    let again = c
        .place_call(place("oac-e2e-0001"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.duplicate,
        "placing the same call_id and attempt twice rings once"
    );

    let ev = next(&mut events, Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(ev.seq, 1);
    assert_eq!(ev.journal_id, stats.journal_id);
    assert_eq!(ev.call_id, "oac-e2e-0001");
    assert_eq!(ev.attempt, 1, "events name the call's attempt");
    assert_eq!(ev.tenant, "example.com");
    match &ev.kind {
        Some(event::Kind::Answered(a)) => {
            assert_eq!(a.direction, "outbound");
            assert_eq!(a.trunk_id, "tr_00000000000000ca");
        }
        k => panic!("{k:?}"),
    }
    let stats = c.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.last_seq, 1);

    c.hangup(v1::HangupRequest {
        call_id: "oac-e2e-0001".into(),
        outcome: "finished".into(),
        attempt: 1,
    })
    .await
    .unwrap();
    let ev = next(&mut events, Duration::from_secs(10))
        .await
        .expect("ended");
    assert_eq!(ev.seq, 2);
    let e = ended(&ev);
    assert_eq!(e.outcome, "finished");
    assert!(e.answered);
    assert!(e.answered_at_unix_ms > 0);
    assert_eq!(e.sip_status, 0);
    // SIPp's uas ends its call with our BYE: it exits successfully.
    let st = tokio::task::spawn_blocking(move || carrier.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(st.is_some_and(|s| s.success()), "SIPp got the BYE: {st:?}");

    let err = c
        .hangup(v1::HangupRequest {
            call_id: "oac-e2e-0001".into(),
            outcome: String::new(),
            attempt: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Named with its attempt, an ended call is told as over, not unknown
    // (its end may not have been applied yet where the hangup came from).
    let r = c
        .hangup(v1::HangupRequest {
            call_id: "oac-e2e-0001".into(),
            outcome: String::new(),
            attempt: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.already_ending);
    // An attempt hung up before its PlaceCall came is never placed.
    let err = c
        .hangup(v1::HangupRequest {
            call_id: "oac-e2e-0002".into(),
            outcome: String::new(),
            attempt: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.place_call(place("oac-e2e-0002")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("hung up before"), "{err}");
    let err = c
        .transfer(v1::TransferRequest {
            call_id: "oac-e2e-0001".into(),
            target: Some(v1::transfer_request::Target::ToUser("alex".into())),
            trunk_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "the call is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_survives_sigkill_and_forgets_what_was_acked() {
    let carrier = sipp_server(&["-sf", scenario("uas_busy.xml").to_str().unwrap()]);
    let mut sw = Switch::start(&carrier_config(carrier.port), &[]);
    let mut c = client(&sw).await;
    let journal_id = c
        .stats(v1::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .journal_id;
    let mut events = subscribe(&mut c, &journal_id, 0).await;
    for id in ["oac-busy-1", "oac-busy-2"] {
        c.place_call(place(id)).await.unwrap();
        let ev = next(&mut events, Duration::from_secs(10))
            .await
            .expect("ended");
        assert_eq!(ev.call_id, id);
        let e = ended(&ev);
        assert_eq!(
            (e.outcome.as_str(), e.sip_status, e.answered),
            ("busy", 486, false)
        );
    }
    drop(events);
    drop(c);

    // SIGKILL: nothing written is lost, and the journal is the same one.
    tokio::task::block_in_place(|| sw.kill_and_restart());
    let mut c = client(&sw).await;
    let stats = c.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.journal_id, journal_id);
    assert_eq!(stats.last_seq, 2);
    let mut events = subscribe(&mut c, &journal_id, 0).await;
    let a = next(&mut events, Duration::from_secs(5)).await.unwrap();
    let b = next(&mut events, Duration::from_secs(5)).await.unwrap();
    assert_eq!((a.seq, a.call_id.as_str()), (1, "oac-busy-1"));
    assert_eq!((b.seq, b.call_id.as_str()), (2, "oac-busy-2"));
    assert!(
        next(&mut events, Duration::from_millis(500))
            .await
            .is_none()
    );
    drop(events);

    // Acknowledged events are forgotten; the sequence goes on after them.
    c.ack(v1::AckRequest {
        journal_id: journal_id.clone(),
        up_to_seq: 2,
    })
    .await
    .unwrap();
    let mut events = subscribe(&mut c, &journal_id, 0).await;
    assert!(
        next(&mut events, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing older than the ack"
    );
    c.place_call(place("oac-busy-3")).await.unwrap();
    let ev = next(&mut events, Duration::from_secs(10)).await.unwrap();
    assert_eq!((ev.seq, ev.call_id.as_str()), (3, "oac-busy-3"));
    // Another journal's id: everything retained, from the start.
    let mut all = subscribe(&mut c, "some-other-journal", 2).await;
    let ev = next(&mut all, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev.seq, 3);
    let err = c
        .ack(v1::AckRequest {
            journal_id: "some-other-journal".into(),
            up_to_seq: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

fn snapshot(version: u64, uas_port: u16) -> v1::ConfigSnapshot {
    v1::ConfigSnapshot {
        version,
        trunks: vec![v1::Trunk {
            id: "tr_0000000000000001".into(),
            tenant: "example.com".into(),
            host: "127.0.0.1".into(),
            inbound: vec!["127.0.0.0/8".into()],
            ..Default::default()
        }],
        users: vec![v1::User {
            name: "uas".into(),
            tenant: "example.com".into(),
            contact: format!("sip:uas@127.0.0.1:{uas_port}"),
            ..Default::default()
        }],
        routes: vec![
            v1::InboundRoute {
                tenant: "example.com".into(),
                did: "7000".into(),
                target: Some(inbound_route::Target::VirtualNumber("+15550007000".into())),
                ..Default::default()
            },
            v1::InboundRoute {
                tenant: "example.com".into(),
                did: "*".into(),
                target: Some(inbound_route::Target::User("uas".into())),
                ..Default::default()
            },
        ],
        virtual_numbers: vec![v1::VirtualNumber {
            tenant: "example.com".into(),
            number: "+15550007000".into(),
            name: "reception".into(),
            ..Default::default()
        }],
        whitelists: vec![],
    }
}

/// A raw INVITE to `did`; the final status and the Warning header.
fn invite_status(sw: &Switch, did: &str) -> (u16, String) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let to = sw.sip;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let msg = format!(
        "INVITE sip:{did}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-v{n}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@{me}>;tag=f{n}\r\nTo: <sip:{did}@{to}>\r\nCall-ID: vn-{n}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        n = common::rand_u32(),
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = s.recv_from(&mut buf).expect("a final response");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status = common::status_of(&buf[..n]).unwrap();
        if status >= 200 {
            let warning = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("warning:"))
                .unwrap_or("")
                .to_owned();
            return (status, warning);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_configuration_routes_inbound_calls_and_outlives_a_restart() {
    let uas = sipp_server(&["-sn", "uas"]);
    // Started with no routes at all: the inbound call has nowhere to go.
    let mut sw = Switch::start("", &[("CODEB_GEMINI_URL", "ws://127.0.0.1:9")]);
    let mut c = client(&sw).await;
    let r = c
        .apply_config(snapshot(5, uas.port))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.running_version), (true, 5));
    let r = c
        .apply_config(snapshot(5, uas.port))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.running_version), (false, 5), "not newer");
    let mut bad = snapshot(6, uas.port);
    bad.trunks[0].inbound = vec!["nonsense".into()];
    let err = c.apply_config(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let stats = c.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.config_version, 5);

    let calls = |target| {
        tokio::task::spawn_blocking(move || {
            sipp_client(target, &["-sn", "uac", "-m", "2", "-r", "2", "-s", "4711"])
        })
    };
    assert_eq!(
        calls(sw.sip).await.unwrap(),
        (2, 0),
        "routed by the pushed routes"
    );
    // The number's AI engine is unreachable (port 9): the caller is
    // refused with 503 rather than routed on to the user by "*".
    // (Without its virtual number the route would be refused with a
    // Warning naming it; the AI's failure has none.)
    let (status, warning) = tokio::task::block_in_place(|| invite_status(&sw, "7000"));
    assert_eq!(
        (status, warning.as_str()),
        (503, ""),
        "the virtual number's AI could not start"
    );

    // The pushed snapshot is kept and wins over the (empty) file.
    drop(c);
    tokio::task::block_in_place(|| sw.kill_and_restart());
    let mut c = client(&sw).await;
    let stats = c.stats(v1::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.config_version, 5);
    let (status, warning) = tokio::task::block_in_place(|| invite_status(&sw, "7000"));
    assert_eq!(
        (status, warning.as_str()),
        (503, ""),
        "the virtual-number route and number are kept"
    );
    assert_eq!(
        calls(sw.sip).await.unwrap(),
        (2, 0),
        "routes kept across a restart"
    );
    // SIGHUP no longer reloads the (empty) file over the pushed snapshot.
    sw.sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls(sw.sip).await.unwrap(),
        (2, 0),
        "routes kept after SIGHUP"
    );
    let r = c
        .apply_config(snapshot(4, uas.port))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !r.applied,
        "an older snapshot is ignored after a restart too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_new_calls_until_acknowledged() {
    let carrier = sipp_server(&["-sf", scenario("uas_busy.xml").to_str().unwrap()]);
    let sw = Switch::start(
        &carrier_config(carrier.port),
        &[("CODEB_JOURNAL_MAX_EVENTS", "1")],
    );
    let mut c = client(&sw).await;
    let journal_id = c
        .stats(v1::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .journal_id;
    let mut events = subscribe(&mut c, &journal_id, 0).await;
    c.place_call(place("oac-full-1")).await.unwrap();
    let ev = next(&mut events, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ev.seq, 1);
    // One retained event fills it (the journal thread marks it full
    // before it streams the event): the next call is refused, not dialled.
    let e = c.place_call(place("oac-full-2")).await.unwrap_err();
    let full = tokio::task::block_in_place(|| sw.metric("codeb_journal_full "));
    assert_eq!(full, Some(1.0));
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("journal"), "{e}");
    c.ack(v1::AckRequest {
        journal_id: journal_id.clone(),
        up_to_seq: 1,
    })
    .await
    .unwrap();
    c.place_call(place("oac-full-2")).await.unwrap();
    let ev = next(&mut events, Duration::from_secs(10)).await.unwrap();
    assert_eq!((ev.seq, ev.call_id.as_str()), (2, "oac-full-2"));
}

/// SIGHUP reads the configuration file again (off the SIP thread) and
/// the switch runs on it: a trunk added to the file is probed with OPTIONS.
#[test]
fn sighup_reloads_the_configuration_file() {
    let trunk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sw = Switch::start("", &[]);
    let config = format!(
        "[[trunks]]\nid = \"tr_00000000000000cb\"\nhost = \"127.0.0.1\"\nport = {}\noptions_interval = 1\n",
        trunk.local_addr().unwrap().port()
    );
    std::fs::write(sw.dir.path().join("switch.toml"), config).unwrap();
    sw.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    let got = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no OPTIONS to the new trunk"
        );
        if let Ok(n) = trunk.recv(&mut buf) {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    };
    assert!(got.starts_with("OPTIONS "), "{got}");
}

/// With CODEB_SWITCH_TOKEN set, the control link takes only calls that
/// carry it as a bearer: none, or a wrong one, is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_token_is_required_of_every_call() {
    const TOKEN: &str = "a-long-enough-switch-token";
    let sw = Switch::start("", &[("CODEB_SWITCH_TOKEN", TOKEN)]);
    let mut c = client(&sw).await;
    let err = c.stats(v1::StatsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    for (bearer, ok) in [
        ("Bearer a-long-enough-switch-tokeX", false),
        ("Bearer a-long-enough-switch-token-and-more", false),
        ("a-long-enough-switch-token", false),
        ("Bearer a-long-enough-switch-token", true),
    ] {
        let mut req = tonic::Request::new(v1::StatsRequest {});
        req.metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        let got = c.stats(req).await;
        match got {
            Ok(r) => {
                assert!(ok, "{bearer} was taken");
                assert!(!r.into_inner().node_id.is_empty());
            }
            Err(e) => {
                assert!(!ok, "{bearer}: {e:?}");
                assert_eq!(e.code(), tonic::Code::Unauthenticated);
            }
        }
    }
}
