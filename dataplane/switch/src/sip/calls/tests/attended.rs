//! Attended transfer by REFER with Replaces (RFC 5589 §7): bob talks to
//! the trunk caller A (call 1) and has called carl through the switch
//! (call 2, bob's phone at B is inside the trunk's network). Bob's REFER
//! in call 1 names his dialog of call 2; the switch re-INVITEs carl
//! towards call 1's media, joins A and carl, and hangs bob up on both
//! calls. A refused re-INVITE leaves both calls; a Replaces naming no
//! dialog bob may hand over is refused before anything is sent.

use codeb_sip::dialog::Incoming;

use super::super::attended::JOIN_RETRIES;

use super::refer::{
    EXTRA, accepted, answer_notify, answer_to_refer, assert_notify, notified, refer,
    refer_accepted, refer_count, text, transfer_failed,
};
use super::transfer::RECEPTIONIST;
use super::*;

const CARL: &str = B2;

/// A trunk of another tenant, for callers from 198.51.100.0/24.
pub(super) const OTHER_TENANT_TRUNK: &str = r#"
[[trunks]]
id = "tr_00000000000000ee"
tenant = "other.example"
host = "198.51.100.1"
inbound = ["198.51.100.0/24"]
options_interval = 0
"#;

/// Where carl's phone takes the joined call's media.
const CARL_JOINED: (&str, u16) = ("192.0.2.21", 44002);

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
    let sdp = "v=0\r\no=- 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 42002 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n";
    h.invite(at, &format!("\"Bob\" <sip:bob@{at}>"), did)
        .body(
            &super::super::sdp_type(),
            Bytes::from_static(sdp.as_bytes()),
        )
        .build()
        .unwrap()
}

/// Bob calls carl; carl answers; bob ACKs.
fn consult(h: &mut Harness) -> Consult {
    call_carl(h, B, "3000")
}

