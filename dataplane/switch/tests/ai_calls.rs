//! AI calls against the real binary: a tonic client in the control plane's
//! seat places a call with a persona; SIPp answers as the carrier, with
//! its media on a socket this test owns, where a "callee" talks (paced
//! G.711 speech-like audio) and listens; the AI is the Gemini Live
//! simulator (`codeb_ai::sim`, the real wire protocol) that our real client
//! talks to. The call must carry audio both ways, report its transcript,
//! usage and end as the contract says, and hang up when the AI says
//! goodbye.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codeb_ai::sim::{SimConfig, SimRecord, SimServer, Vendor};
use codeb_media::g711::{ulaw_decode, ulaw_encode};
use codeb_proto::v1::switch_client::SwitchClient;
use codeb_proto::v1::{self, event};
use common::Switch;

const TRUNK: &str = "tr_00000000000000ca";

/// A callee that answers with its media at `media_port` and waits for our
/// BYE (the AI hangs up); written to `<dir>/<name>.xml`.
fn callee_scenario(dir: &std::path::Path, name: &str, media_port: u16) -> std::path::PathBuf {
    answering_scenario(dir, name, &media_port.to_string(), "")
}

/// A uas scenario answering PCMU with its media at `media` (a port, or
/// SIPp's `[media_port]`), running `after_ack` (scenario XML) once
/// ACKed, then waiting for our BYE; written to `<dir>/<name>.xml`.
fn answering_scenario(
    dir: &std::path::Path,
    name: &str,
    media: &str,
    after_ack: &str,
) -> std::path::PathBuf {
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@127.0.0.1:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {media} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=ptime:20
    ]]>
  </send>
  <recv request="ACK"/>
  {after_ack}
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
"#
    );
    let p = dir.join(format!("{name}.xml"));
    std::fs::write(&p, xml).unwrap();
    p
}

/// What the callee's media socket heard.
#[derive(Default)]
struct Heard {
    packets: AtomicU64,
    loud: AtomicU64,
}

/// The callee: waits for the switch's first packet (learning where to
/// send), sends `speech` of a `hz` tone after `pause` (300 Hz: a voice to
/// the simulator's ear; 1 kHz: a voicemail beep), then keeps sending
/// silence (as a phone does) until `stop`; counts what it receives.
fn callee_media(
    sock: UdpSocket,
    pause: Duration,
    speech: Duration,
    hz: f64,
    stop: Arc<AtomicBool>,
    heard: Arc<Heard>,
) -> std::thread::JoinHandle<()> {
    callee_media_behind_nat(sock, None, pause, speech, hz, stop, heard)
}

/// The NAT in front of a callee: its two mappings of the callee's media,
/// and when (after the callee starts sending) it drops the first for the
/// second.
struct Nat {
    first: UdpSocket,
    rebinds_at: Duration,
    second: UdpSocket,
}

/// [`callee_media`] behind `nat`: the callee hears the switch's first
/// packet where its SDP said (`sock`), then sends and listens on the
/// NAT's first mapping (a port its SDP does not name); when the NAT
/// rebinds, it sends nothing for 200 ms and carries on from the second
/// (the same stream: its SSRC and numbering go on), and `heard` counts
/// only what reaches the second.
fn callee_media_behind_nat(
    sock: UdpSocket,
    nat: Option<Nat>,
    pause: Duration,
    speech: Duration,
    hz: f64,
    stop: Arc<AtomicBool>,
    heard: Arc<Heard>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut sock = sock;
        let mut nat = nat;
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut peer: Option<SocketAddr> = None;
        let mut next = Instant::now();
        let mut started: Option<Instant> = None;
        let (mut seq, mut ts) = (1000u16, 160_000u32);
        let mut phase = 0f64;
        while !stop.load(Ordering::Relaxed) {
            if let (Some(t0), Some(n)) = (started, &nat)
                && Instant::now() >= t0 + n.rebinds_at
                && let Some(Nat { second, .. }) = nat.take()
            {
                std::thread::sleep(Duration::from_millis(200));
                second
                    .set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                sock = second;
                heard.packets.store(0, Ordering::Relaxed);
                heard.loud.store(0, Ordering::Relaxed);
                next = Instant::now();
            }
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 {
                    peer.get_or_insert(from);
                    heard.packets.fetch_add(1, Ordering::Relaxed);
                    let payload = &buf[12..n];
                    let energy: f64 = payload
                        .iter()
                        .map(|b| f64::from(ulaw_decode(*b)).powi(2))
                        .sum::<f64>()
                        / payload.len() as f64;
                    if energy.sqrt() > 500.0 {
                        heard.loud.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let Some(to) = peer else { continue };
            if started.is_none()
                && let Some(n) = nat.as_ref()
            {
                // Behind the NAT from the first packet on.
                let first = n.first.try_clone().unwrap();
                first
                    .set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                sock = first;
            }
            let now = Instant::now();
            if now < next {
                continue;
            }
            next += Duration::from_millis(20);
            let t0 = *started.get_or_insert(now);
            let talking = now >= t0 + pause && now < t0 + pause + speech;
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&ts.to_be_bytes());
            for _ in 0..160 {
                let s = if talking {
                    phase += std::f64::consts::TAU * hz / 8000.0;
                    (phase.sin() * 8000.0) as i16
                } else {
                    0
                };
                pkt.push(ulaw_encode(s));
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            let _ = sock.send_to(&pkt, to);
        }
    })
}

async fn next(s: &mut tonic::Streaming<v1::Event>, wait: Duration) -> Option<v1::Event> {
    tokio::time::timeout(wait, s.message())
        .await
        .ok()
        .and_then(|r| r.unwrap())
}

