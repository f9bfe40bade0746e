//! Routing received messages: what the table does with a received message (after the transport screened it
//! with [`crate::screen_datagram`] and, ideally, [`super::stamp_received`]):
//!
//! * a request matching a server transaction is a retransmission: the
//!   transaction answers it (or absorbs it) and the TU never sees it;
//! * an ACK matching an INVITE server transaction is absorbed (non-2xx) or
//!   passed up (Accepted); any other ACK goes to the TU as
//!   [`Event::Ack`]: it acknowledges a 2xx, which is the dialog's business;
//! * any other new request creates a server transaction and an
//!   [`Event::Request`] (a CANCEL: [`Event::Cancel`], with the INVITE it
//!   targets), or, when the table is full, a stateless 503 with
//!   Retry-After;
//! * a response goes to the client transaction its branch and CSeq method
//!   name; responses with more than one Via (§18.1.2) or no transaction
//!   are dropped.

use std::time::Instant;

use super::layer::Event;
use super::machine::{Entry, Machine};
use super::{
    Address, ServerInvite, ServerNonInvite, TransactionKey, TransactionLayer, Transmit,
    wire_response,
};
use crate::builder::ResponseBuilder;
use crate::header::{KnownHeader, Via};
use crate::message::{Message, Request, Response, StatusCode};
use crate::method::Method;
use crate::validate::stateless_tag;

impl<A: Address> TransactionLayer<A> {
    /// A message from the transport, received from `source`.
    pub fn handle_message(&mut self, now: Instant, message: Message, source: A) {
        match message {
            Message::Request(r) => self.handle_request(now, r, source),
            Message::Response(r) => self.handle_response(now, r),
        }
    }

    /// A request from the transport.
    pub fn handle_request(&mut self, now: Instant, request: Request, source: A) {
        let (Ok(key), Ok(top_via)) = (TransactionKey::server(&request), request.headers.top_via())
        else {
            self.stats.malformed += 1;
            return;
        };
        let existing = self.keys.get(&key).copied();
        if request.method == Method::Ack {
            match existing.and_then(|id| self.entries.get_mut(&id).map(|e| (id, &mut **e))) {
                Some((
                    id,
                    Entry {
                        machine: Machine::ServerInvite(m),
                        ..
                    },
                )) => {
                    m.handle_request(now, request);
                    self.settle(now, id);
                }
                _ => {
                    self.stats.stray_acks += 1;
                    self.events.push_back(Event::Ack {
                        request,
                        transaction: None,
                    });
                }
            }
            return;
        }
        if let Some(id) = existing {
            self.stats.retransmissions_absorbed += 1;
            match self.entries.get_mut(&id).map(|e| &mut e.machine) {
                Some(Machine::ServerInvite(m)) => m.handle_request(now, request),
                Some(Machine::ServerNonInvite(m)) => m.handle_request(now, request),
                _ => {}
            }
            self.settle(now, id);
            return;
        }
        if self.full_for(&request) {
            self.reject_full(&request, &source, &top_via);
            return;
        }
        let respond_to = source.respond_to(&top_via);
        let timers = self.config.timers;
        let machine = if request.method == Method::Invite {
            ServerInvite::new(
                now,
                request.clone(),
                respond_to,
                timers,
                self.config.trying_immediately,
            )
            .map(Machine::ServerInvite)
        } else {
            ServerNonInvite::new(now, request.clone(), respond_to, timers)
                .map(Machine::ServerNonInvite)
        };
        let Ok(machine) = machine else {
            self.stats.malformed += 1;
            return;
        };
        let invite = if request.method == Method::Cancel {
            self.cancel_target(&request)
        } else {
            None
        };
        let id = self.insert(machine, key);
        self.events.push_back(if request.method == Method::Cancel {
            Event::Cancel {
                id,
                request,
                source,
                invite,
            }
        } else {
            Event::Request {
                id,
                request,
                source,
            }
        });
        self.settle(now, id);
    }

    /// 503 with Retry-After, sent statelessly (never for ACK, handled above).
    fn reject_full(&mut self, request: &Request, source: &A, top_via: &Via) {
        self.stats.rejected_full += 1;
        let tag = stateless_tag(&request.headers, self.config.tag_key);
        let response = ResponseBuilder::reply_to(
            &request.headers,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&tag),
        )
        .header(KnownHeader::RetryAfter, self.config.retry_after.to_string())
        .build();
        if let Ok(response) = response {
            self.transmits.push_back(Transmit {
                destination: source.respond_to(top_via),
                payload: wire_response(&response),
                transaction: None,
            });
        }
    }

    /// A response from the transport.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        if response.headers.via_count() != 1 {
            self.stats.stray_responses += 1;
            return;
        }
        let Ok(key) = TransactionKey::client_response(&response) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(id) = self.keys.get(&key).copied() else {
            self.stats.stray_responses += 1;
            return;
        };
        match self.entries.get_mut(&id).map(|e| &mut e.machine) {
            Some(Machine::ClientInvite(m)) => m.handle_response(now, response),
            Some(Machine::ClientNonInvite(m)) => m.handle_response(now, response),
            _ => self.stats.stray_responses += 1,
        }
        self.settle(now, id);
    }
}
