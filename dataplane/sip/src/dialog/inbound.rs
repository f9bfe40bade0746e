//! The UAS half of a dialog: checking requests received in it (§12.2.2
//! CSeq order, §14 glare, RFC 4028 Min-SE, ACK for our 2xx), building our
//! responses (§12.1.1 tag, Contact and Record-Route; RFC 4028 §9
//! Session-Expires) and recording what we sent (confirmation, target
//! refresh, 2xx retransmission, session timer).

use std::time::Instant;

use super::reliability::{Unacked, retry_after_secs};
use super::session_timer::{SessionTimer, answer, reject_422, render, too_small};
use super::state::contact_uri;
use super::{Dialog, DialogEvent, DialogState, Side, Termination};
use crate::builder::ResponseBuilder;
use crate::header::{KnownHeader, Refresher};
use crate::message::{Request, Response, StatusCode};
use crate::method::Method;
use crate::transaction::{Address, wire_response};

/// What to do with a request received in the dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Hand it to the TU, which answers it (use [`Dialog::reply`], then
    /// [`Dialog::sent_response`]).
    Accept,
    /// Answer with this response and go no further: 500 for an
    /// out-of-order CSeq (§12.2.2), 491 for a re-INVITE or UPDATE offer
    /// while ours is pending (§14.2, RFC 3311), 500 with Retry-After for a
    /// second INVITE before our final (§14.2), 422 for a session interval
    /// below our Min-SE (RFC 4028 §9), 481 on a terminated dialog, but
    /// 200 for the peer's BYE crossing ours.
    Reject(Response),
    /// The ACK for our 2xx: its retransmissions have stopped. It may carry
    /// the answer to an offer in our 2xx.
    Ack,
    /// Nothing to do (a retransmitted or late ACK).
    Ignore,
}

impl<A: Address> Dialog<A> {
    fn reject(&self, request: &Request, status: StatusCode, reason: Option<&str>) -> Incoming {
        let mut b = ResponseBuilder::reply_to(&request.headers, status, Some(&self.id.local_tag));
        if let Some(reason) = reason {
            b = b.reason(reason.to_owned());
        }
        b.build().map_or(Incoming::Ignore, Incoming::Reject)
    }

    /// Checks a request received in this dialog (after the transaction
    /// layer created its server transaction, or, for ACK, passed it up).
    pub fn handle_request(&mut self, _now: Instant, request: &Request) -> Incoming {
        let Ok(cseq) = request.headers.cseq() else {
            return self.reject(request, StatusCode::BAD_REQUEST, None);
        };
        let seq = cseq.seq;
        match request.method {
            Method::Ack => {
                return match &self.unacked {
                    Some(u) if u.cseq == seq => {
                        self.unacked = None;
                        Incoming::Ack
                    }
                    _ => Incoming::Ignore,
                };
            }
            // Hop by hop: the transaction layer matches it to its INVITE.
            Method::Cancel => return Incoming::Accept,
            _ => {}
        }
        if self.state == DialogState::Terminated {
            // BYEs that cross: the peer hung up as we did. Its BYE is
            // answered 200, not 481, while ours is still out (RFC 5407
            // §3.2.1); both ends take the dialog as ended either way.
            if request.method == Method::Bye && self.ended == Some(Termination::LocalBye) {
                return self.reject(request, StatusCode::OK, None);
            }
            return self.reject(request, StatusCode::CALL_DOES_NOT_EXIST, None);
        }
        if self.remote_seq.is_some_and(|r| seq < r) {
            return self.reject(
                request,
                StatusCode::SERVER_INTERNAL_ERROR,
                Some("Out of Order"),
            );
        }
        self.remote_seq = Some(seq);
        match request.method {
            Method::Invite | Method::Update => self.check_offer(request, seq),
            Method::Bye => {
                self.terminate(Termination::RemoteBye);
                Incoming::Accept
            }
            _ => Incoming::Accept,
        }
    }