/// Every event of the node's journal, from the start.
async fn subscribe_all(
    c: &mut SwitchClient<tonic::transport::Channel>,
) -> tonic::Streaming<v1::Event> {
    c.subscribe(v1::SubscribeRequest {
        journal_id: String::new(),
        after_seq: 0,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Events up to and including the first CallEnded (or until 30 s pass
/// without one).
async fn until_ended(events: &mut tonic::Streaming<v1::Event>) -> Vec<v1::Event> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(ev) = next(events, Duration::from_secs(30)).await else {
            break;
        };
        let end = matches!(ev.kind, Some(event::Kind::Ended(_)));
        got.push(ev);
        if end {
            break;
        }
    }
    got
}

/// An outbound set-up: the Gemini simulator, a SIPp carrier that answers
/// one call with its media on `media` (a socket the test owns), and a
/// switch whose default trunk is that carrier.
struct Outbound {
    sim: SimServer,
    sw: Switch,
    carrier: common::Sipp,
    media: UdpSocket,
    _dir: tempfile::TempDir,
}

/// `extra` is more switch configuration (TOML).
async fn outbound(extra: &str) -> Outbound {
    outbound_with(extra, SimConfig::default()).await
}

/// [`outbound`] with the simulator's configuration `sim`.
async fn outbound_with(extra: &str, sim: SimConfig) -> Outbound {
    outbound_to(Vendor::Gemini, extra, sim).await
}

/// [`outbound_with`] with `vendor`'s simulator.
async fn outbound_to(vendor: Vendor, extra: &str, sim: SimConfig) -> Outbound {
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = callee_scenario(dir.path(), "callee", media.local_addr().unwrap().port());
    let carrier = common::sipp_server(&["-sf", scenario.to_str().unwrap(), "-m", "1"]);
    let (sim, sw) = ai_switch_to(vendor, carrier.port, extra, sim).await;
    Outbound {
        sim,
        sw,
        carrier,
        media,
        _dir: dir,
    }
}

/// The Gemini simulator, and a switch whose default trunk is the carrier
/// at `carrier_port` (`extra`: more configuration, TOML).
async fn ai_switch(carrier_port: u16, extra: &str) -> (SimServer, Switch) {
    ai_switch_with(carrier_port, extra, SimConfig::default()).await
}

async fn ai_switch_with(carrier_port: u16, extra: &str, cfg: SimConfig) -> (SimServer, Switch) {
    ai_switch_to(Vendor::Gemini, carrier_port, extra, cfg).await
}

/// [`ai_switch_with`] with `vendor`'s simulator.
async fn ai_switch_to(
    vendor: Vendor,
    carrier_port: u16,
    extra: &str,
    cfg: SimConfig,
) -> (SimServer, Switch) {
    let sim = SimServer::bind(vendor, "127.0.0.1:0", cfg).await.unwrap();
    let config = format!(
        "[[trunks]]\nid = \"{TRUNK}\"\nhost = \"127.0.0.1\"\nport = {carrier_port}\ndefault = true\noptions_interval = 0\n{extra}"
    );
    let url = sim.url();
    let (url_var, key_var) = match vendor {
        Vendor::Gemini => ("CODEB_GEMINI_URL", "CODEB_GEMINI_API_KEY"),
        Vendor::OpenAi => ("CODEB_OPENAI_URL", "CODEB_OPENAI_API_KEY"),
    };
    let sw = Switch::start(&config, &[(url_var, url.as_str()), (key_var, "sim-key")]);
    (sim, sw)
}

/// Places the AI call `call_id` (persona prompt `prompt`) and returns the
/// node's events from the journal's start.
async fn place_ai_call(
    sw: &Switch,
    call_id: &str,
    prompt: &str,
) -> (
    SwitchClient<tonic::transport::Channel>,
    tonic::Streaming<v1::Event>,
) {
    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    let events = subscribe_all(&mut c).await;
    c.place_call(v1::PlaceCallRequest {
        call_id: call_id.into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        attempt: 1,
        ai: Some(v1::AiSession {
            system_prompt: prompt.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    (c, events)
}

/// The call's CallEnded, once it comes.
async fn call_end(events: &mut tonic::Streaming<v1::Event>) -> v1::CallEnded {
    until_ended(events)
        .await
        .pop()
        .and_then(|e| match e.kind {
            Some(event::Kind::Ended(e)) => Some(e),
            _ => None,
        })
        .expect("CallEnded")
}

/// An AI call `call_id` that talks on (its persona never ends it), up to
/// its CallStarted: the set-up, a client, the event stream and the events
/// so far.
async fn talking_ai_call(
    call_id: &str,
) -> (
    Outbound,
    SwitchClient<tonic::transport::Channel>,
    tonic::Streaming<v1::Event>,
    Vec<v1::Event>,
) {
    let o = outbound("").await;
    let (c, mut events) = place_ai_call(&o.sw, call_id, "You chat forever.").await;
    let mut got = Vec::new();
    while let Some(ev) = next(&mut events, Duration::from_secs(20)).await {
        let started = matches!(ev.kind, Some(event::Kind::Started(_)));
        got.push(ev);
        if started {
            break;
        }
    }
    assert!(
        matches!(
            got.last().and_then(|e| e.kind.as_ref()),
            Some(event::Kind::Started(_))
        ),
        "{got:#?}"
    );
    (o, c, events, got)
}

/// A switch told to stop (SIGTERM) while an AI call talks ends the call
/// and streams its last events to the control plane connected to it,
/// waiting for their acknowledgement, before it exits: the call's record
/// is the switch's own account, not a node "lost" later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_told_to_stop_streams_its_calls_end_before_it_exits() {
    let (mut o, mut c, mut events, mut got) = talking_ai_call("oac-ai-stop").await;
    let sw = &mut o.sw;
    sw.terminate();
    // Read (and acknowledge, as a control plane does) until the stream
    // ends; the last ack's reply may be cut by the stop.
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.message()).await {
            Ok(Ok(Some(ev))) => {
                let _ = c
                    .ack(v1::AckRequest {
                        journal_id: ev.journal_id.clone(),
                        up_to_seq: ev.seq,
                    })
                    .await;
                got.push(ev);
            }
            other => break other,
        }
    };
    assert!(
        matches!(&closed, Ok(Err(s)) if s.code() == tonic::Code::Unavailable),
        "the stream ends with a status: {closed:?}"
    );
    let end = got.iter().find_map(|e| match &e.kind {
        Some(event::Kind::Ended(end)) => Some(end.clone()),
        _ => None,
    });
    let end = end.unwrap_or_else(|| panic!("no CallEnded before the stream closed: {got:#?}"));
    assert_eq!(
        (
            end.outcome.as_str(),
            end.error_detail.as_str(),
            end.answered
        ),
        ("failed", "the switch shut down", true)
    );
    // Acknowledged: it does not wait out the 5 s bound, and exits
    // cleanly.
    sw.exits_cleanly_within(Duration::from_secs(4));
}

/// A control plane that reads the stream but never acknowledges does not
/// hold a stopping switch beyond the bound (5 s for far ends, 5 s for the
/// acknowledgement). Meanwhile the switch still answers SIP (a new call
/// gets 503), and the stream ends with UNAVAILABLE, not a cut connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_switch_waits_for_acknowledgement_only_so_long() {
    let (mut o, _c, mut events, _) = talking_ai_call("oac-ai-noack").await;
    let sw = &mut o.sw;
    sw.terminate();
    let stopped = Instant::now();
    let mut ended = false;
    while !ended {
        let ev = tokio::time::timeout(Duration::from_secs(15), events.message()).await;
        let ev = ev
            .expect("the end in time")
            .expect("the stream")
            .expect("an event");
        ended = matches!(ev.kind, Some(event::Kind::Ended(_)));
    }
    // The end is streamed and not acknowledged: the switch waits (the
    // call has ended by now: SIPp answers the BYE at once), and a caller
    // is refused meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sip = sw.sip;
    let status = tokio::task::spawn_blocking(move || final_status_of_invite(sip))
        .await
        .unwrap();
    assert!(sw.is_running(), "still waiting for the acknowledgement");
    assert_eq!(status, Some(503), "a new call while the switch waits");
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(15), events.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Err(status)) => break status,
            other => panic!("the stream's end: {other:?}"),
        }
    };
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "the switch is stopping")
    );
    sw.exits_cleanly_within(Duration::from_secs(12).saturating_sub(stopped.elapsed()));
    assert!(
        stopped.elapsed() >= Duration::from_secs(5),
        "it waited for the acknowledgement: {:?}",
        stopped.elapsed()
    );
}

