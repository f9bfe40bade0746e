//! Attended transfer by REFER with Replaces (RFC 5589 §7): bob talks to
//! the trunk caller A (call 1) and has called carl through the switch
//! (call 2, bob's phone at B is inside the trunk's network). Bob's REFER
//! in call 1 names his dialog of call 2; the switch re-INVITEs carl
//! towards call 1's media, joins A and carl, and hangs bob up on both
//! calls. A refused re-INVITE leaves both calls; a Replaces naming no
//! dialog bob may hand over is refused before anything is sent.

use codeb_sip::dialog::Incoming;

use super::refer::{EXTRA, accepted, answer_notify, assert_notify, refer, refer_count, text};
use super::*;

const CARL: &str = B2;

/// Bob's call to carl (DID 3000) through the switch: bob's dialog and
/// carl's, the INVITE carl got.
struct Consult {
    bob: Dialog<Peer>,
    /// The switch's 2xx to bob.
    ok: Response,
    carl: Dialog<Peer>,
    to_carl: Request,
}

fn invite_from_bob(h: &mut Harness, did: &str) -> Request {
    invite_from(h, B, did)
}

/// An INVITE to `did` from a phone at `at`, as bob.
pub(super) fn invite_from(h: &mut Harness, at: &str, did: &str) -> Request {
    let ip = addr(at).ip().to_string();
    let via = Via::new(
        &Transport::Udp,
        &Host::from_bytes(ip.clone()).unwrap(),
        Some(5060),
        &h.ids.branch(),
        true,
    )
    .unwrap();
    let from = NameAddr::from_bytes(format!("\"Bob\" <sip:bob@{at}>"))
        .unwrap()
        .with_tag(&h.ids.tag())
        .unwrap();
    let sdp = "v=0\r\no=- 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 42002 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n";
    RequestBuilder::new(
        Method::Invite,
        Uri::parse(format!("sip:{did}@{SW}")).unwrap(),
    )
    .via(&via)
    .max_forwards(70)
    .from(&from)
    .to(&NameAddr::from_bytes(format!("<sip:{did}@{SW}>")).unwrap())
    .call_id(h.ids.call_id(Some(ip.as_bytes())))
    .cseq(1)
    .contact(&local(at).contact)
    .body(
        &super::super::sdp_type(),
        Bytes::from_static(sdp.as_bytes()),
    )
    .build()
    .unwrap()
}

