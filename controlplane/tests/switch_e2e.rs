//! The whole system: `codeb serve` driving a real `codeb-switch` over the
//! gRPC link, SIPp as the trunk's callee, the voice-AI simulator
//! (`codeb-ai-sim`, Gemini Live's wire protocol) as the persona's engine,
//! and an HTTP receiver for the webhooks. `POST /calls` → the call is
//! answered at SIPp → `call.answered`, then `call.started` once the AI
//! talks → hangup → the switch sends BYE and reports the end →
//! `outbound-ai.finished`. A second call is ended by the AI itself
//! (`end_call` after its greeting): `finished`, with its transcript saved
//! and served. SIP users set through the API reach the switch: an inbound
//! route to one rings its static contact, or where it registered with the
//! digest password the API stored, and an AI call hands its callee to one
//! with `transfer_to_user`. Inbound calls to a virtual number end on
//! their own or when the API hangs them up.
//!
//! The platform's set-up is `common::platform`'s (shared with
//! `call_lifecycle.rs`).

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::process::{Command, Stdio};

use common::platform::{Killed, Platform, free_sip_port, sipp_callee, wait};
use serde_json::json;

#[test]
fn a_call_through_the_real_switch_is_answered_hung_up_and_reported() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    // The trunk's far end: SIPp's uas answers two calls, each waiting for
    // our BYE.
    let callee_port = free_sip_port();
    let mut callee = sipp_callee(p.dir.path(), callee_port, &["-sn", "uas", "-m", "2"]);
    let trunk_id = p.default_trunk(callee_port);

    let (id, placed) = p.place("Say hi, then goodbye.", &json!({}));
    assert_eq!(placed["status"], "in-flight", "{placed}");

    // SIPp answers: the record and the webhook say so.
    let answered = p.hooks.wait_for(&id, "call.answered", 30);
    let data = &answered.body["data"];
    assert_eq!(data["phone"], "+15551230000");
    assert_eq!(data["trunkId"], trunk_id.as_str());
    assert_eq!(data["direction"], "outbound");
    let call = p.call(&id);
    assert_eq!(call["status"], "in-flight");
    assert!(call["answeredAtUtc"].is_string(), "{call}");
    assert_eq!(call["trunkId"], trunk_id.as_str());
    // The AI joins the call.
    p.hooks.wait_for(&id, "call.started", 30);

    // Hang up: BYE to SIPp, the end comes back as an event.
    let (code, r, raw) = p.post(&format!("/api.ashx/v1/calls/{id}/hangup"), &json!({}));
    assert_eq!(code, 200, "{raw}");
    assert_eq!(r["wasNoop"], false);
    // As the spec's example: the hangup answers once the end is in.
    assert_eq!(r["newStatus"], "cancelled", "{r}");
    let finished = p.hooks.wait_for(&id, "outbound-ai.finished", 30);
    let data = &finished.body["data"];
    assert_eq!(data["outcome"], "cancelled");
    assert_eq!(data["answered"], true);
    assert_eq!(data["trunk"], trunk_id.as_str());
    let call = p.wait_call(&id, "its final status", 10, |c| c["status"] != "in-flight");
    assert_eq!(call["status"], "cancelled", "{call}");
    assert_eq!(call["endedReason"], "cancelled");
    assert!(call["endedAtUtc"].is_string());
    // Each event once, answered before started before finished.
    let names = p.hooks.names(&id);
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(at("call.answered") < at("call.started"), "{names:?}");
    assert!(at("call.started") < at("outbound-ai.finished"), "{names:?}");
    for n in ["call.answered", "call.started", "outbound-ai.finished"] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            1,
            "{n}: {names:?}"
        );
    }

    // A call the AI ends itself: its greeting is its goodbye.
    let (id2, _) = p.place(
        "Greet the callee, then end the call. END_AFTER_TURNS=0",
        &json!({}),
    );
    let saved = p.hooks.wait_for(&id2, "transcript.saved", 40);
    let finished = p
        .hooks
        .of_call(&id2)
        .into_iter()
        .find(|d| d.event == "outbound-ai.finished")
        .expect("the terminal event before transcript.saved");
    assert_eq!(finished.body["data"]["outcome"], "finished", "{finished:?}");
    assert_eq!(finished.body["data"]["outputTurns"], 1, "{finished:?}");
    let file = saved.body["data"]["file"].as_str().unwrap().to_owned();
    assert!(
        file.starts_with("outbound-ai-") && file.ends_with(&format!("-{id2}.txt")),
        "{file}"
    );
    let text = std::fs::read_to_string(p.cp_dir.join("transcripts").join(&file)).unwrap();
    assert!(
        !text.trim().is_empty(),
        "the transcript file has the greeting"
    );
    let t = p.get(&format!("/api.ashx/v1/transcripts/{id2}"));
    assert_eq!(t["outcome"], "finished", "{t}");
    assert_eq!(t["answered"], true);
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 1, "{t}");
    assert_eq!(turns[0]["speaker"], "AI");
    assert!(t["tokensTotal"].as_i64().unwrap() > 0, "{t}");

    // SIPp got both BYEs and finished its two calls cleanly.
    let st = wait("SIPp to finish", 15, || callee.0.try_wait().unwrap());
    assert!(st.success(), "SIPp: {st}");

    // Inbound: a virtual number answered by its persona. The carrier's
    // trunk names no inbound networks, so its own address is where its
    // calls come from.
    let before = p.switch.config_version();
    let (code, _, raw) = p.post(
        "/api.ashx/v1/numbers",
        &json!({"name": "reception", "number": "7000", "saveTranscripts": true,
                "systemPrompt": "You are the receptionist. END_AFTER_TURNS=0"}),
    );
    assert_eq!(code, 201, "{raw}");
    let (code, _, raw) = p.post(
        "/api.ashx/v1/inbound-routes",
        &json!({"Did": "7000", "User": "7000"}),
    );
    assert!(code == 200 || code == 201, "{raw}");
    wait("the new configuration on the switch", 20, || {
        (p.switch.config_version() > before).then_some(())
    });
    let scenario = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/switch/tests/scenarios/uac_wait_bye.xml");
    let caller = carrier_call(&p, "7000", &["-sf", scenario.to_str().unwrap()])
        .arg("-timeout_error")
        .status()
        .unwrap();
    assert!(caller.success(), "the caller got the AI's BYE: {caller}");
    let saved = wait("transcript.saved (vnum) at the receiver", 30, || {
        p.hooks
            .all()
            .into_iter()
            .find(|d| d.event == "transcript.saved" && d.body["data"]["source"] == "vnum")
    });
    let vnum_id = saved.body["data"]["callId"].as_str().unwrap().to_owned();
    assert!(vnum_id.starts_with("vnum"), "{vnum_id}");
    let names = p.hooks.names(&vnum_id);
    for n in [
        "call.answered",
        "call.started",
        "call.ended",
        "transcript.saved",
    ] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            1,
            "{n}: {names:?}"
        );
    }
    let inbound = p.get(&format!("/api.ashx/v1/inbound-calls/{vnum_id}"));
    assert_eq!(inbound["outcome"], "finished", "{inbound}");
    assert_eq!(inbound["number"], "7000", "{inbound}");
    assert_eq!(inbound["outputTurns"], 1, "{inbound}");
    let t = p.get(&format!("/api.ashx/v1/transcripts/{vnum_id}"));
    assert_eq!(t["callerSource"], "vnum", "{t}");
    assert_eq!(t["turns"][0]["speaker"], "AI", "{t}");

    // An inbound call the operator hangs up: its persona would talk on.
    let before = p.switch.config_version();
    let (code, _, raw) = p.post(
        "/api.ashx/v1/numbers",
        &json!({"name": "desk", "number": "7001", "systemPrompt": "You are the front desk."}),
    );
    assert_eq!(code, 201, "{raw}");
    let (code, _, raw) = p.post(
        "/api.ashx/v1/inbound-routes",
        &json!({"Did": "7001", "User": "7001"}),
    );
    assert!(code == 200 || code == 201, "{raw}");
    wait("the new configuration on the switch", 20, || {
        (p.switch.config_version() > before).then_some(())
    });
    let mut caller = Killed(
        carrier_call(&p, "7001", &["-sf", scenario.to_str().unwrap()])
            .arg("-timeout_error")
            .spawn()
            .unwrap(),
    );
    let desk_id = wait("the desk call's AI session", 30, || {
        p.get("/api.ashx/v1/inbound-calls")["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["number"] == "7001" && c["startedAtUtc"].is_string())
            .and_then(|c| c["callId"].as_str().map(str::to_owned))
    });
    let hangup = format!("/api.ashx/v1/inbound-calls/{desk_id}/hangup");
    let (code, r, raw) = p.post(&hangup, &json!({}));
    assert_eq!(code, 200, "{raw}");
    assert_eq!(r["wasNoop"], false, "{r}");
    // The switch's end came back while the hangup waited for it.
    assert_eq!(r["newStatus"], "ended", "{r}");
    let st = wait("the desk caller to get our BYE", 15, || {
        caller.0.try_wait().unwrap()
    });
    assert!(st.success(), "the caller got the BYE: {st}");
    let ended = p.hooks.wait_for(&desk_id, "call.ended", 30);
    assert_eq!(ended.body["data"]["outcome"], "cancelled", "{ended:?}");
    let desk = wait("the desk call's record to end", 10, || {
        let c = p.get(&format!("/api.ashx/v1/inbound-calls/{desk_id}"));
        (c["status"] == "ended").then_some(c)
    });
    assert_eq!(desk["outcome"], "cancelled", "{desk}");
    let (code, r, raw) = p.post(&hangup, &json!({}));
    assert_eq!(code, 200, "{raw}");
    assert_eq!(r["wasNoop"], true, "{r}");
    assert_eq!(r["newStatus"], "ended", "{r}");
}