/// Sends an INVITE from loopback to `sip` and returns the final status
/// it gets within 3 s.
fn final_status_of_invite(sip: SocketAddr) -> Option<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let invite = format!(
        "INVITE sip:+15550002222@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-stop1\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@{me}>;tag=f1\r\nTo: <sip:+15550002222@{sip}>\r\nCall-ID: stopping-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(invite.as_bytes(), sip).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        match common::status_of(&buf[..n]) {
            Some(code) if code >= 200 => return Some(code),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_call_talks_with_the_callee_and_hangs_up_when_done() {
    talks_and_hangs_up(SimConfig::default()).await;
}

/// The same call with transcripts as out of order as Gemini may send them
/// (the callee's last words transcribed after the answer began, the AI's
/// last words after `generationComplete`): still one callee turn, and
/// each AI turn whole, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_transcript_pieces_still_make_whole_turns_counted_once() {
    let turns = talks_and_hangs_up(SimConfig {
        late_transcripts: true,
        ..SimConfig::default()
    })
    .await;
    // Its two pieces joined into one turn (about 1.2 s, as heard).
    let caller = &turns[1].1;
    assert!(
        caller.starts_with("[caller spoke 1.") && caller.ends_with(" s]") && !caller.contains("  "),
        "{turns:#?}"
    );
    assert!(
        turns[0].1.ends_with("How can I help you today?"),
        "the greeting's late last words: {turns:#?}"
    );
}

/// The same call with OpenAI Realtime as the engine. Its server says
/// `speech_started` whenever the callee starts talking, here after the
/// greeting has all been played: nothing is cut, so the engine is not told
/// to truncate the greeting (which would make it forget what it said).
/// The `end_call` answered at once, while its response is still under
/// way, asks for the next response only once that one is done (the
/// server refuses it before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_call_talks_with_the_callee_and_keeps_what_it_said() {
    talks_and_hangs_up_with(Vendor::OpenAi, SimConfig::default()).await;
}

/// An AI call whose callee listens to the greeting, talks 1.2 s and is
/// said goodbye to; the turns the node reported (role, text).
async fn talks_and_hangs_up(sim_cfg: SimConfig) -> Vec<(String, String)> {
    talks_and_hangs_up_with(Vendor::Gemini, sim_cfg).await
}

/// [`talks_and_hangs_up`] with `vendor`'s engine.
async fn talks_and_hangs_up_with(vendor: Vendor, sim_cfg: SimConfig) -> Vec<(String, String)> {
    let (model, voice) = match vendor {
        Vendor::Gemini => ("gemini-live-2.5-flash", "Aoede"),
        Vendor::OpenAi => ("openai/gpt-realtime", "marin"),
    };
    let Outbound {
        sim,
        sw,
        carrier,
        media,
        _dir,
    } = outbound_to(vendor, "", sim_cfg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let heard = Arc::new(Heard::default());
    // The callee listens to the greeting, then talks for 1.2 s.
    let phone = callee_media(
        media,
        Duration::from_millis(2500),
        Duration::from_millis(1200),
        300.0,
        stop.clone(),
        heard.clone(),
    );

    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    let mut events = subscribe_all(&mut c).await;
    c.place_call(v1::PlaceCallRequest {
        call_id: "oac-ai-0001".into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        display_name: "Reminder".into(),
        attempt: 1,
        ai: Some(v1::AiSession {
            model: model.into(),
            voice: voice.into(),
            language: "en-US".into(),
            system_prompt: "You remind people of appointments. END_AFTER_TURNS=1".into(),
            ..Default::default()
        }),
        record: true,
        ..Default::default()
    })
    .await
    .unwrap();

    let got = until_ended(&mut events).await;
    stop.store(true, Ordering::Relaxed);
    phone.join().unwrap();
    let kinds: Vec<_> = got.iter().filter_map(|e| e.kind.clone()).collect();
    assert!(
        matches!(kinds.first(), Some(event::Kind::Answered(_))),
        "{kinds:#?}"
    );
    assert!(
        matches!(kinds.get(1), Some(event::Kind::Started(_))),
        "{kinds:#?}"
    );
    let turns: Vec<(String, String)> = kinds
        .iter()
        .filter_map(|k| match k {
            event::Kind::Turn(t) => Some((t.role.clone(), t.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        turns.len(),
        3,
        "greeting, the callee, the goodbye: {turns:#?}"
    );
    assert_eq!(turns[0].0, "ai");
    assert_eq!(turns[1].0, "caller");
    assert!(
        turns[1].1.contains("caller spoke 1."),
        "the engine heard about 1.2 s of the callee: {turns:#?}"
    );
    assert_eq!(turns[2].0, "ai");
    let usage = kinds.iter().find_map(|k| match k {
        event::Kind::Usage(u) => Some(*u),
        _ => None,
    });
    let usage = usage.expect("usage before the end");
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0 && !usage.estimated);
    let Some(event::Kind::Ended(end)) = kinds.last() else {
        panic!("no CallEnded: {kinds:#?}");
    };
    assert_eq!(end.outcome, "finished", "{end:?}");
    assert!(end.answered);
    assert_eq!((end.input_turns, end.output_turns), (1, 2));
    // The callee heard the AI: paced packets, many of them speech.
    let (packets, loud) = (
        heard.packets.load(Ordering::Relaxed),
        heard.loud.load(Ordering::Relaxed),
    );
    assert!(packets > 100, "RTP from the switch: {packets}");
    assert!(loud > 20, "AI speech among them: {loud} of {packets}");
    // The simulator saw the call's persona and our tool answer.
    let records = sim.records();
    let setup = records
        .iter()
        .find_map(|r| match r {
            SimRecord::Setup(v) => Some(v.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        setup.contains("END_AFTER_TURNS=1") && setup.contains(voice),
        "{setup}"
    );
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, SimRecord::Truncated { .. })),
        "nothing was cut, so nothing truncated: {records:#?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, SimRecord::ClientError { .. })),
        "the engine refused nothing we sent: {records:#?}"
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r, SimRecord::ToolResponse { .. })),
        "end_call answered"
    );
    let mut carrier = carrier;
    let st = carrier
        .wait(Duration::from_secs(10))
        .expect("SIPp got our BYE");
    assert!(st.success(), "SIPp: {st}");
    // The call asked to be recorded: the callee (leg B) on the right, the
    // AI on the left.
    let (left, right) = recorded(&sw, "oac-ai-0001").await;
    assert!(
        left > 1000,
        "the AI's speech on the left: {left} loud samples ({right} right)"
    );
    assert!(
        (4000..12_000).contains(&right),
        "the callee's 1.2 s of tone on the right: {right} loud samples"
    );
    turns
}

