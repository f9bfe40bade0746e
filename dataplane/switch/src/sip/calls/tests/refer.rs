//! Unattended transfer by REFER (RFC 3515) in a bridged call: either
//! party refers the other to a user the switch routes; 202, NOTIFYs with
//! sipfrag, the target dialled from scratch, the other party bridged to it
//! and the referrer hung up; a busy target leaves the call as it was; a
//! target the switch would not route is refused with nothing dialled.

use codeb_sip::dialog::Incoming;

use super::*;

const CARL: &str = B2;

/// `carl` (a phone at B2) is a user of the tenant, and DID 3000 rings him.
pub(super) const EXTRA: &str = r#"
[[users]]
name = "carl"
contact = "sip:carl@192.0.2.21:5060"

[[routes]]
did = "3000"
user = "carl"
"#;

fn harness() -> (Harness, Call) {
    let mut h = Harness::with_config(None, EXTRA);
    let call = answered_call(&mut h, Setup::default());
    (h, call)
}

pub(super) fn refer(d: &mut Dialog<Peer>, to: &str, extra: &[(&str, &str)]) -> Request {
    let mut b = d
        .request(Method::Refer)
        .unwrap()
        .header(KnownHeader::ReferTo, to.to_owned());
    for (name, value) in extra {
        b = b.header(
            codeb_sip::header::HeaderName::parse(name.to_string()).unwrap(),
            value.to_string(),
        );
    }
    b.build().unwrap()
}

