//! The INVITE client transaction (RFC 3261 §17.1.1, figure 5, with the
//! Accepted state of RFC 6026 §7.2).
//!
//! Calling retransmits the INVITE on Timer A (unreliable transports only,
//! doubling without cap) until a response or Timer B. A provisional moves
//! to Proceeding, which waits without a timeout (a no-answer timeout is the
//! TU's; after it sends CANCEL, [`ClientInvite::cancel_sent`] arms the
//! §9.1 wait). A non-2xx final is ACKed here (§17.1.1.3) and absorbed in
//! Completed until Timer D; a 2xx goes up, and so does every later 2xx
//! until Timer M, because ACKing them is the dialog's job.

use std::time::Instant;

use bytes::Bytes;

use super::timers::{Backoff, after};
use super::{
    Address, Core, MAX_FIRINGS, State, Timer, Timers, TransactionError, TransactionEvent,
    TransactionKey, Transmit, wire_request,
};
use crate::builder::ack_for_non2xx;
use crate::message::{Request, Response};
use crate::method::Method;

/// The states of figure 5, each with the timers it runs.
#[derive(Debug, Clone)]
enum Phase {
    Calling(Calling),
    Proceeding(Proceeding),
    Completed(Completed),
    Accepted(Accepted),
    Terminated,
}

#[derive(Debug, Clone)]
struct Calling {
    /// Timer A; `None` on reliable transports.
    retransmit: Option<Backoff>,
    /// Timer B.
    timeout: Instant,
}

#[derive(Debug, Clone)]
struct Proceeding {
    /// Armed by a CANCEL: give up 64·T1 later if no final arrives (§9.1).
    cancel_wait: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Completed {
    /// The ACK we sent, for each retransmitted final.
    ack: Option<Bytes>,
    /// Timer D.
    until: Instant,
}

#[derive(Debug, Clone)]
struct Accepted {
    /// Timer M.
    until: Instant,
}

/// One INVITE client transaction.
#[derive(Debug)]
pub struct ClientInvite<A> {
    core: Core<A>,
    /// The INVITE and its wire form (for retransmission), dropped with
    /// the final response: Completed keeps its own ACK, Accepted needs
    /// neither.
    request: Option<Box<Request>>,
    wire: Bytes,
    phase: Phase,
}

fn terminate<A: Address>(core: &mut Core<A>) -> Phase {
    core.out.event(TransactionEvent::Terminated);
    Phase::Terminated
}

/// Any response while waiting for the final one (Calling or Proceeding).
fn on_response<A: Address>(
    core: &mut Core<A>,
    request: Option<&Request>,
    now: Instant,
    response: Response,
    waiting: Phase,
) -> Phase {
    let status = response.status;
    if status.is_provisional() {
        core.out.event(TransactionEvent::Response(response));
        return match waiting {
            Phase::Calling(_) => Phase::Proceeding(Proceeding { cancel_wait: None }),
            other => other,
        };
    }
    if status.is_success() {
        core.out.event(TransactionEvent::Response(response));
        return Phase::Accepted(Accepted {
            until: after(now, core.timers.timeout()),
        });
    }
    // §17.1.1.3: the ACK for a non-2xx final belongs to the transaction.
    let ack = request
        .and_then(|request| ack_for_non2xx(request, &response).ok())
        .map(|ack| wire_request(&ack));
    if let Some(ack) = &ack {
        core.send(ack);
    }
    core.out.event(TransactionEvent::Response(response));
    let d = core.timers.d(core.reliable);
    if d.is_zero() {
        return terminate(core);
    }
    Phase::Completed(Completed {
        ack,
        until: after(now, d),
    })
}

impl<A: Address> ClientInvite<A> {
    /// Starts the transaction and queues the INVITE. The request needs a
    /// top Via with an RFC 3261 branch.
    pub fn new(
        now: Instant,
        request: Request,
        peer: A,
        timers: Timers,
    ) -> Result<Self, TransactionError> {
        if request.method != Method::Invite {
            return Err(TransactionError::WrongMethod);
        }
        TransactionKey::client_request(&request).map_err(|_| TransactionError::NoBranch)?;
        let mut core = Core::new(peer, timers);
        let wire = wire_request(&request);
        core.send(&wire);
        let phase = Phase::Calling(Calling {
            retransmit: (!core.reliable).then(|| Backoff::start(now, core.timers.t1, None)),
            timeout: after(now, core.timers.timeout()),
        });
        Ok(Self {
            core,
            request: Some(Box::new(request)),
            wire,
            phase,
        })
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Calling(_) => State::Calling,
            Phase::Proceeding(_) => State::Proceeding,
            Phase::Completed(_) => State::Completed,
            Phase::Accepted(_) => State::Accepted,
            Phase::Terminated => State::Terminated,
        }
    }

