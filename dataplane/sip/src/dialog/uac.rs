//! The UAC half of a dialog: responses to the requests we sent in it.
//! A 2xx to an INVITE confirms the dialog (route set recomputed, §13.2.2.4),
//! refreshes the target and the session timer, and is ACKed — again for
//! each retransmission; 491 arms the §14.1 back-off; 422 raises our
//! Min-SE; 481 and 408 end the dialog (§12.2.1.2); a non-2xx final to the
//! dialog-creating INVITE ends the early dialog.

use std::time::Instant;

use super::reliability::glare_backoff;
use super::session_timer::SessionTimer;
use super::state::contact_uri;
use super::{Dialog, DialogEvent, DialogState, Side, Termination};
use crate::message::Response;
use crate::method::Method;
use crate::transaction::{Address, after};

impl<A: Address> Dialog<A> {
    /// A response to a request we sent in this dialog (or to the INVITE
    /// that created it), as the transaction layer delivered it.
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if self.state == DialogState::Terminated {
            return;
        }
        let (seq, status) = (cseq.seq, response.status);
        let offer = matches!(cseq.method, Method::Invite | Method::Update);
        if status.is_provisional() {
            // A reliable 1xx may refresh the target of an early dialog.
            if cseq.method == Method::Invite
                && self.state == DialogState::Early
                && status.as_u16() > 100
                && let Some(uri) = contact_uri(&response.headers)
            {
                self.remote_target = uri;
            }
            return;
        }
        if cseq.method == Method::Invite && status.is_success() {
            self.on_invite_2xx(now, response, seq);
            return;
        }
        if offer && self.ours_pending.as_ref().is_some_and(|(s, _)| *s == seq) {
            self.ours_pending = None;
        }
        match status.as_u16() {
            // A 2xx to INFO, REFER, OPTIONS, … refreshes nothing (RFC 4028
            // §7.2: only a 2xx to a session refresh sets the timer; it
            // would otherwise drop it when the 2xx has no Session-Expires).
            _ if status.is_success() && cseq.method == Method::Update => {
                // 2xx to UPDATE: a target refresh and a session refresh.
                if let Some(uri) = contact_uri(&response.headers) {
                    self.remote_target = uri;
                }
                self.session = SessionTimer::from_2xx(now, &response.headers, true);
            }
            481 | 408 => self.terminate(Termination::Gone),
            491 if offer => {
                let wait = glare_backoff(self.side == Side::Uac, &mut self.ids);
                self.retry_at = Some(after(now, wait));
            }
            422 if offer => {
                if let Some(min_se) = super::session_timer::min_se_of_422(response) {
                    self.min_se = self.min_se.max(min_se);
                    self.events.push_back(DialogEvent::SessionIntervalRaised {
                        min_se: self.min_se,
                    });
                }
            }
            _ => {}
        }
        if cseq.method == Method::Invite
            && seq == self.invite_cseq
            && self.side == Side::Uac
            && self.state == DialogState::Early
        {
            self.terminate(Termination::Rejected);
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, response: &Response, seq: u32) {
        // A retransmission of a 2xx we ACKed gets the same ACK again.
        if let Some((acked, wire)) = &self.last_ack
            && *acked == seq
        {
            let wire = wire.clone();
            self.send(self.remote.clone(), wire);
            return;
        }
        if self.answered == Some(seq) {
            // Retransmitted while the TU prepares its ACK.
            return;
        }
        if self.ours_pending.as_ref().is_some_and(|(s, _)| *s == seq) {
            self.ours_pending = None;
        }
        if self.state == DialogState::Early {
            if let Ok(mut routes) = response.headers.record_routes() {
                routes.reverse();
                self.route_set = routes;
            }
            self.state = DialogState::Confirmed;
            self.events.push_back(DialogEvent::Confirmed);
        }
        if let Some(uri) = contact_uri(&response.headers) {
            self.remote_target = uri;
        }
        self.session = SessionTimer::from_2xx(now, &response.headers, true);
        self.answered = Some(seq);
        if !self.config.auto_ack || self.ack(now, seq).is_err() {
            self.events.push_back(DialogEvent::AckDue { cseq: seq });
        }
    }

    /// A request we sent in the dialog got no response (Timer B or F) or
    /// could not be delivered: as a 408, the dialog ends (§12.2.1.2).
    pub fn request_failed(&mut self, _now: Instant) {
        self.terminate(Termination::Gone);
    }
}