/// SIPp as the carrier calling `did` at the switch (from loopback, the
/// carrier trunk's address), one call; `args` name the scenario.
fn carrier_call(p: &Platform, did: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sipp");
    c.arg(format!("127.0.0.1:{}", p.switch.sip))
        .args(args)
        .args(["-s", did, "-m", "1", "-i", "127.0.0.1", "-p"])
        .arg(free_sip_port().to_string())
        .args(["-nostdin", "-timeout", "30s"])
        .current_dir(p.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A carrier trunk (its calls come from loopback), the SIP user `user`
/// (the POST body), and an inbound route from `did` to it, each waited for
/// on the switch; the user as the API shows it.
fn user_behind_did(p: &Platform, user: &serde_json::Value, did: &str) -> serde_json::Value {
    p.default_trunk(free_sip_port());
    let pushed = |after: u64| {
        wait("the new configuration on the switch", 20, || {
            let v = p.switch.config_version();
            (v > after).then_some(v)
        })
    };
    let v0 = pushed(0);
    let (code, created, raw) = p.post("/api.ashx/v1/sip-users", user);
    assert_eq!(code, 201, "{raw}");
    let v1 = pushed(v0);
    let (code, _, raw) = p.post(
        "/api.ashx/v1/inbound-routes",
        &json!({"Did": did, "User": user["name"]}),
    );
    assert!(code == 200 || code == 201, "{raw}");
    pushed(v1);
    created
}

/// An inbound route to a SIP user (`/api.ashx/v1/sip-users`, pushed to the
/// node in the snapshot) rings the user's static contact: SIPp's uac calls
/// the switch from the carrier's address, the switch forks to the user's
/// contact (SIPp's uas), which answers; the caller's BYE ends both legs.
#[test]
fn an_inbound_route_to_a_sip_user_rings_its_static_contact() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let desk_port = free_sip_port();
    let mut desk = sipp_callee(p.dir.path(), desk_port, &["-sn", "uas", "-m", "1"]);
    let user = user_behind_did(
        &p,
        &json!({"name": "desk", "displayName": "Front desk",
                "contact": format!("sip:desk@127.0.0.1:{desk_port}")}),
        "7100",
    );
    assert_eq!(user["passwordSet"], false);
    let caller = carrier_call(&p, "7100", &["-sn", "uac", "-d", "500"])
        .arg("-timeout_error")
        .status()
        .unwrap();
    assert!(caller.success(), "the user answered the caller: {caller}");
    let st = wait("the user's SIPp to finish", 15, || {
        desk.0.try_wait().unwrap()
    });
    assert!(
        st.success(),
        "the user's SIPp got the call and its BYE: {st}"
    );
}

/// RFC 7616 SHA-256 of `parts` joined with ':', in hex.
fn sha256_hex(parts: &[&str]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, parts.join(":").as_bytes());
    hex::encode(d.as_ref())
}

