//! SIPp as both far ends: uac -> codeb-switch -> uas, for the basic call,
//! CANCEL, BYE from the callee, hold/resume with re-INVITE, and a PCMA
//! offer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use common::{Switch, loopback_config, scenario, sipp_client, sipp_server};

#[test]
fn basic_calls_flow_through_the_b2bua() {
    let uas = sipp_server(&["-sn", "uas"]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[],
    );
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "20", "-r", "20"]);
    assert_eq!((ok, failed), (20, 0));
    assert_eq!(
        sw.metric("codeb_sip_responses_total{method=\"INVITE\",status=\"200\"}"),
        Some(20.0)
    );
    assert_eq!(
        sw.metric("codeb_sip_dialogs "),
        Some(0.0),
        "every call ended"
    );
}

#[test]
fn caller_cancels_while_ringing() {
    let uas = sipp_server(&["-sf", scenario("uas_ring.xml").to_str().unwrap()]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[],
    );
    let (ok, failed) = sipp_client(
        sw.sip,
        &[
            "-sf",
            scenario("uac_cancel.xml").to_str().unwrap(),
            "-m",
            "5",
            "-r",
            "5",
        ],
    );
    assert_eq!((ok, failed), (5, 0));
    assert_eq!(
        sw.metric("codeb_sip_responses_total{method=\"INVITE\",status=\"487\"}"),
        Some(5.0)
    );
}

#[test]
fn callee_hangs_up_first() {
    let uas = sipp_server(&["-sf", scenario("uas_bye.xml").to_str().unwrap()]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[],
    );
    let (ok, failed) = sipp_client(
        sw.sip,
        &[
            "-sf",
            scenario("uac_wait_bye.xml").to_str().unwrap(),
            "-m",
            "5",
            "-r",
            "5",
        ],
    );
    assert_eq!((ok, failed), (5, 0));
    assert_eq!(sw.metric("codeb_sip_dialogs "), Some(0.0));
}

#[test]
fn hold_with_reinvite_is_answered_recvonly() {
    let uas = sipp_server(&["-sn", "uas"]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[],
    );
    let (ok, failed) = sipp_client(
        sw.sip,
        &[
            "-sf",
            scenario("uac_reinvite.xml").to_str().unwrap(),
            "-m",
            "3",
            "-r",
            "3",
        ],
    );
    assert_eq!(
        (ok, failed),
        (3, 0),
        "the 200 to the hold re-INVITE carries a=recvonly"
    );
}