/// Bob calls carl; carl answers; bob ACKs.
fn consult(h: &mut Harness) -> Consult {
    let invite = invite_from_bob(h, "3000");
    h.send(B, invite.clone());
    let to_carl = request(h.one(CARL));
    assert_eq!(to_carl.method, Method::Invite);
    let carl = answer_invite(h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let (bob, ok) = acked(h, B, &invite);
    Consult {
        bob,
        ok,
        carl,
        to_carl,
    }
}

/// The caller at `at` takes the switch's 200 to `invite` and ACKs it;
/// its dialog and the 200.
pub(super) fn acked(h: &mut Harness, at: &str, invite: &Request) -> (Dialog<Peer>, Response) {
    let ok = response(h.one(at));
    assert_eq!(ok.status, StatusCode::OK);
    let mut d = Dialog::uac(
        h.now,
        invite,
        &ok,
        local(at),
        Peer::udp(addr(SW)),
        DialogConfig {
            auto_ack: true,
            ..peer_config(None)
        },
        &mut h.ids,
    )
    .unwrap();
    h.flush(at, &mut d);
    while d.poll_event().is_some() {}
    (d, ok)
}

/// The port of an SDP body's audio.
pub(super) fn audio_port(body: &Bytes) -> u16 {
    let t = text(body);
    let m = t.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn setup() -> (Harness, Call, Consult) {
    let mut h = Harness::with_config(None, EXTRA);
    let call = answered_call(&mut h, Setup::default());
    let c = consult(&mut h);
    assert_eq!(h.core.active_calls(), 2);
    (h, call, c)
}

/// `%`-escapes what a URI header value may not carry as is.
fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(';', "%3B")
        .replace('=', "%3D")
        .replace('@', "%40")
}

/// The Refer-To naming bob's dialog `d` as bob sees it (RFC 3891 §3:
/// to-tag is the remote tag, from-tag bob's own).
fn refer_to(d: &Dialog<Peer>) -> String {
    let id = d.id();
    let replaces = format!(
        "{};to-tag={};from-tag={}",
        text(&id.call_id),
        text(&id.remote_tag),
        text(&id.local_tag)
    );
    format!("<sip:carl@192.0.2.1?Replaces={}>", escape(&replaces))
}

/// The o= line's session id and version of an SDP body.
fn origin(body: &Bytes) -> (String, u64) {
    let t = text(body);
    let o = t.lines().find(|l| l.starts_with("o=")).unwrap();
    let f: Vec<&str> = o.split_whitespace().collect();
    (f[1].to_owned(), f[2].parse().unwrap())
}

fn sdp_at(port: u16) -> Bytes {
    sdp_answer("192.0.2.21", port)
}

/// Bob's peer answers a BYE of the switch.
pub(super) fn answer_bye(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, bye: &Request) {
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(d.handle_request(h.now, bye), Incoming::Accept);
    let ok = d.reply(bye, StatusCode::OK).build().unwrap();
    h.send(at, ok);
}

pub(super) fn warning(r: &Response) -> String {
    header(r, KnownHeader::Warning).unwrap_or_default()
}

#[test]
fn bob_joins_the_caller_and_carl_and_leaves_both_calls() {
    let (mut h, mut call, mut c) = setup();
    let a_call_id = text(&call.a.id().call_id);
    let carl_call_id = text(&c.carl.id().call_id);
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    // Carl is re-invited in his own dialog, towards call 1's port on
    // bob's side (the one bob's INVITE offered), A's codec first, his own
    // o= session one version on.
    let reinvite = request(h.one(CARL));
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(text(&reinvite.headers.call_id().unwrap()), carl_call_id);
    assert!(
        header(&reinvite, KnownHeader::To)
            .unwrap()
            .contains("tag=carltag")
    );
    let offer = text(&reinvite.body);
    let port = audio_port(&call.to_b.body);
    assert!(
        offer.contains(&format!("m=audio {port} RTP/AVP 8 ")),
        "{port}: {offer}"
    );
    assert_ne!(port, audio_port(&c.to_carl.body));
    assert!(offer.contains("c=IN IP4 192.0.2.1"), "{offer}");
    let (sess, version) = origin(&reinvite.body);
    assert_eq!(
        (sess, version),
        {
            let (s, v) = origin(&c.to_carl.body);
            (s, v + 1)
        },
        "same session, next version"
    );
    let wire = text(&Message::from(reinvite.clone()).to_bytes());
    for leak in [a_call_id.as_str(), "192.0.2.10", "192.0.2.20"] {
        assert!(!wire.contains(leak), "{leak:?} leaked to carl:\n{wire}");
    }
    assert!(h.take(A).is_empty(), "A hears nothing");
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = c
        .carl
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_at(44002))
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &ok);
    h.send(CARL, ok);
    let ack = request(h.one(CARL));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(c.carl.handle_request(h.now, &ack), Incoming::Ack);
    // Bob: our BYE on call 2 and the final NOTIFY on call 1, then, once
    // he has answered it, our BYE on call 1.
    let mut got = h.take(B);
    assert_eq!(got.len(), 2, "{got:#?}");
    let (mut byes, notifies): (Vec<Request>, Vec<Request>) = got
        .drain(..)
        .map(request)
        .partition(|r| r.method == Method::Bye);
    let bye2 = byes.remove(0);
    assert_eq!(bye2.headers.call_id().unwrap(), c.bob.id().call_id);
    answer_bye(&mut h, B, &mut c.bob, &bye2);
    let last = &notifies[0];
    assert_eq!(last.headers.call_id().unwrap(), call.b.id().call_id);
    assert_notify(last, "terminated;reason=noresource", "SIP/2.0 200 OK");
    answer_notify(&mut h, B, &mut call.b, last, StatusCode::OK);
    let bye1 = request(h.one(B));
    assert_eq!(bye1.headers.call_id().unwrap(), call.b.id().call_id);
    answer_bye(&mut h, B, &mut call.b, &bye1);
    assert!(h.take(A).is_empty(), "A still hears nothing");
    assert!(h.take(CARL).is_empty());
    assert_eq!(h.core.active_calls(), 1, "call 2 is over");
    assert_eq!(h.core.dialogs(), 2, "A's and carl's");
    assert_eq!(h.core.calls.ports_in_use(), 2, "call 2's media released");
    assert_eq!(refer_count(&h, "transferred"), 1);
    // A and carl are the call: INFO both ways, then carl hangs up.
    let info = call.a.request(Method::Info).unwrap().build().unwrap();
    h.send(A, info);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let to_carl = request(h.one(CARL));
    assert_eq!(to_carl.method, Method::Info);
    assert_eq!(text(&to_carl.headers.call_id().unwrap()), carl_call_id);
    let info = c.carl.request(Method::Info).unwrap().build().unwrap();
    h.send(CARL, info);
    assert_eq!(response(h.one(CARL)).status, StatusCode::OK);
    assert_eq!(request(h.one(A)).method, Method::Info);
    let bye = c.carl.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARL, bye);
    assert_eq!(response(h.one(CARL)).status, StatusCode::OK);
    let bye = request(h.one(A));
    assert_eq!(bye.method, Method::Bye);
    let ok = call.a.reply(&bye, StatusCode::OK).build().unwrap();
    h.send(A, ok);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0);
}

