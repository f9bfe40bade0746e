//! An incoming INVITE with Replaces (RFC 3891): carl's phone, inside the
//! trunk's network, takes over bob's leg of a call with the trunk caller
//! A (as the transferee of a REFER bob sent him directly would). Carl is
//! answered on the port bob had, bob gets our BYE, A hears nothing; what
//! Replaces may not take over is refused with RFC 3891's answers.

use super::attended::{
    OTHER_TENANT_TRUNK, audio_port, early_replaces_of, invite_from, replaces_of, warning,
};
use super::refer::{EXTRA, text};
use super::*;

const CARL: &str = B2;

/// Carl's INVITE (to DID 3000, which would ring carl) with `replaces`
/// as its Replaces headers.
fn invite_replacing(h: &mut Harness, at: &str, replaces: &[&str]) -> Request {
    let mut invite = invite_from(h, at, "3000");
    for r in replaces {
        invite
            .headers
            .push(codeb_sip::Header::new(KnownHeader::Replaces, r.to_string()).unwrap());
    }
    invite
}

#[test]
fn carl_takes_over_bobs_leg() {
    let mut h = Harness::with_config(None, EXTRA);
    let mut call = answered_call(&mut h, Setup::default());
    let invite = invite_replacing(&mut h, CARL, &[&replaces_of(&call.b)]);
    h.send(CARL, invite.clone());
    let got = h.take(CARL);
    let ok = got
        .iter()
        .filter_map(|m| m.as_response())
        .find(|r| r.status.is_final())
        .cloned()
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let answer = text(&ok.body);
    let port = audio_port(&call.to_b.body);
    assert!(
        answer.contains(&format!("m=audio {port} RTP/AVP 8")),
        "bob's port, PCMA: {answer}"
    );
    assert!(
        header(&ok, KnownHeader::Contact)
            .unwrap()
            .contains("codeb@")
    );
    // Carl ACKs.
    let mut carl = caller_dialog(&mut h, CARL, &invite, &ok, true, None);
    // Bob is hung up; A hears nothing.
    hung_up(&mut h, B, &mut call.b);
    assert!(h.take(A).is_empty());
    h.advance(secs(5));
    assert!(
        h.take(CARL).is_empty(),
        "the 2xx is not retransmitted after the ACK"
    );
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "A's and carl's");
    assert_eq!(h.core.calls.ports_in_use(), 2);
    // A and carl talk; carl hangs up.
    let to_carl = info_reaches(&mut h, A, &mut call.a, CARL);
    assert_eq!(
        to_carl.headers.call_id().unwrap(),
        invite.headers.call_id().unwrap()
    );
    hang_up(&mut h, CARL, &mut carl);
    let bye = request(h.one(A));
    answer_bye(&mut h, A, &mut call.a, &bye);
    assert_all_ended(&h);
}

#[test]
fn what_replaces_may_not_take_over_is_refused() {
    let mut h = Harness::with_config(None, &format!("{EXTRA}{OTHER_TENANT_TRUNK}"));
    let call = answered_call(&mut h, Setup::default());
    let id = call.b.id();
    let (cid, remote, local) = (text(&id.call_id), text(&id.remote_tag), text(&id.local_tag));
    let good = replaces_of(&call.b);
    let cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            CARL,
            vec![format!("nosuch;to-tag={remote};from-tag={local}")],
            481,
            "no confirmed dialog",
        ),
        // The tags as bob sees them, swapped: no dialog of ours.
        (
            CARL,
            vec![format!("{cid};to-tag={local};from-tag={remote}")],
            481,
            "no confirmed dialog",
        ),
        (CARL, vec![format!("{good};early-only")], 486, "early-only"),
        (
            CARL,
            vec![format!("{cid};to-tag={remote}")],
            400,
            "lacks its to-tag",
        ),
        (
            CARL,
            vec![format!(
                "{};to-tag={remote};from-tag={local}",
                "x".repeat(300)
            )],
            400,
            "over 256 octets",
        ),
        (CARL, vec![good.clone(), good.clone()], 400, "exactly one"),
        (
            "198.51.100.5:5060",
            vec![good.clone()],
            403,
            "another tenant",
        ),
    ];
    for (from, replaces, status, why) in &cases {
        let r: Vec<&str> = replaces.iter().map(String::as_str).collect();
        let invite = invite_replacing(&mut h, from, &r);
        h.send(from, invite);
        let resp = response(h.one(from));
        assert_eq!(
            resp.status.as_u16(),
            *status,
            "{replaces:?}: {}",
            warning(&resp)
        );
        assert!(
            warning(&resp).contains(why),
            "{replaces:?}: {}",
            warning(&resp)
        );
    }
    // No offer: nothing to answer with.
    let mut invite = invite_replacing(&mut h, CARL, &[&good]);
    invite.body = Bytes::new();
    invite.headers.remove(KnownHeader::ContentType);
    h.send(CARL, invite);
    assert_eq!(response(h.one(CARL)).status.as_u16(), 488);
    assert!(h.take(B).is_empty(), "bob keeps his leg");
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2);
}

