//! The INVITE server transaction (RFC 3261 §17.2.1, figure 7, with the
//! Accepted state of RFC 6026 §7.1).
//!
//! Proceeding answers a retransmitted INVITE with the latest provisional
//! and sends 100 Trying itself if the TU stays silent for 200 ms (or at
//! once, when asked). A 2xx from the TU moves to Accepted, which absorbs
//! INVITE retransmissions, passes further 2xx from the TU (the dialog's
//! retransmissions) through and hands an ACK that reuses the INVITE's
//! branch to the TU, until Timer L. A non-2xx final moves to Completed,
//! which retransmits it on Timer G (unreliable transports: T1 doubling up
//! to T2) until the ACK arrives (absorbed, then Confirmed until Timer I)
//! or Timer H gives up.

use std::time::Instant;

use bytes::Bytes;

use super::timers::{Backoff, TRYING_DELAY, after};
use super::{
    Address, Core, MAX_FIRINGS, State, Timer, Timers, TransactionError, TransactionEvent, Transmit,
    wire_response,
};
use crate::builder::ResponseBuilder;
use crate::message::{Request, Response, StatusCode};
use crate::method::Method;

#[derive(Debug, Clone)]
enum Phase {
    Proceeding {
        /// When to send 100 Trying if the TU has sent nothing.
        trying: Option<Instant>,
        /// The latest provisional, for retransmitted INVITEs.
        last: Option<Bytes>,
    },
    Completed {
        response: Bytes,
        /// Timer G; `None` on reliable transports.
        retransmit: Option<Backoff>,
        /// Timer H.
        timeout: Instant,
    },
    /// Timer I.
    Confirmed {
        until: Instant,
    },
    /// Timer L.
    Accepted {
        until: Instant,
    },
    Terminated,
}

/// One INVITE server transaction.
#[derive(Debug)]
pub struct ServerInvite<A> {
    core: Core<A>,
    /// The INVITE, dropped with the final response: the states after it
    /// resend that response or absorb retransmissions by key.
    request: Option<Box<Request>>,
    phase: Phase,
    /// The To tag of the latest response sent, for CANCEL answers (§9.2).
    local_tag: Option<Bytes>,
    final_status: Option<StatusCode>,
}