#[test]
fn neither_call_takes_another_transfer_during_the_join() {
    let (mut h, mut call, mut c) = setup();
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    accepted(&mut h, B);
    let _reinvite = request(h.one(CARL));
    // Carl's blind REFER in call 2, A's in call 1, bob's second one: 491.
    let r = refer(&mut c.carl, "<sip:bob@192.0.2.1>", &[]);
    h.send(CARL, r);
    assert_eq!(response(h.one(CARL)).status.as_u16(), 491);
    let r = refer(&mut call.a, "<sip:carl@192.0.2.1>", &[]);
    h.send(A, r);
    assert_eq!(response(h.one(A)).status.as_u16(), 491);
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    assert_eq!(response(h.one(B)).status.as_u16(), 491);
    assert!(h.take(CARL).is_empty() && h.take(A).is_empty() && h.take(B).is_empty());
}

#[test]
fn carl_refusing_the_reinvite_leaves_both_calls() {
    let (mut h, mut call, mut c) = setup();
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    let reinvite = request(h.one(CARL));
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let busy = c
        .carl
        .reply(&reinvite, StatusCode::NOT_ACCEPTABLE_HERE)
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &busy);
    h.send(CARL, busy);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    let last = request(h.one(B));
    assert_notify(
        &last,
        "terminated;reason=noresource",
        "SIP/2.0 488 Not Acceptable Here",
    );
    answer_notify(&mut h, B, &mut call.b, &last, StatusCode::OK);
    assert!(h.take(B).is_empty(), "no BYE: bob keeps both calls");
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 2);
    assert_eq!(refer_count(&h, "failed"), 1);
    // Both calls still carry their parties.
    let info = call.a.request(Method::Info).unwrap().build().unwrap();
    h.send(A, info);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    assert_eq!(request(h.one(B)).method, Method::Info);
    let info = c.carl.request(Method::Info).unwrap().build().unwrap();
    h.send(CARL, info);
    assert_eq!(response(h.one(CARL)).status, StatusCode::OK);
    let to_bob = request(h.one(B));
    assert_eq!(to_bob.headers.call_id().unwrap(), c.bob.id().call_id);
    // And bob may try again.
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    accepted(&mut h, B);
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
}