    /// Re-INVITE and UPDATE: glare, session interval, target refresh.
    fn check_offer(&mut self, request: &Request, seq: u32) -> Incoming {
        let invite = request.method == Method::Invite;
        // An UPDATE without a body is no offer and cannot collide; one
        // with a body collides with ours in a request or in a reliable
        // provisional awaiting its PRACK (RFC 3311 §5.2).
        let collides = if invite {
            // Our re-INVITE, or our UPDATE with an offer (RFC 3261 §14.1,
            // RFC 3311 §5.2); not a bodiless refresh UPDATE.
            self.ours_pending
                .as_ref()
                .is_some_and(|(_, m)| *m == Method::Invite || self.ours_offers)
        } else {
            !request.body.is_empty() && (self.offer_pending() || self.our_offer_open)
        };
        if collides {
            return self.reject(
                request,
                StatusCode::new(491).unwrap_or(StatusCode::BUSY_HERE),
                None,
            );
        }
        // Their INVITE still pending (§14.2), or an UPDATE offer while
        // the offer of the INVITE that created the dialog is unanswered
        // (RFC 3311 §5.2): 500 with a Retry-After of 0-10 s.
        let unanswered = !invite && !request.body.is_empty() && self.their_offer_open;
        if (invite && self.theirs_pending.is_some()) || unanswered {
            let secs = retry_after_secs(&mut self.ids);
            return ResponseBuilder::reply_to(
                &request.headers,
                StatusCode::SERVER_INTERNAL_ERROR,
                Some(&self.id.local_tag),
            )
            .header(KnownHeader::RetryAfter, secs.to_string())
            .build()
            .map_or(Incoming::Ignore, Incoming::Reject);
        }
        if let Some(min_se) = self
            .config
            .session_timer
            .and_then(|c| too_small(&request.headers, &c))
        {
            return reject_422(&request.headers, &self.id.local_tag, min_se)
                .map_or(Incoming::Ignore, Incoming::Reject);
        }
        if invite {
            self.theirs_pending = Some(seq);
        }
        self.pending_target = contact_uri(&request.headers).map(|uri| (seq, uri));
        Incoming::Accept
    }

    /// A response to `request` (received in this dialog, or the INVITE that
    /// creates it) with our tag; our Contact on 1xx/2xx to INVITE and
    /// UPDATE; the Record-Route of the dialog-creating INVITE (§12.1.1);
    /// and on a 2xx to INVITE or UPDATE, the Session-Expires we settle on
    /// (with `Require: timer` when the UAC is to refresh, RFC 4028 §9).
    pub fn reply(&self, request: &Request, status: StatusCode) -> ResponseBuilder {
        let mut b = ResponseBuilder::reply_to(&request.headers, status, Some(&self.id.local_tag));
        let offer = matches!(request.method, Method::Invite | Method::Update);
        let creating = self.side == Side::Uas
            && request.method == Method::Invite
            && request
                .headers
                .cseq()
                .is_ok_and(|c| c.seq == self.invite_cseq);
        if creating && status.as_u16() > 100 {
            for rr in request.headers.get_all(KnownHeader::RecordRoute) {
                b = b.header(KnownHeader::RecordRoute, rr.clone());
            }
        }
        if offer && status.as_u16() > 100 && status.as_u16() < 300 {
            b = b.contact(&self.local.contact);
        }
        if offer
            && status.is_success()
            && let Some(config) = self.config.session_timer
        {
            let (interval, refresher) = answer(&request.headers, &config);
            let interval = interval.max(self.min_se);
            b = b.header(KnownHeader::SessionExpires, render(interval, refresher));
            if refresher == Refresher::Uac {
                b = b.header(KnownHeader::Require, "timer");
            }
        }
        b
    }

    /// Records a response we sent (through the transaction layer) to a
    /// request of this dialog: a 2xx to an INVITE confirms the dialog,
    /// applies a pending target refresh, (re)starts the session timer from
    /// its Session-Expires and is retransmitted until ACKed; a non-2xx
    /// final to the dialog-creating INVITE ends the early dialog.
    pub fn sent_response(&mut self, now: Instant, response: &Response) {
        // A terminated dialog keeps no timers, whatever the TU still sends.
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if self.state == DialogState::Terminated {
            return;
        }
        let (seq, status) = (cseq.seq, response.status);
        if !matches!(cseq.method, Method::Invite | Method::Update) || status.is_provisional() {
            return;
        }
        if cseq.method == Method::Invite && self.theirs_pending == Some(seq) {
            self.theirs_pending = None;
        }
        if cseq.method == Method::Invite && seq == self.invite_cseq {
            // A final response ends the provisional ones (§3 of RFC 3262:
            // no more retransmissions), and answers the INVITE's offer
            // (or ends the dialog).
            self.late_rseq = self
                .reliable_1xx
                .take()
                .filter(|_| status.is_success())
                .map(|r| r.rseq);
            self.their_offer_open = false;
            self.our_offer_open = false;
        }
        let target = self.pending_target.take_if(|(s, _)| *s == seq);
        if !status.is_success() {
            if cseq.method == Method::Invite
                && self.side == Side::Uas
                && seq == self.invite_cseq
                && self.state == DialogState::Early
            {
                self.terminate(Termination::Rejected);
            }
            return;
        }
        if let Some((_, uri)) = target {
            self.remote_target = uri;
        }
        self.session = SessionTimer::from_2xx(now, &response.headers, false);
        if cseq.method == Method::Invite {
            if self.state == DialogState::Early {
                self.state = DialogState::Confirmed;
                self.events.push_back(DialogEvent::Confirmed);
            }
            let to = match response.headers.top_via() {
                Ok(via) => self.remote.respond_to(&via),
                Err(_) => self.remote.clone(),
            };
            self.unacked = Some(Unacked::new(
                now,
                seq,
                wire_response(response),
                to,
                &self.config.timers,
            ));
        }
    }
}
