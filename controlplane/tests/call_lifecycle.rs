//! The call lifecycle through the whole system (`codeb serve`, a real
//! `codeb-switch`, the voice-AI simulator, SIPp as the trunk's callee and a
//! webhook receiver; set up by `common::platform`):
//! - a callee that never answers: the call is retried after
//!   `retryDelayMinutes` (`CODEB_CALL_RETRY_DELAY_UNIT` makes a minute a few
//!   seconds here) and then fails for good, each attempt reported;
//! - a scheduled call waits for `scheduleAtUtc`, then talks and finishes;
//! - a switch killed mid-call: the call ends `ended-failed-*` with an
//!   errorDetail within seconds, and what the node replays when it comes
//!   back changes nothing;
//! - the control plane killed mid-call and restarted: the events of the
//!   call's end (which happened while it was down) arrive from the switch's
//!   journal, and every webhook is delivered once;
//! - barge-in: the callee talks over the AI's greeting; its playout stops
//!   and the transcript keeps only what was played of it (the switch
//!   reports an AI turn once it has played, or as cut by an interruption,
//!   not when the engine finished generating it).
//!
//! Waits poll with generous deadlines (a loaded 2-core machine); nothing
//! asserts on a fixed sleep.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use codeb_types::UtcMillis;
use common::platform::{Callee, Platform, free_sip_port, scenario, sipp_callee, wait};
use serde_json::{Value, json};

/// The webhooks of an outbound call that talked and ended, in order.
const FULL_CALL: [&str; 4] = [
    "call.answered",
    "call.started",
    "outbound-ai.finished",
    "transcript.saved",
];

/// A stretch of a pcap of one 8 kHz RTP stream (Ethernet, IPv4, UDP;
/// little-endian classic format): its header and the packets whose RTP
/// timestamp is `from_ms` to `to_ms` after the first packet's.
fn pcap_cut(pcap: &[u8], from_ms: u32, to_ms: u32) -> Vec<u8> {
    let mut out = pcap[..24].to_vec();
    let (mut at, mut first) = (24, None);
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at..at + 16 + len];
        at += 16 + len;
        let ip = &frame[16 + 14..];
        let rtp = &ip[usize::from(ip[0] & 0x0f) * 4 + 8..];
        let ts = u32::from_be_bytes(rtp[4..8].try_into().unwrap());
        let ms = ts.wrapping_sub(*first.get_or_insert(ts)) / 8;
        if (from_ms..to_ms).contains(&ms) {
            out.extend_from_slice(frame);
        }
    }
    out
}

/// A timestamp field of the API as Unix ms.
fn ms(v: &Value) -> i64 {
    UtcMillis::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .0
}

fn now() -> UtcMillis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UtcMillis(i64::try_from(d.as_millis()).unwrap())
}

/// A finished transcript of three turns: the AI's greeting, the callee,
/// the AI's goodbye.
fn assert_greeting_answer_goodbye(t: &Value) {
    let speakers: Vec<&str> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["speaker"].as_str().unwrap())
        .collect();
    assert_eq!(speakers, ["AI", "Caller", "AI"], "{t}");
    assert_eq!(t["outcome"], "finished", "{t}");
}

/// SIPp's exit, once it has one.
fn sipp_done(sipp: &mut common::platform::Killed, what: &str, secs: u64) {
    let st = wait(what, secs, || sipp.0.try_wait().unwrap());
    assert!(st.success(), "{what}: SIPp {st}");
}

/// A callee that answers with the test's media (`Callee`) for `calls` calls.
fn talking_callee(p: &Platform, callee: &Callee, calls: u32) -> (u16, common::platform::Killed) {
    let port = free_sip_port();
    let sipp = sipp_callee(
        p.dir.path(),
        port,
        &[
            "-sf",
            &scenario("uas_test_media.xml"),
            "-key",
            "callee_rtp",
            &callee.port.to_string(),
            "-m",
            &calls.to_string(),
        ],
    );
    (port, sipp)
}

