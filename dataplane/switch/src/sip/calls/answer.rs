//! A branch answers: the B-leg dialog is made from its 2xx and ACKed (with
//! the INVITE's credentials, §13.2.2.4), the other forks are cancelled, A
//! gets our 2xx through its dialog (which retransmits it until the ACK).
//! A 2xx from a losing fork is ACKed and hung up. Also how a call ends:
//! a final failure for A, and the bookkeeping that frees a call.

use std::time::Instant;

use codeb_sip::header::KnownHeader;
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::{Dialog, Method, Request, Response, StatusCode};

use super::*;

impl Core {
    pub(super) fn on_branch_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: Response,
    ) {
        // A retransmitted 2xx of a dialog we keep: the dialog ACKs it again.
        if let Some(id) = self.calls.dialogs.find_response(&resp) {
            self.calls
                .dialogs
                .update(&id, |d| d.handle_response(now, &resp));
            return;
        }
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let Some(branch) = call.branches.get(bi) else {
            return;
        };
        let wanted = call.phase == Phase::Routing && call.b.dialog.is_none();
        let ending = call.phase == Phase::Ending;
        let (invite, flow) = (branch.invite.clone(), branch.flow);
        let Some(dialog) = self.b_dialog(now, &invite, &resp, flow) else {
            return;
        };
        // A transfer's target answering as the call ends (its 2xx crossed
        // our CANCEL) is hung up as a losing fork is: there is no call
        // left to hand over.
        if self.transfer_branch(key, bi) && !ending {
            return self.transfer_answered(now, key, bi, dialog, &resp);
        }
        if !wanted {
            // Another fork won, or A gave up meanwhile (§13.2.2.4: ACK, then
            // BYE). The branch has its final response: the call waits for
            // the BYE only, not for the INVITE transaction's end.
            if let Some(b) = self
                .calls
                .calls
                .get_mut(&key)
                .and_then(|c| c.branches.get_mut(bi))
            {
                b.dropped = true;
            }
            return self.drop_fork(now, key, dialog);
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let negotiated = Sdp::parse(&resp.body, &SdpLimits::default())
            .ok()
            .and_then(|a| sdp::read_answer(&call.b.media, &a).ok());
        let id = match self.calls.dialogs.insert(dialog) {
            Ok(id) => id,
            Err(e) => {
                // Two dialogs per call fit by construction; if this ever
                // fails, B's dialog is lost and A must not hang on.
                tracing::error!(call = key, error = %e, "B-leg dialog not kept");
                self.note_end(key, "failed", "the callee's dialog could not be kept");
                return self.fail_call(now, key, StatusCode::SERVER_INTERNAL_ERROR);
            }
        };
        self.calls.owners.insert(id.clone(), (key, Side::B));
        call.b.dialog = Some(id);
        if let Some(b) = call.branches.get_mut(bi) {
            b.won = true;
        }
        call.b.update = resp
            .headers
            .allow()
            .is_ok_and(|m| m.contains(&Method::Update));
        call.phase = Phase::Answered;
        call.answered_at = Some(now);
        let others: Vec<TransactionId> = call
            .branches
            .iter()
            .enumerate()
            .filter(|(i, b)| *i != bi && b.failed.is_none() && !b.dropped)
            .map(|(_, b)| b.tx)
            .collect();
        for tx in others {
            let _ = self.layer.cancel(now, tx);
        }
        if negotiated.is_none() {
            tracing::info!(call = key, "B answered without a usable SDP answer");
            self.note_end(key, "failed", "the callee's answer has no usable SDP");
            // A placed call's callee did pick up: it is reported answered
            // (and so never rung again by a retry), and ended now.
            let at_ms = self.wall_ms(now);
            if let Some(o) = self
                .calls
                .calls
                .get_mut(&key)
                .and_then(|c| c.origin.as_mut())
                && o.answered_at_ms.is_none()
            {
                o.answered_at_ms = Some(at_ms);
                self.placed_ending(now, key);
            }
            self.hang_up_side(now, key, Side::B);
            return self.fail_call(now, key, StatusCode::NOT_ACCEPTABLE_HERE);
        }
        if let Some(call) = self.calls.calls.get_mut(&key) {
            call.b.negotiated = negotiated;
        }
        self.sync_media(key);
        self.start_recording(now, key);
        self.answer_a(now, key);
        self.placed_answered(now, key);
        tracing::info!(call = key, "call answered");
    }

    /// B's dialog from its 2xx, ACKed at once. The dialog leaves the ACK's
    /// credentials to us: §13.2.2.4 wants the INVITE's (a trunk's digest
    /// answer) on it.
    fn b_dialog(
        &mut self,
        now: Instant,
        invite: &Request,
        resp: &Response,
        flow: Flow,
    ) -> Option<Dialog<Flow>> {
        let local = self.dialog_local(&flow)?;
        let config = self.dialog_config(Side::B);
        let mut d = match Dialog::uac(now, invite, resp, local, flow, config, &mut self.ids) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(error = %e, "a 2xx from B that makes no dialog");
                return None;
            }
        };
        // The ACK and every later request (and the ACK again for a
        // retransmitted 2xx) follow the route set or the trunk's Contact.
        if let Some(hop) = self.dialog_next_hop(&d) {
            tracing::debug!(from = %flow.peer(), to = %hop.peer(), "B's dialog goes by its next hop");
            d.set_remote(hop);
        }
        let acked = resp
            .headers
            .cseq()
            .map_err(LegError::from)
            .and_then(|c| Ok(d.ack_builder(c.seq)?))
            .and_then(|mut b| {
                for name in [KnownHeader::Authorization, KnownHeader::ProxyAuthorization] {
                    for v in invite.headers.get_all(name) {
                        b = b.header(name, v.clone());
                    }
                }
                Ok(b.build()?)
            })
            .and_then(|ack| Ok(d.send_ack(now, &ack)?));
        if let Err(e) = acked {
            tracing::warn!(error = %e, "could not ACK B's 2xx");
        }
        // Confirmed and AckDue are handled right here.
        while d.poll_event().is_some() {}
        Some(d)
    }

    /// A losing fork's dialog: its ACK goes out, then BYE; the dialog never
    /// enters the table (a retransmitted 2xx makes and ends it again).
    pub(super) fn drop_fork(&mut self, now: Instant, key: CallKey, mut d: Dialog<Flow>) {
        let flow = *d.remote();
        let bye = d
            .request(Method::Bye)
            .map_err(LegError::from)
            .and_then(|b| Ok(b.build()?));
        while let Some(t) = d.poll_transmit() {
            self.queue(t.destination, t.payload);
        }
        let sent = bye.and_then(|req| Ok(self.layer.send_request(now, req, flow)?));
        match sent {
            Ok(tx) => {
                self.calls.by_tx.insert(tx, key);
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.sent.push((tx, Side::B, Sent::Bye));
                }
            }
            Err(e) => tracing::warn!(call = key, error = %e, "could not hang up a losing fork"),
        }
    }

    /// Our 2xx to A's INVITE with our SDP answer, through A's dialog: it
    /// adds our Contact and Session-Expires, and retransmits until the ACK.
    /// It waits while a reliable provisional response with SDP awaits its
    /// PRACK (RFC 3262 §3); the PRACK sends it.
    pub(super) fn answer_a(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let held = call
            .a
            .dialog
            .as_ref()
            .and_then(|id| self.calls.dialogs.get(id))
            .and_then(|d| d.reliable_pending())
            == Some(true);
        if held {
            tracing::debug!(call = key, "our 2xx waits for A's PRACK");
            return;
        }
        let (Some(a_tx), Some(a_id)) = (call.a_invite_tx.take(), call.a.dialog.clone()) else {
            return;
        };
        let Some(b) = self
            .calls
            .dialogs
            .get(&a_id)
            .map(|d| d.reply(&call.a_invite, StatusCode::OK))
        else {
            return;
        };
        // Allow and Supported, as §13.3.1.4 asks of a 2xx (the dialog
        // adds `timer` when it runs a session timer).
        let built = b
            .header(KnownHeader::Allow, super::super::core::ALLOW)
            .header(KnownHeader::Supported, "norefersub, 100rel, replaces")
            .header(KnownHeader::Server, "CodeB-Switch")
            .body(&sdp_type(), call.a.sdp.clone())
            .build();
        match built {
            Ok(ok) => {
                self.calls
                    .dialogs
                    .update(&a_id, |d| d.sent_response(now, &ok));
                self.respond(now, a_tx, ok);
            }
            Err(e) => {
                tracing::error!(call = key, error = %e, "could not build our 2xx to A");
                self.hang_up(now, key);
            }
        }
    }

    /// Ends a call that was never answered: A gets `status`, branches
    /// still ringing are cancelled, and a B that did answer (while our 2xx
    /// to A waited for A's PRACK) gets a BYE.
    pub(super) fn fail_call(&mut self, now: Instant, key: CallKey, status: StatusCode) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let b_answered = call.phase == Phase::Answered;
        call.phase = Phase::Ending;
        if let Some(a_tx) = call.a_invite_tx.take() {
            let reply = match call
                .a
                .dialog
                .as_ref()
                .and_then(|id| self.calls.dialogs.get(id))
            {
                Some(d) => d.reply(&call.a_invite, status),
                None => call.a_invite.reply(status, None),
            };
            if let Ok(r) = reply.header(KnownHeader::Server, "CodeB-Switch").build() {
                if let Some(id) = &call.a.dialog {
                    // Ends the early dialog (Rejected).
                    self.calls.dialogs.update(id, |d| d.sent_response(now, &r));
                }
                self.respond(now, a_tx, r);
            }
        }
        if b_answered {
            self.hang_up_side(now, key, Side::B);
        }
        self.cancel_branches(now, key);
        self.calls.failed += 1;
        self.settle(now, key);
    }

    /// CANCELs every branch still ringing.
    pub(super) fn cancel_branches(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let live: Vec<TransactionId> = call
            .branches
            .iter()
            .filter(|b| b.failed.is_none() && !b.won && !b.dropped)
            .map(|b| b.tx)
            .collect();
        for tx in live {
            let _ = self.layer.cancel(now, tx);
        }
    }

    /// Forgets an ending call once nothing of it is outstanding: no BYE
    /// unanswered or waiting for A's ACK, and every branch either the one
    /// that answered or over (a losing fork's late 2xx must still find its
    /// call, to be ACKed and hung up).
    ///
    /// An ending call's media goes at once, not with the call: nobody
    /// talks once BYEs or CANCELs are out, and waiting for their answers
    /// (up to 32 s when a peer is gone) would hold its ports and four
    /// sockets for nothing, which under overload is what runs a switch out
    /// of descriptors.
    pub(super) fn settle(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call.phase == Phase::Ending && !call.media.released {
            let media = call.media;
            call.media.released = true;
            self.calls.media.close(media);
        }
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let byes = call.sent.iter().any(|(_, _, k)| *k == Sent::Bye);
        let branches_done = call
            .branches
            .iter()
            .all(|b| b.won || b.dropped || b.failed.is_some());
        if call.phase == Phase::Ending && !byes && !call.bye_a_when_acked && branches_done {
            self.finish(now, key);
        }
    }

    /// Forgets a call and frees what it held. Its transactions' entries go
    /// when they terminate; a dialog still open (none should be) is dropped.
    fn finish(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.remove(&key) else {
            return;
        };
        if call.origin.is_none() {
            let ring_at = call.started + self.settings.ring_timeout;
            self.calls.placed.deadlines.remove(&(
                ring_at,
                key,
                super::originate::Deadline::RouteRing,
            ));
        }
        self.calls.media.close(call.media);
        if let Some(h) = call.media.handle {
            self.calls.by_media.remove(&h);
        }
        if let Some(k) = request_key(&call.a_invite)
            && self.calls.by_a_request.get(&k) == Some(&key)
        {
            self.calls.by_a_request.remove(&k);
        }
        for (_, id) in &call.byes {
            self.calls.owners.remove(id);
        }
        let referrer = call.referral.as_ref().map(|r| &r.dialog);
        for id in [&call.a.dialog, &call.b.dialog, &referrer.cloned()]
            .into_iter()
            .flatten()
        {
            self.calls.owners.remove(id);
            if self.calls.dialogs.remove(id).is_some() {
                tracing::debug!(call = key, "dialog dropped with its call");
            }
        }
        for t in &call.trunks {
            if let Some(load) = self.calls.trunks.get_mut(t) {
                load.active = load.active.saturating_sub(1);
            }
        }
        self.placed_finished(now, &call);
        let talk = call
            .answered_at
            .map(|a| now.saturating_duration_since(a).as_secs());
        tracing::info!(
            call = key,
            talk_secs = talk.unwrap_or(0),
            total_ms = now.saturating_duration_since(call.started).as_millis() as u64,
            "call ended"
        );
    }
}
