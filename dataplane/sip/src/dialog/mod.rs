//! The dialog layer (RFC 3261 §12–§15, RFC 4028 session timers), sans-IO.
//!
//! A [`Dialog`] is one INVITE dialog seen from one side: its id (Call-ID,
//! local tag, remote tag), state (early, confirmed, terminated), route set,
//! remote target and CSeq numbers. It sits beside the transaction layer,
//! not on top of it: the TU feeds it what the transactions deliver and
//! sends what it builds through them.
//!
//! * **UAC** ([`Dialog::uac`]): created from the INVITE we sent and a 1xx
//!   (with a To tag) or 2xx response; then [`Dialog::handle_response`] for
//!   every response to a request of the dialog. A 2xx to an INVITE is ACKed
//!   by the dialog (at once, or when the TU calls [`Dialog::ack`] if it
//!   needs a body in the ACK), and every retransmission of that 2xx gets
//!   the same ACK again.
//! * **UAS** ([`Dialog::uas`]): created when we are about to answer an
//!   INVITE with a 1xx or 2xx; [`Dialog::reply`] builds responses with the
//!   dialog's tag, Contact, Record-Route and session-timer headers,
//!   [`Dialog::sent_response`] records what was sent. A 2xx to an INVITE is
//!   retransmitted (T1 doubling up to T2) until its ACK arrives
//!   ([`Dialog::handle_request`]) or 64·T1 passes ([`DialogEvent::AckTimeout`]:
//!   the TU sends BYE).
//! * Both sides: [`Dialog::request`] starts in-dialog requests (BYE,
//!   re-INVITE, UPDATE, INFO, OPTIONS, ...) with the right Request-URI and
//!   Route for loose and strict routing; [`Dialog::handle_request`] checks
//!   received ones (500 out of order, 491 / 500 glare, 422 session interval
//!   too small); session timers produce [`DialogEvent::RefreshDue`] and
//!   [`DialogEvent::SessionExpired`].
//!
//! # Drain contract
//!
//! The same as the transaction layer's (see [`crate::transaction`]): after
//! every `handle_*` call (and after [`Dialog::ack`], [`Dialog::sent_response`],
//! [`Dialog::request`]) drain `poll_transmit()` to the transport (ACKs and
//! 2xx retransmissions, sent outside any transaction) and `poll_event()` to
//! the TU, then arm a timer for `poll_timeout()` and call
//! `handle_timeout(now)` when it expires. [`DialogTable`] does the
//! aggregation for many dialogs. [`DialogEvent::Terminated`] is the last
//! event of a dialog.

mod build;
mod error;
mod inbound;
mod prack;
mod reliability;
mod session_timer;
mod state;
mod table;
mod uac;

use bytes::Bytes;

use crate::message::{Request, Response};

pub use error::DialogError;
pub use inbound::Incoming;
pub use prack::{Prack, TAG_100REL};
pub use session_timer::{SessionTimerConfig, min_se_of_422};
pub use state::{Dialog, DialogConfig, Local};
pub use table::DialogTable;

/// What identifies a dialog (§12): Call-ID and the two tags, from our
/// side (local is ours whether we were UAC or UAS).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId {
    pub call_id: Bytes,
    pub local_tag: Bytes,
    pub remote_tag: Bytes,
}

impl DialogId {
    /// The dialog a received request belongs to, from our side: the To
    /// tag is ours, the From tag theirs. `None` outside a dialog (no To
    /// tag). A missing From tag (RFC 2543 peers) is the empty tag.
    pub fn of_request(request: &Request) -> Option<Self> {
        let h = &request.headers;
        Some(Self {
            call_id: h.call_id().ok()?,
            local_tag: h.to().ok()?.params.value_bytes("tag")?,
            remote_tag: h.from().ok()?.params.value_bytes("tag").unwrap_or_default(),
        })
    }

    /// The dialog a response to one of our requests belongs to: the From
    /// tag is ours, the To tag theirs. `None` without a To tag.
    pub fn of_response(response: &Response) -> Option<Self> {
        let h = &response.headers;
        Some(Self {
            call_id: h.call_id().ok()?,
            local_tag: h.from().ok()?.params.value_bytes("tag").unwrap_or_default(),
            remote_tag: h.to().ok()?.params.value_bytes("tag")?,
        })
    }
}

/// §12: early (after a provisional), confirmed (after a 2xx), terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// Which side of the dialog-creating INVITE we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Uac,
    Uas,
}

/// Why a dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Termination {
    /// We started a BYE.
    LocalBye,
    /// The peer sent BYE.
    RemoteBye,
    /// The dialog-creating INVITE failed (non-2xx final, either side), so
    /// the early dialog ends (§12.3).
    Rejected,
    /// A request in the dialog got 481 or 408, or timed out (§12.2.1.2).
    Gone,
}

/// What a dialog tells the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// The dialog went from early to confirmed.
    Confirmed,
    /// A 2xx to our INVITE with CSeq `cseq` arrived and
    /// [`DialogConfig::auto_ack`] is off: call [`Dialog::ack`].
    AckDue { cseq: u32 },
    /// Our 2xx to the INVITE `cseq` was not ACKed within 64·T1
    /// (§13.3.1.4): the TU should send BYE.
    AckTimeout { cseq: u32 },
    /// Our re-INVITE or UPDATE got 491 and the §14.1 back-off ran out: send
    /// it again now.
    RetryRequest,
    /// The peer wants a longer session interval (422 to our refresh); the
    /// dialog already uses `min_se`: send the refresh again.
    SessionIntervalRaised { min_se: u32 },
    /// We are the session refresher and half the interval has passed:
    /// send a refresh (re-INVITE or UPDATE) now (RFC 4028 §10).
    RefreshDue,
    /// No refresh arrived in time (RFC 4028 §10): send BYE.
    SessionExpired,
    /// Our reliable provisional response got no PRACK within 64·T1 (RFC
    /// 3262 §3): reject the INVITE with a 5xx.
    PrackTimeout,
    /// The dialog is over; the last event.
    Terminated(Termination),
}

#[cfg(test)]
mod tests;