#[test]
fn a_call_nobody_answers_is_retried_then_fails_for_good() {
    // One unit of retryDelayMinutes lasts 3 s: long enough to see the
    // pending retry, short enough for a test.
    let Some(p) = Platform::start(&[("CODEB_CALL_RETRY_DELAY_UNIT", "3s")]) else {
        return;
    };
    let port = free_sip_port();
    let mut sipp = sipp_callee(
        p.dir.path(),
        port,
        &["-sf", &scenario("uas_no_answer.xml"), "-m", "2"],
    );
    let trunk = p.default_trunk(port);
    let (id, _) = p.place(
        "Remind them of the appointment.",
        &json!({"retries": 1, "retryDelayMinutes": 1}),
    );

    // The first attempt rings out: a retry is pending.
    let first = p.wait_call(&id, "the first attempt to end", 30, |c| {
        c["status"] != "in-flight" && c["status"] != "dispatching"
    });
    assert_eq!(first["status"], "ended-failed-retry-pending", "{first}");
    assert_eq!(first["endedReason"], "no-answer", "{first}");
    assert_eq!(first["attempt"], 1, "{first}");
    assert_eq!(first["retriesLeft"], 0, "{first}");
    assert_eq!(first["answeredAtUtc"], Value::Null, "{first}");
    let f1 = p.hooks.wait_for(&id, "outbound-ai.finished", 20);
    assert_eq!(f1.body["data"]["outcome"], "no-answer", "{f1:?}");
    assert_eq!(f1.body["data"]["answered"], false, "{f1:?}");
    assert_eq!(f1.body["data"]["trunk"], trunk.as_str(), "{f1:?}");

    // retryDelayMinutes later it is dialled again, rings out again, and
    // with no retries left that is final.
    let last = p.wait_call(&id, "the second attempt to end", 40, |c| {
        c["status"] == "ended-failed-final"
    });
    assert_eq!(last["attempt"], 2, "{last}");
    assert_eq!(last["endedReason"], "no-answer", "{last}");
    assert_eq!(last["retriesLeft"], 0, "{last}");
    assert!(
        ms(&last["dispatchedAtUtc"]) >= ms(&first["endedAtUtc"]) + 3_000,
        "the retry waited retryDelayMinutes: first ended {}, retry dispatched {}",
        first["endedAtUtc"],
        last["dispatchedAtUtc"]
    );
    // Each attempt reported its end, and nothing else was sent: the call
    // never got as far as call.answered.
    let finished = p.hooks.wait_for_n(&id, "outbound-ai.finished", 2, 20);
    assert_eq!(finished[1].body["data"]["outcome"], "no-answer");
    assert_ne!(finished[0].id, finished[1].id, "two deliveries, two ids");
    p.settled_deliveries(30);
    assert_eq!(
        p.hooks.names(&id),
        vec!["outbound-ai.finished", "outbound-ai.finished"]
    );
    // SIPp saw exactly two INVITEs, each ended cleanly with our ACK.
    sipp_done(&mut sipp, "the callee's two calls", 20);
}

#[test]
fn a_scheduled_call_waits_for_its_time_then_talks() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let port = free_sip_port();
    let mut sipp = sipp_callee(p.dir.path(), port, &["-sn", "uas", "-m", "1"]);
    p.default_trunk(port);
    let at = now().plus_ms(4_000);
    let (id, placed) = p.place(
        "Greet them, then end the call. END_AFTER_TURNS=0",
        &json!({"scheduleAtUtc": at.to_iso()}),
    );
    assert_eq!(placed["status"], "scheduled", "{placed}");
    let call = p.call(&id);
    assert_eq!(call["status"], "scheduled", "{call}");
    assert_eq!(ms(&call["scheduledForUtc"]), at.0, "{call}");
    assert_eq!(call["dispatchedAtUtc"], Value::Null, "{call}");

    // At its time the scheduler dials it; the AI greets and ends it.
    p.hooks.wait_for(&id, "transcript.saved", 60);
    let call = p.wait_call(&id, "its end", 10, |c| c["status"] == "ended-success");
    assert_eq!(call["endedReason"], "finished", "{call}");
    assert_eq!(call["attempt"], 1, "{call}");
    assert!(
        ms(&call["dispatchedAtUtc"]) >= at.0,
        "dialled at {}, not before {}",
        call["dispatchedAtUtc"],
        at.to_iso()
    );
    assert!(ms(&call["answeredAtUtc"]) >= ms(&call["dispatchedAtUtc"]));
    let names = p.hooks.names(&id);
    assert_eq!(names, FULL_CALL);
    let t = p.get(&format!("/api.ashx/v1/transcripts/{id}"));
    assert_eq!(t["outcome"], "finished", "{t}");
    assert_eq!(t["turns"][0]["speaker"], "AI", "{t}");
    sipp_done(&mut sipp, "the callee's call", 20);
}