/// Sends a REGISTER for `user` from `sock` (binding its own address) and
/// returns the final answer's text.
fn register(sock: &std::net::UdpSocket, switch: u16, user: &str, cseq: u32, auth: &str) -> String {
    let a = sock.local_addr().unwrap();
    let msg = format!(
        "REGISTER sip:codeb SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKreg{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@codeb>;tag=r1\r\nTo: <sip:{user}@codeb>\r\n\
         Call-ID: reg-{user}@{a}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{a}>\r\n\
         Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", switch)).unwrap();
    loop {
        let text = recv_text(sock);
        if !text.starts_with("SIP/2.0 100 ") {
            return text;
        }
    }
}

fn recv_text(sock: &std::net::UdpSocket) -> String {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = sock.recv_from(&mut buf).expect("a SIP message within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The Authorization header answering the SHA-256 challenge in `challenge`
/// (a 401's text) for REGISTER to `sip:codeb`.
fn digest_answer(challenge: &str, user: &str, password: &str) -> String {
    let www = challenge
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:") && l.contains("SHA-256"))
        .unwrap_or_else(|| panic!("a SHA-256 challenge: {challenge}"));
    let param = |name: &str| {
        let start = www.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let len = www[start..].find('"').unwrap();
        www[start..start + len].to_owned()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = sha256_hex(&[user, &realm, password]);
    let ha2 = sha256_hex(&["REGISTER", "sip:codeb"]);
    let response = sha256_hex(&[&ha1, &nonce, "00000001", "0a4f113b", "auth", &ha2]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"sip:codeb\", response=\"{response}\", algorithm=SHA-256, cnonce=\"0a4f113b\", \
         qop=auth, nc=00000001\r\n"
    )
}

/// A SIP user with a password (set through the API, pushed in the
/// snapshot) registers with digest auth at the switch; an inbound route to
/// it then rings the registered contact.
#[test]
fn a_sip_user_registers_with_its_password_and_its_route_rings_it() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let user = user_behind_did(
        &p,
        &json!({"name": "alex", "password": "alex-digest-secret"}),
        "7200",
    );
    assert_eq!(user["passwordSet"], true);

    let phone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let sip = p.switch.sip;
    let challenge = register(&phone, sip, "alex", 1, "");
    assert!(challenge.starts_with("SIP/2.0 401 "), "{challenge}");
    let wrong = register(
        &phone,
        sip,
        "alex",
        2,
        &digest_answer(&challenge, "alex", "guess"),
    );
    assert!(wrong.starts_with("SIP/2.0 403 "), "{wrong}");
    let challenge = register(&phone, sip, "alex", 3, "");
    let auth = digest_answer(&challenge, "alex", "alex-digest-secret");
    let ok = register(&phone, sip, "alex", 4, &auth);
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");

    // A carrier call to DID 7200 rings the phone where it registered.
    let _caller =
        common::platform::Killed(carrier_call(&p, "7200", &["-sn", "uac"]).spawn().unwrap());
    let invite = recv_text(&phone);
    assert!(invite.starts_with("INVITE sip:alex@"), "{invite}");
}

/// The AI of an outbound call is offered `transfer_to_user` with the
/// tenant's SIP users (set through the API): the simulator's script names
/// `desk` after the callee's first utterance, the switch dials desk's
/// static contact (SIPp's uas), which answers, and `call.transferred`
/// names the user.
#[test]
fn an_ai_call_hands_its_callee_to_a_sip_user() {
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let desk_port = free_sip_port();
    let _desk = sipp_callee(p.dir.path(), desk_port, &["-sn", "uas", "-m", "1"]);
    let callee = common::platform::Callee::start();
    let callee_port = free_sip_port();
    let _callee_sipp = sipp_callee(
        p.dir.path(),
        callee_port,
        &[
            "-sf",
            &common::platform::scenario("uas_test_media.xml"),
            "-key",
            "callee_rtp",
            &callee.port.to_string(),
            "-m",
            "1",
        ],
    );
    p.default_trunk(callee_port);
    let (code, _, raw) = p.post(
        "/api.ashx/v1/sip-users",
        &json!({"name": "desk", "contact": format!("sip:desk@127.0.0.1:{desk_port}")}),
    );
    assert_eq!(code, 201, "{raw}");
    // The call waits for a configuration at least as new as itself, so the
    // node has the user when the AI starts.
    let (id, _) = p.place("Help them. TRANSFER_AFTER_TURNS=1:desk", &json!({}));
    p.hooks.wait_for(&id, "call.started", 30);
    wait("the AI's greeting at the callee", 30, || {
        (callee.heard().1 >= 10).then_some(())
    });
    callee.speak(std::time::Duration::from_millis(1200));
    let transferred = p.hooks.wait_for(&id, "call.transferred", 40);
    assert_eq!(
        transferred.body["data"]["toUser"], "desk",
        "{:?}",
        transferred.body
    );
}