    /// The INVITE this transaction sends, until a final response arrives.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// Frees the output queues' memory once drained.
    pub(crate) fn release_outbox(&mut self) {
        self.core.out.release();
    }

    /// Where the INVITE goes (and its CANCEL must go, §9.1).
    pub fn destination(&self) -> &A {
        &self.core.peer
    }

    /// A response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        let phase = std::mem::replace(&mut self.phase, Phase::Terminated);
        self.phase = match phase {
            waiting @ (Phase::Calling(_) | Phase::Proceeding(_)) => {
                let phase = on_response(
                    &mut self.core,
                    self.request.as_deref(),
                    now,
                    response,
                    waiting,
                );
                if matches!(
                    phase,
                    Phase::Completed(_) | Phase::Accepted(_) | Phase::Terminated
                ) {
                    self.request = None;
                    self.wire = Bytes::new();
                }
                phase
            }
            Phase::Completed(c) => {
                // A retransmitted final: ACK it again, tell nobody.
                if response.status.is_final()
                    && !response.status.is_success()
                    && let Some(ack) = &c.ack
                {
                    self.core.send(ack);
                }
                Phase::Completed(c)
            }
            Phase::Accepted(a) => {
                if response.status.is_success() {
                    self.core.out.event(TransactionEvent::Response(response));
                }
                Phase::Accepted(a)
            }
            Phase::Terminated => Phase::Terminated,
        };
    }

    /// The TU sent a CANCEL for this INVITE: if no final response arrives
    /// within 64·T1, the transaction gives up (§9.1). Returns `false` when
    /// there is nothing to cancel (no provisional yet, or already final).
    pub fn cancel_sent(&mut self, now: Instant) -> bool {
        match &mut self.phase {
            Phase::Proceeding(p) => {
                p.cancel_wait = Some(after(now, self.core.timers.timeout()));
                true
            }
            _ => false,
        }
    }

    /// The transport could not deliver the request or an ACK (§17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.phase, Phase::Terminated) {
            self.core.out.event(TransactionEvent::TransportError);
            self.phase = terminate(&mut self.core);
        }
    }

    /// The earliest armed timer.
    pub fn next_timer(&self) -> Option<(Instant, Timer)> {
        match &self.phase {
            Phase::Calling(c) => {
                let b = (c.timeout, Timer::B);
                Some(c.retransmit.map_or(b, |a| {
                    if a.next < c.timeout {
                        (a.next, Timer::A)
                    } else {
                        b
                    }
                }))
            }
            Phase::Proceeding(p) => p.cancel_wait.map(|at| (at, Timer::Cancel)),
            Phase::Completed(c) => Some((c.until, Timer::D)),
            Phase::Accepted(a) => Some((a.until, Timer::M)),
            Phase::Terminated => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// Fires every timer that has expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..MAX_FIRINGS {
            match self.next_timer() {
                Some((at, timer)) if at <= now => self.fire(now, timer),
                _ => break,
            }
        }
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        let phase = std::mem::replace(&mut self.phase, Phase::Terminated);
        self.phase = match (phase, timer) {
            // A caller late enough to find B due too gets the timeout
            // alone, not a last retransmission just before it.
            (Phase::Calling(mut c), Timer::A) if c.timeout > now => {
                self.core.send(&self.wire);
                if let Some(a) = &mut c.retransmit {
                    a.fire(now);
                }
                Phase::Calling(c)
            }
            (Phase::Calling(_), _) | (Phase::Proceeding(_), _) => {
                let timer = if timer == Timer::A { Timer::B } else { timer };
                self.core.out.event(TransactionEvent::Timeout(timer));
                terminate(&mut self.core)
            }
            (Phase::Completed(_), _) | (Phase::Accepted(_), _) => terminate(&mut self.core),
            (Phase::Terminated, _) => Phase::Terminated,
        };
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.core.out.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.core.out.poll_event()
    }
}
