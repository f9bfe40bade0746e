//! The non-INVITE client transaction (RFC 3261 §17.1.2, figure 6).
//!
//! Trying retransmits on Timer E (unreliable transports only) starting at
//! T1 and doubling up to T2; a provisional moves to Proceeding, where E
//! fires every T2. Timer F (64·T1) ends both with a timeout. The first
//! final response goes up and Completed absorbs its retransmissions until
//! Timer K (T4; zero on reliable transports).

use std::time::Instant;

use bytes::Bytes;

use super::timers::{Backoff, after};
use super::{
    Address, Core, MAX_FIRINGS, State, Timer, Timers, TransactionError, TransactionEvent,
    TransactionKey, Transmit, wire_request,
};
use crate::message::{Request, Response};
use crate::method::Method;

#[derive(Debug, Clone)]
enum Phase {
    /// Trying (`provisional == false`) and Proceeding share their timers.
    Waiting {
        provisional: bool,
        /// Timer E; `None` on reliable transports.
        retransmit: Option<Backoff>,
        /// Timer F.
        timeout: Instant,
    },
    /// Timer K.
    Completed {
        until: Instant,
    },
    Terminated,
}

/// One non-INVITE client transaction.
#[derive(Debug)]
pub struct ClientNonInvite<A> {
    core: Core<A>,
    /// The request and its wire form (for retransmission), dropped with
    /// the final response: Completed only absorbs retransmitted finals.
    request: Option<Box<Request>>,
    wire: Bytes,
    phase: Phase,
}

impl<A: Address> ClientNonInvite<A> {
    /// Starts the transaction and queues the request (any method but
    /// INVITE and ACK; the top Via needs an RFC 3261 branch).
    pub fn new(
        now: Instant,
        request: Request,
        peer: A,
        timers: Timers,
    ) -> Result<Self, TransactionError> {
        match request.method {
            Method::Invite => return Err(TransactionError::WrongMethod),
            Method::Ack => return Err(TransactionError::AckIsNotATransaction),
            _ => {}
        }
        TransactionKey::client_request(&request).map_err(|_| TransactionError::NoBranch)?;
        let mut core = Core::new(peer, timers);
        let wire = wire_request(&request);
        core.send(&wire);
        let phase = Phase::Waiting {
            provisional: false,
            retransmit: (!core.reliable)
                .then(|| Backoff::start(now, core.timers.t1, Some(core.timers.t2))),
            timeout: after(now, core.timers.timeout()),
        };
        Ok(Self {
            core,
            request: Some(Box::new(request)),
            wire,
            phase,
        })
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Waiting {
                provisional: false, ..
            } => State::Trying,
            Phase::Waiting { .. } => State::Proceeding,
            Phase::Completed { .. } => State::Completed,
            Phase::Terminated => State::Terminated,
        }
    }

    /// The request, until the final response arrives.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// Frees the output queues' memory once drained.
    pub(crate) fn release_outbox(&mut self) {
        self.core.out.release();
    }

    pub fn destination(&self) -> &A {
        &self.core.peer
    }

    /// A response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        let Phase::Waiting {
            provisional,
            retransmit,
            ..
        } = &mut self.phase
        else {
            // Completed absorbs retransmitted finals; Terminated hears nothing.
            return;
        };
        if response.status.is_provisional() {
            if !*provisional {
                *provisional = true;
                // §17.1.2.2: from now on E fires every T2 (the pending
                // firing keeps its schedule).
                if let Some(e) = retransmit {
                    e.fix(self.core.timers.t2);
                }
            }
            self.core.out.event(TransactionEvent::Response(response));
            return;
        }
        self.core.out.event(TransactionEvent::Response(response));
        self.request = None;
        self.wire = Bytes::new();
        let k = self.core.timers.i_k(self.core.reliable);
        self.phase = if k.is_zero() {
            self.core.out.event(TransactionEvent::Terminated);
            Phase::Terminated
        } else {
            Phase::Completed {
                until: after(now, k),
            }
        };
    }

    /// The transport could not deliver the request (§17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.phase, Phase::Terminated) {
            self.core.out.event(TransactionEvent::TransportError);
            self.core.out.event(TransactionEvent::Terminated);
            self.phase = Phase::Terminated;
        }
    }

    /// The earliest armed timer.
    pub fn next_timer(&self) -> Option<(Instant, Timer)> {
        match &self.phase {
            Phase::Waiting {
                retransmit,
                timeout,
                ..
            } => {
                let f = (*timeout, Timer::F);
                Some(retransmit.map_or(f, |e| {
                    if e.next < *timeout {
                        (e.next, Timer::E)
                    } else {
                        f
                    }
                }))
            }
            Phase::Completed { until } => Some((*until, Timer::K)),
            Phase::Terminated => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// Fires every timer that has expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..MAX_FIRINGS {
            let Some((_, timer)) = self.next_timer().filter(|(at, _)| *at <= now) else {
                break;
            };
            match (&mut self.phase, timer) {
                // A caller late enough to find F due too gets the timeout
                // alone, not a last retransmission just before it.
                (
                    Phase::Waiting {
                        retransmit: Some(e),
                        timeout,
                        ..
                    },
                    Timer::E,
                ) if *timeout > now => {
                    e.fire(now);
                    self.core.send(&self.wire);
                }
                (Phase::Waiting { .. }, _) => {
                    self.core.out.event(TransactionEvent::Timeout(Timer::F));
                    self.core.out.event(TransactionEvent::Terminated);
                    self.phase = Phase::Terminated;
                }
                (Phase::Completed { .. }, _) => {
                    self.core.out.event(TransactionEvent::Terminated);
                    self.phase = Phase::Terminated;
                }
                (Phase::Terminated, _) => break,
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.core.out.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.core.out.poll_event()
    }
}