impl<A: Address> ServerInvite<A> {
    /// Starts the transaction for a received INVITE; responses go to
    /// `respond_to`. With `trying_now`, 100 Trying is queued at once;
    /// otherwise after 200 ms unless the TU responds first.
    pub fn new(
        now: Instant,
        request: Request,
        respond_to: A,
        timers: Timers,
        trying_now: bool,
    ) -> Result<Self, TransactionError> {
        if request.method != Method::Invite {
            return Err(TransactionError::WrongMethod);
        }
        let mut tx = Self {
            core: Core::new(respond_to, timers),
            request: Some(Box::new(request)),
            phase: Phase::Proceeding {
                trying: Some(after(now, TRYING_DELAY)),
                last: None,
            },
            local_tag: None,
            final_status: None,
        };
        if trying_now {
            tx.send_trying(now);
        }
        Ok(tx)
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Proceeding { .. } => State::Proceeding,
            Phase::Completed { .. } => State::Completed,
            Phase::Confirmed { .. } => State::Confirmed,
            Phase::Accepted { .. } => State::Accepted,
            Phase::Terminated => State::Terminated,
        }
    }

    /// The INVITE, until the final response is sent.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// Frees the output queues' memory once drained.
    pub(crate) fn release_outbox(&mut self) {
        self.core.out.release();
    }

    /// The To tag of the latest response sent, if it had one.
    pub fn local_tag(&self) -> Option<&Bytes> {
        self.local_tag.as_ref()
    }

    /// The final status sent, if any.
    pub fn final_status(&self) -> Option<StatusCode> {
        self.final_status
    }

    /// Sends 100 Trying now unless a provisional or final went out already.
    pub fn send_trying(&mut self, _now: Instant) {
        if let Phase::Proceeding {
            trying: trying @ Some(_),
            last,
        } = &mut self.phase
        {
            *trying = None;
            if let Some(Ok(r)) = self.request.as_deref().map(|request| {
                ResponseBuilder::reply_to(&request.headers, StatusCode::TRYING, None).build()
            }) {
                let wire = wire_response(&r);
                self.core.send(&wire);
                *last = Some(wire);
            }
        }
    }

    /// The TU's response. Provisionals and the final are sent in
    /// Proceeding; further 2xx are passed through in Accepted.
    pub fn respond(&mut self, now: Instant, response: Response) -> Result<(), TransactionError> {
        let status = response.status;
        match (&mut self.phase, status.is_success()) {
            (Phase::Proceeding { .. }, _) => {}
            (Phase::Accepted { .. }, true) => {
                self.core.send(&wire_response(&response));
                return Ok(());
            }
            _ => return Err(TransactionError::WrongState(self.state())),
        }
        if let Some(tag) = response
            .headers
            .to()
            .ok()
            .and_then(|to| to.params.value_bytes("tag"))
        {
            // A copy: the slice would keep the whole response alive.
            self.local_tag = Some(Bytes::copy_from_slice(&tag));
        }
        let wire = wire_response(&response);
        self.core.send(&wire);
        let timers = self.core.timers;
        if status.is_provisional() {
            self.phase = Phase::Proceeding {
                trying: None,
                last: Some(wire),
            };
        } else if status.is_success() {
            self.request = None;
            self.final_status = Some(status);
            self.phase = Phase::Accepted {
                until: after(now, timers.timeout()),
            };
        } else {
            self.request = None;
            self.final_status = Some(status);
            self.phase = Phase::Completed {
                response: wire,
                retransmit: (!self.core.reliable)
                    .then(|| Backoff::start(now, timers.t1, Some(timers.t2))),
                timeout: after(now, timers.timeout()),
            };
        }
        Ok(())
    }

    /// A retransmitted INVITE or an ACK matched to this transaction.
    pub fn handle_request(&mut self, now: Instant, request: Request) {
        let ack = request.method == Method::Ack;
        match &mut self.phase {
            Phase::Proceeding { last, .. } if !ack => {
                if let Some(last) = last.clone() {
                    self.core.send(&last);
                }
            }
            Phase::Completed { response, .. } if !ack => {
                let response = response.clone();
                self.core.send(&response);
            }
            Phase::Completed { .. } => {
                let i = self.core.timers.i_k(self.core.reliable);
                self.phase = if i.is_zero() {
                    self.core.out.event(TransactionEvent::Terminated);
                    Phase::Terminated
                } else {
                    Phase::Confirmed {
                        until: after(now, i),
                    }
                };
            }
            Phase::Accepted { .. } if ack => {
                self.core.out.event(TransactionEvent::Ack(request));
            }
            // An ACK before any final, and everything in Confirmed,
            // Accepted (INVITE) or Terminated, is absorbed.
            _ => {}
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
            Phase::Proceeding { trying, .. } => trying.map(|at| (at, Timer::Trying)),
            Phase::Completed {
                retransmit,
                timeout,
                ..
            } => {
                let h = (*timeout, Timer::H);
                Some(retransmit.map_or(h, |g| {
                    if g.next < *timeout {
                        (g.next, Timer::G)
                    } else {
                        h
                    }
                }))
            }
            Phase::Confirmed { until } => Some((*until, Timer::I)),
            Phase::Accepted { until } => Some((*until, Timer::L)),
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
                (Phase::Proceeding { .. }, _) => self.send_trying(now),
                // As for A and E: if H is due as well, it alone fires.
                (
                    Phase::Completed {
                        response,
                        retransmit: Some(g),
                        timeout,
                    },
                    Timer::G,
                ) if *timeout > now => {
                    g.fire(now);
                    let response = response.clone();
                    self.core.send(&response);
                }
                (Phase::Completed { .. }, _) => {
                    self.core.out.event(TransactionEvent::Timeout(Timer::H));
                    self.core.out.event(TransactionEvent::Terminated);
                    self.phase = Phase::Terminated;
                }
                (Phase::Confirmed { .. } | Phase::Accepted { .. }, _) => {
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