/// A phone at `at` calls `did`, which rings carl; carl answers; the
/// caller ACKs (its dialog is the `bob` of the result).
fn call_carl(h: &mut Harness, at: &str, did: &str) -> Consult {
    let invite = invite_from(h, at, did);
    h.send(at, invite.clone());
    let to_carl = request(h.one(CARL));
    assert_eq!(to_carl.method, Method::Invite);
    let carl = answer_invite(h, CARL, &to_carl, b"carltag", ("192.0.2.21", 44000));
    let (bob, ok) = acked(h, at, &invite);
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
    let d = caller_dialog(h, at, invite, &ok, true, None);
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

/// Replaces naming bob's dialog `d` as bob sees it (RFC 3891 §3: to-tag
/// is the remote tag, the switch's; from-tag bob's own).
pub(super) fn replaces_of(d: &Dialog<Peer>) -> String {
    let id = d.id();
    format!(
        "{};to-tag={};from-tag={}",
        text(&id.call_id),
        text(&id.remote_tag),
        text(&id.local_tag)
    )
}

/// Replaces naming the caller's early dialog of `invite` as the caller
/// sees it: to-tag the one of the switch's provisional `ringing`, from-tag
/// the caller's own.
pub(super) fn early_replaces_of(invite: &Request, ringing: &Response) -> String {
    format!(
        "{};to-tag={};from-tag={}",
        text(&invite.headers.call_id().unwrap()),
        text(&Bytes::copy_from_slice(
            ringing.headers.to().unwrap().tag().unwrap()
        )),
        text(&Bytes::copy_from_slice(
            invite.headers.from().unwrap().tag().unwrap()
        )),
    )
}

/// The Refer-To naming bob's dialog `d` as bob sees it.
fn refer_to(d: &Dialog<Peer>) -> String {
    format!("<sip:carl@192.0.2.1?Replaces={}>", escape(&replaces_of(d)))
}

/// The o= line's session id and version of an SDP body.
fn origin(body: &Bytes) -> (String, u64) {
    let t = text(body);
    let o = t.lines().find(|l| l.starts_with("o=")).unwrap();
    let f: Vec<&str> = o.split_whitespace().collect();
    (f[1].to_owned(), f[2].parse().unwrap())
}

/// What the referrer at `at` gets once the join is done: our BYE on the
/// replaced dialog and the REFER's final NOTIFY, in either order.
fn bye_and_notify(h: &mut Harness, at: &str) -> (Request, Request) {
    let mut got: Vec<Request> = h.take(at).into_iter().map(request).collect();
    assert_eq!(got.len(), 2, "{got:#?}");
    got.sort_by_key(|r| r.method != Method::Bye);
    let notify = got.pop().unwrap();
    (got.pop().unwrap(), notify)
}

pub(super) fn warning(r: &Response) -> String {
    header(r, KnownHeader::Warning).unwrap_or_default()
}

#[test]
fn bob_joins_the_caller_and_carl_and_leaves_both_calls() {
    let (mut h, mut call, mut c) = setup();
    let a_call_id = text(&call.a.id().call_id);
    let carl_call_id = text(&c.carl.id().call_id);
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
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
    accept_reinvite(&mut h, CARL, &mut c.carl, &reinvite, CARL_JOINED);
    let ack = request(h.one(CARL));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(c.carl.handle_request(h.now, &ack), Incoming::Ack);
    // Bob: our BYE on call 2 and the final NOTIFY on call 1, then, once
    // he has answered it, our BYE on call 1.
    let (bye2, last) = bye_and_notify(&mut h, B);
    assert_eq!(bye2.headers.call_id().unwrap(), c.bob.id().call_id);
    answer_bye(&mut h, B, &mut c.bob, &bye2);
    assert_eq!(last.headers.call_id().unwrap(), call.b.id().call_id);
    assert_notify(&last, "terminated;reason=noresource", "SIP/2.0 200 OK");
    answer_notify(&mut h, B, &mut call.b, &last, StatusCode::OK);
    hung_up(&mut h, B, &mut call.b);
    assert!(h.take(A).is_empty(), "A still hears nothing");
    assert!(h.take(CARL).is_empty());
    assert_eq!(h.core.active_calls(), 1, "call 2 is over");
    assert_eq!(h.core.dialogs(), 2, "A's and carl's");
    assert_eq!(h.core.calls.ports_in_use(), 2, "call 2's media released");
    assert_eq!(refer_count(&h, "transferred"), 1);
    // A and carl are the call: INFO both ways, then carl hangs up.
    let to_carl = info_reaches(&mut h, A, &mut call.a, CARL);
    assert_eq!(text(&to_carl.headers.call_id().unwrap()), carl_call_id);
    info_reaches(&mut h, CARL, &mut c.carl, A);
    hang_up(&mut h, CARL, &mut c.carl);
    hung_up(&mut h, A, &mut call.a);
    assert_all_ended(&h);
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
    for (at, d, to) in [
        (CARL, &mut c.carl, "<sip:bob@192.0.2.1>".to_owned()),
        (A, &mut call.a, "<sip:carl@192.0.2.1>".to_owned()),
        (B, &mut call.b, refer_to(&c.bob)),
    ] {
        assert_eq!(answer_to_refer(&mut h, at, d, &to).status.as_u16(), 491);
    }
    assert!(h.take(CARL).is_empty() && h.take(A).is_empty() && h.take(B).is_empty());
}

#[test]
fn carl_refusing_the_reinvite_leaves_both_calls() {
    let (mut h, mut call, mut c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let reinvite = request(h.one(CARL));
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let busy = c
        .carl
        .reply(&reinvite, StatusCode::NOT_ACCEPTABLE_HERE)
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &busy);
    h.send(CARL, busy);
    transfer_failed(&mut h, B, &mut call.b, "SIP/2.0 488 Not Acceptable Here");
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 2, "bob keeps both calls");
    // Both calls still carry their parties.
    info_reaches(&mut h, A, &mut call.a, B);
    let to_bob = info_reaches(&mut h, CARL, &mut c.carl, B);
    assert_eq!(to_bob.headers.call_id().unwrap(), c.bob.id().call_id);
    // And bob may try again.
    let r = refer(&mut call.b, &refer_to(&c.bob), &[]);
    h.send(B, r);
    accepted(&mut h, B);
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
}

/// Carl answers the join's re-INVITE `reinvite` with 491 (his own offer
/// crossed ours); the switch ACKs it and tells bob nothing yet.
fn carl_answers_491(h: &mut Harness, c: &mut Consult, reinvite: &Request) {
    assert_eq!(c.carl.handle_request(h.now, reinvite), Incoming::Accept);
    let pending = c
        .carl
        .reply(reinvite, StatusCode::new(491).unwrap())
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &pending);
    h.send(CARL, pending);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    assert!(h.take(B).is_empty(), "no NOTIFY for a 491");
}

/// The re-INVITE sent again after the back-off (with the retransmissions
/// of it that the advanced time let out, all alike).
fn retried(h: &mut Harness) -> Request {
    let sent: Vec<Request> = h.take(CARL).into_iter().map(request).collect();
    assert!(!sent.is_empty(), "no re-INVITE after the back-off");
    assert!(
        sent.iter()
            .all(|r| r.method == Method::Invite && r == &sent[0]),
        "{sent:#?}"
    );
    sent[0].clone()
}

