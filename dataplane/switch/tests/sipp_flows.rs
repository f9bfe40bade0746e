//! SIPp as both far ends: uac -> codeb-switch -> uas, for the basic call,
//! CANCEL, BYE from the callee, hold/resume with re-INVITE, a PCMA offer,
//! a caller requiring reliable provisional responses (PRACK),
//! unattended transfer by REFER (a third SIPp as the target), attended
//! transfer by REFER with Replaces, and an INVITE with Replaces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::time::Duration;

use common::{
    Sipp, Switch, loopback_config, loopback_users_config, scenario_client, scenario_server,
    sipp_client, sipp_server,
};

/// The loopback config with the callee `uas` (whom every DID rings) at
/// the SIPp `uas`.
fn uas_config(uas: &Sipp) -> String {
    loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port))
}

/// The switch on [`uas_config`].
fn switch_to(uas: &Sipp) -> Switch {
    Switch::start(&uas_config(uas), &[])
}

/// Every dialog the switch held has ended.
fn assert_every_leg_ended(sw: &Switch) {
    assert_eq!(
        sw.metric("codeb_sip_dialogs "),
        Some(0.0),
        "every leg ended"
    );
}

/// The switch counted one REFER transfer, with `result`.
fn assert_one_refer_transfer(sw: &Switch, result: &str) {
    assert_eq!(
        sw.metric(&format!(
            "codeb_sip_refer_transfers_total{{result=\"{result}\"}}"
        )),
        Some(1.0),
        "{result}"
    );
}

#[test]
fn basic_calls_flow_through_the_b2bua() {
    let uas = sipp_server(&["-sn", "uas"]);
    let sw = switch_to(&uas);
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "20", "-r", "20"]);
    assert_eq!((ok, failed), (20, 0));
    assert_eq!(
        sw.metric("codeb_sip_responses_total{method=\"INVITE\",status=\"200\"}"),
        Some(20.0)
    );
    assert_every_leg_ended(&sw);
}

#[test]
fn caller_cancels_while_ringing() {
    let uas = scenario_server("uas_ring.xml", &[]);
    let sw = switch_to(&uas);
    let (ok, failed) = scenario_client(sw.sip, "uac_cancel.xml", &["-m", "5", "-r", "5"]);
    assert_eq!((ok, failed), (5, 0));
    assert_eq!(
        sw.metric("codeb_sip_responses_total{method=\"INVITE\",status=\"487\"}"),
        Some(5.0)
    );
}

#[test]
fn a_caller_requiring_100rel_gets_reliable_early_media_and_prack() {
    let uas = scenario_server("uas_early_media.xml", &[]);
    let sw = switch_to(&uas);
    let (ok, failed) = scenario_client(sw.sip, "uac_100rel.xml", &["-m", "5", "-r", "5"]);
    assert_eq!((ok, failed), (5, 0));
    for (method, status) in [("PRACK", 200), ("INVITE", 200), ("BYE", 200)] {
        assert_eq!(
            sw.metric(&format!(
                "codeb_sip_responses_total{{method=\"{method}\",status=\"{status}\"}}"
            )),
            Some(5.0),
            "{method} {status}"
        );
    }
    assert_every_leg_ended(&sw);
}

/// A late offer from a caller that requires 100rel: our offer in the
/// first reliable 180 (answered in its PRACK), the callee's early media
/// then in a reliable 183, PRACKed; the 2xx after that, and the call ends
/// cleanly on both legs.
#[test]
fn a_late_offer_requiring_100rel_is_made_in_the_first_reliable_provisional() {
    let uas = scenario_server("uas_early_media.xml", &[]);
    let sw = switch_to(&uas);
    let (ok, failed) = scenario_client(
        sw.sip,
        "uac_late_offer_require_100rel.xml",
        &["-m", "5", "-r", "5"],
    );
    assert_eq!((ok, failed), (5, 0));
    for (method, status, n) in [
        ("PRACK", 200, 10.0),
        ("INVITE", 200, 5.0),
        ("BYE", 200, 5.0),
    ] {
        assert_eq!(
            sw.metric(&format!(
                "codeb_sip_responses_total{{method=\"{method}\",status=\"{status}\"}}"
            )),
            Some(n),
            "{method} {status}"
        );
    }
    assert_every_leg_ended(&sw);
}

#[test]
fn callee_hangs_up_first() {
    let uas = scenario_server("uas_bye.xml", &[]);
    let sw = switch_to(&uas);
    let (ok, failed) = scenario_client(sw.sip, "uac_wait_bye.xml", &["-m", "5", "-r", "5"]);
    assert_eq!((ok, failed), (5, 0));
    assert_every_leg_ended(&sw);
}

#[test]
fn hold_with_reinvite_is_answered_recvonly() {
    let uas = sipp_server(&["-sn", "uas"]);
    let sw = switch_to(&uas);
    let (ok, failed) = scenario_client(sw.sip, "uac_reinvite.xml", &["-m", "3", "-r", "3"]);
    assert_eq!(
        (ok, failed),
        (3, 0),
        "the 200 to the hold re-INVITE carries a=recvonly"
    );
}

/// The loopback config, the callee `uas` at `uas`, plus the SIP user
/// `transfer` whose static contact is the transfer target's SIPp.
fn refer_config(uas: &Sipp, target: &Sipp) -> String {
    format!(
        "{}\n[[users]]\nname = \"transfer\"\ncontact = \"sip:transfer@127.0.0.1:{}\"\n",
        uas_config(uas),
        target.port
    )
}

/// A SIPp server that handled its one call (`-m 1`) successfully.
fn finished_ok(sipp: &mut Sipp, what: &str) {
    let status = sipp.wait(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{what} did not complete its scenario: {status:?}"
    );
}