/// The callee is behind a NAT (its media comes from a port its SDP does
/// not name), which rebinds a second into the call: its stream carries on
/// from a new port, with no re-INVITE. The switch follows it: the engine
/// hears the callee's speech from the new port, and the AI's answer
/// reaches it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_call_follows_a_callee_whose_nat_rebinds() {
    let Outbound {
        sim: _sim,
        sw,
        carrier,
        media,
        _dir,
    } = outbound("").await;
    let stop = Arc::new(AtomicBool::new(false));
    let heard = Arc::new(Heard::default());
    let mapping = || UdpSocket::bind("127.0.0.1:0").unwrap();
    let nat = Nat {
        first: mapping(),
        rebinds_at: Duration::from_millis(1000),
        second: mapping(),
    };
    let phone = callee_media_behind_nat(
        media,
        Some(nat),
        Duration::from_millis(2500),
        Duration::from_millis(1200),
        300.0,
        stop.clone(),
        heard.clone(),
    );
    let (_c, mut events) = place_ai_call(
        &sw,
        "oac-ai-nat-0001",
        "You remind people of appointments. END_AFTER_TURNS=1",
    )
    .await;
    let got = until_ended(&mut events).await;
    stop.store(true, Ordering::Relaxed);
    phone.join().unwrap();
    let turns: Vec<(String, String)> = got
        .iter()
        .filter_map(|e| match &e.kind {
            Some(event::Kind::Turn(t)) => Some((t.role.clone(), t.text.clone())),
            _ => None,
        })
        .collect();
    assert!(
        turns
            .iter()
            .any(|(role, text)| role == "caller" && text.contains("caller spoke 1.")),
        "the engine heard the callee's 1.2 s from its new port: {turns:#?}"
    );
    let Some(event::Kind::Ended(end)) = got.last().and_then(|e| e.kind.clone()) else {
        panic!("no CallEnded: {got:#?}");
    };
    assert_eq!(end.outcome, "finished", "{end:?}");
    let (packets, loud) = (
        heard.packets.load(Ordering::Relaxed),
        heard.loud.load(Ordering::Relaxed),
    );
    assert!(packets > 50, "RTP at the new port: {packets}");
    assert!(loud > 20, "the AI's answer among it: {loud} of {packets}");
    let mut carrier = carrier;
    let st = carrier
        .wait(Duration::from_secs(10))
        .expect("SIPp got our BYE");
    assert!(st.success(), "SIPp: {st}");
}

