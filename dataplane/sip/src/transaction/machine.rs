//! The table's view of one transaction: the machine, dispatched by kind,
//! and what the table keeps beside it (its keys, its scheduled deadline,
//! a pending CANCEL).

use std::time::Instant;

use super::{
    Address, ClientInvite, ClientNonInvite, Kind, ServerInvite, ServerNonInvite, State,
    TransactionId, TransactionKey,
};
use crate::message::Request;

#[derive(Debug)]
#[allow(
    clippy::enum_variant_names,
    reason = "variants are named after the machine types they hold"
)]
pub(super) enum Machine<A> {
    ClientInvite(ClientInvite<A>),
    ClientNonInvite(ClientNonInvite<A>),
    ServerInvite(ServerInvite<A>),
    ServerNonInvite(ServerNonInvite<A>),
}

macro_rules! each {
    ($m:expr, $x:ident => $e:expr) => {
        match $m {
            Machine::ClientInvite($x) => $e,
            Machine::ClientNonInvite($x) => $e,
            Machine::ServerInvite($x) => $e,
            Machine::ServerNonInvite($x) => $e,
        }
    };
}
pub(super) use each;

impl<A: Address> Machine<A> {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Self::ClientInvite(_) => Kind::ClientInvite,
            Self::ClientNonInvite(_) => Kind::ClientNonInvite,
            Self::ServerInvite(_) => Kind::ServerInvite,
            Self::ServerNonInvite(_) => Kind::ServerNonInvite,
        }
    }

    pub(super) fn state(&self) -> State {
        each!(self, m => m.state())
    }

    /// The request that created it, until its final response.
    pub(super) fn request(&self) -> Option<&Request> {
        each!(self, m => m.request())
    }
}

/// Whether a client INVITE has a CANCEL coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancelling {
    No,
    /// Waiting for a provisional (§9.1); a table slot is reserved for it.
    Deferred,
    Sent(TransactionId),
}

#[derive(Debug)]
pub(super) struct Entry<A> {
    pub(super) machine: Machine<A>,
    pub(super) key: TransactionKey,
    /// RFC 2543 INVITE transactions: the key their ACK will carry.
    pub(super) ack_alias: Option<Box<TransactionKey>>,
    /// The deadline pushed to the timer queue for this entry.
    pub(super) scheduled: Option<Instant>,
    pub(super) cancelling: Cancelling,
}
