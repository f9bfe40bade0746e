//! CANCEL (RFC 3261 §9), both sides.
//!
//! Client: [`TransactionLayer::cancel`] sends a CANCEL for a pending client
//! INVITE, built with [`cancel_for`] and sent to the INVITE's destination.
//! §9.1 forbids sending it before a provisional response has arrived, so
//! in Calling the CANCEL is deferred (a table slot is reserved for it) and
//! goes out with the first provisional ([`Event::CancelSent`]); if a final
//! arrives first, there is nothing left to cancel. Once sent, the INVITE
//! transaction gives up 64·T1 later if no final response comes (§9.1).
//!
//! Server: a CANCEL gets its own non-INVITE server transaction and an
//! [`Event::Cancel`] naming the INVITE server transaction it matches (same
//! key with method INVITE, §9.2). [`TransactionLayer::answer_cancel`]
//! then does what §9.2 asks in one call: 481 if it matches nothing,
//! otherwise 200 to the CANCEL and, if the INVITE has no final response
//! yet, 487 to the INVITE, both with the To tag the INVITE's responses
//! carry.

use std::time::Instant;

use bytes::Bytes;

use super::layer::Event;
use super::machine::{Cancelling, Machine};
use super::{Address, State, TransactionError, TransactionId, TransactionKey, TransactionLayer};
use crate::builder::{ResponseBuilder, cancel_for};
use crate::message::{Request, StatusCode};
use crate::method::Method;

/// What [`TransactionLayer::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    /// The CANCEL went out as this client transaction.
    Sent(TransactionId),
    /// No provisional response yet: the CANCEL goes out with the first one
    /// ([`Event::CancelSent`]), or never if a final response comes first.
    Deferred,
    /// The INVITE already has a final response; nothing to cancel.
    TooLate,
}

/// What [`TransactionLayer::answer_cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No INVITE server transaction matched: 481 sent to the CANCEL.
    NoMatch,
    /// 200 sent to the CANCEL and 487 to the INVITE: the TU stops
    /// processing it (and, in a B2BUA, cancels the other leg).
    Cancelled { invite: TransactionId },
    /// 200 sent to the CANCEL; the INVITE had its final response already.
    TooLate { invite: TransactionId },
}

impl<A: Address> TransactionLayer<A> {
    /// The INVITE server transaction a received CANCEL targets (§9.2).
    pub fn cancel_target(&self, cancel: &Request) -> Option<TransactionId> {
        let key = TransactionKey::cancelled_by(cancel).ok()?;
        let id = *self.keys.get(&key)?;
        match self.entries.get(&id)?.machine {
            Machine::ServerInvite(_) => Some(id),
            _ => None,
        }
    }

    /// Cancels a pending client INVITE (§9.1). Cancelling twice returns
    /// the first outcome again.
    pub fn cancel(
        &mut self,
        now: Instant,
        invite: TransactionId,
    ) -> Result<CancelStatus, TransactionError> {
        let full = self.occupancy() >= self.config.max_transactions;
        let entry = self
            .entries
            .get_mut(&invite)
            .ok_or(TransactionError::Unknown)?;
        let Machine::ClientInvite(m) = &entry.machine else {
            return Err(TransactionError::WrongKind);
        };
        match (entry.cancelling, m.state()) {
            (Cancelling::Sent(id), _) => Ok(CancelStatus::Sent(id)),
            (Cancelling::Deferred, _) => Ok(CancelStatus::Deferred),
            (Cancelling::No, State::Calling | State::Proceeding) if full => {
                Err(TransactionError::TableFull)
            }
            (Cancelling::No, State::Calling) => {
                entry.cancelling = Cancelling::Deferred;
                self.reserved += 1;
                Ok(CancelStatus::Deferred)
            }
            (Cancelling::No, State::Proceeding) => {
                self.send_cancel(now, invite).map(CancelStatus::Sent)
            }
            (Cancelling::No, _) => Ok(CancelStatus::TooLate),
        }
    }