#[test]
fn an_early_dialog_is_not_taken_over() {
    let mut h = Harness::with_config(None, EXTRA);
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite.clone());
    reply_to_invite(&mut h, B, StatusCode::RINGING, b"bobtag");
    let ringing = response(h.one(A));
    // A's early dialog, as A sees it.
    let replaces = early_replaces_of(&invite, &ringing);
    let r = invite_replacing(&mut h, CARL, &[&replaces]);
    h.send(CARL, r);
    let resp = response(h.one(CARL));
    assert_eq!(
        resp.status,
        StatusCode::CALL_DOES_NOT_EXIST,
        "{}",
        warning(&resp)
    );
    assert!(h.take(A).is_empty());
    assert!(h.take(B).is_empty());
}

#[test]
fn a_virtual_number_call_reports_the_replacement() {
    use super::attended::handed_to_bob;
    use super::originate::{ended, events};
    use super::transfer::RECEPTIONIST;
    use crate::sip::calls::{CallEventKind, TRANSFERRED};
    let mut h = Harness::with_config(None, &format!("{EXTRA}{RECEPTIONIST}"));
    let (mut caller, mut bob, id) = handed_to_bob(&mut h, b"bobtag");
    // Carl's phone, calling as a number, takes over bob's leg.
    let mut invite = invite_replacing(&mut h, CARL, &[&replaces_of(&bob)]);
    invite.headers.remove(KnownHeader::From);
    let from = NameAddr::from_bytes(format!("<sip:+15550003333@{CARL}>"))
        .unwrap()
        .with_tag(&h.ids.tag())
        .unwrap();
    let mut value = bytes::BytesMut::new();
    from.render(&mut value);
    invite
        .headers
        .push(codeb_sip::Header::new(KnownHeader::From, value.freeze()).unwrap());
    h.send(CARL, invite.clone());
    let ok = h
        .take(CARL)
        .into_iter()
        .filter_map(|m| m.as_response().cloned())
        .find(|r| r.status.is_final())
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    let mut carl = caller_dialog(&mut h, CARL, &invite, &ok, true, None);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].call_id, id);
    assert_eq!(
        evs[0].kind,
        CallEventKind::Transferred {
            to_user: String::new(),
            to_phone: "+15550003333".into(),
            trunk_id: "tr_0000000000000001".into(),
            transfer_type: "invite-replaces".into(),
        }
    );
    hung_up(&mut h, B, &mut bob);
    assert!(events(&mut h).is_empty(), "the call goes on");
    // The caller hangs up: carl gets the BYE; the call ends transferred.
    hang_up(&mut h, A, &mut caller);
    let bye = request(h.one(CARL));
    answer_bye(&mut h, CARL, &mut carl, &bye);
    let evs = events(&mut h);
    assert_eq!(ended(&evs).0, TRANSFERRED);
    assert_all_ended(&h);
}
