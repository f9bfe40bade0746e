//! Reliable provisional responses, UAS side (RFC 3262): when the INVITE
//! that created the dialog requires `100rel`, every provisional response
//! but 100 carries `Require: 100rel` and an `RSeq`, is retransmitted (T1
//! doubling, over unreliable transports) until a PRACK with the matching
//! `RAck` arrives, and is given up after 64·T1
//! ([`DialogEvent::PrackTimeout`]: the TU rejects the INVITE with a 5xx).
//! One is outstanding at a time (§3: no second reliable provisional until
//! the first is acknowledged); the TU holds a 2xx while one that carried
//! a session description awaits its PRACK.

use std::time::Instant;

use bytes::Bytes;

use super::{Dialog, DialogEvent, DialogState, Side};
use crate::builder::ResponseBuilder;
use crate::error::ValueError;
use crate::header::KnownHeader;
use crate::message::{Request, Response};
use crate::method::Method;
use crate::transaction::{Address, Backoff, Timers, after, wire_response};

/// The option tag of RFC 3262.
pub const TAG_100REL: &str = "100rel";

/// A reliable provisional response of ours awaiting its PRACK.
#[derive(Debug, Clone)]
pub(crate) struct Reliable1xx<A> {
    pub(super) rseq: u32,
    wire: Bytes,
    to: A,
    /// None over a reliable transport: nothing to retransmit.
    retransmit: Option<Backoff>,
    give_up: Instant,
    has_sdp: bool,
}

impl<A> Reliable1xx<A> {
    pub(crate) fn next(&self) -> Instant {
        self.retransmit
            .as_ref()
            .map_or(self.give_up, |r| r.next.min(self.give_up))
    }
}

/// What a PRACK received in the dialog acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prack {
    /// The outstanding reliable provisional response (a 2xx held for it
    /// may go now).
    Acknowledged,
    /// A 1xx our 2xx went after, before its PRACK: it crossed the 2xx.
    /// Answer 200 and take nothing from it (the INVITE's offer-answer is
    /// done; RFC 3262 allows it no new offer then).
    Late,
    /// Nothing outstanding matches its RAck: answer 481 (§3).
    NoMatch,
}

/// The three parts of an RAck value: response number, CSeq number, method.
fn parse_rack(value: &[u8]) -> Option<(u32, u32, Method)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    let method = Method::parse(Bytes::copy_from_slice(parts.next()?.as_bytes())).ok()?;
    parts.next().is_none().then_some((rseq, cseq, method))
}

/// The first RSeq of a dialog: random in 1..2³¹ (§3: "chosen uniformly
/// between 1 and 2**31 - 1").
pub(crate) fn first_rseq(random: u64) -> u32 {
    let below = (1u64 << 31) - 1;
    u32::try_from(random % below).unwrap_or(0) + 1
}

impl<A: Address> Dialog<A> {
    /// Whether a reliable provisional response awaits its PRACK, and if
    /// so whether it carried a session description.
    pub fn reliable_pending(&self) -> Option<bool> {
        self.reliable_1xx.as_ref().map(|r| r.has_sdp)
    }

    /// Sends a provisional response (built with [`Dialog::reply`]) to the
    /// INVITE that created this UAS dialog reliably: with `Require: 100rel`
    /// and the next RSeq, retransmitted until its PRACK. The TU sends the
    /// returned response through the INVITE's server transaction, once;
    /// retransmissions come out of [`Dialog::poll_transmit`]. None when one
    /// is already outstanding (§3) or the dialog is not an early UAS one.
    pub fn send_reliably(
        &mut self,
        now: Instant,
        builder: ResponseBuilder,
    ) -> Option<Result<Response, ValueError>> {
        if self.side != Side::Uas || self.state != DialogState::Early || self.reliable_1xx.is_some()
        {
            return None;
        }
        let rseq = self.next_rseq;
        let built = builder
            .header(KnownHeader::Require, TAG_100REL)
            .header(KnownHeader::RSeq, rseq.to_string())
            .build();
        let Ok(response) = built else {
            return Some(built);
        };
        if !response.status.is_provisional() || response.status.as_u16() == 100 {
            return None;
        }
        self.next_rseq = rseq.wrapping_add(1).max(1);
        let to = match response.headers.top_via() {
            Ok(via) => self.remote.respond_to(&via),
            Err(_) => self.remote.clone(),
        };
        let timers: Timers = self.config.timers.sanitized();
        // A reliable provisional with SDP answers the INVITE's offer, or,
        // the first to an offerless INVITE, makes ours.
        self.their_offer_open &= response.body.is_empty();
        if self.invite_offerless && !self.offered_in_1xx && !response.body.is_empty() {
            self.offered_in_1xx = true;
            self.our_offer_open = true;
        }
        self.reliable_1xx = Some(Reliable1xx {
            rseq,
            wire: wire_response(&response),
            retransmit: (!to.is_reliable()).then(|| Backoff::start(now, timers.t1, None)),
            to,
            give_up: after(now, timers.timeout()),
            has_sdp: !response.body.is_empty(),
        });
        Some(Ok(response))
    }

    /// A PRACK the dialog accepted ([`Dialog::handle_request`] said
    /// Accept): does its RAck acknowledge what is outstanding?
    pub fn handle_prack(&mut self, request: &Request) -> Prack {
        let rack = request
            .headers
            .get(KnownHeader::RAck)
            .and_then(|v| parse_rack(v));
        match (&self.reliable_1xx, rack) {
            (Some(r), Some((rseq, cseq, Method::Invite)))
                if rseq == r.rseq && cseq == self.invite_cseq =>
            {
                self.reliable_1xx = None;
                // It carries the answer to our offer, if one was open (the
                // TU fails the INVITE when it does not).
                self.our_offer_open = false;
                Prack::Acknowledged
            }
            (None, Some((rseq, cseq, Method::Invite)))
                if Some(rseq) == self.late_rseq && cseq == self.invite_cseq =>
            {
                self.late_rseq = None;
                Prack::Late
            }
            _ => Prack::NoMatch,
        }
    }

    /// Retransmits or gives up the outstanding reliable provisional.
    pub(super) fn reliable_timeout(&mut self, now: Instant) {
        let Some(r) = &mut self.reliable_1xx else {
            return;
        };
        if r.give_up <= now {
            self.reliable_1xx = None;
            self.events.push_back(DialogEvent::PrackTimeout);
            return;
        }
        if let Some(backoff) = &mut r.retransmit
            && backoff.next <= now
        {
            backoff.fire(now);
            let (to, wire) = (r.to.clone(), r.wire.clone());
            self.send(to, wire);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rack_values() {
        assert_eq!(
            parse_rack(b"776656 1 INVITE"),
            Some((776_656, 1, Method::Invite))
        );
        assert_eq!(parse_rack(b"  5\t2  INVITE "), Some((5, 2, Method::Invite)));
        for bad in [
            &b""[..],
            b"1 INVITE",
            b"x 1 INVITE",
            b"1 1 INVITE extra",
            b"4294967296 1 INVITE",
            b"-1 1 INVITE",
        ] {
            assert_eq!(parse_rack(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_first_rseq_is_in_range() {
        for r in [0, 1, u64::MAX, (1 << 31) - 2, (1 << 31) - 1, 1 << 40] {
            let v = first_rseq(r);
            assert!((1..=(1 << 31) - 1).contains(&v), "{r} -> {v}");
        }
    }
}