    /// Builds and sends the CANCEL for client INVITE `invite`.
    fn send_cancel(
        &mut self,
        now: Instant,
        invite: TransactionId,
    ) -> Result<TransactionId, TransactionError> {
        let Some(Machine::ClientInvite(m)) = self.entries.get_mut(&invite).map(|e| &mut e.machine)
        else {
            return Err(TransactionError::WrongKind);
        };
        // The INVITE is kept until its final response, after which there
        // is nothing to cancel.
        let invite_request = m.request().ok_or(TransactionError::WrongState(m.state()))?;
        let cancel = cancel_for(invite_request)?;
        let destination = m.destination().clone();
        m.cancel_sent(now);
        let key =
            TransactionKey::client_request(&cancel).map_err(|_| TransactionError::NoBranch)?;
        let id = self.start_client(now, cancel, destination, key)?;
        if let Some(e) = self.entries.get_mut(&invite) {
            e.cancelling = Cancelling::Sent(id);
        }
        // The INVITE's §9.1 timer was armed above.
        self.settle(now, invite);
        Ok(id)
    }

    /// A client INVITE with a deferred CANCEL left Calling: send it now
    /// (Proceeding) or drop it (a final arrived first).
    pub(super) fn release_deferred_cancel(
        &mut self,
        now: Instant,
        invite: TransactionId,
        state: State,
    ) {
        self.reserved = self.reserved.saturating_sub(1);
        if let Some(e) = self.entries.get_mut(&invite) {
            e.cancelling = Cancelling::No;
        }
        if state == State::Proceeding
            && let Ok(cancel) = self.send_cancel(now, invite)
        {
            self.events.push_back(Event::CancelSent { invite, cancel });
        }
    }

    /// Answers a received CANCEL as §9.2 says (see [`CancelOutcome`]).
    /// `to_tag` is used when the INVITE's responses have carried none yet.
    pub fn answer_cancel(
        &mut self,
        now: Instant,
        cancel: TransactionId,
        to_tag: &[u8],
    ) -> Result<CancelOutcome, TransactionError> {
        let request = match self.entries.get(&cancel).map(|e| &e.machine) {
            Some(Machine::ServerNonInvite(m)) => match m.request() {
                Some(r) if r.method == Method::Cancel => r.clone(),
                Some(_) => return Err(TransactionError::WrongKind),
                // Answered already.
                None => return Err(TransactionError::WrongState(m.state())),
            },
            Some(_) => return Err(TransactionError::WrongKind),
            None => return Err(TransactionError::Unknown),
        };
        let Some(invite) = self.cancel_target(&request) else {
            let r = ResponseBuilder::reply_to(
                &request.headers,
                StatusCode::CALL_DOES_NOT_EXIST,
                Some(to_tag),
            )
            .build()?;
            self.respond(now, cancel, r)?;
            return Ok(CancelOutcome::NoMatch);
        };
        // The INVITE is still pending (Proceeding, so its request is
        // kept) or answered already: then only the CANCEL gets its 200.
        let (pending, tag) = match self.entries.get(&invite).map(|e| &e.machine) {
            Some(Machine::ServerInvite(m)) => (
                (m.state() == State::Proceeding)
                    .then(|| m.request().cloned())
                    .flatten(),
                m.local_tag()
                    .cloned()
                    .unwrap_or_else(|| Bytes::copy_from_slice(to_tag)),
            ),
            _ => return Err(TransactionError::WrongKind),
        };
        let ok = ResponseBuilder::reply_to(&request.headers, StatusCode::OK, Some(&tag)).build()?;
        self.respond(now, cancel, ok)?;
        let Some(invite_request) = pending else {
            return Ok(CancelOutcome::TooLate { invite });
        };
        let terminated = ResponseBuilder::reply_to(
            &invite_request.headers,
            StatusCode::REQUEST_TERMINATED,
            Some(&tag),
        )
        .build()?;
        self.respond(now, invite, terminated)?;
        Ok(CancelOutcome::Cancelled { invite })
    }
}
