//! A trunk configured with `transport = "tcp"`: the switch opens the
//! connection itself (through the IO loop's `poll_connect`), queues until
//! it is up, and keeps every message of the call on it; a connection that
//! cannot be made fails the call at once.

use codeb_io::ConnId;
use codeb_sip::dialog::Incoming;

use super::*;
use crate::sip::outbound::{CONNECT_TIMEOUT, MAX_PENDING};
use crate::sip::trunks::RETRY_FIRST;

const TCP_CARRIER: &str = "192.0.2.40:5060";
const TCP_TRUNK: &str = "tr_00000000000000cb";

/// The harness with a TCP trunk (keep-alive every `options` seconds, 0
/// none) that DID 3000 goes out through.
fn tcp_harness(options: u32) -> Harness {
    let extra = format!(
        r#"
[[trunks]]
id = "{TCP_TRUNK}"
host = "tcp-carrier.example"
transport = "tcp"
options_interval = {options}

[[routes]]
did = "3000"
trunk = "{TCP_TRUNK}"
"#
    );
    let mut h = Harness::with_config(None, &extra);
    h.core
        .trunk_addrs
        .insert(TCP_TRUNK.to_owned(), addr(TCP_CARRIER));
    h
}

pub(super) fn conn(index: u32) -> ConnId {
    ConnId {
        index,
        generation: 1,
    }
}

impl Harness {
    /// The peer at the other end of `conn` sends `msg` over it.
    pub(super) fn send_tcp(&mut self, conn: ConnId, msg: impl Into<Message>) {
        let bytes = msg.into().to_bytes();
        self.core.handle_stream_data(self.now, conn, &bytes);
        self.collect();
    }

    /// The IO loop's part: the connection the core asks for is started as
    /// `id` (and comes up if `up`).
    fn open(&mut self, id: ConnId, up: bool) {
        let peer = self.core.poll_connect().expect("a connection is asked for");
        assert_eq!(peer, addr(TCP_CARRIER));
        assert_eq!(self.core.poll_connect(), None, "one connection per peer");
        self.core.handle_connecting(self.now, peer, id);
        assert!(self.take(TCP_CARRIER).is_empty(), "nothing before it is up");
        if up {
            self.core.handle_connection(self.now, id, peer);
            self.collect();
        }
    }

    /// Every message sent to the TCP carrier went over `id`.
    fn all_over(&self, id: ConnId) {
        let flows = self
            .flows
            .get(&addr(TCP_CARRIER))
            .cloned()
            .unwrap_or_default();
        assert!(!flows.is_empty());
        for f in flows {
            assert_eq!(
                f,
                Flow::Tcp {
                    conn: id,
                    peer: addr(TCP_CARRIER)
                }
            );
        }
    }
}