#[test]
fn a_call_on_a_switch_that_restarts_at_once_ends_failed() {
    // Back long before CODEB_SWITCH_LOST_AFTER (as systemd or a container
    // runtime brings it back): the node is never "lost", but its new
    // process does not have the call, and no event will ever end it.
    let Some(mut p) = Platform::start(&[("CODEB_SWITCH_LOST_AFTER", "300s")]) else {
        return;
    };
    let port = free_sip_port();
    let _sipp = sipp_callee(p.dir.path(), port, &["-sn", "uas", "-m", "1"]);
    p.default_trunk(port);
    let (id, _) = p.place("Keep the callee company.", &json!({}));
    p.hooks.wait_for(&id, "call.started", 30);
    let killed = Instant::now();
    p.switch.kill();
    p.switch.restart();
    let lost = p.wait_call(&id, "the call of the restarted switch to end", 60, |c| {
        c["status"] != "in-flight"
    });
    let took = killed.elapsed();
    let detail = format!(
        "switch node {} restarted: the call was lost with its process",
        p.switch.grpc_url()
    );
    assert_eq!(lost["status"], "ended-failed-final", "{lost}");
    assert_eq!(lost["errorDetail"], detail.as_str(), "{lost}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let f = p.hooks.wait_for(&id, "outbound-ai.finished", 20);
    assert_eq!(f.body["data"]["errorDetail"], detail.as_str(), "{f:?}");
}

#[test]
fn a_call_on_a_killed_switch_ends_failed_within_seconds() {
    let Some(mut p) = Platform::start(&[("CODEB_SWITCH_LOST_AFTER", "2s")]) else {
        return;
    };
    // Two calls: the first loses its switch (SIPp never gets its BYE), the
    // second runs after the switch is back.
    let port = free_sip_port();
    let _sipp = sipp_callee(p.dir.path(), port, &["-sn", "uas", "-m", "2"]);
    p.default_trunk(port);
    // No rule to end: the call lasts until something ends it.
    let (id, _) = p.place("Keep the callee company.", &json!({}));
    p.hooks.wait_for(&id, "call.started", 30);

    let killed = Instant::now();
    p.switch.kill();
    let lost = p.wait_call(&id, "the call on the dead switch to end", 30, |c| {
        c["status"] != "in-flight"
    });
    let took = killed.elapsed();
    let detail = format!("switch node {} lost", p.switch.grpc_url());
    assert_eq!(lost["status"], "ended-failed-final", "{lost}");
    assert_eq!(lost["errorDetail"], detail.as_str(), "{lost}");
    assert_eq!(lost["endedReason"], "failed", "{lost}");
    assert!(lost["answeredAtUtc"].is_string(), "{lost}");
    // CODEB_SWITCH_LOST_AFTER (2 s) after the first failed probe (within a
    // second), swept within the next scheduler tick; the rest is slack for
    // a loaded machine.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let f = p.hooks.wait_for(&id, "outbound-ai.finished", 20);
    assert_eq!(f.body["data"]["outcome"], "failed", "{f:?}");
    assert_eq!(f.body["data"]["errorDetail"], detail.as_str(), "{f:?}");
    assert_eq!(f.body["data"]["answered"], true, "{f:?}");

    // The node comes back on its journal. A new call goes through it; by
    // its end whatever the node replayed about the first call (its events
    // come first in the journal) has been seen, and changed nothing.
    p.switch.restart();
    let (id2, _) = p.place(
        "Greet them, then end the call. END_AFTER_TURNS=0",
        &json!({}),
    );
    p.hooks.wait_for(&id2, "transcript.saved", 60);
    let again = p.call(&id);
    for field in [
        "status",
        "endedReason",
        "errorDetail",
        "endedAtUtc",
        "attempt",
    ] {
        assert_eq!(again[field], lost[field], "{field}: {again}");
    }
    p.settled_deliveries(30);
    // Each event once, and transcript.saved only if the greeting was
    // reported before the crash.
    let names = p.hooks.names(&id);
    assert_eq!(
        names[..names.len().min(3)],
        ["call.answered", "call.started", "outbound-ai.finished"],
        "{names:?}"
    );
    assert!(
        names[3..].is_empty() || names[3..] == ["transcript.saved"],
        "{names:?}"
    );
}

#[test]
fn a_control_plane_restarted_mid_call_delivers_every_event_once() {
    let Some(mut p) = Platform::start(&[]) else {
        return;
    };
    let callee = Callee::start();
    let (port, mut sipp) = talking_callee(&p, &callee, 1);
    p.default_trunk(port);
    // The AI says goodbye after the callee's first utterance.
    let (id, _) = p.place(
        "Remind them of the appointment. END_AFTER_TURNS=1",
        &json!({}),
    );
    p.hooks.wait_for(&id, "call.started", 30);
    wait("the AI's greeting at the callee", 30, || {
        (callee.heard().1 >= 10).then_some(())
    });

    // The control plane dies mid-call...
    assert_eq!(p.call(&id)["status"], "in-flight");
    p.kill_server();
    // ...and the call goes on: the callee talks, the AI answers with its
    // goodbye and hangs up, all while nobody hears the switch's events.
    callee.speak(Duration::from_millis(1200));
    sipp_done(&mut sipp, "the AI's BYE at the callee", 40);

    // Back on the same data: the rest of the call arrives from the
    // switch's journal.
    p.restart_server();
    let saved = p.hooks.wait_for(&id, "transcript.saved", 40);
    let call = p.wait_call(&id, "its end", 10, |c| c["status"] == "ended-success");
    assert_eq!(call["endedReason"], "finished", "{call}");
    let t = p.get(&format!("/api.ashx/v1/transcripts/{id}"));
    assert_greeting_answer_goodbye(&t);
    let file = saved.body["data"]["file"].as_str().unwrap();
    assert!(p.cp_dir.join("transcripts").join(file).exists(), "{file}");

    // Every event of the call once: one delivery each, each delivered once.
    let log = p.settled_deliveries(30);
    let got = p.hooks.of_call(&id);
    let names: Vec<String> = got.iter().map(|d| d.event.clone()).collect();
    assert_eq!(names, FULL_CALL);
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "no delivery sent twice: {got:?}");
    for d in log.iter().filter(|d| d["callId"] == id.as_str()) {
        assert_eq!(d["attempts"], 1, "{d}");
    }
}