/// Adapted from opensips-sipssert b2b/03.refer-unattended-uac: the caller
/// REFERs the callee to the SIP user `transfer`; 202 and NOTIFYs (100,
/// 180 as the target rings, then 200 terminated) to the caller, which the switch then hangs up; the
/// callee, now bridged to the target, hangs up, and the target gets that
/// BYE. The target's INVITE carries nothing of the caller but a
/// Referred-By rebuilt at the switch's host.
#[test]
fn caller_transfers_the_callee_by_refer() {
    let mut uas = scenario_server("uas_transferred.xml", &["-m", "1"]);
    let mut target = scenario_server("uas_transfer_target.xml", &["-m", "1"]);
    let sw = Switch::start(&refer_config(&uas, &target), &[]);
    let (ok, failed) = scenario_client(sw.sip, "uac_refer.xml", &["-m", "1"]);
    assert_eq!((ok, failed), (1, 0), "202, NOTIFY 100, 180, 200, BYE");
    finished_ok(&mut target, "the transfer target");
    finished_ok(&mut uas, "the transferred callee");
    assert_one_refer_transfer(&sw, "transferred");
    assert_every_leg_ended(&sw);
}

/// Adapted from opensips-sipssert b2b/04.refer-unattended-uas: the callee
/// REFERs the caller to the SIP user `transfer`; NOTIFYs and then the BYE
/// go to the callee; the caller, now bridged to the target, hangs up after
/// 2.5 s (SIPp's built-in uac) and the target gets that BYE.
#[test]
fn callee_transfers_the_caller_by_refer() {
    let mut uas = scenario_server("uas_refer.xml", &["-m", "1"]);
    let mut target = scenario_server("uas_transfer_target.xml", &["-m", "1"]);
    let sw = Switch::start(&refer_config(&uas, &target), &[]);
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-d", "2500", "-m", "1"]);
    assert_eq!((ok, failed), (1, 0), "the caller's BYE is answered");
    finished_ok(&mut uas, "the referring callee");
    finished_ok(&mut target, "the transfer target");
    assert_one_refer_transfer(&sw, "transferred");
    assert_every_leg_ended(&sw);
}

/// Adapted from opensips-sipssert b2b/05.refer-unattended-uac-fail: the
/// target answers 404; the caller gets NOTIFY 100 then NOTIFY 404
/// (terminated), and the call is intact: the caller's own BYE reaches the
/// callee.
#[test]
fn a_failed_refer_leaves_the_call_up() {
    let mut uas = sipp_server(&["-sn", "uas", "-m", "1"]);
    let mut target = scenario_server("uas_transfer_404.xml", &["-m", "1"]);
    let sw = Switch::start(&refer_config(&uas, &target), &[]);
    let (ok, failed) = scenario_client(sw.sip, "uac_refer_fail.xml", &["-m", "1"]);
    assert_eq!((ok, failed), (1, 0), "NOTIFY 404, then our BYE is answered");
    finished_ok(&mut target, "the transfer target");
    finished_ok(&mut uas, "the callee");
    assert_one_refer_transfer(&sw, "failed");
    assert_every_leg_ended(&sw);
}

/// Attended transfer (RFC 5589 §7): the SIPp transferor B calls A (DID
/// 2001, SIPp's built-in uas) and C (DID 2002) through the switch, then
/// REFERs in the call with A naming its dialog with the switch of the
/// call with C in `Replaces`. The switch re-INVITEs C in its dialog
/// towards the first call's media, B gets 202, NOTIFY 100, our BYE on
/// the call with C, NOTIFY 200 and our BYE on the call with A; C's later
/// BYE reaches A, which knew nothing of the transfer.
#[test]
fn attended_transfer_by_refer_with_replaces_joins_the_other_parties() {
    let mut a = sipp_server(&["-sn", "uas", "-m", "1"]);
    let mut c = scenario_server("uas_replaced.xml", &["-m", "1"]);
    let config = loopback_users_config(&[("a", "2001", a.port), ("c", "2002", c.port)]);
    let sw = Switch::start(&config, &[]);
    let (ok, failed) = scenario_client(
        sw.sip,
        "uac_attended.xml",
        &["-cid_str", "%u-%p-attended", "-m", "1"],
    );
    assert_eq!(
        (ok, failed),
        (1, 0),
        "202, NOTIFY 100, BYE, NOTIFY 200, BYE"
    );
    finished_ok(&mut c, "the transfer target C");
    finished_ok(&mut a, "the transferee A");
    assert_one_refer_transfer(&sw, "transferred");
    assert_every_leg_ended(&sw);
}

/// An INVITE with Replaces (RFC 3891): the SIPp caller calls A (DID
/// 2001, SIPp's built-in uas), then INVITEs again from a new dialog with
/// `Require: replaces` and a Replaces naming its first dialog with the
/// switch; the switch answers it, BYEs the first dialog, and the new
/// dialog's BYE reaches A, which saw nothing in between.
#[test]
fn an_invite_with_replaces_takes_over_a_leg() {
    let mut a = sipp_server(&["-sn", "uas", "-m", "1"]);
    let sw = Switch::start(&loopback_users_config(&[("a", "2001", a.port)]), &[]);
    let (ok, failed) = scenario_client(
        sw.sip,
        "uac_replaces.xml",
        &["-cid_str", "%u-%p-replaces", "-m", "1"],
    );
    assert_eq!((ok, failed), (1, 0), "200 to the INVITE with Replaces, BYE");
    finished_ok(&mut a, "A");
    assert_every_leg_ended(&sw);
}