#[test]
fn a_reinvite_carl_never_answers_is_reported_as_408() {
    let (mut h, mut call, _c) = setup();
    let r = refer(&mut call.b, &refer_to(&_c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
    h.advance(secs(33));
    let notify = h
        .take(B)
        .into_iter()
        .filter_map(|m| m.as_request().cloned())
        .find(|r| r.method == Method::Notify)
        .unwrap();
    assert_notify(
        &notify,
        "terminated;reason=noresource",
        "SIP/2.0 408 Request Timeout",
    );
    assert_eq!(notify.headers.call_id().unwrap(), call.b.id().call_id);
    assert!(h.take(A).is_empty(), "A keeps bob");
}

#[test]
fn replaces_naming_no_dialog_bob_may_hand_over_is_refused() {
    let (mut h, mut call, c) = setup();
    let id = c.bob.id();
    let named = |call_id: &str, to: &str, from: &str| {
        format!(
            "<sip:carl@192.0.2.1?Replaces={}>",
            escape(&format!("{call_id};to-tag={to};from-tag={from}"))
        )
    };
    let (cid, remote, local) = (text(&id.call_id), text(&id.remote_tag), text(&id.local_tag));
    let own = call.b.id();
    let cases = [
        (named("nosuchcall@192.0.2.20", &remote, &local), "no dialog"),
        // The tags as the switch sees them, not as bob does (RFC 3891 §3).
        (named(&cid, &local, &remote), "no dialog"),
        (
            named(
                &text(&own.call_id),
                &text(&own.remote_tag),
                &text(&own.local_tag),
            ),
            "of the call being referred",
        ),
        (
            format!(
                "<sip:carl@192.0.2.1?Replaces={}>",
                escape(&format!(
                    "{cid};to-tag={remote};from-tag={local};early-only"
                ))
            ),
            "early-only",
        ),
        // Carl's own dialog of call 2 is the switch's too, but not bob's.
        (
            {
                let cd = c.carl.id();
                named(
                    &text(&cd.call_id),
                    &text(&cd.remote_tag),
                    &text(&cd.local_tag),
                )
            },
            "another party",
        ),
    ];
    for (to, why) in &cases {
        let r = refer(&mut call.b, to, &[]);
        h.send(B, r);
        let r = response(h.one(B));
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{to}");
        assert!(warning(&r).contains(why), "{to}: {}", warning(&r));
    }
    assert!(h.take(CARL).is_empty(), "nothing sent to carl");
    assert!(h.take(A).is_empty());
    assert_eq!(refer_count(&h, "refused"), cases.len() as u64);
    assert_eq!(h.core.active_calls(), 2);
}

#[test]
fn an_early_dialog_is_not_replaced() {
    let mut h = Harness::with_config(None, EXTRA);
    let mut call = answered_call(&mut h, Setup::default());
    let invite = invite_from_bob(&mut h, "3000");
    h.send(B, invite.clone());
    let to_carl = request(h.one(CARL));
    let ringing = to_carl
        .reply(StatusCode::RINGING, Some(b"carltag"))
        .build()
        .unwrap();
    h.send(CARL, ringing);
    let ringing = response(h.one(B));
    assert_eq!(ringing.status, StatusCode::RINGING);
    // Bob's early dialog: his From tag and the switch's To tag.
    let to = ringing.headers.to().unwrap();
    let from = invite.headers.from().unwrap();
    let replaces = format!(
        "{};to-tag={};from-tag={}",
        text(&invite.headers.call_id().unwrap()),
        text(&Bytes::copy_from_slice(to.tag().unwrap())),
        text(&Bytes::copy_from_slice(from.tag().unwrap())),
    );
    let r = refer(
        &mut call.b,
        &format!("<sip:carl@192.0.2.1?Replaces={}>", escape(&replaces)),
        &[],
    );
    h.send(B, r);
    let r = response(h.one(B));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(warning(&r).contains("not confirmed"), "{}", warning(&r));
    assert!(h.take(CARL).is_empty());
}

#[test]
fn another_tenants_dialog_is_not_replaced() {
    let extra = format!(
        r#"{EXTRA}
[[trunks]]
id = "tr_00000000000000ee"
tenant = "other.example"
host = "198.51.100.1"
inbound = ["198.51.100.0/24"]
options_interval = 0

[[routes]]
tenant = "other.example"
did = "5000"
user = "carl"
"#
    );
    let mut h = Harness::with_config(None, &extra);
    let mut call = answered_call(&mut h, Setup::default());
    // A caller of the other tenant's trunk calls carl.
    const OTHER: &str = "198.51.100.5:5060";
    let invite = invite_from(&mut h, OTHER, "5000");
    h.send(OTHER, invite.clone());
    let to_carl = request(h.one(CARL));
    let _carl = answer_invite(&mut h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let (other, _) = acked(&mut h, OTHER, &invite);
    let r = refer(&mut call.b, &refer_to(&other), &[]);
    h.send(B, r);
    let r = response(h.one(B));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(warning(&r).contains("another tenant"), "{}", warning(&r));
    assert!(h.take(CARL).is_empty());
}

#[test]
fn malformed_replaces_is_a_bad_request() {
    let (mut h, mut call, c) = setup();
    let id = c.bob.id();
    let (cid, remote, local) = (text(&id.call_id), text(&id.remote_tag), text(&id.local_tag));
    let good = escape(&format!("{cid};to-tag={remote};from-tag={local}"));
    let long = "x".repeat(300);
    let many: String = (0..9).map(|i| format!("&X{i}=1")).collect();
    let with = |r: &str| format!("<sip:carl@192.0.2.1?Replaces={}>", escape(r));
    let cases = [
        // A broken escape makes the whole Refer-To invalid.
        (
            format!("<sip:carl@192.0.2.1?Replaces={good}%3>"),
            400,
            "not a valid address",
        ),
        (
            with(&format!("{cid};to-tag={remote}")),
            400,
            "lacks its to-tag or from-tag",
        ),
        (
            with(&format!("{long};to-tag={remote};from-tag={local}")),
            400,
            "over 256 octets",
        ),
        (
            with(&format!("{cid};to-tag={long};from-tag={local}")),
            400,
            "over 256 octets",
        ),
        (
            with(&format!("{cid};to-tag={remote};to-tag=x;from-tag={local}")),
            400,
            "repeats a parameter",
        ),
        (
            format!("<sip:carl@192.0.2.1?Replaces={good}&Replaces={good}>"),
            400,
            "more than one Replaces",
        ),
        (
            format!("<sip:carl@192.0.2.1?Replaces={good}{many}>"),
            400,
            "too many URI headers",
        ),
        // Another header beside it: not what the switch does.
        (
            format!("<sip:carl@192.0.2.1?Replaces={good}&Subject=x>"),
            403,
            "only a Replaces header",
        ),
        (
            format!("<sip:carl@192.0.2.1;method=BYE?Replaces={good}>"),
            403,
            "only an INVITE",
        ),
    ];
    for (to, status, why) in &cases {
        let r = refer(&mut call.b, to, &[]);
        h.send(B, r);
        let r = response(h.one(B));
        assert_eq!(r.status.as_u16(), *status, "{to}: {}", warning(&r));
        assert!(warning(&r).contains(why), "{to}: {}", warning(&r));
    }
    assert!(h.take(CARL).is_empty(), "nothing sent to carl");
    assert_eq!(h.core.active_calls(), 2);
    // The same Replaces, well formed, works.
    let r = refer(
        &mut call.b,
        &format!("<sip:carl@192.0.2.1?Replaces={good}>"),
        &[],
    );
    h.send(B, r);
    accepted(&mut h, B);
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
}

#[test]
fn bob_hanging_up_call_2_first_does_not_stop_the_join() {
    let (mut h, mut call, mut c) = setup();
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    let reinvite = request(h.one(CARL));
    // Some phones hang up the consultation call at once.
    let bye = c.bob.request(Method::Bye).unwrap().build().unwrap();
    h.send(B, bye);
    assert_eq!(response(h.one(B)).status, StatusCode::OK);
    assert!(h.take(CARL).is_empty(), "carl is not hung up");
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = c
        .carl
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_at(44002))
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &ok);
    h.send(CARL, ok);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    let last = request(h.one(B));
    assert_notify(&last, "terminated", "SIP/2.0 200 OK");
    answer_notify(&mut h, B, &mut call.b, &last, StatusCode::OK);
    let bye1 = request(h.one(B));
    answer_bye(&mut h, B, &mut call.b, &bye1);
    assert_eq!(h.core.active_calls(), 1);
    let info = call.a.request(Method::Info).unwrap().build().unwrap();
    h.send(A, info);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    assert_eq!(request(h.one(CARL)).method, Method::Info);
}

#[test]
fn carl_hanging_up_during_the_join_keeps_bob_with_a() {
    let (mut h, mut call, mut c) = setup();
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    let _reinvite = request(h.one(CARL));
    let bye = c.carl.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARL, bye);
    let got = h.take(CARL);
    assert!(
        got.iter()
            .any(|m| m.as_response().is_some_and(|r| r.status == StatusCode::OK)),
        "{got:#?}"
    );
    let mut to_bob: Vec<Request> = h.take(B).into_iter().map(request).collect();
    to_bob.sort_by_key(|r| r.method == Method::Bye);
    assert_eq!(to_bob.len(), 2, "{to_bob:#?}");
    assert_notify(
        &to_bob[0],
        "terminated",
        "SIP/2.0 481 Call/Transaction Does Not Exist",
    );
    assert_eq!(to_bob[1].method, Method::Bye);
    assert_eq!(to_bob[1].headers.call_id().unwrap(), c.bob.id().call_id);
    assert!(h.take(A).is_empty());
    // Bob and A still talk.
    let info = call.a.request(Method::Info).unwrap().build().unwrap();
    h.send(A, info);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    assert_eq!(request(h.one(B)).method, Method::Info);
}

