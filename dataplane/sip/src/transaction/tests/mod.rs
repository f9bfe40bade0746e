//! Time-stepped tests of the four machines and the table. Time is an
//! `Instant` taken once and moved by hand, so 64·T1 passes in microseconds.

mod cancel;
mod client_invite;
mod client_non_invite;
mod layer;
mod matching;
mod server_invite;
mod server_non_invite;

use std::time::{Duration, Instant};

use super::*;
use crate::header::{NameAddr, Transport, Via};
use crate::message::{Message, Request, Response, StatusCode};
use crate::method::Method;
use crate::uri::{Host, Uri};
use crate::{Limits, RequestBuilder, parse_datagram};

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub(super) fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

pub(super) fn udp() -> Peer {
    Peer::udp("192.0.2.20:5060".parse().unwrap())
}

pub(super) fn tcp() -> Peer {
    Peer::tcp("192.0.2.20:5060".parse().unwrap())
}

/// A request as the UA at 192.0.2.10 sends it.
pub(super) fn request(method: Method, branch: &str) -> Request {
    request_with(method, branch, 1, None)
}

pub(super) fn request_with(
    method: Method,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
) -> Request {
    let via = Via::new(
        &Transport::Udp,
        &Host::from_bytes("192.0.2.10").unwrap(),
        Some(5060),
        branch.as_bytes(),
        false,
    )
    .unwrap();
    let mut to = NameAddr::from_bytes("<sip:bob@example.com>").unwrap();
    if let Some(tag) = to_tag {
        to = to.with_tag(tag.as_bytes()).unwrap();
    }
    RequestBuilder::new(method, Uri::parse("sip:bob@example.com").unwrap())
        .via(&via)
        .max_forwards(70)
        .from(&NameAddr::from_bytes("<sip:alice@example.com>;tag=a1").unwrap())
        .to(&to)
        .call_id("call-1@192.0.2.10")
        .cseq(cseq)
        .contact(&NameAddr::from_bytes("<sip:alice@192.0.2.10>").unwrap())
        .build()
        .unwrap()
}

pub(super) fn invite(branch: &str) -> Request {
    request(Method::Invite, branch)
}

/// The response a UAS would send, with To tag `tag`.
pub(super) fn reply(req: &Request, code: u16, tag: Option<&str>) -> Response {
    req.reply(StatusCode::new(code).unwrap(), tag.map(str::as_bytes))
        .build()
        .unwrap()
}

pub(super) fn parse(t: &Transmit<Peer>) -> Message {
    parse_datagram(t.payload.clone(), &Limits::default()).expect("we send what we can parse")
}

pub(super) fn status(m: &Message) -> Option<u16> {
    m.as_response().map(|r| r.status.as_u16())
}

pub(super) fn method(m: &Message) -> Option<Method> {
    m.as_request().map(|r| r.method.clone())
}

/// The poll surface the four machines share, for generic test helpers.
pub(super) trait Machine {
    fn transmit(&mut self) -> Option<Transmit<Peer>>;
    fn event(&mut self) -> Option<TransactionEvent>;
    fn timeout(&self) -> Option<Instant>;
    fn fire(&mut self, now: Instant);
}

macro_rules! machine {
    ($($t:ident),*) => {$(
        impl Machine for $t<Peer> {
            fn transmit(&mut self) -> Option<Transmit<Peer>> { self.poll_transmit() }
            fn event(&mut self) -> Option<TransactionEvent> { self.poll_event() }
            fn timeout(&self) -> Option<Instant> { self.poll_timeout() }
            fn fire(&mut self, now: Instant) { self.handle_timeout(now) }
        }
    )*};
}
machine!(ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite);

/// Everything queued for the wire, parsed.
pub(super) fn sent<M: Machine>(m: &mut M) -> Vec<Message> {
    std::iter::from_fn(|| m.transmit())
        .map(|t| parse(&t))
        .collect()
}

pub(super) fn events<M: Machine>(m: &mut M) -> Vec<TransactionEvent> {
    std::iter::from_fn(|| m.event()).collect()
}

/// Jumps from deadline to deadline up to `t0 + until`, recording when
/// each firing happened (as an offset from `t0`) and what it sent.
pub(super) fn run<M: Machine>(
    m: &mut M,
    t0: Instant,
    until: Duration,
) -> Vec<(Duration, Vec<Message>)> {
    let mut log = Vec::new();
    while let Some(at) = m.timeout().filter(|at| *at <= t0 + until) {
        m.fire(at);
        log.push((at - t0, sent(m)));
    }
    log
}

/// The offsets at which something was sent, from a [`run`] log.
pub(super) fn send_times(log: &[(Duration, Vec<Message>)]) -> Vec<Duration> {
    log.iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(at, _)| *at)
        .collect()
}

/// Offsets T1·(2^k − 1) for k = 1..: when Timer A fires.
pub(super) fn doubling(t1: u64, count: usize) -> Vec<Duration> {
    (1..=count as u32)
        .map(|k| ms(t1 * ((1 << k) - 1)))
        .collect()
}

/// Timer E/G firings: doubling from T1 up to T2, then every T2, until 64·T1.
pub(super) fn capped(t1: u64, t2: u64) -> Vec<Duration> {
    let (mut at, mut interval, mut out) = (0, t1, Vec::new());
    while at + interval < 64 * t1 {
        at += interval;
        out.push(ms(at));
        interval = (interval * 2).min(t2);
    }
    out
}
