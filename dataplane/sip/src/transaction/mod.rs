//! The transaction layer (RFC 3261 §17, with the RFC 6026 corrections for
//! 2xx responses to INVITE), sans-IO.
//!
//! Four machines, one per kind of transaction: [`ClientInvite`],
//! [`ClientNonInvite`], [`ServerInvite`] and [`ServerNonInvite`]. Each owns
//! one transaction and nothing else: no socket, no clock, no back-pointer to
//! its user. [`TransactionLayer`] owns all of them, matches received
//! messages to them (§17.1.3, §17.2.3, with the RFC 2543 fallback), creates
//! server transactions for new requests, aggregates their timers and is
//! bounded.
//!
//! # Drain contract
//!
//! Every machine and the layer work the same way, as in str0m and
//! quinn-proto:
//!
//! 1. Feed inputs with the `handle_*` methods (and, on the layer,
//!    [`TransactionLayer::send_request`], [`TransactionLayer::respond`] and
//!    the CANCEL helpers). Each takes `now`, the caller's clock; nothing
//!    here reads the clock.
//! 2. After **every** input, drain: call `poll_transmit()` until it returns
//!    `None` and hand each [`Transmit`] to the transport; call
//!    `poll_event()` until `None` and act on each event. Outputs come out in
//!    the order they were produced. Nothing is lost by draining late, but
//!    queues grow until drained.
//! 3. Then ask `poll_timeout()` for the next deadline and call
//!    `handle_timeout(now)` once the clock reaches it (calling it early, or
//!    more often, is harmless: only expired timers fire). A new input can
//!    move the deadline, so ask again after each one.
//!
//! A transaction reports [`TransactionEvent::Terminated`] (the layer:
//! [`Event::Terminated`]) exactly once, last; after it the machine produces
//! nothing more and the layer has forgotten it.
//!
//! # Transports
//!
//! The layer is generic over the transport's address type `A` (see
//! [`Address`]): it never looks inside one except to ask whether the
//! transport is reliable, which changes the timers exactly as §17 says
//! (A, E and G are not used; D, I, J and K are zero), and where a response
//! goes ([`Address::respond_to`]; [`Peer`] implements RFC 3261 §18.2.2 with
//! RFC 3581 through [`response_destination`]).
//!
//! # Deviations from RFC 3261, and why
//!
//! * RFC 6026 replaces "destroy the INVITE transaction on 2xx": the client
//!   keeps an *Accepted* state for 64·T1 (Timer M) that passes every 2xx up,
//!   so retransmitted 2xx reach the dialog (which ACKs them again) while
//!   truly stray responses can be dropped; the server keeps an *Accepted*
//!   state (Timer L) that absorbs retransmitted INVITEs, which would
//!   otherwise reach the TU as new calls.
//! * Timer C is a proxy timer (§16.6) and not implemented; a B2BUA's
//!   no-answer timeout is the TU's to run (it then CANCELs).
//! * A non-INVITE server transaction whose TU never answers is abandoned
//!   after 64·T1 (the client's Timer F has fired by then), so a stuck TU
//!   cannot pin table slots forever.

mod cancel;
mod client_invite;
mod client_non_invite;
mod destination;
mod error;
mod ids;
mod inbound;
mod key;
mod layer;
mod machine;
mod server_invite;
mod server_non_invite;
mod timer_queue;
mod timers;

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

use crate::message::{Request, Response};

pub use cancel::{CancelOutcome, CancelStatus};
pub use client_invite::ClientInvite;
pub use client_non_invite::ClientNonInvite;
pub use destination::{Peer, ResponseRoute, response_destination, stamp_received};
pub use error::TransactionError;
pub use ids::IdGenerator;
pub use key::{LegacyKey, SentBy, TransactionKey};
pub use layer::{Config, Event, Stats, TransactionLayer};
pub use server_invite::ServerInvite;
pub use server_non_invite::ServerNonInvite;
pub use timer_queue::TimerQueue;
pub(crate) use timers::{Backoff, after};
pub use timers::{Timer, Timers};

