//! The non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! Trying absorbs retransmitted requests until the TU answers; Proceeding
//! answers them with the latest provisional; Completed with the final,
//! until Timer J (64·T1; zero on reliable transports). If the TU never
//! answers, the transaction is abandoned after 64·T1, when the client's
//! Timer F has fired and no answer could matter any more.

use std::time::Instant;

use bytes::Bytes;

use super::timers::after;
use super::{
    Address, Core, MAX_FIRINGS, State, Timer, Timers, TransactionError, TransactionEvent, Transmit,
    wire_response,
};
use crate::message::{Request, Response};
use crate::method::Method;

#[derive(Debug, Clone)]
enum Phase {
    /// Trying (`last == None`) and Proceeding.
    Waiting {
        last: Option<Bytes>,
        /// When the TU's silence is given up on.
        abandon: Instant,
    },
    /// Timer J.
    Completed {
        response: Bytes,
        until: Instant,
    },
    Terminated,
}

/// One non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerNonInvite<A> {
    core: Core<A>,
    /// Dropped with the final response: Completed only resends that.
    request: Option<Box<Request>>,
    phase: Phase,
}

impl<A: Address> ServerNonInvite<A> {
    /// Starts the transaction for a received request (not INVITE or ACK);
    /// responses go to `respond_to`.
    pub fn new(
        now: Instant,
        request: Request,
        respond_to: A,
        timers: Timers,
    ) -> Result<Self, TransactionError> {
        match request.method {
            Method::Invite => return Err(TransactionError::WrongMethod),
            Method::Ack => return Err(TransactionError::AckIsNotATransaction),
            _ => {}
        }
        let core = Core::new(respond_to, timers);
        let abandon = after(now, core.timers.timeout());
        Ok(Self {
            core,
            request: Some(Box::new(request)),
            phase: Phase::Waiting {
                last: None,
                abandon,
            },
        })
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Waiting { last: None, .. } => State::Trying,
            Phase::Waiting { .. } => State::Proceeding,
            Phase::Completed { .. } => State::Completed,
            Phase::Terminated => State::Terminated,
        }
    }

    /// The request, until the final response is sent.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// Frees the output queues' memory once drained.
    pub(crate) fn release_outbox(&mut self) {
        self.core.out.release();
    }

    /// The TU's response: provisionals until the final.
    pub fn respond(&mut self, now: Instant, response: Response) -> Result<(), TransactionError> {
        let Phase::Waiting { last, .. } = &mut self.phase else {
            return Err(TransactionError::WrongState(self.state()));
        };
        let wire = wire_response(&response);
        self.core.send(&wire);
        if response.status.is_provisional() {
            *last = Some(wire);
            return Ok(());
        }
        self.request = None;
        let j = self.core.timers.j(self.core.reliable);
        self.phase = if j.is_zero() {
            self.core.out.event(TransactionEvent::Terminated);
            Phase::Terminated
        } else {
            Phase::Completed {
                response: wire,
                until: after(now, j),
            }
        };
        Ok(())
    }

    /// A retransmission of the request.
    pub fn handle_request(&mut self, _now: Instant, _request: Request) {
        let resend = match &self.phase {
            Phase::Waiting { last, .. } => last.clone(),
            Phase::Completed { response, .. } => Some(response.clone()),
            Phase::Terminated => None,
        };
        if let Some(wire) = resend {
            self.core.send(&wire);
        }
    }

    /// The transport could not deliver a response (§17.2.4).
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
            Phase::Waiting { abandon, .. } => Some((*abandon, Timer::Unanswered)),
            Phase::Completed { until, .. } => Some((*until, Timer::J)),
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
            if timer == Timer::Unanswered {
                self.core.out.event(TransactionEvent::Timeout(timer));
            }
            self.core.out.event(TransactionEvent::Terminated);
            self.phase = Phase::Terminated;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.core.out.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.core.out.poll_event()
    }
}