pub(super) fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn named(m: &impl HasHeaders, name: &str) -> Option<String> {
    m.headers()
        .get_named(name.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The referrer's peer takes a NOTIFY and answers it with `status`.
pub(super) fn answer_notify(
    h: &mut Harness,
    at: &str,
    d: &mut Dialog<Peer>,
    notify: &Request,
    status: StatusCode,
) {
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(d.handle_request(h.now, notify), Incoming::Accept);
    let r = d.reply(notify, status).build().unwrap();
    h.send(at, r);
}

/// Checks a NOTIFY of the REFER's subscription: its state and sipfrag.
pub(super) fn assert_notify(notify: &Request, state: &str, frag: &str) {
    assert_eq!(notify.method, Method::Notify);
    assert!(
        header(notify, KnownHeader::Event)
            .unwrap()
            .starts_with("refer"),
        "{notify:?}"
    );
    let sub = header(notify, KnownHeader::SubscriptionState).unwrap();
    assert!(sub.starts_with(state), "{sub}");
    assert_eq!(
        header(notify, KnownHeader::ContentType).unwrap(),
        "message/sipfrag;version=2.0"
    );
    assert_eq!(text(&notify.body), format!("{frag}\r\n"));
    assert!(header(notify, KnownHeader::Contact).is_some());
}

/// The 202 to a REFER and the first NOTIFY, in the order sent.
pub(super) fn accepted(h: &mut Harness, at: &str) -> (Response, Request) {
    let mut got = h.take(at);
    assert_eq!(got.len(), 2, "202 and NOTIFY: {got:#?}");
    let notify = request(got.remove(1));
    let r = response(got.remove(0));
    assert_eq!(r.status.as_u16(), 202);
    assert_notify(&notify, "active;expires=", "SIP/2.0 100 Trying");
    (r, notify)
}

/// The peer at `at` refers in its dialog `d` to `to`: the 202, the first
/// NOTIFY, and the peer's 200 to it.
pub(super) fn refer_accepted(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, to: &str) {
    let r = refer(d, to, &[]);
    h.send(at, r);
    let (_, notify) = accepted(h, at);
    answer_notify(h, at, d, &notify, StatusCode::OK);
}

/// The peer at `at` refers in its dialog `d` to `to`; the switch's one
/// answer (when it refuses, all it sends).
pub(super) fn answer_to_refer(
    h: &mut Harness,
    at: &str,
    d: &mut Dialog<Peer>,
    to: &str,
) -> Response {
    let r = refer(d, to, &[]);
    h.send(at, r);
    response(h.one(at))
}

/// Carl's final failure answer (sipfrag `frag`) is ACKed and reported to
/// the referrer at `at` in its dialog `d` by a final NOTIFY, which it
/// answers; no BYE follows, and the transfer counts as failed.
pub(super) fn transfer_failed(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, frag: &str) {
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    notified(h, at, d, "terminated;reason=noresource", frag);
    assert!(h.take(at).is_empty(), "no BYE: the referrer keeps its call");
    assert_eq!(refer_count(h, "failed"), 1);
}

/// The referrer at `at` gets one NOTIFY in its dialog `d`, with `state`
/// and sipfrag `frag`, and answers it 200.
pub(super) fn notified(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, state: &str, frag: &str) {
    let notify = request(h.one(at));
    assert_notify(&notify, state, frag);
    answer_notify(h, at, d, &notify, StatusCode::OK);
}

pub(super) fn refer_count(h: &Harness, result: &str) -> u64 {
    h.core
        .stats
        .refer_transfers
        .get(result)
        .copied()
        .unwrap_or(0)
}

#[test]
fn the_caller_refers_the_callee_to_a_user() {
    let (mut h, mut call) = harness();
    let a_call_id = text(&call.a.id().call_id);
    let r = refer(
        &mut call.a,
        "<sip:carl@192.0.2.1>",
        &[("Referred-By", "\"Carol\" <sip:+15550002222@192.0.2.10>")],
    );
    h.send(A, r);
    let (_, notify) = accepted(&mut h, A);
    answer_notify(&mut h, A, &mut call.a, &notify, StatusCode::OK);
    // Carl is called from scratch: only our Via, none of A's identifiers.
    let to_carl = request(h.one(CARL));
    assert_eq!(to_carl.method, Method::Invite);
    let wire = text(&Message::from(to_carl.clone()).to_bytes());
    assert_eq!(to_carl.headers.vias().unwrap().len(), 1);
    for leak in [a_call_id.as_str(), "192.0.2.10", "sip:peer@"] {
        assert!(
            !wire.contains(leak),
            "{leak:?} leaked to the target:\n{wire}"
        );
    }
    assert!(
        header(&to_carl, KnownHeader::From)
            .unwrap()
            .contains("1000"),
        "carl sees the callee's number: {wire}"
    );
    let by = header(&to_carl, KnownHeader::ReferredBy).unwrap();
    assert_eq!(by, "\"Carol\" <sip:+15550002222@192.0.2.1:5060>");
    let offer = text(&to_carl.body);
    assert!(
        offer.contains("m=audio 30000 RTP/AVP 8 0"),
        "A's port, B's codec (PCMA) first: {offer}"
    );
    assert!(h.take(B).is_empty(), "B hears nothing of it");
    let mut carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    // The referrer learns the outcome, then is hung up.
    notified(
        &mut h,
        A,
        &mut call.a,
        "terminated;reason=noresource",
        "SIP/2.0 200 OK",
    );
    let bye = request(h.one(A));
    answer_bye(&mut h, A, &mut call.a, &bye);
    assert!(h.take(B).is_empty(), "B stays, unaware");
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(refer_count(&h, "transferred"), 1);
    // B and carl are the call now: B's INFO reaches carl, B's BYE too.
    info_reaches(&mut h, B, &mut call.b, CARL);
    hang_up(&mut h, B, &mut call.b);
    let bye = request(h.one(CARL));
    answer_bye(&mut h, CARL, &mut carl, &bye);
    assert_all_ended(&h);
}

#[test]
fn the_callee_refers_the_caller_to_a_routed_number() {
    let (mut h, mut call) = harness();
    // DID 3000 routes to carl; the host part is not ours to trust.
    let r = refer(&mut call.b, "sip:3000@203.0.113.9", &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    // The referrer ends the subscription: no more NOTIFYs, the call goes on.
    answer_notify(
        &mut h,
        B,
        &mut call.b,
        &notify,
        StatusCode::CALL_DOES_NOT_EXIST,
    );
    let to_carl = request(h.one(CARL));
    assert!(
        header(&to_carl, KnownHeader::From)
            .unwrap()
            .contains("+15550002222"),
        "carl sees the caller"
    );
    assert!(header(&to_carl, KnownHeader::ReferredBy).is_none());
    assert!(h.take(A).is_empty(), "A hears nothing of it");
    let _carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    // No final NOTIFY (481 ended the subscription): straight to the BYE.
    let bye = request(h.one(B));
    assert_eq!(bye.method, Method::Bye);
    assert!(h.take(A).is_empty());
    // A's requests now reach carl.
    info_reaches(&mut h, A, &mut call.a, CARL);
}

#[test]
fn a_busy_target_leaves_the_call_as_it_was() {
    let (mut h, mut call) = harness();
    refer_accepted(&mut h, A, &mut call.a, "<sip:carl@192.0.2.1>");
    reply_to_invite(&mut h, CARL, StatusCode::BUSY_HERE, b"carltag");
    transfer_failed(&mut h, A, &mut call.a, "SIP/2.0 486 Busy Here");
    assert!(h.take(B).is_empty());
    // A and B still talk.
    info_reaches(&mut h, A, &mut call.a, B);
    // And a new REFER may follow.
    let r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    h.send(A, r);
    accepted(&mut h, A);
}

#[test]
fn a_target_that_never_answers_is_given_up() {
    let (mut h, mut call) = harness();
    refer_accepted(&mut h, A, &mut call.a, "<sip:carl@192.0.2.1>");
    let ringing = reply_to_invite(&mut h, CARL, StatusCode::RINGING, b"carltag");
    // The referrer hears that the target rings, once.
    let rings = request(h.one(A));
    assert_notify(&rings, "active;expires=", "SIP/2.0 180 Ringing");
    answer_notify(&mut h, A, &mut call.a, &rings, StatusCode::OK);
    h.send(CARL, ringing);
    assert!(h.take(A).is_empty(), "a repeated 180 is not NOTIFYed again");
    h.advance(crate::sip::calls::TRANSFER_RING + secs(1));
    let cancel = h.take_request(CARL, Method::Cancel);
    assert!(cancel.is_some(), "the ringing target is cancelled");
    let last = h.take_request(A, Method::Notify).unwrap();
    assert_notify(
        &last,
        "terminated;reason=noresource",
        "SIP/2.0 408 Request Timeout",
    );
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_target_the_switch_would_not_route_is_refused() {
    let (mut h, mut call) = harness();
    for target in [
        // DID 2000 goes out through the carrier: toll fraud.
        "<sip:2000@192.0.2.1>",
        "<sip:+4930123456@carrier.example>",
        "<sip:nobody@192.0.2.1>",
        "<tel:+15550009999>",
        // URI headers other than Replaces (see `attended.rs`).
        "<sip:carl@192.0.2.1?Subject=hello>",
    ] {
        let r = answer_to_refer(&mut h, A, &mut call.a, target);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}");
    }
    assert!(h.take(CARRIER).is_empty(), "nothing dialled");
    assert!(h.take(CARL).is_empty(), "nothing dialled");
    assert!(h.take(B).is_empty());
    assert_eq!(refer_count(&h, "refused"), 5);
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn refer_sub_false_means_no_notifies() {
    let (mut h, mut call) = harness();
    let r = refer(
        &mut call.a,
        "<sip:carl@192.0.2.1>",
        &[("Refer-Sub", "false")],
    );
    h.send(A, r);
    let ok = response(h.one(A));
    assert_eq!(ok.status.as_u16(), 202);
    assert_eq!(named(&ok, "Refer-Sub").as_deref(), Some("false"));
    let to_carl = request(h.one(CARL));
    let _carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let bye = request(h.one(A));
    assert_eq!(bye.method, Method::Bye, "no NOTIFY, just the BYE");
}

#[test]
fn a_second_refer_while_one_rings_is_refused_with_491() {
    let (mut h, mut call) = harness();
    let r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    h.send(A, r);
    accepted(&mut h, A);
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
    let r = refer(&mut call.b, "<sip:bob@192.0.2.1>", &[]);
    h.send(B, r);
    assert_eq!(response(h.one(B)).status.as_u16(), 491);
    assert!(h.take(CARL).is_empty());
}

#[test]
fn refer_outside_a_dialog_is_refused() {
    let (mut h, mut call) = harness();
    // A To-tag that names no dialog: 481.
    let mut r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    r.headers.remove(KnownHeader::To);
    r.headers.push(
        codeb_sip::Header::new(KnownHeader::To, format!("<sip:1000@{SW}>;tag=nosuchtag")).unwrap(),
    );
    h.send(A, r);
    assert_eq!(response(h.one(A)).status, StatusCode::CALL_DOES_NOT_EXIST);
    // No To-tag at all: outside any dialog, 403.
    let mut r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    r.headers.remove(KnownHeader::To);
    r.headers
        .push(codeb_sip::Header::new(KnownHeader::To, format!("<sip:1000@{SW}>")).unwrap());
    h.send(A, r);
    assert_eq!(response(h.one(A)).status, StatusCode::FORBIDDEN);
    assert!(h.take(CARL).is_empty());
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn the_referrer_may_hang_up_while_the_target_rings() {
    let (mut h, mut call) = harness();
    refer_accepted(&mut h, A, &mut call.a, "<sip:carl@192.0.2.1>");
    let to_carl = request(h.one(CARL));
    hang_up(&mut h, A, &mut call.a);
    assert!(h.take(B).is_empty(), "B waits for carl");
    let _carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    assert!(h.take(A).is_empty(), "nothing more to the referrer");
    info_reaches(&mut h, B, &mut call.b, CARL);
}

#[test]
fn a_user_by_name_wins_over_a_catch_all_route_and_other_tenants_are_refused() {
    let extra = format!(
        "{EXTRA}
[[users]]
name = \"dora\"
tenant = \"other.example\"
contact = \"sip:dora@192.0.2.22:5060\"

[[routes]]
did = \"4000\"
user = \"dora\"

[[routes]]
did = \"*\"
user = \"bob\"
"
    );
    let mut h = Harness::with_config(None, &extra);
    let mut call = answered_call(&mut h, Setup::default());
    // DID 4000 routes to dora, a user of another tenant: refused.
    let r = answer_to_refer(&mut h, A, &mut call.a, "<sip:4000@192.0.2.1>");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(h.take("192.0.2.22:5060").is_empty(), "dora is never rung");
    assert!(h.take(B).is_empty());
    // carl by name, although the catch-all would ring bob.
    let r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    h.send(A, r);
    accepted(&mut h, A);
    let to_carl = request(h.one(CARL));
    assert_eq!(to_carl.method, Method::Invite);
    assert!(h.take(B).is_empty(), "bob is not rung");
}

#[test]
fn a_refer_before_the_call_is_confirmed_is_refused() {
    let mut h = Harness::with_config(None, EXTRA);
    let mut call = answered_call(
        &mut h,
        Setup {
            no_ack: true,
            ..Setup::default()
        },
    );
    let r = refer(&mut call.b, "<sip:carl@192.0.2.1>", &[]);
    h.send(B, r);
    assert_eq!(response(h.one(B)).status, StatusCode::FORBIDDEN);
    assert!(h.take(CARL).is_empty());
}

#[test]
fn the_other_party_hanging_up_while_the_target_rings_ends_it_all() {
    let (mut h, mut call) = harness();
    refer_accepted(&mut h, A, &mut call.a, "<sip:carl@192.0.2.1>");
    reply_to_invite(&mut h, CARL, StatusCode::RINGING, b"carltag");
    assert_notify(&request(h.one(A)), "active", "SIP/2.0 180 Ringing");
    hang_up(&mut h, B, &mut call.b);
    let to_a = request(h.one(A));
    assert_eq!(to_a.method, Method::Bye, "the referrer is hung up");
    assert_eq!(request(h.one(CARL)).method, Method::Cancel);
}

#[test]
fn a_refer_needs_exactly_one_refer_to() {
    let (mut h, mut call) = harness();
    let r = call
        .a
        .request(Method::Refer)
        .unwrap()
        .header(KnownHeader::ReferTo, "<sip:carl@192.0.2.1>")
        .header(KnownHeader::ReferTo, "<sip:bob@192.0.2.1>")
        .build()
        .unwrap();
    h.send(A, r);
    assert_eq!(response(h.one(A)).status, StatusCode::BAD_REQUEST);
    let r = call.a.request(Method::Refer).unwrap().build().unwrap();
    h.send(A, r);
    assert_eq!(response(h.one(A)).status, StatusCode::BAD_REQUEST);
    assert!(h.take(CARL).is_empty());
}

#[test]
fn the_referrers_own_bye_after_the_answer_ends_only_its_leg() {
    let (mut h, mut call) = harness();
    refer_accepted(&mut h, A, &mut call.a, "<sip:carl@192.0.2.1>");
    let to_carl = request(h.one(CARL));
    let _carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let last = request(h.one(A));
    assert_notify(&last, "terminated", "SIP/2.0 200 OK");
    // The referrer hangs up before answering the NOTIFY (the BYEs cross).
    assert_eq!(call.a.handle_request(h.now, &last), Incoming::Accept);
    hang_up(&mut h, A, &mut call.a);
    let ok = call.a.reply(&last, StatusCode::OK).build().unwrap();
    h.send(A, ok);
    assert!(
        h.take(A).is_empty(),
        "no BYE of ours to a dialog that ended"
    );
    assert!(h.take(B).is_empty(), "B stays, with carl");
    assert!(h.take(CARL).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "B's and carl's");
}

#[test]
fn notifies_the_referrer_never_answers_do_not_end_the_call() {
    let (mut h, mut call) = harness();
    let r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    h.send(A, r);
    accepted(&mut h, A);
    let to_carl = request(h.one(CARL));
    let mut carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let last = request(h.one(A));
    assert_notify(&last, "terminated", "SIP/2.0 200 OK");
    // Timer F (64·T1) runs out on both NOTIFYs: then the BYE.
    h.advance(secs(33));
    let bye = h.take_request(A, Method::Bye);
    assert!(bye.is_some(), "the referrer is hung up after all");
    assert!(h.take(B).is_empty(), "B stays");
    assert_eq!(h.core.active_calls(), 1);
    info_reaches(&mut h, CARL, &mut carl, B);
}