/// What the transaction layer needs to know about a transport address.
///
/// `A` is whatever the transport uses to name a peer or a flow: a socket
/// address with its transport ([`Peer`]), a connection handle, ...
pub trait Address: Clone + fmt::Debug {
    /// `true` for transports that deliver reliably (TCP, TLS, SCTP,
    /// WebSocket): §17 then turns off retransmissions and zeroes the
    /// timers that wait for them.
    fn is_reliable(&self) -> bool;

    /// Where responses to a request received from `self` with this top Via
    /// go. The default answers back to the source, which is what RFC 3581
    /// and connection reuse (§18.2.2) want in practice.
    fn respond_to(&self, top_via: &crate::header::Via) -> Self {
        let _ = top_via;
        self.clone()
    }
}

/// Identifies one transaction in a [`TransactionLayer`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

impl TransactionId {
    /// The raw number (for logs).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}", self.0)
    }
}

/// The four kinds of transaction (§17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
}

impl Kind {
    pub fn is_server(self) -> bool {
        matches!(self, Self::ServerInvite | Self::ServerNonInvite)
    }
}

/// The state a machine is in, by its RFC name (Accepted is RFC 6026's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// What one transaction tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionEvent {
    /// A response for the TU (client transactions): every provisional, the
    /// first final and, for INVITE, every 2xx (retransmissions and forks
    /// included: the dialog layer ACKs each).
    Response(Response),
    /// An ACK that matched an INVITE server transaction in the Accepted
    /// state (an ACK for a 2xx that reused the INVITE's branch): the
    /// dialog's business (RFC 6026 §7.1).
    Ack(Request),
    /// A timer ran out without the awaited message: B or F (the TU treats
    /// it as a 408), H (no ACK), the §9.1 wait after CANCEL, or a
    /// non-INVITE server transaction its TU never answered.
    Timeout(Timer),
    /// The transport reported that a send failed (§17.1.4, §17.2.4).
    TransportError,
    /// The transaction is over; always the last event.
    Terminated,
}

/// One message to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<A> {
    pub destination: A,
    /// The message in wire form. Retransmissions reuse the same buffer.
    pub payload: Bytes,
    /// The transaction that sent it, so the transport can report a failed
    /// send with [`TransactionLayer::handle_transport_error`]. `None` for
    /// stateless replies and messages sent outside transactions.
    pub transaction: Option<TransactionId>,
}

/// The queues one machine fills and its user drains.
#[derive(Debug)]
pub(crate) struct Outbox<A> {
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<TransactionEvent>,
}

impl<A: Clone> Outbox<A> {
    pub(crate) fn new() -> Self {
        Self {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub(crate) fn send(&mut self, to: &A, payload: &Bytes) {
        self.transmits.push_back(Transmit {
            destination: to.clone(),
            payload: payload.clone(),
            transaction: None,
        });
    }

    pub(crate) fn event(&mut self, event: TransactionEvent) {
        self.events.push_back(event);
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    /// Frees the queues' memory (they are empty between turns; a later
    /// send allocates again).
    pub(crate) fn release(&mut self) {
        self.transmits = VecDeque::new();
        self.events = VecDeque::new();
    }
}

/// What every machine carries besides its state: where it sends, its
/// timers, whether the transport is reliable, and its output queues.
#[derive(Debug)]
pub(crate) struct Core<A> {
    pub(crate) peer: A,
    pub(crate) timers: Timers,
    pub(crate) reliable: bool,
    pub(crate) out: Outbox<A>,
}

impl<A: Address> Core<A> {
    pub(crate) fn new(peer: A, timers: Timers) -> Self {
        Self {
            reliable: peer.is_reliable(),
            peer,
            timers: timers.sanitized(),
            out: Outbox::new(),
        }
    }

    pub(crate) fn send(&mut self, payload: &Bytes) {
        self.out.send(&self.peer, payload);
    }
}

/// How many expired timers one `handle_timeout` call processes per
/// machine: more than any state arms, so a late caller catches up, while
/// a bug could never turn into an endless loop.
pub(crate) const MAX_FIRINGS: usize = 16;

/// The wire form of a request or response.
pub(crate) fn wire_request(request: &Request) -> Bytes {
    let mut out = bytes::BytesMut::new();
    request.write_to(&mut out);
    out.freeze()
}

pub(crate) fn wire_response(response: &Response) -> Bytes {
    let mut out = bytes::BytesMut::new();
    response.write_to(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests;