#[test]
fn bob_hanging_up_call_1_first_does_not_stop_the_join() {
    let (mut h, mut call, mut c) = setup();
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    let reinvite = request(h.one(CARL));
    let bye = call.b.request(Method::Bye).unwrap().build().unwrap();
    h.send(B, bye);
    assert_eq!(response(h.one(B)).status, StatusCode::OK);
    assert!(h.take(A).is_empty(), "A waits for carl");
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = c
        .carl
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_at(44002))
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &ok);
    h.send(CARL, ok);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    // Only call 2's BYE: bob left call 1 himself, no NOTIFY follows.
    let bye2 = request(h.one(B));
    assert_eq!(bye2.headers.call_id().unwrap(), c.bob.id().call_id);
    answer_bye(&mut h, B, &mut c.bob, &bye2);
    assert!(h.take(B).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "A's and carl's");
    let info = c.carl.request(Method::Info).unwrap().build().unwrap();
    h.send(CARL, info);
    assert_eq!(response(h.one(CARL)).status, StatusCode::OK);
    assert_eq!(request(h.one(A)).method, Method::Info);
}

/// DID 7000 is a virtual number whose AI answers callers from A.
const RECEPTIONIST: &str = r#"
[[virtual_numbers]]
number = "7000"

[[routes]]
did = "7000"
virtual_number = "7000"
"#;