#[test]
fn a_491_from_carl_sends_the_same_offer_again_after_the_back_off() {
    let (mut h, mut call, mut c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let first = request(h.one(CARL));
    carl_answers_491(&mut h, &mut c, &first);
    // RFC 3261 §14.1: the switch owns the Call-ID of its leg to carl, so
    // it waits 2.1 to 4 s.
    h.advance(Duration::from_millis(2000));
    assert!(h.take(CARL).is_empty(), "too early to retry");
    h.advance(secs(2));
    let again = retried(&mut h);
    assert_eq!(again.body, first.body, "the same offer");
    assert!(again.headers.cseq().unwrap().seq > first.headers.cseq().unwrap().seq);
    accept_reinvite(&mut h, CARL, &mut c.carl, &again, CARL_JOINED);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    let (bye2, last) = bye_and_notify(&mut h, B);
    assert_eq!(bye2.headers.call_id().unwrap(), c.bob.id().call_id);
    assert_notify(&last, "terminated;reason=noresource", "SIP/2.0 200 OK");
    assert_eq!(refer_count(&h, "transferred"), 1);
}

#[test]
fn carl_answering_491_every_time_fails_the_transfer_after_the_retries() {
    let (mut h, mut call, mut c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let mut reinvite = request(h.one(CARL));
    for _ in 0..JOIN_RETRIES {
        carl_answers_491(&mut h, &mut c, &reinvite);
        h.advance(secs(4));
        reinvite = retried(&mut h);
    }
    assert_eq!(c.carl.handle_request(h.now, &reinvite), Incoming::Accept);
    let pending = c
        .carl
        .reply(&reinvite, StatusCode::new(491).unwrap())
        .build()
        .unwrap();
    c.carl.sent_response(h.now, &pending);
    h.send(CARL, pending);
    transfer_failed(&mut h, B, &mut call.b, "SIP/2.0 491 Request Pending");
    assert_eq!(h.core.active_calls(), 2, "bob keeps both calls");
    info_reaches(&mut h, A, &mut call.a, B);
}

#[test]
fn a_reinvite_carl_never_answers_is_reported_as_408() {
    let (mut h, mut call, c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    assert_eq!(request(h.one(CARL)).method, Method::Invite);
    h.advance(secs(33));
    let notify = h.take_request(B, Method::Notify).unwrap();
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
        let r = answer_to_refer(&mut h, B, &mut call.b, to);
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
    reply_to_invite(&mut h, CARL, StatusCode::RINGING, b"carltag");
    let ringing = response(h.one(B));
    assert_eq!(ringing.status, StatusCode::RINGING);
    // Bob's early dialog: his From tag and the switch's To tag.
    let replaces = early_replaces_of(&invite, &ringing);
    let to = format!("<sip:carl@192.0.2.1?Replaces={}>", escape(&replaces));
    let r = answer_to_refer(&mut h, B, &mut call.b, &to);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(warning(&r).contains("not confirmed"), "{}", warning(&r));
    assert!(h.take(CARL).is_empty());
}

#[test]
fn another_tenants_dialog_is_not_replaced() {
    let extra = format!(
        r#"{EXTRA}{OTHER_TENANT_TRUNK}
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
    let other = call_carl(&mut h, OTHER, "5000");
    let r = answer_to_refer(&mut h, B, &mut call.b, &refer_to(&other.bob));
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
        let r = answer_to_refer(&mut h, B, &mut call.b, to);
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
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let reinvite = request(h.one(CARL));
    // Some phones hang up the consultation call at once.
    hang_up(&mut h, B, &mut c.bob);
    assert!(h.take(CARL).is_empty(), "carl is not hung up");
    accept_reinvite(&mut h, CARL, &mut c.carl, &reinvite, CARL_JOINED);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    notified(&mut h, B, &mut call.b, "terminated", "SIP/2.0 200 OK");
    hung_up(&mut h, B, &mut call.b);
    assert_eq!(h.core.active_calls(), 1);
    info_reaches(&mut h, A, &mut call.a, CARL);
}

#[test]
fn carl_hanging_up_during_the_join_keeps_bob_with_a() {
    let (mut h, mut call, mut c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let _reinvite = request(h.one(CARL));
    let bye = c.carl.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARL, bye);
    let got = h.take(CARL);
    assert!(
        got.iter()
            .any(|m| m.as_response().is_some_and(|r| r.status == StatusCode::OK)),
        "{got:#?}"
    );
    let (bye2, notify) = bye_and_notify(&mut h, B);
    assert_notify(
        &notify,
        "terminated",
        "SIP/2.0 481 Call/Transaction Does Not Exist",
    );
    assert_eq!(bye2.method, Method::Bye);
    assert_eq!(bye2.headers.call_id().unwrap(), c.bob.id().call_id);
    assert!(h.take(A).is_empty());
    // Bob and A still talk.
    info_reaches(&mut h, A, &mut call.a, B);
}

#[test]
fn bob_hanging_up_call_1_first_does_not_stop_the_join() {
    let (mut h, mut call, mut c) = setup();
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let reinvite = request(h.one(CARL));
    hang_up(&mut h, B, &mut call.b);
    assert!(h.take(A).is_empty(), "A waits for carl");
    accept_reinvite(&mut h, CARL, &mut c.carl, &reinvite, CARL_JOINED);
    assert_eq!(request(h.one(CARL)).method, Method::Ack);
    // Only call 2's BYE: bob left call 1 himself, no NOTIFY follows.
    hung_up(&mut h, B, &mut c.bob);
    assert!(h.take(B).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "A's and carl's");
    info_reaches(&mut h, CARL, &mut c.carl, A);
}

/// A caller at A reaches the virtual number, whose AI hands it to bob,
/// who answers with `tag`: the caller's dialog, bob's, the call's id.
pub(super) fn handed_to_bob(h: &mut Harness, tag: &[u8]) -> (Dialog<Peer>, Dialog<Peer>, String) {
    use super::originate::{ai_request, events};
    use crate::ai::{AiNote, AiRequest};
    let invite = h.invite_from_a("7000", &[]);
    let (ok, start) = super::vnum::ai_answers(h, &invite);
    let caller = a_dialog(h, &invite, &ok, true, None);
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
    refer_accepted(&mut h, B, &mut bob1, &refer_to(&bob2));
    // The second caller (side A of its call) is re-invited.
    let reinvite = request(h.one(A));
    assert_eq!(reinvite.headers.call_id().unwrap(), second.id().call_id);
    accept_reinvite(&mut h, A, &mut second, &reinvite, ("192.0.2.10", 40002));
    assert_eq!(request(h.one(A)).method, Method::Ack);
    // The first call reports the transfer, and the second, whose caller
    // has left it, its end: as it starts ending, not when bob answers
    // its BYE.
    let evs = events(&mut h);
    assert_eq!(evs.len(), 2, "{evs:#?}");
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
    assert_eq!(evs[1].call_id, id2);
    let (outcome, _, answered, _, _) = ended(&evs[1..]);
    assert_eq!((outcome.as_str(), answered), (TRANSFERRED, true));
    let (bye2, notify) = bye_and_notify(&mut h, B);
    answer_bye(&mut h, B, &mut bob2, &bye2);
    assert!(events(&mut h).is_empty());
    answer_notify(&mut h, B, &mut bob1, &notify, StatusCode::OK);
    hung_up(&mut h, B, &mut bob1);
    // The two callers talk; the first hangs up and the second gets it.
    let bye = first.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    let bye = h.take_request(A, Method::Bye).unwrap();
    assert_eq!(bye.headers.call_id().unwrap(), second.id().call_id);
    answer_bye(&mut h, A, &mut second, &bye);
    let evs = events(&mut h);
    assert_eq!(evs[0].call_id, id1);
    assert_eq!(ended(&evs).0, TRANSFERRED);
    assert_all_ended(&h);
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
    refer_accepted(&mut h, B, &mut c.bob, &refer_to(&call2.b));
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
    accept_reinvite(&mut h, A, &mut call2.a, &reinvite, ("192.0.2.10", 40002));
    // The switch's ACK for A's 2xx (A's dialog ACKs our re-INVITEs itself).
    let ack = request(h.one(A));
    assert_eq!(ack.method, Method::Ack);
    let (bye2, notify) = bye_and_notify(&mut h, B);
    assert_eq!(bye2.headers.call_id().unwrap(), call2.b.id().call_id);
    answer_bye(&mut h, B, &mut call2.b, &bye2);
    assert_notify(&notify, "terminated", "SIP/2.0 200 OK");
    answer_notify(&mut h, B, &mut c.bob, &notify, StatusCode::OK);
    hung_up(&mut h, B, &mut c.bob);
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "carl's and A's");
    // Carl and A talk; A hangs up, carl gets the BYE.
    info_reaches(&mut h, CARL, &mut c.carl, A);
    hang_up(&mut h, A, &mut call2.a);
    let bye = request(h.one(CARL));
    answer_bye(&mut h, CARL, &mut c.carl, &bye);
    assert_all_ended(&h);
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
        accept_reinvite(&mut h, A, &mut call.a, &request(m), ("192.0.2.10", 40000));
    }
    let refresh = request(h.one(B));
    assert_eq!(refresh.method, Method::Invite);
    assert_eq!(call.b.handle_request(h.now, &refresh), Incoming::Accept);
    let mut c = consult(&mut h);
    refer_accepted(&mut h, B, &mut call.b, &refer_to(&c.bob));
    let reinvite = request(h.one(CARL));
    accept_reinvite(&mut h, CARL, &mut c.carl, &reinvite, CARL_JOINED);
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
    answer_with_sdp(&mut h, B, &mut call.b, &refresh, ("192.0.2.99", 49000));
    assert_eq!(
        joined(&h),
        Some(addr("192.0.2.21:44002")),
        "carl's address stays call 1's B side"
    );
}