/// Loud samples (left, right) of a call's recording, once the recorder
/// has finished it (its RIFF sizes are written last).
async fn recorded(sw: &Switch, call_id: &str) -> (usize, usize) {
    let dir = sw.dir.path().join("recordings");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wav = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!("-{call_id}.wav")))
            .and_then(|p| std::fs::read(p).ok())
            .filter(|w| w.len() > 44 && w[40..44] != [0, 0, 0, 0]);
        if let Some(w) = wav {
            let loud = |at: usize| {
                w[44..]
                    .chunks_exact(4)
                    .filter(|s| i16::from_le_bytes([s[at], s[at + 1]]).unsigned_abs() > 2000)
                    .count()
            };
            return (loud(0), loud(2));
        }
        assert!(
            Instant::now() < deadline,
            "no finished recording of {call_id} in {dir:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A configuration routing DID 7000 from any local caller to a virtual
/// number whose persona runs on OpenAI Realtime and says goodbye at once.
fn receptionist(version: u64) -> v1::ConfigSnapshot {
    v1::ConfigSnapshot {
        version,
        trunks: vec![v1::Trunk {
            id: "tr_0000000000000001".into(),
            tenant: "example.com".into(),
            host: "127.0.0.1".into(),
            inbound: vec!["127.0.0.0/8".into()],
            ..Default::default()
        }],
        routes: vec![v1::InboundRoute {
            tenant: "example.com".into(),
            did: "7000".into(),
            target: Some(v1::inbound_route::Target::VirtualNumber(
                "+15550007000".into(),
            )),
            ..Default::default()
        }],
        virtual_numbers: vec![v1::VirtualNumber {
            tenant: "example.com".into(),
            number: "+15550007000".into(),
            name: "reception".into(),
            ai: Some(v1::AiSession {
                model: "openai/gpt-realtime".into(),
                voice: "marin".into(),
                system_prompt: "You are the receptionist. END_AFTER_TURNS=0".into(),
                save_transcript: true,
                ..Default::default()
            }),
            max_seconds: 60,
        }],
        ..Default::default()
    }
}

/// A switch whose OpenAI engine is at `url` and whose DID 7000 is the
/// receptionist, called once by SIPp running `scenario` (offering PCMA):
/// the switch, the call's events up to its end, and SIPp's (successful,
/// failed) calls.
async fn call_the_receptionist(url: &str, scenario: &str) -> (Switch, Vec<v1::Event>, (u64, u64)) {
    let sw = Switch::start(
        "",
        &[
            ("CODEB_OPENAI_URL", url),
            ("CODEB_OPENAI_API_KEY", "sim-key"),
        ],
    );
    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    c.apply_config(receptionist(1)).await.unwrap();
    let mut events = subscribe_all(&mut c).await;
    let target = sw.sip;
    let scenario = common::scenario(scenario);
    let caller = tokio::task::spawn_blocking(move || {
        common::sipp_client(
            target,
            &["-sf", scenario.to_str().unwrap(), "-s", "7000", "-m", "1"],
        )
    });
    let got = until_ended(&mut events).await;
    (sw, got, caller.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_number_is_answered_by_its_ai_persona() {
    let sim = SimServer::bind(Vendor::OpenAi, "127.0.0.1:0", SimConfig::default())
        .await
        .unwrap();
    // The caller waits for the AI to hang up.
    let (sw, got, caller) = call_the_receptionist(&sim.url(), "uac_wait_bye.xml").await;
    assert_eq!(caller, (1, 0), "the caller got the AI's BYE");
    let call_id = got.first().map(|e| e.call_id.clone()).unwrap_or_default();
    assert!(
        call_id.len() == 16
            && call_id.starts_with("vnum")
            && call_id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{call_id}"
    );
    assert!(
        got.iter()
            .all(|e| e.call_id == call_id && e.tenant == "example.com")
    );
    let kinds: Vec<_> = got.iter().filter_map(|e| e.kind.clone()).collect();
    match kinds.first() {
        Some(event::Kind::Inbound(i)) => {
            assert_eq!(i.did, "7000");
            assert_eq!(i.from_number, "+15550001111");
            assert_eq!(i.virtual_number, "+15550007000");
            assert_eq!(i.trunk_id, "tr_0000000000000001");
        }
        k => panic!("{k:?}"),
    }
    match kinds.get(1) {
        Some(event::Kind::Answered(a)) => assert_eq!(a.direction, "inbound"),
        k => panic!("{k:?}"),
    }
    assert!(
        matches!(kinds.get(2), Some(event::Kind::Started(_))),
        "{kinds:#?}"
    );
    let turns: Vec<_> = kinds
        .iter()
        .filter_map(|k| match k {
            event::Kind::Turn(t) => Some(t.role.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(turns, ["ai"], "the greeting was the goodbye: {kinds:#?}");
    let Some(event::Kind::Ended(end)) = kinds.last() else {
        panic!("{kinds:#?}");
    };
    assert_eq!(end.outcome, "finished");
    assert!(end.answered);
    assert_eq!(end.output_turns, 1);
    // The session ran G.711 A-law end to end (the caller's codec).
    let setup = sim
        .records()
        .iter()
        .find_map(|r| match r {
            SimRecord::Setup(v) => Some(v.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(setup.contains("pcma") && setup.contains("marin"), "{setup}");
    assert!(sw.metric("codeb_virtual_number_calls_total").unwrap_or(0.0) >= 1.0);
}

/// A caller with no offer in its INVITE that takes reliable provisional
/// responses rings too: our offer in a reliable 180, its answer (PCMA) in
/// the PRACK, the AI session in that codec, then the 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_offer_caller_with_100rel_rings_then_talks_to_the_ai() {
    let sim = SimServer::bind(Vendor::OpenAi, "127.0.0.1:0", SimConfig::default())
        .await
        .unwrap();
    let (_sw, got, caller) = call_the_receptionist(&sim.url(), "uac_late_offer_100rel.xml").await;
    assert_eq!(
        caller,
        (1, 0),
        "180 with our offer, PRACK, 200, the AI's BYE"
    );
    let kinds: Vec<_> = got.iter().filter_map(|e| e.kind.clone()).collect();
    assert!(
        matches!(
            kinds[..],
            [
                event::Kind::Inbound(_),
                event::Kind::Answered(_),
                event::Kind::Started(_),
                ..
            ]
        ),
        "{kinds:#?}"
    );
    let Some(event::Kind::Ended(end)) = kinds.last() else {
        panic!("{kinds:#?}");
    };
    assert_eq!((end.outcome.as_str(), end.answered), ("finished", true));
    let setup = sim
        .records()
        .iter()
        .find_map(|r| match r {
            SimRecord::Setup(v) => Some(v.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(setup.contains("pcma"), "the PRACK's codec: {setup}");
}

/// The virtual number's AI engine cannot be reached: the caller, which
/// rang meanwhile, is refused with 503 (not answered and hung up on), and
/// the call's record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_number_whose_ai_is_unreachable_refuses_the_caller() {
    // A port nothing listens on: the engine's connection is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", dead.local_addr().unwrap());
    drop(dead);
    let (_sw, got, caller) = call_the_receptionist(&url, "uac_ring_refused.xml").await;
    assert_eq!(caller, (1, 0), "rang, then got the 503");
    let kinds: Vec<_> = got.iter().filter_map(|e| e.kind.clone()).collect();
    assert!(
        matches!(kinds.first(), Some(event::Kind::Inbound(_))),
        "{kinds:#?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, event::Kind::Answered(_) | event::Kind::Started(_))),
        "never answered: {kinds:#?}"
    );
    let Some(event::Kind::Ended(end)) = kinds.last() else {
        panic!("{kinds:#?}");
    };
    assert_eq!(end.outcome, "failed");
    assert!(!end.answered);
    assert_eq!(end.sip_status, 503);
    assert!(end.error_detail.starts_with("AI engine: "), "{end:?}");
}

/// A header's value in a SIP message (the first of that name).
fn sip_header(msg: &str, name: &str) -> Option<String> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A virtual number's caller that requires reliable provisionals PRACKs
/// the 180 while the AI engine hangs in its setup: nothing is sent to its
/// media port while it rings (no early media), and it is refused with 503
/// once the engine's connect timeout (1 s here) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_virtual_number_sends_no_media_even_after_a_prack() {
    // An engine that takes connections and never answers the upgrade.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", hung.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hung.accept() {
            conns.push(c);
            if conns.len() == 1 {
                std::thread::sleep(Duration::from_secs(2));
                return;
            }
        }
    });
    let sw = Switch::start(
        "",
        &[
            ("CODEB_OPENAI_URL", url.as_str()),
            ("CODEB_OPENAI_API_KEY", "sim-key"),
            ("CODEB_AI_CONNECT_TIMEOUT", "1"),
        ],
    );
    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    c.apply_config(receptionist(1)).await.unwrap();
    let to = sw.sip;
    let outcome = tokio::task::spawn_blocking(move || {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = sip.local_addr().unwrap();
        let media = rtp.local_addr().unwrap().port();
        sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = common::rand_u32();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        let invite = format!(
            "INVITE sip:7000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-i{n}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@{me}>;tag=f{n}\r\nTo: <sip:7000@{to}>\r\nCall-ID: pr-{n}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nRequire: 100rel\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sip.send_to(invite.as_bytes(), to).unwrap();
        let mut buf = vec![0u8; 65536];
        let ringing = loop {
            let (len, _) = sip.recv_from(&mut buf).expect("a 180");
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if common::status_of(&buf[..len]) == Some(180) {
                break text;
            }
        };
        let rseq = sip_header(&ringing, "RSeq").expect("a reliable 180");
        let to_hdr = sip_header(&ringing, "To").unwrap();
        let prack = format!(
            "PRACK sip:7000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-p{n}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@{me}>;tag=f{n}\r\nTo: {to_hdr}\r\nCall-ID: pr-{n}@test\r\nCSeq: 2 PRACK\r\nRAck: {rseq} 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        sip.send_to(prack.as_bytes(), to).unwrap();
        // Until the final answer: the PRACK's 200, then the INVITE's 503;
        // nothing may reach the media port meanwhile.
        rtp.set_nonblocking(true).unwrap();
        let mut early_rtp = 0;
        let mut statuses = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            while rtp.recv_from(&mut buf).is_ok() {
                early_rtp += 1;
            }
            sip.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            if let Ok((len, _)) = sip.recv_from(&mut buf) {
                let status = common::status_of(&buf[..len]).unwrap_or(0);
                let cseq = sip_header(&String::from_utf8_lossy(&buf[..len]), "CSeq").unwrap_or_default();
                statuses.push((status, cseq));
                if status >= 300 {
                    break;
                }
            }
        }
        (early_rtp, statuses)
    })
    .await
    .unwrap();
    let (early_rtp, statuses) = outcome;
    assert!(
        statuses.contains(&(200, "2 PRACK".to_owned())),
        "the PRACK answered: {statuses:?}"
    );
    assert_eq!(
        statuses.last().map(|(s, _)| *s),
        Some(503),
        "refused once the engine timed out: {statuses:?}"
    );
    assert_eq!(early_rtp, 0, "RTP reached a caller that was still ringing");
    let _ = held.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_beep_ends_the_call_as_voicemail() {
    let Outbound {
        sim: _sim,
        sw,
        mut carrier,
        media,
        _dir,
    } = outbound("").await;
    let stop = Arc::new(AtomicBool::new(false));
    // The machine: a second of greeting-time silence, then its beep.
    let phone = callee_media(
        media,
        Duration::from_millis(1000),
        Duration::from_millis(500),
        1000.0,
        stop.clone(),
        Arc::new(Heard::default()),
    );
    let (_c, mut events) =
        place_ai_call(&sw, "oac-vm-0001", "You remind people of appointments.").await;
    let end = call_end(&mut events).await;
    stop.store(true, Ordering::Relaxed);
    phone.join().unwrap();
    assert_eq!(end.outcome, "voicemail", "{end:?}");
    assert!(end.answered);
    assert!(end.talk_seconds < 10, "hung up at the beep: {end:?}");
    let st = carrier
        .wait(Duration::from_secs(10))
        .expect("SIPp got our BYE");
    assert!(st.success(), "SIPp: {st}");
}

/// The call's CallTransferred (and its call id), within 30 s; an end
/// before it fails the test.
async fn until_transferred(
    events: &mut tonic::Streaming<v1::Event>,
) -> (String, v1::CallTransferred) {
    loop {
        let ev = next(events, Duration::from_secs(30))
            .await
            .expect("CallTransferred within 30 s");
        match ev.kind {
            Some(event::Kind::Transferred(t)) => return (ev.call_id, t),
            Some(event::Kind::Ended(e)) => panic!("ended before the transfer: {e:?}"),
            _ => {}
        }
    }
}

/// The two people of an AI transfer, talking on their media sockets:
/// the AI's party answers its greeting (a 300 Hz turn, on which the AI
/// transfers), the person it is handed to sends a 440 Hz tone once the
/// switch sends them audio.
struct Talkers {
    stop: Arc<AtomicBool>,
    party: Arc<Heard>,
    person: Arc<Heard>,
    threads: [std::thread::JoinHandle<()>; 2],
}

impl Talkers {
    fn start(party: UdpSocket, person: UdpSocket) -> Talkers {
        let stop = Arc::new(AtomicBool::new(false));
        let heard = [Arc::new(Heard::default()), Arc::new(Heard::default())];
        let threads = [
            callee_media(
                party,
                Duration::from_millis(2500),
                Duration::from_millis(1200),
                300.0,
                stop.clone(),
                heard[0].clone(),
            ),
            callee_media(
                person,
                Duration::ZERO,
                Duration::from_secs(60),
                440.0,
                stop.clone(),
                heard[1].clone(),
            ),
        ];
        let [party, person] = heard;
        Talkers {
            stop,
            party,
            person,
            threads,
        }
    }

    /// Once the AI has put the party through, each hears the other within
    /// 10 s: the party the person's tone (50 loud packets more), the
    /// person 50 packets of the party's stream.
    async fn hear_each_other(&self) {
        let loud_before = self.party.loud.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && (self.party.loud.load(Ordering::Relaxed) < loud_before + 50
                || self.person.packets.load(Ordering::Relaxed) < 50)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (party_loud, person_packets) = (
            self.party.loud.load(Ordering::Relaxed) - loud_before,
            self.person.packets.load(Ordering::Relaxed),
        );
        assert!(
            party_loud >= 50,
            "the party hears the person: {party_loud} loud packets"
        );
        assert!(
            person_packets >= 50,
            "the person hears the party: {person_packets} packets"
        );
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_transfers_the_callee_to_a_user_and_bridges_them() {
    // The user's phone: a SIPp that answers with its media on a socket
    // this test owns.
    let human_media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let human_dir = tempfile::tempdir().unwrap();
    let scenario = callee_scenario(
        human_dir.path(),
        "human",
        human_media.local_addr().unwrap().port(),
    );
    let mut human = common::sipp_server(&["-sf", scenario.to_str().unwrap(), "-m", "1"]);
    let Outbound {
        sim,
        sw,
        mut carrier,
        media,
        _dir,
    } = outbound(&format!(
        "[[users]]\nname = \"sales\"\ncontact = \"sip:sales@127.0.0.1:{}\"\n",
        human.port
    ))
    .await;
    let talk = Talkers::start(media, human_media);
    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    let mut events = subscribe_all(&mut c).await;
    c.place_call(v1::PlaceCallRequest {
        call_id: "oac-tr-0001".into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        attempt: 1,
        ai: Some(v1::AiSession {
            system_prompt: "Put callers through to sales. TRANSFER_AFTER_TURNS=1:sales".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, t) = until_transferred(&mut events).await;
    assert_eq!(
        (
            t.to_user.as_str(),
            t.transfer_type.as_str(),
            t.trunk_id.as_str()
        ),
        ("sales", "outbound-to-user", TRUNK)
    );
    talk.hear_each_other().await;
    // The control plane hangs up; both parties get a BYE, and the call's
    // outcome says the AI handed it over.
    c.hangup(v1::HangupRequest {
        call_id: "oac-tr-0001".into(),
        outcome: String::new(),
        attempt: 0,
    })
    .await
    .unwrap();
    let end = until_ended(&mut events)
        .await
        .pop()
        .and_then(|e| match e.kind {
            Some(event::Kind::Ended(e)) => Some(e),
            _ => None,
        })
        .expect("CallEnded");
    talk.stop();
    assert_eq!(end.outcome, "transferred-to-vnum", "{end:?}");
    assert!(end.answered);
    assert!(
        sim.records().iter().any(|r| matches!(r,
            SimRecord::ToolCall { name, .. } if name == "transfer_to_user")),
        "the simulator asked for the transfer"
    );
    for (who, sipp) in [("carrier", &mut carrier), ("sales", &mut human)] {
        let st = sipp
            .wait(Duration::from_secs(10))
            .expect("SIPp got our BYE");
        assert!(st.success(), "{who} SIPp: {st}");
    }
}

/// A caller to DID `did` offering PCMU with its media at `media_port`,
/// which waits for our BYE; written to `<dir>/<name>.xml`.
fn calling_scenario(dir: &std::path::Path, name: &str, media_port: u16) -> std::path::PathBuf {
    let xml = std::fs::read_to_string(common::scenario("uac_wait_bye.xml"))
        .unwrap()
        .replace(
            "m=audio [media_port] RTP/AVP 8 0\n      a=rtpmap:8 PCMA/8000",
            &format!("m=audio {media_port} RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"),
        );
    assert!(
        xml.contains(&format!("m=audio {media_port} ")),
        "the offer was rewritten"
    );
    let p = dir.join(format!("{name}.xml"));
    std::fs::write(&p, xml).unwrap();
    p
}

/// A caller to a virtual number whose AI puts it through to a user: the
/// user's side of the call, which has no media port until the transfer
/// opens one on the call's worker, relays both ways with the caller
/// through the real media engine, and a hangup BYEs both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_numbers_ai_puts_the_caller_through_to_a_user() {
    let sim = SimServer::bind(Vendor::Gemini, "127.0.0.1:0", SimConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let human_media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let human_sc = callee_scenario(
        dir.path(),
        "human",
        human_media.local_addr().unwrap().port(),
    );
    let mut human = common::sipp_server(&["-sf", human_sc.to_str().unwrap(), "-m", "1"]);
    let caller_media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller_sc = calling_scenario(
        dir.path(),
        "caller",
        caller_media.local_addr().unwrap().port(),
    );
    let url = sim.url();
    let sw = Switch::start(
        "",
        &[
            ("CODEB_GEMINI_URL", url.as_str()),
            ("CODEB_GEMINI_API_KEY", "sim-key"),
        ],
    );
    let mut c = SwitchClient::connect(sw.grpc_url()).await.unwrap();
    let mut config = receptionist(1);
    config.users = vec![v1::User {
        name: "sales".into(),
        tenant: "example.com".into(),
        contact: format!("sip:sales@127.0.0.1:{}", human.port),
        ..Default::default()
    }];
    config.virtual_numbers[0].ai = Some(v1::AiSession {
        system_prompt: "Put callers through to sales. TRANSFER_AFTER_TURNS=1:sales".into(),
        save_transcript: true,
        ..Default::default()
    });
    c.apply_config(config).await.unwrap();
    let mut events = subscribe_all(&mut c).await;
    let target = sw.sip;
    let caller = tokio::task::spawn_blocking(move || {
        common::sipp_client(
            target,
            &["-sf", caller_sc.to_str().unwrap(), "-s", "7000", "-m", "1"],
        )
    });
    let talk = Talkers::start(caller_media, human_media);
    let (call_id, t) = until_transferred(&mut events).await;
    assert!(call_id.starts_with("vnum"), "{call_id}");
    assert_eq!(t.to_user, "sales");
    talk.hear_each_other().await;
    c.hangup(v1::HangupRequest {
        call_id: call_id.clone(),
        outcome: String::new(),
        attempt: 0,
    })
    .await
    .unwrap();
    let end = until_ended(&mut events)
        .await
        .into_iter()
        .filter(|e| e.call_id == call_id)
        .find_map(|e| match e.kind {
            Some(event::Kind::Ended(e)) => Some(e),
            _ => None,
        })
        .expect("CallEnded");
    talk.stop();
    assert_eq!(end.outcome, "transferred-to-vnum", "{end:?}");
    assert_eq!(caller.await.unwrap(), (1, 0), "the caller got our BYE");
    let st = human
        .wait(Duration::from_secs(10))
        .expect("SIPp got our BYE");
    assert!(st.success(), "sales SIPp: {st}");
}

/// Writes a classic-format pcap of one PCMU stream (Ethernet/IPv4/UDP
/// from 127.0.0.1:6000 to :6002, 20 ms apart): an answering machine's
/// greeting (a voice-like 250 Hz buzz in syllables, with the short gaps
/// of speech) for 2.4 s, 0.3 s of silence, a 1 kHz beep of 0.5 s, then a
/// second of silence.
fn voicemail_pcap(path: &std::path::Path) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, zone 0, sigfigs 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let frames: u32 = (2400 + 300 + 500 + 1000) / 20;
    let mut phase = 0f64;
    for k in 0..frames {
        let ms = k * 20;
        let mut payload = Vec::with_capacity(160);
        for i in 0..160 {
            let t = f64::from(ms) / 1000.0 + f64::from(i) / 8000.0;
            let s = if ms < 2400 {
                // Syllables: 200 ms of voice, 60 ms apart.
                let voiced = (t * 1000.0) % 260.0 < 200.0;
                phase += std::f64::consts::TAU * 250.0 / 8000.0;
                if voiced { phase.sin() * 9000.0 } else { 0.0 }
            } else if (2700..3200).contains(&ms) {
                phase += std::f64::consts::TAU * 1000.0 / 8000.0;
                phase.sin() * 9000.0
            } else {
                0.0
            };
            payload.push(ulaw_encode(s as i16));
        }
        let mut rtp = vec![0x80, 0];
        rtp.extend_from_slice(&(k as u16).to_be_bytes());
        rtp.extend_from_slice(&(k * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_cafeu32.to_be_bytes());
        rtp.extend_from_slice(&payload);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        out.extend_from_slice(&(ms / 1000).to_le_bytes());
        out.extend_from_slice(&((ms % 1000) * 1000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// A callee that answers PCMU and plays `pcap` as its media, then waits
/// for our BYE.
fn pcap_callee_scenario(dir: &std::path::Path, pcap: &std::path::Path) -> std::path::PathBuf {
    let play = format!(
        r#"<nop><action><exec play_pcap_audio="{}"/></action></nop>"#,
        pcap.display()
    );
    answering_scenario(dir, "machine", "[media_port]", &play)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_machine_played_from_a_pcap_ends_the_call_as_voicemail() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("voicemail.pcap");
    voicemail_pcap(&pcap);
    let scenario = pcap_callee_scenario(dir.path(), &pcap);
    let mut machine = common::sipp_server(&[
        "-sf",
        scenario.to_str().unwrap(),
        "-m",
        "1",
        "-mp",
        &common::free_port().to_string(),
    ]);
    let (_sim, sw) = ai_switch(machine.port, "").await;
    let (_c, mut events) =
        place_ai_call(&sw, "oac-vm-pcap", "You remind people of appointments.").await;
    let end = call_end(&mut events).await;
    assert_eq!(end.outcome, "voicemail", "{end:?}");
    assert!(
        (2..8).contains(&end.talk_seconds),
        "hung up at the beep, after the greeting: {end:?}"
    );
    let st = machine
        .wait(Duration::from_secs(10))
        .expect("SIPp got our BYE");
    assert!(st.success(), "SIPp: {st}");
}

/// A TLS server config for a fresh self-signed `localhost` certificate,
/// and that certificate as PEM.
fn private_ca() -> (Arc<rustls::ServerConfig>, String) {
    use base64::Engine as _;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = "-----BEGIN CERTIFICATE-----\n".to_owned();
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    (codeb_ai::sim::tls_config(vec![der], key).unwrap(), pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_behind_a_private_ca_is_reached_with_the_ca_file_and_refused_without() {
    let (server, pem) = private_ca();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim =
        SimServer::start(Vendor::Gemini, listener, SimConfig::default(), Some(server)).unwrap();
    let url = format!("wss://localhost:{}", sim.addr().port());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("engine-ca.pem");
    std::fs::write(&ca, pem).unwrap();

    for trusted in [true, false] {
        let media = UdpSocket::bind("127.0.0.1:0").unwrap();
        let scenario = callee_scenario(dir.path(), "callee", media.local_addr().unwrap().port());
        let _carrier = common::sipp_server(&["-sf", scenario.to_str().unwrap(), "-m", "1"]);
        let config = format!(
            "[[trunks]]\nid = \"{TRUNK}\"\nhost = \"127.0.0.1\"\nport = {}\ndefault = true\noptions_interval = 0\n",
            _carrier.port
        );
        let mut env = vec![
            ("CODEB_GEMINI_URL", url.as_str()),
            ("CODEB_GEMINI_API_KEY", "sim-key"),
        ];
        if trusted {
            env.push(("CODEB_AI_CA_FILE", ca.to_str().unwrap()));
        }
        let sw = Switch::start(&config, &env);
        let stop = Arc::new(AtomicBool::new(false));
        let phone = callee_media(
            media,
            Duration::from_millis(200),
            Duration::ZERO,
            0.0,
            stop.clone(),
            Arc::new(Heard::default()),
        );
        let id = if trusted {
            "oac-tls-0001"
        } else {
            "oac-tls-0002"
        };
        let (_c, mut events) =
            place_ai_call(&sw, id, "Greet, then end the call. END_AFTER_TURNS=0").await;
        let end = call_end(&mut events).await;
        stop.store(true, Ordering::Relaxed);
        phone.join().unwrap();
        if trusted {
            assert_eq!(end.outcome, "finished", "{end:?}");
            assert_eq!(end.output_turns, 1, "{end:?}");
        } else {
            assert_ne!(end.outcome, "finished", "{end:?}");
            assert!(
                end.error_detail.contains("TLS") || end.error_detail.contains("certificate"),
                "{end:?}"
            );
        }
    }
    let setups = sim
        .records()
        .iter()
        .filter(|r| matches!(r, SimRecord::Setup(_)))
        .count();
    assert_eq!(setups, 1, "only the switch with the CA file got through");
}

#[test]
fn a_ca_file_without_a_certificate_stops_the_switch_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codeb-switch"))
        .env("CODEB_AI_CA_FILE", &ca)
        .env("CODEB_DATA_DIR", dir.path())
        .env("CODEB_SIP_ADDR", "127.0.0.1:0")
        .env("CODEB_SWITCH_GRPC_ADDR", "127.0.0.1:0")
        .env("CODEB_SWITCH_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CODEB_AI_CA_FILE") && err.contains("no PEM certificate"),
        "{err}"
    );
}