/// A caller at A reaches the virtual number, whose AI hands it to bob,
/// who answers with `tag`: the caller's dialog, bob's, the call's id.
pub(super) fn handed_to_bob(h: &mut Harness, tag: &[u8]) -> (Dialog<Peer>, Dialog<Peer>, String) {
    use super::originate::{ai_request, events};
    use crate::ai::{AiNote, AiRequest};
    let invite = h.invite_from_a("7000", &[]);
    h.send(A, invite.clone());
    let ok = response(h.one(A));
    let caller = a_dialog(h, &invite, &ok, true, None);
    let AiRequest::Start(start) = ai_request(h) else {
        panic!("no AI start");
    };
    let _ = events(h);
    super::transfer::transfer_to(h, start.key, "bob");
    let to_bob = request(h.one(B));
    let bob = answer_invite(h, B, &to_bob, tag, ("192.0.2.20", 42000));
    assert!(matches!(ai_request(h), AiRequest::Stop(k) if k == start.key));
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let _ = events(h);
    (caller, bob, start.call_id)
}

#[test]
fn virtual_number_calls_report_the_transfer_and_the_replaced_calls_end() {
    use super::originate::{ended, events};
    use crate::sip::calls::{CallEventKind, TRANSFERRED};
    let mut h = Harness::with_config(None, &format!("{EXTRA}{RECEPTIONIST}"));
    // Two callers reach the number and are handed to bob; bob joins them.
    let (mut first, mut bob1, id1) = handed_to_bob(&mut h, b"bobtag1");
    let (mut second, mut bob2, id2) = handed_to_bob(&mut h, b"bobtag2");
    let r = refer(&mut bob1, &refer_to(&bob2), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut bob1, &notify, StatusCode::OK);
    // The second caller (side A of its call) is re-invited.
    let reinvite = request(h.one(A));
    assert_eq!(reinvite.headers.call_id().unwrap(), second.id().call_id);
    assert_eq!(second.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = second
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.10", 40002))
        .build()
        .unwrap();
    second.sent_response(h.now, &ok);
    h.send(A, ok);
    assert_eq!(request(h.one(A)).method, Method::Ack);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].call_id, id1);
    assert_eq!(
        evs[0].kind,
        CallEventKind::Transferred {
            to_user: String::new(),
            to_phone: "+15550002222".into(),
            trunk_id: "tr_0000000000000001".into(),
            transfer_type: "refer-attended".into(),
        },
        "the second caller, by its number"
    );
    let mut to_bob: Vec<Request> = h.take(B).into_iter().map(request).collect();
    to_bob.sort_by_key(|r| r.method != Method::Bye);
    answer_bye(&mut h, B, &mut bob2, &to_bob[0]);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].call_id, id2);
    let (outcome, _, answered, _, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), (TRANSFERRED, true));
    answer_notify(&mut h, B, &mut bob1, &to_bob[1], StatusCode::OK);
    let bye1 = request(h.one(B));
    answer_bye(&mut h, B, &mut bob1, &bye1);
    // The two callers talk; the first hangs up and the second gets it.
    let bye = first.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    let mut got = h.take(A);
    let bye = got
        .drain(..)
        .filter_map(|m| m.as_request().cloned())
        .find(|r| r.method == Method::Bye)
        .unwrap();
    assert_eq!(bye.headers.call_id().unwrap(), second.id().call_id);
    let ok = second.reply(&bye, StatusCode::OK).build().unwrap();
    h.send(A, ok);
    let evs = events(&mut h);
    assert_eq!(evs[0].call_id, id1);
    assert_eq!(ended(&evs).0, TRANSFERRED);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
}