/// A call whose callee talks over the AI's greeting from its first
/// packet of speech: the transcript and how many packets of the greeting
/// the callee heard after it started talking.
fn barge_in_call() -> Option<(Value, u64)> {
    let p = Platform::start(&[])?;
    let callee = Callee::start();
    let (port, mut sipp) = talking_callee(&p, &callee, 1);
    p.default_trunk(port);
    callee.barge_in(Duration::from_millis(1000));
    // Goodbye after the callee's first utterance.
    let (id, _) = p.place(
        "Remind them of the appointment. END_AFTER_TURNS=1",
        &json!({}),
    );
    wait("the callee to talk over the greeting", 30, || {
        (callee.heard().1 > 0 && !callee.talking()).then_some(())
    });
    // The goodbye starts at least 500 ms (the simulator's end of an
    // utterance) after the callee stopped: nothing of it is in here.
    let heard_after = callee.heard_since_barge_in();
    sipp_done(&mut sipp, "the AI's BYE at the callee", 40);
    p.hooks.wait_for(&id, "transcript.saved", 30);
    Some((
        p.get(&format!("/api.ashx/v1/transcripts/{id}")),
        heard_after,
    ))
}

/// The simulator's greeting (680 ms of speech) when the prompt has no
/// `END_AFTER_TURNS=0`.
const GREETING: &str = "Hello, this is the CodeB voice simulator. How can I help you today?";

