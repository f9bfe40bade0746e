//! What the dialogs report, and hanging up. A missing ACK (64·T1), an
//! expired session timer (RFC 4028 §10) or a dialog that vanished under a
//! request (481/408, §12.2.1.2) ends the whole call: BYE on both legs.
//! When a leg's session timer asks us to refresh, we send UPDATE without a
//! body if the peer allows UPDATE (RFC 4028 §9 recommends no offer in it),
//! else a re-INVITE repeating our current SDP; 491 and 422 make the dialog
//! ask again, and a peer that refuses UPDATE gets the re-INVITE.

use std::time::Instant;

use codeb_sip::dialog::{DialogError, DialogEvent, Termination};
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::{DialogId, Method, Response};

use super::*;

impl Core {
    /// An event of one of the calls' dialogs (drained from the table).
    pub(crate) fn on_dialog_event(&mut self, now: Instant, id: DialogId, ev: DialogEvent) {
        let Some(&(key, side)) = self.calls.owners.get(&id) else {
            return;
        };
        // A referrer's dialog after its transfer answered is no longer its
        // side's leg: only its ACKs and its end matter (our BYE is out).
        let current = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| c.leg(side).dialog.as_ref() == Some(&id));
        if !current && !matches!(ev, DialogEvent::AckDue { .. } | DialogEvent::Terminated(_)) {
            return;
        }
        match ev {
            DialogEvent::Confirmed => {}
            // A 2xx to a re-INVITE of ours (the first ACK is sent when
            // the dialog is made, see `answer.rs`).
            DialogEvent::AckDue { cseq } => {
                if let Some(Err(e)) = self.calls.dialogs.update(&id, |d| d.ack(now, cseq)) {
                    tracing::warn!(call = key, ?side, error = %e, "could not ACK");
                }
            }
            DialogEvent::AckTimeout { .. } => {
                tracing::warn!(call = key, ?side, "no ACK for our 2xx; hanging up");
                self.note_end(key, "failed", "no ACK for our 2xx");
                self.hang_up(now, key);
            }
            DialogEvent::RetryRequest if self.join_backing_off(key, side) => {
                self.retry_join(now, key)
            }
            DialogEvent::RefreshDue
            | DialogEvent::RetryRequest
            | DialogEvent::SessionIntervalRaised { .. } => self.refresh(now, key, side),
            DialogEvent::PrackTimeout => {
                tracing::info!(call = key, "no PRACK for our reliable 1xx; rejecting");
                self.note_end(
                    key,
                    "failed",
                    "the caller did not PRACK our provisional response",
                );
                let status = StatusCode::SERVER_INTERNAL_ERROR;
                if self.is_inbound(key) {
                    self.note_failure(key, status.as_u16(), status.canonical_reason().as_bytes());
                    self.stats.virtual_number_refused += 1;
                }
                // A B that answered meanwhile gets its BYE there.
                self.fail_call(now, key, status);
            }
            DialogEvent::SessionExpired => {
                tracing::info!(call = key, ?side, "session timer expired; hanging up");
                self.note_end(key, "failed", "session timer expired");
                self.hang_up(now, key);
            }
            DialogEvent::Terminated(why) => {
                let Some(call) = self.calls.calls.get_mut(&key) else {
                    self.calls.owners.remove(&id);
                    return;
                };
                if !call.byes.iter().any(|(_, d)| *d == id) {
                    self.calls.owners.remove(&id);
                }
                if call.leg(side).dialog.as_ref() == Some(&id) {
                    call.leg_mut(side).dialog = None;
                }
                if why == Termination::Gone && call.phase != Phase::Ending && current {
                    tracing::info!(call = key, ?side, "dialog gone; hanging up");
                    self.note_end(key, "failed", "the far end's dialog is gone");
                    self.hang_up(now, key);
                }
            }
        }
    }

    /// Sends a session refresh on one leg.
    fn refresh(&mut self, now: Instant, key: CallKey, side: Side) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        let leg = call.leg(side);
        let (method, body) = if leg.update {
            (Method::Update, None)
        } else {
            (Method::Invite, Some(leg.sdp.clone()))
        };
        let sent = self.send_in_dialog(now, key, side, method, Sent::Refresh, |b| match body {
            Some(sdp) => b.body(&sdp_type(), sdp),
            None => b,
        });
        match sent {
            Ok(_) => tracing::debug!(call = key, ?side, "session refresh sent"),
            // The peer's own re-INVITE or UPDATE is in progress: our 2xx to
            // it restarts the session timer.
            Err(LegError::Dialog(DialogError::Pending)) => {}
            Err(e) => tracing::warn!(call = key, ?side, error = %e, "session refresh not sent"),
        }
    }

    /// The final response to a refresh of ours: an SDP answer updates the
    /// leg's media; a peer that refuses UPDATE gets a re-INVITE instead.
    pub(super) fn refresh_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        side: Side,
        resp: &Response,
    ) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let leg = call.leg_mut(side);
        if resp.status.is_success() && !resp.body.is_empty() {
            if let Some(n) = Sdp::parse(&resp.body, &SdpLimits::default())
                .ok()
                .and_then(|a| sdp::read_answer(&leg.media, &a).ok())
            {
                leg.negotiated = Some(n);
            }
            self.sync_media(key);
            return;
        }
        let refused = matches!(resp.status.as_u16(), 405 | 501);
        let was_update = resp
            .headers
            .cseq()
            .is_ok_and(|c| c.method == Method::Update);
        if refused && was_update && leg.update {
            leg.update = false;
            self.refresh(now, key, side);
        }
    }

    /// Whether the event journal is full: new placed calls and calls to
    /// virtual numbers, whose records are events, are refused while it is.
    pub fn set_journal_full(&mut self, full: bool) {
        self.calls.journal_full = full;
    }

    /// The switch is shutting down (SIGTERM): it takes no new call
    /// (INVITE 503, PlaceCall refused as no room, so the control plane
    /// places it elsewhere or later) and ends every call it carries, so
    /// far ends get their BYE or CANCEL and each placed or AI call's end
    /// is reported and journaled before the process exits. True while a
    /// call is still ending, or its end waits for its AI session to close
    /// (at most [`super::ai::AI_CLOSE_GRACE`]): a virtual number's call
    /// refused as it rang is gone from the table at once, its CallEnded
    /// not yet out.
    pub fn shut_down_calls(&mut self, now: Instant) -> bool {
        if !self.calls.draining {
            self.calls.draining = true;
            let keys: Vec<(CallKey, Phase, bool)> = self
                .calls
                .calls
                .values()
                .map(|c| (c.key, c.phase, c.origin.is_some()))
                .collect();
            tracing::info!(calls = keys.len(), "shutting down: ending every call");
            for (key, phase, placed) in keys {
                match (phase, placed) {
                    (Phase::Ending, _) => {}
                    (_, true) => self.end_placed(now, key, "failed", "the switch shut down"),
                    (Phase::Routing, false) => {
                        self.fail_call(now, key, StatusCode::SERVICE_UNAVAILABLE)
                    }
                    (Phase::Answered | Phase::Confirmed, false) => self.hang_up(now, key),
                }
            }
            self.drain(now);
        }
        !self.calls.calls.is_empty() || !self.calls.placed.ai.is_empty()
    }

    /// True once [`Self::shut_down_calls`] has begun.
    pub fn draining(&self) -> bool {
        self.calls.draining
    }

    /// Ends an answered call on both legs.
    pub(super) fn hang_up(&mut self, now: Instant, key: CallKey) {
        self.ending(now, key);
        self.hang_up_side(now, key, Side::A);
        self.hang_up_side(now, key, Side::B);
        self.hang_up_referrer(now, key);
        self.settle(now, key);
    }

    /// Marks an answered call as ending, counting it once as completed;
    /// a transfer still ringing is cancelled.
    pub(super) fn ending(&mut self, now: Instant, key: CallKey) {
        if let Some(call) = self.calls.calls.get_mut(&key)
            && call.phase != Phase::Ending
        {
            call.phase = Phase::Ending;
            self.calls.completed += 1;
            self.cancel_branches(now, key);
            self.join_interrupted(now, key);
            self.stop_ai(key);
            self.placed_ending(now, key);
        }
    }

    /// Sends BYE on one side, if that dialog is up; towards A it waits for
    /// A's ACK of our 2xx (§15), which the dialog enforces.
    pub(super) fn hang_up_side(&mut self, now: Instant, key: CallKey, side: Side) {
        match self.send_in_dialog(now, key, side, Method::Bye, Sent::Bye, |b| b) {
            Ok(_) => {
                // A BYE waiting for A's ACK is out now (the ACK came, or
                // never will: our 2xx timed out).
                if side == Side::A
                    && let Some(call) = self.calls.calls.get_mut(&key)
                {
                    call.bye_a_when_acked = false;
                }
            }
            Err(LegError::Dialog(DialogError::WrongState)) if side == Side::A => {
                if let Some(call) = self.calls.calls.get_mut(&key)
                    && call.answered_at.is_some()
                {
                    call.bye_a_when_acked = true;
                }
            }
            Err(LegError::NoDialog | LegError::Dialog(DialogError::Terminated)) => {}
            Err(e) => tracing::warn!(call = key, ?side, error = %e, "could not send BYE"),
        }
    }
}