#[test]
fn the_caller_side_of_call_1_and_the_callee_side_of_call_2_join_too() {
    // Call 1: bob calls carl (bob is its A side). Call 2: the trunk
    // caller A calls bob (bob is its B side). Bob REFERs in call 1
    // naming his dialog of call 2: carl and A are joined in call 1, A's
    // leg (a dialog the switch answered) re-invited.
    let mut h = Harness::with_config(None, EXTRA);
    let mut c = consult(&mut h);
    let mut call2 = answered_call(&mut h, Setup::default());
    let r = refer(&mut c.bob, &refer_to(&call2.b), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut c.bob, &notify, StatusCode::OK);
    let reinvite = request(h.one(A));
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(reinvite.headers.call_id().unwrap(), call2.a.id().call_id);
    let port = audio_port(&c.ok.body);
    assert!(
        text(&reinvite.body).contains(&format!("m=audio {port} ")),
        "call 1's port facing bob ({port}): {}",
        text(&reinvite.body)
    );
    assert!(h.take(CARL).is_empty(), "carl hears nothing");
    assert_eq!(call2.a.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = call2
        .a
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.10", 40002))
        .build()
        .unwrap();
    call2.a.sent_response(h.now, &ok);
    h.send(A, ok);
    // The switch's ACK for A's 2xx (A's dialog ACKs our re-INVITEs itself).
    let ack = request(h.one(A));
    assert_eq!(ack.method, Method::Ack);
    let mut to_bob: Vec<Request> = h.take(B).into_iter().map(request).collect();
    to_bob.sort_by_key(|r| r.method != Method::Bye);
    assert_eq!(to_bob.len(), 2, "{to_bob:#?}");
    assert_eq!(to_bob[0].headers.call_id().unwrap(), call2.b.id().call_id);
    answer_bye(&mut h, B, &mut call2.b, &to_bob[0]);
    assert_notify(&to_bob[1], "terminated", "SIP/2.0 200 OK");
    answer_notify(&mut h, B, &mut c.bob, &to_bob[1], StatusCode::OK);
    let bye1 = request(h.one(B));
    assert_eq!(bye1.headers.call_id().unwrap(), c.bob.id().call_id);
    answer_bye(&mut h, B, &mut c.bob, &bye1);
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "carl's and A's");
    // Carl and A talk; A hangs up, carl gets the BYE.
    let info = c.carl.request(Method::Info).unwrap().build().unwrap();
    h.send(CARL, info);
    assert_eq!(response(h.one(CARL)).status, StatusCode::OK);
    assert_eq!(request(h.one(A)).method, Method::Info);
    let bye = call2.a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let bye = request(h.one(CARL));
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(c.carl.handle_request(h.now, &bye), Incoming::Accept);
    let ok = c.carl.reply(&bye, StatusCode::OK).build().unwrap();
    h.send(CARL, ok);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
}