fn uri_text(uri: &Uri) -> String {
    let mut b = bytes::BytesMut::new();
    uri.render(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

fn carrier_local() -> Local {
    Local {
        transport: Transport::Tcp,
        ..local(TCP_CARRIER)
    }
}

#[test]
fn invite_waits_for_the_connection_and_the_whole_call_stays_on_it() {
    let mut h = tcp_harness(0);
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite.clone());
    h.open(conn(7), true);
    let to_c = request(h.one(TCP_CARRIER));
    assert_eq!(to_c.method, Method::Invite);
    let via = header(&to_c, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 192.0.2.1:5060;"), "{via}");
    let ruri = uri_text(&to_c.uri);
    assert_eq!(ruri, "sip:3000@tcp-carrier.example:5060;transport=tcp");
    let contact = header(&to_c, KnownHeader::Contact).unwrap();
    assert!(contact.contains(";transport=tcp"), "{contact}");
    // A reliable transport: no Timer A retransmissions.
    h.advance(secs(4));
    assert!(h.take(TCP_CARRIER).is_empty(), "no retransmission over TCP");

    let mut c = Dialog::uas(
        &to_c,
        b"ctag",
        carrier_local(),
        Peer::tcp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    let ok = c
        .reply(&to_c, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.40", 43000))
        .build()
        .unwrap();
    c.sent_response(h.now, &ok);
    h.send_tcp(conn(7), ok);
    let ack = request(h.one(TCP_CARRIER));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(c.handle_request(h.now, &ack), Incoming::Ack);
    let ok_a = response(h.one(A));
    assert_eq!(ok_a.status, StatusCode::OK);
    let mut a = a_dialog(&mut h, &invite, &ok_a, true, None);

    // The carrier puts the call on hold over the same connection: the
    // switch answers on it, naming TCP in its Contact.
    let hold = "v=0\r\no=- 2 3 IN IP4 192.0.2.40\r\ns=-\r\nc=IN IP4 192.0.2.40\r\nt=0 0\r\nm=audio 43000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendonly\r\n";
    let reinvite = c
        .request(Method::Invite)
        .unwrap()
        .body(
            &super::super::sdp_type(),
            Bytes::from_static(hold.as_bytes()),
        )
        .build()
        .unwrap();
    h.send_tcp(conn(7), reinvite);
    let ok_hold = response(h.one(TCP_CARRIER));
    assert_eq!(ok_hold.status, StatusCode::OK);
    let contact = header(&ok_hold, KnownHeader::Contact).unwrap();
    assert!(contact.contains(";transport=tcp"), "{contact}");
    c.handle_response(h.now, &ok_hold);
    while let Some(t) = c.poll_transmit() {
        h.core.handle_stream_data(h.now, conn(7), &t.payload);
    }
    h.advance(secs(2));
    assert!(h.take(TCP_CARRIER).is_empty(), "its ACK stopped our 2xx");
    assert!(h.take(A).is_empty(), "A is not disturbed");

    // The carrier hangs up over the same connection; its 200 goes back on
    // it, and A gets the BYE.
    let bye = c.request(Method::Bye).unwrap().build().unwrap();
    h.send_tcp(conn(7), bye);
    assert_eq!(response(h.one(TCP_CARRIER)).status, StatusCode::OK);
    let to_a = request(h.one(A));
    assert_eq!(to_a.method, Method::Bye);
    assert_eq!(a.handle_request(h.now, &to_a), Incoming::Accept);
    h.send(A, a.reply(&to_a, StatusCode::OK).build().unwrap());
    assert_eq!(h.core.active_calls(), 0);
    h.all_over(conn(7));
    assert_eq!(h.core.poll_connect(), None, "the one connection served all");
}

#[test]
fn our_bye_reopens_a_connection_that_closed_during_the_call() {
    let mut h = tcp_harness(0);
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite.clone());
    h.open(conn(7), true);
    let to_c = request(h.one(TCP_CARRIER));
    let c = Dialog::uas(
        &to_c,
        b"ctag",
        carrier_local(),
        Peer::tcp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    let ok = c
        .reply(&to_c, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.40", 43000))
        .build()
        .unwrap();
    h.send_tcp(conn(7), ok);
    assert_eq!(request(h.one(TCP_CARRIER)).method, Method::Ack);
    let ok_a = response(h.one(A));
    let mut a = a_dialog(&mut h, &invite, &ok_a, true, None);
    h.flows.clear();

    // The connection goes away (an idle timeout on either side); A's BYE
    // still reaches the carrier, over a new one.
    h.core
        .handle_stream_closed(h.now, conn(7), "closed by the peer");
    let bye = a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    h.open(conn(8), true);
    let bye_c = request(h.one(TCP_CARRIER));
    assert_eq!(bye_c.method, Method::Bye);
    let via = header(&bye_c, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP "), "{via}");
    h.send_tcp(conn(8), c.reply(&bye_c, StatusCode::OK).build().unwrap());
    assert_eq!(h.core.active_calls(), 0);
    h.all_over(conn(8));
}

/// What A hears when its call to a trunk gets no answer over UDP: Timer B
/// (64·T1) runs out first.
fn unanswered_udp_outcome() -> StatusCode {
    let mut h = Harness::new(None);
    let invite = h.invite_from_a("2000", &[]);
    h.send(A, invite);
    assert_eq!(request(h.one(CARRIER)).method, Method::Invite);
    assert!(h.take(A).is_empty());
    h.advance(secs(33));
    // The first of them (A has not ACKed, so Timer G repeats it).
    response(h.take(A).remove(0)).status
}

#[test]
fn a_connection_that_fails_fails_the_call_at_once_as_udp_silence_would() {
    let udp = unanswered_udp_outcome();
    let mut h = tcp_harness(0);
    // Housekeeping (trunk state included) runs from the first tick on.
    h.core.handle_timeout(h.now);
    // Refused when it is being made (connection refused, unreachable).
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite);
    h.open(conn(7), false);
    h.core
        .handle_stream_closed(h.now, conn(7), "Connection refused (os error 111)");
    h.collect();
    assert_eq!(response(h.one(A)).status, udp, "same outcome, no waiting");
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.stats.outbound.connect_failures, 1);
    assert_eq!(h.core.outbound_connections(), 0);

    // The trunk is down now: a call routed to it is refused at once, and
    // nothing is dialled until it is tried again.
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&refused, KnownHeader::Warning).as_deref(),
        Some("399 codeb \"the outbound trunk is down\"")
    );
    assert_eq!(h.core.poll_connect(), None);
    h.advance(RETRY_FIRST + secs(2));
    // (A does not ACK in this harness: the finals above were repeated.)
    let _ = h.take(A);

    // Refused by the IO loop itself (its connection table is full).
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite);
    let peer = h.core.poll_connect().unwrap();
    h.core
        .handle_connect_refused(h.now, peer, "connection table full");
    h.collect();
    assert_eq!(response(h.one(A)).status, udp);
    assert_eq!(h.core.stats.outbound.connect_failures, 2);
    assert!(h.take(TCP_CARRIER).is_empty());
}

#[test]
fn a_connection_that_never_comes_up_is_given_up_before_timer_b() {
    let udp = unanswered_udp_outcome();
    let mut h = tcp_harness(0);
    // Housekeeping (which gives up on connections) runs every second from
    // the first tick on.
    h.core.handle_timeout(h.now);
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite);
    h.open(conn(7), false);
    // A black-holed address: no answer to the SYN, no error either.
    h.advance(CONNECT_TIMEOUT - secs(1));
    assert!(h.take(A).is_empty());
    assert!(h.core.take_closes().is_empty());
    h.advance(secs(2));
    let first = h.take(A).remove(0);
    assert_eq!(response(first).status, udp, "well before Timer B's 32 s");
    assert_eq!(h.core.take_closes(), [conn(7)], "the IO loop closes it");
    // Its late close event changes nothing; once the trunk's back-off
    // has passed, the next call tries afresh.
    h.core
        .handle_stream_closed(h.now, conn(7), "closed by the switch");
    assert_eq!(h.core.stats.outbound.connect_failures, 1);
    h.advance(RETRY_FIRST + secs(2));
    let invite = h.invite_from_a("3000", &[]);
    h.send(A, invite);
    h.open(conn(8), true);
    assert_eq!(request(h.one(TCP_CARRIER)).method, Method::Invite);
}

