//! Time-stepped dialog tests: Alice (192.0.2.10) calls Bob (192.0.2.20);
//! messages pass by hand, time moves by hand.

mod create;
mod inbound;
mod requests;
mod session;
mod table;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::header::{Header, KnownHeader, NameAddr, Transport, Via};
use crate::message::{Message, Request, Response, StatusCode};
use crate::method::Method;
use crate::transaction::{IdGenerator, Peer};
use crate::uri::{Host, Uri};
use crate::{Limits, RequestBuilder, parse_datagram};

pub(super) fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn local(ip: &str, user: &str) -> Local {
    Local {
        transport: Transport::Udp,
        host: Host::from_bytes(ip.to_owned()).unwrap(),
        port: Some(5060),
        contact: NameAddr::from_bytes(format!("<sip:{user}@{ip}:5060>")).unwrap(),
    }
}

pub(super) fn alice_local() -> Local {
    local("192.0.2.10", "alice")
}

pub(super) fn bob_local() -> Local {
    local("192.0.2.20", "bob")
}

pub(super) fn alice_peer() -> Peer {
    Peer::udp("192.0.2.10:5060".parse().unwrap())
}

pub(super) fn bob_peer() -> Peer {
    Peer::udp("192.0.2.20:5060".parse().unwrap())
}

pub(super) fn config() -> DialogConfig {
    DialogConfig::default()
}

pub(super) fn no_timers() -> DialogConfig {
    DialogConfig {
        session_timer: None,
        ..DialogConfig::default()
    }
}

/// Alice's dialog-creating INVITE, as Bob receives it through proxies
/// that added `record_routes` (top first).
pub(super) fn invite(record_routes: &[&str], extra: &[(KnownHeader, &str)]) -> Request {
    let via = Via::new(
        &Transport::Udp,
        &Host::from_bytes("192.0.2.10").unwrap(),
        Some(5060),
        b"z9hG4bKinv1",
        true,
    )
    .unwrap();
    let mut b = RequestBuilder::new(Method::Invite, Uri::parse("sip:bob@example.com").unwrap())
        .via(&via)
        .max_forwards(70)
        .from(&NameAddr::from_bytes("Alice <sip:alice@example.com>;tag=alice1").unwrap())
        .to(&NameAddr::from_bytes("Bob <sip:bob@example.com>").unwrap())
        .call_id("call-7@192.0.2.10")
        .cseq(1)
        .contact(&alice_local().contact);
    for rr in record_routes {
        b = b.header(KnownHeader::RecordRoute, rr.to_string());
    }
    for (name, value) in extra {
        b = b.header(*name, value.to_string());
    }
    b.build().unwrap()
}

/// Everything a dialog queued for the wire, parsed, and its events.
pub(super) fn drain(d: &mut Dialog<Peer>) -> (Vec<(Peer, Message)>, Vec<DialogEvent>) {
    let sent = std::iter::from_fn(|| d.poll_transmit())
        .map(|t| {
            let m = parse_datagram(t.payload.clone(), &Limits::default()).unwrap();
            (t.destination, m)
        })
        .collect();
    (sent, std::iter::from_fn(|| d.poll_event()).collect())
}

pub(super) fn events(d: &mut Dialog<Peer>) -> Vec<DialogEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

pub(super) fn sent(d: &mut Dialog<Peer>) -> Vec<Message> {
    std::iter::from_fn(|| d.poll_transmit())
        .map(|t| parse_datagram(t.payload, &Limits::default()).unwrap())
        .collect()
}

/// Bob answers Alice's INVITE with `status` through a dialog of his,
/// returning the response as Alice receives it.
pub(super) fn bob_answers(
    now: Instant,
    bob: &mut Dialog<Peer>,
    request: &Request,
    status: u16,
) -> Response {
    let r = bob
        .reply(request, StatusCode::new(status).unwrap())
        .build()
        .unwrap();
    bob.sent_response(now, &r);
    r
}

/// A call set up through two Record-Routing proxies and confirmed on
/// both sides, with all outputs drained.
pub(super) struct Call {
    pub t0: Instant,
    pub invite: Request,
    pub alice: Dialog<Peer>,
    pub bob: Dialog<Peer>,
}

pub(super) fn call_with(config: DialogConfig, extra: &[(KnownHeader, &str)]) -> Call {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(42);
    let invite = invite(
        &["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"],
        extra,
    );
    let mut bob = Dialog::uas(
        &invite,
        b"bob1",
        bob_local(),
        alice_peer(),
        config,
        &mut ids,
    )
    .unwrap();
    let ringing = bob_answers(t0, &mut bob, &invite, 180);
    let mut alice = Dialog::uac(
        t0,
        &invite,
        &ringing,
        alice_local(),
        bob_peer(),
        config,
        &mut ids,
    )
    .unwrap();
    let ok = bob_answers(t0 + ms(10), &mut bob, &invite, 200);
    alice.handle_response(t0 + ms(20), &ok);
    let (acks, alice_events) = drain(&mut alice);
    assert_eq!(acks.len(), 1);
    let ack = acks[0].1.as_request().unwrap();
    assert_eq!(bob.handle_request(t0 + ms(30), ack), Incoming::Ack);
    assert_eq!(alice_events, vec![DialogEvent::Confirmed]);
    assert_eq!(events(&mut bob), vec![DialogEvent::Confirmed]);
    Call {
        t0,
        invite,
        alice,
        bob,
    }
}

/// A header line added to a built message.
pub(super) fn with_header(mut r: Request, name: KnownHeader, value: &'static str) -> Request {
    r.headers.push(Header::new(name, value).unwrap());
    r
}

pub(super) fn body(r: Request, text: &'static str) -> Request {
    Request {
        body: Bytes::from_static(text.as_bytes()),
        ..r
    }
}