#[test]
fn a_refresh_answered_by_bob_after_the_join_leaves_carls_media_alone() {
    use codeb_sip::dialog::SessionTimerConfig;
    let timer = Some(SessionTimerConfig::default());
    let mut h = Harness::with_config(timer, EXTRA);
    let mut call = answered_call(
        &mut h,
        Setup {
            b_timer: timer,
            ..Setup::default()
        },
    );
    // At half the interval the switch refreshes both legs of call 1; bob
    // holds his answer.
    h.advance(secs(900));
    for m in h.take(A) {
        let r = request(m);
        assert_eq!(call.a.handle_request(h.now, &r), Incoming::Accept);
        let ok = call
            .a
            .reply(&r, StatusCode::OK)
            .body(&super::super::sdp_type(), sdp_answer("192.0.2.10", 40000))
            .build()
            .unwrap();
        call.a.sent_response(h.now, &ok);
        h.send(A, ok);
    }
    let refresh = request(h.one(B));
    assert_eq!(refresh.method, Method::Invite);
    assert_eq!(call.b.handle_request(h.now, &refresh), Incoming::Accept);
    let mut c = consult(&mut h);
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    let (_, notify) = accepted(&mut h, B);
    answer_notify(&mut h, B, &mut call.b, &notify, StatusCode::OK);
    let reinvite = request(h.one(CARL));
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let ok = c
        .carl
        .reply(&reinvite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_at(44002))
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &ok);
    h.send(CARL, ok);
    let _ = h.take(CARL);
    let _ = h.take(B);
    // Call 1: the one whose A side is the trunk caller.
    let joined = |h: &Harness| {
        let remote = |l: &crate::sip::calls::Leg| l.negotiated.as_ref().and_then(|n| n.remote);
        h.core
            .calls
            .calls
            .values()
            .find(|c| remote(&c.a).is_some_and(|r| r.ip() == addr(A).ip()))
            .and_then(|c| remote(&c.b))
    };
    assert_eq!(joined(&h), Some(addr("192.0.2.21:44002")));
    // Bob's late answer to the refresh in his former dialog.
    let late = call
        .b
        .reply(&refresh, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.99", 49000))
        .build()
        .unwrap();
    call.b.sent_response(h.now, &late);
    h.send(B, late);
    assert_eq!(
        joined(&h),
        Some(addr("192.0.2.21:44002")),
        "carl's address stays call 1's B side"
    );
}