/// The TCP trunk's state as the metrics show it.
fn tcp_trunk_up(h: &Harness) -> Option<bool> {
    h.core
        .trunk_status()
        .into_iter()
        .find(|s| s.id == TCP_TRUNK)
        .unwrap()
        .up
}

/// The connection the switch asks for next is refused as it is made.
fn connect_refused(h: &mut Harness, id: ConnId) {
    h.open(id, false);
    h.core.handle_stream_closed(h.now, id, "Connection refused");
}

#[test]
fn keepalive_goes_over_tcp_and_a_failed_connect_marks_the_trunk_down() {
    let mut h = tcp_harness(30);
    // The first housekeeping tick starts the keep-alives.
    h.core.handle_timeout(h.now);
    connect_refused(&mut h, conn(3));
    assert_eq!(
        tcp_trunk_up(&h),
        Some(false),
        "down at once, not after Timer F"
    );

    h.advance(secs(30));
    h.open(conn(4), true);
    let options = request(h.one(TCP_CARRIER));
    assert_eq!(options.method, Method::Options);
    assert_eq!(
        uri_text(&options.uri),
        "sip:tcp-carrier.example:5060;transport=tcp"
    );
    let via = header(&options, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP "), "{via}");
    h.send_tcp(
        conn(4),
        options.reply(StatusCode::OK, Some(b"c")).build().unwrap(),
    );
    assert_eq!(tcp_trunk_up(&h), Some(true));
    h.all_over(conn(4));
}

/// PlaceCall through the TCP trunk.
fn place_tcp(h: &mut Harness, call_id: &str) -> Result<(), String> {
    h.core
        .place_call(
            h.now,
            crate::sip::calls::Originate {
                call_id: call_id.into(),
                tenant: "example.com".into(),
                phone: "+15551230000".into(),
                trunk_id: TCP_TRUNK.into(),
                ..Default::default()
            },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_trunk_without_keepalives_is_down_after_a_failed_connect_and_retried_with_back_off() {
    let mut h = tcp_harness(0);
    h.core.handle_timeout(h.now);
    place_tcp(&mut h, "tcp-1").unwrap();
    connect_refused(&mut h, conn(3));
    assert_eq!(
        tcp_trunk_up(&h),
        Some(false),
        "a call's failed connect counts too"
    );
    // The calls placed meanwhile are refused at once, nothing is dialled.
    let refused = place_tcp(&mut h, "tcp-2").unwrap_err();
    assert!(refused.contains("its TCP connection failed"), "{refused}");
    assert_eq!(h.core.poll_connect(), None);
    // Tried again after the first back-off...
    h.advance(RETRY_FIRST - Duration::from_millis(1));
    assert_eq!(tcp_trunk_up(&h), Some(false));
    h.advance(secs(2));
    assert_eq!(tcp_trunk_up(&h), None, "unknown again: the next call tries");
    place_tcp(&mut h, "tcp-3").unwrap();
    connect_refused(&mut h, conn(4));
    assert_eq!(tcp_trunk_up(&h), Some(false));
    // ...and after twice as long when it fails again.
    h.advance(RETRY_FIRST + secs(1));
    assert_eq!(tcp_trunk_up(&h), Some(false));
    h.advance(RETRY_FIRST + secs(1));
    assert_eq!(tcp_trunk_up(&h), None);
    place_tcp(&mut h, "tcp-4").unwrap();
    h.open(conn(5), true);
    assert_eq!(request(h.one(TCP_CARRIER)).method, Method::Invite);
    // A connection that came up starts the back-off afresh.
    h.core
        .handle_stream_closed(h.now, conn(5), "Connection reset by peer");
    let _ = h.take(A);
    let _ = h.take(TCP_CARRIER);
    place_tcp(&mut h, "tcp-5").unwrap();
    connect_refused(&mut h, conn(6));
    assert_eq!(tcp_trunk_up(&h), Some(false));
    h.advance(RETRY_FIRST + secs(1));
    assert_eq!(tcp_trunk_up(&h), None);
}

#[test]
fn the_queue_of_a_connection_being_made_is_bounded() {
    let mut h = tcp_harness(0);
    for i in 0..=MAX_PENDING {
        h.core.send_tcp_to(
            addr(TCP_CARRIER),
            Bytes::from(format!("OPTIONS sip:x SIP/2.0\r\nX-N: {i}\r\n\r\n")),
            None,
        );
    }
    assert_eq!(h.core.stats.outbound.refused, 1);
    let peer = h.core.poll_connect().unwrap();
    h.core.handle_connecting(h.now, peer, conn(5));
    h.core.handle_connection(h.now, conn(5), peer);
    let mut sent = 0;
    while let Some(out) = h.core.poll_transmit() {
        assert_eq!(
            out.flow,
            Flow::Tcp {
                conn: conn(5),
                peer
            }
        );
        sent += 1;
    }
    assert_eq!(sent, MAX_PENDING);
}

#[test]
fn a_placed_call_goes_out_over_tcp_and_ends_at_once_when_it_cannot_connect() {
    let placed = |h: &mut Harness, trunk: &str| {
        let req = crate::sip::calls::Originate {
            call_id: format!("call-{trunk}"),
            tenant: "example.com".into(),
            phone: "+15551230000".into(),
            trunk_id: trunk.into(),
            ..crate::sip::calls::Originate::default()
        };
        h.core.place_call(h.now, req).expect("placed");
    };
    // Over UDP, an unanswered INVITE ends the call at Timer B.
    let mut h = tcp_harness(0);
    placed(&mut h, "tr_00000000000000ca");
    assert_eq!(request(h.one(CARRIER)).method, Method::Invite);
    h.advance(secs(33));
    let udp = super::originate::ended(&super::originate::events(&mut h));

    // Over TCP: the INVITE waits for the connection and goes out on it...
    placed(&mut h, TCP_TRUNK);
    h.open(conn(7), true);
    let invite = request(h.one(TCP_CARRIER));
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(
        uri_text(&invite.uri),
        "sip:+15551230000@tcp-carrier.example:5060;transport=tcp"
    );
    h.all_over(conn(7));
    let _ = super::originate::events(&mut h);

    // ...and a call whose connection fails ends the same way, at once,
    // saying the trunk could not be reached rather than that it did not
    // answer.
    let mut h = tcp_harness(0);
    placed(&mut h, TCP_TRUNK);
    connect_refused(&mut h, conn(9));
    let tcp = super::originate::ended(&super::originate::events(&mut h));
    assert_eq!(udp.1, crate::sip::calls::branches::NO_SIP_RESPONSE);
    assert_eq!(
        tcp,
        (
            udp.0,
            crate::sip::calls::branches::TRANSPORT_FAILED.to_owned(),
            udp.2,
            udp.3,
            udp.4
        )
    );
}

#[test]
fn a_call_from_the_trunk_on_our_connection_is_answered_over_a_new_one_once_it_closed() {
    let mut h = tcp_harness(30);
    // The keep-alive's connection carries the trunk's own INVITE to DID
    // 1000 (bob, at B).
    h.core.handle_timeout(h.now);
    h.open(conn(7), true);
    assert_eq!(request(h.one(TCP_CARRIER)).method, Method::Options);
    let invite = carrier_tcp_invite(&mut h, "1000", "192.0.2.40");
    h.send_tcp(conn(7), invite.clone());
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    h.flows.clear();

    // The connection closes while bob rings; his answer still reaches the
    // trunk, over a connection the switch opens for it.
    h.core
        .handle_stream_closed(h.now, conn(7), "closed by the peer");
    answer_invite(&mut h, B, &to_b, b"bobtag", ("192.0.2.20", 42000));
    assert!(h.take(TCP_CARRIER).is_empty());
    h.open(conn(8), true);
    let ok = response(h.one(TCP_CARRIER));
    assert_eq!(ok.status, StatusCode::OK);
    h.all_over(conn(8));
}

/// An INVITE to `did` as a carrier at `ip` sends it over TCP (its Via:
/// TCP, sent-by port 5060).
fn carrier_tcp_invite(h: &mut Harness, did: &str, ip: &str) -> Request {
    let mut invite = h.invite_from_a(did, &[]);
    invite.headers.remove(KnownHeader::Via);
    let via = Via::new(
        &Transport::Tcp,
        &Host::from_bytes(ip.to_owned()).unwrap(),
        Some(5060),
        &h.ids.branch(),
        true,
    )
    .unwrap();
    let mut rendered = bytes::BytesMut::new();
    via.render(&mut rendered);
    invite.headers.insert(
        0,
        codeb_sip::header::Header::new(KnownHeader::Via, rendered.freeze()).unwrap(),
    );
    invite
}

/// The trunk's own connection (from a passing port of its address) carries
/// its INVITE and closes while bob rings: his answer still reaches the
/// trunk, over a connection the switch opens to the port its Via's sent-by
/// names, at its address (RFC 3261 §18.2.2). Before, it went to the
/// closed connection and was lost.
#[test]
fn a_call_on_the_trunks_own_connection_is_answered_over_a_new_one_once_it_closed() {
    let mut h = tcp_harness(0);
    let passing = "192.0.2.40:40123";
    h.core.handle_connection(h.now, conn(9), addr(passing));
    let invite = carrier_tcp_invite(&mut h, "1000", "192.0.2.40");
    h.send_tcp(conn(9), invite);
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    let _ = h.take(passing);
    h.core
        .handle_stream_closed(h.now, conn(9), "closed by the peer");
    answer_invite(&mut h, B, &to_b, b"bobtag", ("192.0.2.20", 42000));
    assert!(h.take(passing).is_empty());
    h.open(conn(10), true);
    let ok = response(h.one(TCP_CARRIER));
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(h.core.active_calls(), 1, "the call goes on");
}

/// A call from a trunk's address over a connection it opened (conn 9),
/// which then closes while B (whose INVITE this returns) rings.
fn tcp_call_whose_caller_left(h: &mut Harness) -> Request {
    h.core
        .handle_connection(h.now, conn(9), addr("192.0.2.10:41000"));
    let invite = carrier_tcp_invite(h, "1000", "192.0.2.10");
    h.send_tcp(conn(9), invite);
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    h.core
        .handle_stream_closed(h.now, conn(9), "closed by the peer");
    to_b
}

/// The connection the switch opens to the caller's sent-by port (conn
/// 10) is refused.
fn caller_refuses_a_new_connection(h: &mut Harness) {
    let peer = h.core.poll_connect().expect("a connection to the caller");
    assert_eq!(peer, addr("192.0.2.10:5060"), "its sent-by port");
    h.core.handle_connecting(h.now, peer, conn(10));
    h.core
        .handle_stream_closed(h.now, conn(10), "Connection refused");
}

/// The call was given up while B rang: B gets a CANCEL (and its INVITE a
/// 487, ACKed), and nothing of the call is left.
fn b_is_cancelled_and_the_call_is_gone(h: &mut Harness, to_b: &Request) {
    let cancel = request(h.one(B));
    assert_eq!(cancel.method, Method::Cancel);
    h.send(B, cancel.reply(StatusCode::OK, None).build().unwrap());
    h.send(
        B,
        to_b.reply(StatusCode::REQUEST_TERMINATED, Some(b"bobtag"))
            .build()
            .unwrap(),
    );
    assert_eq!(request(h.one(B)).method, Method::Ack);
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0);
}

/// A caller whose connection closed while the call rang, and who cannot
/// be reached on a new one (behind NAT, say: the connection to its
/// sent-by port is refused), is given up as if it had cancelled: the
/// callee stops ringing, instead of ringing (and maybe answering) for
/// nobody.
#[test]
fn a_ringing_call_whose_caller_cannot_be_reached_again_is_given_up() {
    let mut h = tcp_harness(0);
    let to_b = tcp_call_whose_caller_left(&mut h);
    assert_eq!(
        h.core.active_calls(),
        1,
        "a closed connection alone ends nothing"
    );
    // Bob rings: the 180 for the caller needs a new connection, which is
    // refused.
    h.send(
        B,
        to_b.reply(StatusCode::RINGING, Some(b"bobtag"))
            .build()
            .unwrap(),
    );
    caller_refuses_a_new_connection(&mut h);
    b_is_cancelled_and_the_call_is_gone(&mut h, &to_b);
}

/// The caller's connection closed while the call rang, silently (no 180),
/// and B answers: our 2xx needs a new connection to the caller, which is
/// refused. The call is hung up at once (B gets a BYE), instead of B
/// talking to nobody until our 2xx times out.
#[test]
fn an_answer_that_cannot_reach_the_caller_hangs_the_call_up() {
    let mut h = tcp_harness(0);
    let to_b = tcp_call_whose_caller_left(&mut h);
    let b = answer_invite(&mut h, B, &to_b, b"bobtag", ("192.0.2.20", 42000));
    caller_refuses_a_new_connection(&mut h);
    let bye = request(h.one(B));
    assert_eq!(bye.method, Method::Bye);
    h.send(B, b.reply(&bye, StatusCode::OK).build().unwrap());
    assert_eq!(h.core.calls.ports_in_use(), 0, "its media went at once");
    // What is left is A's side winding down (our 2xx unacknowledged,
    // then its BYE unanswered), which reaches nobody.
    h.advance(secs(70));
    assert_eq!(h.core.active_calls(), 0);
}

/// The caller's connection closed while the call rang, and the connection
/// to its sent-by port is still being made with its queue full (64
/// messages already wait for it): the 180 for the caller is refused, and
/// the refusal gives the call up as an unreachable caller would, instead
/// of leaving the callee ringing for a caller who hears nothing.
#[test]
fn a_ringing_call_whose_response_finds_the_queue_full_is_given_up() {
    let mut h = tcp_harness(0);
    let to_b = tcp_call_whose_caller_left(&mut h);
    let caller = addr("192.0.2.10:5060");
    for i in 0..MAX_PENDING {
        h.core.send_tcp_to(
            caller,
            Bytes::from(format!("OPTIONS sip:x SIP/2.0\r\nX-N: {i}\r\n\r\n")),
            None,
        );
    }
    assert_eq!(h.core.stats.outbound.refused, 0);
    h.send(
        B,
        to_b.reply(StatusCode::RINGING, Some(b"bobtag"))
            .build()
            .unwrap(),
    );
    assert_eq!(h.core.stats.outbound.refused, 1, "the 180 found no room");
    b_is_cancelled_and_the_call_is_gone(&mut h, &to_b);
}

fn tcp_options(i: usize) -> String {
    format!(
        "OPTIONS sip:1000@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKpipe{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carrier@192.0.2.10>;tag=t{i}\r\n\
         To: <sip:1000@192.0.2.1>\r\n\
         Call-ID: pipe{i}@192.0.2.10\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A busy trunk's connection brings more than one message's worth of
/// whole messages in one read (pipelined requests): each is taken, and the
/// connection stays; the size limit is one message's, not one read's.
#[test]
fn a_read_of_many_whole_messages_past_the_message_limit_keeps_the_connection() {
    let mut h = tcp_harness(0);
    let peer = addr("192.0.2.10:41000");
    h.core.handle_connection(h.now, conn(9), peer);
    let n = 400;
    let burst: String = (0..n).map(tcp_options).collect();
    assert!(burst.len() > h.core.limits.max_message_len + 4);
    h.core.handle_stream_data(h.now, conn(9), burst.as_bytes());
    assert_eq!(h.core.stats.framing_errors, 0);
    assert_eq!(h.core.stats.messages_in, n as u64);
    h.core
        .handle_stream_data(h.now, conn(9), tcp_options(n).as_bytes());
    assert_eq!(h.core.stats.messages_in, n as u64 + 1, "still open");
    // One message still coming past the limit (a header section that
    // never ends) is cut, as before.
    let endless = format!("OPTIONS sip:x SIP/2.0\r\nX-Pad: {}", "a".repeat(70_000));
    h.core
        .handle_stream_data(h.now, conn(9), endless.as_bytes());
    assert_eq!(h.core.stats.framing_errors, 1);
    h.core
        .handle_stream_data(h.now, conn(9), tcp_options(n + 1).as_bytes());
    assert_eq!(h.core.stats.messages_in, n as u64 + 1, "closed");
}