#[test]
fn a_callee_playing_a_recorded_voice_talks_with_the_ai() {
    // The whole call: SIPp as the trunk's callee, saying what the
    // shared recording holds (PCMA, from ../shared/testdata).
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    // Two seconds of its speech (it starts 1 s in): the whole recording
    // (7 s without a long pause) is what an answering machine's greeting
    // sounds like to the detector. It ends without a packet of silence:
    // the recording's sender suppressed its silences.
    let recording = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/sip/sipp/pcap/g711a.pcap"),
    )
    .unwrap();
    std::fs::write(
        p.dir.path().join("voice.pcap"),
        pcap_cut(&recording, 1000, 3000),
    )
    .unwrap();
    let port = free_sip_port();
    let mut sipp = sipp_callee(
        p.dir.path(),
        port,
        &[
            "-sf",
            &scenario("uas_pcap_talks.xml"),
            "-mp",
            &free_sip_port().to_string(),
            "-m",
            "1",
        ],
    );
    p.default_trunk(port);
    let (id, _) = p.place(
        "Remind them of the appointment. END_AFTER_TURNS=1",
        &json!({"maxSeconds": 20}),
    );
    sipp_done(&mut sipp, "the AI's BYE at the callee", 60);
    p.hooks.wait_for(&id, "transcript.saved", 30);
    let call = p.wait_call(&id, "its end", 10, |c| c["status"] != "in-flight");
    let t = p.get(&format!("/api.ashx/v1/transcripts/{id}"));
    assert_eq!(call["status"], "ended-success", "{call}");
    assert_eq!(call["endedReason"], "finished", "{call}");
    assert_greeting_answer_goodbye(&t);
    assert_eq!(p.hooks.names(&id), FULL_CALL);
}

#[test]
fn an_answering_machine_ends_the_call_as_voicemail() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let callee = Callee::start();
    let (port, mut sipp) = talking_callee(&p, &callee, 1);
    p.default_trunk(port);
    // A prompt that never ends the call by itself.
    let (id, _) = p.place("Keep the callee company.", &json!({"retries": 2}));
    p.hooks.wait_for(&id, "call.answered", 30);
    // The machine's greeting, then its beep.
    callee.speak(Duration::from_millis(1500));
    wait("the greeting", 10, || (!callee.talking()).then_some(()));
    callee.beep(1000, Duration::from_millis(600));
    sipp_done(&mut sipp, "the switch's BYE at the machine", 30);
    let f = p.hooks.wait_for(&id, "outbound-ai.finished", 30);
    assert_eq!(f.body["data"]["outcome"], "voicemail", "{f:?}");
    assert_eq!(f.body["data"]["answered"], true, "{f:?}");
    let call = p.wait_call(&id, "its final status", 10, |c| c["status"] != "in-flight");
    // A machine is not rung again, retries or not.
    assert_eq!(call["status"], "ended-failed-final", "{call}");
    assert_eq!(call["endedReason"], "voicemail", "{call}");
    assert_eq!(call["errorDetail"], "", "{call}");
}

#[test]
fn a_callee_talking_over_the_greeting_stops_its_playout() {
    let Some((t, heard_after)) = barge_in_call() else {
        return;
    };
    // Played out in full, the greeting is 27 packets of speech at the
    // callee (measured), 26 after its first. Flushed when the engine says
    // "interrupted", the callee hears a few more at most (4 or 5 here).
    assert!(
        heard_after < 15,
        "{heard_after} packets of greeting after the callee barged in"
    );
    assert_greeting_answer_goodbye(&t);
}

#[test]
fn a_callee_talking_over_the_greeting_cuts_its_transcript() {
    let Some((t, _)) = barge_in_call() else {
        return;
    };
    let greeting = t["turns"][0]["text"].as_str().unwrap();
    assert!(
        greeting.len() < GREETING.len() && GREETING.starts_with(greeting.trim_end()),
        "the greeting was cut where the callee barged in: {t}"
    );
}
