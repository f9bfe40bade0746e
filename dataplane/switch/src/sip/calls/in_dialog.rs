//! Requests inside a call's dialogs. Each first passes its dialog's checks
//! (CSeq order → 500, glare → 491, too short a session interval → 422,
//! ended dialog → 481); then BYE is relayed as a BYE on the other leg,
//! OPTIONS (a peer's ping of its call) is answered here,
//! INFO (DTMF) is relayed, and re-INVITE / UPDATE are answered here with
//! this leg's media (hold → recvonly and so on; our address never
//! changes). Also CANCEL from A and the ACK for our 2xx.

use std::time::Instant;

use bytes::Bytes;
use codeb_sip::dialog::{Incoming, Prack, Termination};
use codeb_sip::header::{KnownHeader, MediaType};
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::transaction::{CancelOutcome, TransactionId};
use codeb_sip::{DialogId, Method, Request, StatusCode};

use super::*;

impl Core {
    /// A CANCEL from A: the layer answers it and A's INVITE (487); the
    /// early dialog ends and the branches are cancelled.
    pub(crate) fn on_cancel(
        &mut self,
        now: Instant,
        id: TransactionId,
        invite: Option<TransactionId>,
    ) {
        let to_tag = invite
            .and_then(|i| self.calls.by_tx.get(&i))
            .and_then(|k| self.calls.calls.get(k))
            .and_then(|c| c.a.dialog.as_ref())
            .map(|d| d.local_tag.clone())
            .unwrap_or_else(|| self.ids.tag());
        match self.layer.answer_cancel(now, id, &to_tag) {
            Ok(CancelOutcome::Cancelled { invite }) => {
                *self
                    .stats
                    .responses
                    .entry(("INVITE".into(), 487))
                    .or_default() += 1;
                if let Some(key) = self.calls.by_tx.get(&invite).copied() {
                    self.abandon(now, key);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "CANCEL could not be answered"),
        }
    }

    /// A gave up before the answer (its INVITE has its 487): see
    /// [`Self::give_up`].
    fn abandon(&mut self, now: Instant, key: CallKey) {
        // A virtual number's caller gave up while its AI was starting.
        if self.is_inbound(key) {
            self.note_end(key, "far-hangup", "");
            let status = StatusCode::REQUEST_TERMINATED;
            self.note_failure(key, status.as_u16(), status.canonical_reason().as_bytes());
            self.stats.virtual_number_refused += 1;
        }
        self.give_up(now, key);
    }

    /// A's INVITE transaction could not send its response: A's connection
    /// closed and a new one to it failed (RFC 3261 §18.2.2; a phone or PBX
    /// behind NAT cannot be reached that way). Nothing more reaches A.
    /// Ringing (or B answered and our 2xx waits for A's PRACK): the call
    /// is given up as if A had cancelled it, instead of the callee
    /// ringing, or answering, for nobody. Our 2xx sent (it is what could
    /// not go): the call is hung up, instead of B (or the AI) talking to
    /// nobody until the 2xx times out.
    pub(super) fn caller_unreachable(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        tracing::info!(
            call = key,
            phase = ?call.phase,
            "the caller cannot be reached (its connection closed); the call is given up"
        );
        let ringing = call.phase == Phase::Routing
            || (call.phase == Phase::Answered && call.a_invite_tx.is_some());
        let placed = call.origin.is_some();
        const WHY: &str = "the caller's connection closed";
        if ringing {
            if let Some(call) = self.calls.calls.get_mut(&key) {
                call.a_invite_tx = None;
            }
            if self.is_inbound(key) {
                self.note_end(key, "far-hangup", WHY);
            }
            return self.give_up(now, key);
        }
        if placed {
            self.end_placed(now, key, "far-hangup", WHY);
        } else {
            self.hang_up(now, key);
        }
    }

    /// Ends a call A left before the answer: the early dialog ends, the
    /// branches are cancelled (a B that answered while our 2xx waited for
    /// A's PRACK, or could not reach A, is hung up), and the call is
    /// forgotten once they have all ended.
    fn give_up(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        call.a_invite_tx = None;
        let b_answered = call.phase == Phase::Answered;
        call.phase = Phase::Ending;
        if let Some(id) = &call.a.dialog {
            self.calls
                .dialogs
                .update(id, |d| d.terminate(Termination::Rejected));
        }
        if b_answered {
            self.hang_up_side(now, key, Side::B);
        }
        self.calls.failed += 1;
        self.cancel_branches(now, key);
        self.settle(now, key);
    }

    /// The ACK for a 2xx of ours: the dialog stops retransmitting; a BYE
    /// that waited for it goes out.
    pub(crate) fn on_ack(&mut self, now: Instant, req: Request) {
        let Some(id) = self.calls.dialogs.find_request(&req) else {
            return;
        };
        let Some(&(key, side)) = self.calls.owners.get(&id) else {
            return;
        };
        if self
            .calls
            .dialogs
            .update(&id, |d| d.handle_request(now, &req))
            != Some(Incoming::Ack)
        {
            return;
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call.phase == Phase::Answered {
            call.phase = Phase::Confirmed;
        }
        if side == Side::A && call.a.negotiated.is_none() && call.phase != Phase::Ending {
            return self.late_answer(now, key, &req);
        }
        if std::mem::take(&mut call.leg_mut(side).offer_in_2xx) {
            // It answers the offer our 2xx made to its offerless
            // re-INVITE: its address or codec may have moved. Without a
            // usable answer the session stays as it was.
            match call.leg(side).read_answer(&req.body) {
                Some(n) => {
                    call.leg_mut(side).negotiated = Some(n);
                    self.sync_media(key);
                }
                None => tracing::info!(
                    call = key,
                    ?side,
                    "the ACK did not answer the offer in our 2xx to a re-INVITE; media unchanged"
                ),
            }
        } else if side == Side::A && call.a.offer_in_1xx && !req.body.is_empty() {
            // Our 2xx repeated the description A's PRACK answered: it was
            // no offer, and this body answers nothing (RFC 3261 §13.2.1).
            tracing::debug!(
                call = key,
                "SDP in an ACK after the PRACK's answer; ignored"
            );
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if side == Side::A && call.bye_a_when_acked {
            call.bye_a_when_acked = false;
            self.hang_up_side(now, key, Side::A);
            self.settle(now, key);
        }
    }

    /// A's ACK answers the offer our 2xx made to its offerless INVITE:
    /// media starts (and a virtual number's AI); an ACK without a usable
    /// answer ends the call (RFC 3261 §13.3.1.4: the UAS hangs up).
    fn late_answer(&mut self, now: Instant, key: CallKey, ack: &Request) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let negotiated = call.a.read_answer(&ack.body);
        let Some(n) = negotiated else {
            tracing::info!(call = key, "late offer not answered in the ACK; hanging up");
            self.note_end(
                key,
                "failed",
                "the caller's ACK did not answer our SDP offer",
            );
            return self.hang_up(now, key);
        };
        call.a.negotiated = Some(n);
        self.a_answered_our_offer(now, key);
    }

    /// A answered the offer we made to its offerless INVITE (in its ACK,
    /// or its PRACK): media follows, and a virtual number's AI starts.
    fn a_answered_our_offer(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let ai_waits = call
            .origin
            .as_ref()
            .is_some_and(|o| o.inbound && o.ai.is_some())
            && !self.calls.placed.ai.contains_key(&key);
        self.sync_media(key);
        if ai_waits {
            self.start_ai(now, key);
        }
    }

    /// BYE, INFO, UPDATE and re-INVITE inside a dialog.
    pub(crate) fn on_in_dialog(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        _source: Flow,
    ) {
        let found = self
            .calls
            .dialogs
            .find_request(&req)
            .and_then(|d| Some((self.calls.owners.get(&d).copied()?, d)));
        let Some(((key, side), dialog)) = found else {
            if req.method == Method::Bye && self.bye_of_ours_out(&req) {
                // The BYEs cross: the peer hung up as we did (RFC 5407
                // §3.2.1). Its dialog has ended here with our BYE; 481
                // would tell it the call never existed.
                return self.simple(now, id, &req, StatusCode::OK);
            }
            // A REFER without a To-tag is outside any dialog: the switch
            // takes REFER only inside a call.
            if req.method == Method::Refer
                && req.headers.to().ok().is_some_and(|t| t.tag().is_none())
            {
                return self.reject(
                    now,
                    id,
                    &req,
                    StatusCode::FORBIDDEN,
                    Some("REFER is accepted only inside an established call"),
                );
            }
            return self.simple(now, id, &req, StatusCode::CALL_DOES_NOT_EXIST);
        };
        match self
            .calls
            .dialogs
            .update(&dialog, |d| d.handle_request(now, &req))
        {
            Some(Incoming::Accept) => {}
            Some(Incoming::Reject(r)) => return self.respond(now, id, r),
            Some(Incoming::Ack | Incoming::Ignore) | None => return,
        }
        let current = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| c.leg(side).dialog.as_ref() == Some(&dialog));
        if !current {
            return self.former_leg_request(now, id, key, &req);
        }
        match req.method {
            Method::Bye => {
                self.simple(now, id, &req, StatusCode::OK);
                self.on_bye(now, key, side);
            }
            Method::Info => {
                self.relay_info(now, key, side.other(), &req);
                self.simple(now, id, &req, StatusCode::OK);
            }
            Method::Invite | Method::Update => self.answer_offer(now, id, key, side, &dialog, &req),
            Method::Refer => self.on_refer(now, id, key, side, &dialog, &req),
            Method::Prack => self.on_prack(now, id, key, &dialog, &req),
            Method::Options => self.capabilities(now, id, &req),
            _ => self.simple(now, id, &req, StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    /// Whether `req` names a dialog that our BYE, still awaiting its
    /// answer, ended.
    fn bye_of_ours_out(&self, req: &Request) -> bool {
        let Some(id) = DialogId::of_request(req) else {
            return false;
        };
        self.calls
            .owners
            .get(&id)
            .and_then(|(key, _)| self.calls.calls.get(key))
            .is_some_and(|c| c.byes.iter().any(|(_, d)| *d == id))
    }

    /// One side hung up (its dialog has ended): the other side gets a BYE,
    /// or, if A hung up in its early dialog, the call is given up as by
    /// CANCEL.
    fn on_bye(&mut self, now: Instant, key: CallKey, side: Side) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if side == Side::A
            && let Some(a_tx) = call.a_invite_tx
        {
            let tag = call.a.dialog.as_ref().map(|d| d.local_tag.clone());
            if let Ok(r) = call
                .a_invite
                .reply(StatusCode::REQUEST_TERMINATED, tag.as_deref())
                .build()
            {
                self.respond(now, a_tx, r);
            }
            return self.abandon(now, key);
        }
        if self.referrer_left(key, side) || self.replaced_left(key, side) {
            return;
        }
        if side == Side::B {
            self.note_end(key, "far-hangup", "");
            let waiting = self
                .calls
                .calls
                .get(&key)
                .is_some_and(|c| c.a_invite_tx.is_some());
            if waiting {
                // B hung up while our 2xx to A waited for A's PRACK: A's
                // INVITE fails instead.
                return self.fail_call(now, key, StatusCode::TEMPORARILY_UNAVAILABLE);
            }
        }
        self.ending(now, key);
        self.hang_up_side(now, key, side.other());
        self.settle(now, key);
    }

    /// A re-INVITE or UPDATE: answered here, on this leg only. An offer
    /// gets our answer with this leg's media; an offerless re-INVITE gets
    /// our current description as the offer; an UPDATE without a body is a
    /// session refresh (RFC 4028) and its 2xx carries none (RFC 3311 §5.2).
    fn answer_offer(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        side: Side,
        dialog: &DialogId,
        req: &Request,
    ) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let offerless_invite = req.body.is_empty() && req.method == Method::Invite;
        let (status, body) = if req.body.is_empty() {
            let offer = offerless_invite.then(|| call.leg(side).sdp.clone());
            (StatusCode::OK, offer)
        } else {
            match self.answer_on(key, side, &req.body) {
                Some(answer) => (StatusCode::OK, Some(answer)),
                None => (StatusCode::NOT_ACCEPTABLE_HERE, None),
            }
        };
        let Some(mut b) = self.calls.dialogs.get(dialog).map(|d| d.reply(req, status)) else {
            return;
        };
        b = b.header(KnownHeader::Server, "CodeB-Switch");
        if let Some(body) = body {
            b = b.body(&sdp_type(), body);
        }
        if let Ok(r) = b.build() {
            // Every final to an INVITE or UPDATE goes through the dialog:
            // it ends the peer's pending offer, and a 2xx restarts the
            // session timer (and, for INVITE, waits for the ACK).
            self.calls
                .dialogs
                .update(dialog, |d| d.sent_response(now, &r));
            self.respond(now, id, r);
            if offerless_invite && let Some(call) = self.calls.calls.get_mut(&key) {
                call.leg_mut(side).offer_in_2xx = true;
            }
        }
        self.sync_media(key);
    }

    /// A's PRACK for our reliable provisional response (RFC 3262): 200 if
    /// it acknowledges the one outstanding (and our 2xx, if B answered
    /// meanwhile and it waited for this), else 481. The PRACK for the 1xx
    /// that carried our offer to an offerless INVITE answers it
    /// ([`Self::prack_answer`]); otherwise our provisional responses
    /// carry answers, so a PRACK with a body is a new offer (RFC 3262 §5):
    /// its 200 carries our answer from A's leg media, and the relay
    /// follows it; an offer we cannot answer gets 488.
    fn on_prack(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        dialog: &DialogId,
        req: &Request,
    ) {
        match self.calls.dialogs.update(dialog, |d| d.handle_prack(req)) {
            Some(Prack::Acknowledged) => {}
            // It crossed our 2xx: acknowledged, and nothing more (a body
            // in it is no offer we take, RFC 3262 §5).
            Some(Prack::Late) => return self.simple(now, id, req, StatusCode::OK),
            Some(Prack::NoMatch) | None => {
                return self.simple(now, id, req, StatusCode::CALL_DOES_NOT_EXIST);
            }
        }
        let answers = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| c.a.offer_in_1xx && c.a.negotiated.is_none());
        if answers {
            return self.prack_answer(now, id, key, dialog, req);
        }
        let answer = match req.body.is_empty() {
            true => None,
            false => match self.answer_on(key, Side::A, &req.body) {
                Some(sdp) => Some(sdp),
                None => {
                    // It acknowledged all the same: what waited for it
                    // goes.
                    tracing::info!(call = key, "an offer in a PRACK we cannot answer");
                    self.simple(now, id, req, StatusCode::NOT_ACCEPTABLE_HERE);
                    self.provisional_if_held(now, key);
                    return self.answer_a_if_held(now, key);
                }
            },
        };
        let reply = self.calls.dialogs.get(dialog).map(|d| {
            let b = d.reply(req, StatusCode::OK);
            match answer {
                Some(sdp) => b.body(&sdp_type(), sdp),
                None => b,
            }
        });
        if let Some(Ok(r)) = reply.map(|b| b.build()) {
            self.respond(now, id, r);
        }
        self.sync_media(key);
        self.provisional_if_held(now, key);
        self.answer_a_if_held(now, key);
    }

    /// The early-media provisional that waited for the PRACK just taken,
    /// while B still rings.
    fn provisional_if_held(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(status) = call.a_held_1xx.take() else {
            return;
        };
        if call.phase == Phase::Routing {
            self.provisional_to_a(now, key, status, true);
        }
    }

    /// A's PRACK for the reliable provisional response that carried our
    /// offer to its offerless INVITE: its body is the answer (RFC 3262
    /// §5). Without a usable one the INVITE fails with 488 (the PRACK
    /// itself did acknowledge, and gets its 200).
    fn prack_answer(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        dialog: &DialogId,
        req: &Request,
    ) {
        let ok = self
            .calls
            .dialogs
            .get(dialog)
            .map(|d| d.reply(req, StatusCode::OK).build());
        if let Some(Ok(r)) = ok {
            self.respond(now, id, r);
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let negotiated = call.a.read_answer(&req.body);
        let Some(n) = negotiated else {
            let why = "the caller's PRACK did not answer our SDP offer";
            tracing::info!(call = key, "{why}; 488");
            let status = StatusCode::NOT_ACCEPTABLE_HERE;
            self.note_end(key, "failed", why);
            self.note_failure(key, status.as_u16(), status.canonical_reason().as_bytes());
            if self.is_inbound(key) {
                self.stats.virtual_number_refused += 1;
            }
            return self.fail_call(now, key, status);
        };
        call.a.negotiated = Some(n);
        // B's early media is told below, whether or not its 1xx was held.
        call.a_held_1xx = None;
        let b_early = call.phase == Phase::Routing && call.b.negotiated.is_some();
        self.a_answered_our_offer(now, key);
        if b_early {
            // B's early media came while A had not answered: A hears it
            // from now on, told by a 183 with the same description.
            self.provisional_to_a(now, key, StatusCode::SESSION_PROGRESS, true);
        }
        self.answer_a_if_held(now, key);
    }

    /// Our 2xx to A, if it waited for the PRACK just taken (B answered
    /// meanwhile).
    fn answer_a_if_held(&mut self, now: Instant, key: CallKey) {
        let held = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| c.phase == Phase::Answered && c.a_invite_tx.is_some());
        if held {
            self.answer_a(now, key);
        }
    }

    /// Our answer, from the leg's media on `side`, to an offer its party
    /// made in a re-INVITE, UPDATE or PRACK (the leg takes the negotiated
    /// stream); None if it cannot be answered.
    fn answer_on(&mut self, key: CallKey, side: Side, body: &Bytes) -> Option<Bytes> {
        let leg = self.calls.calls.get_mut(&key)?.leg_mut(side);
        let offer = Sdp::parse(body, &SdpLimits::default()).ok()?;
        let (answer, negotiated) = sdp::answer(&offer, &leg.media).ok()?;
        leg.negotiated = Some(negotiated);
        Some(leg.describe(&offer, answer))
    }

    /// Relays an INFO (DTMF) to the other leg, if it is up.
    fn relay_info(&mut self, now: Instant, key: CallKey, to: Side, req: &Request) {
        let content = req
            .headers
            .get(KnownHeader::ContentType)
            .and_then(|ct| MediaType::from_bytes(ct.clone()).ok());
        let body = req.body.clone();
        let sent = self.send_in_dialog(now, key, to, Method::Info, Sent::Info, |b| match content {
            Some(ct) if !body.is_empty() => b.body(&ct, body),
            _ => b,
        });
        match sent {
            Ok(_) | Err(LegError::NoDialog) => {}
            Err(e) => tracing::debug!(call = key, error = %e, "INFO not relayed"),
        }
    }
}

impl Leg {
    /// The stream `body` negotiates as the answer to the offer we made on
    /// this leg; None when it is empty or answers nothing usable.
    fn read_answer(&self, body: &Bytes) -> Option<Negotiated> {
        if body.is_empty() {
            return None;
        }
        let answer = Sdp::parse(body, &SdpLimits::default()).ok()?;
        sdp::read_answer(&self.media, &answer).ok()
    }

    /// Our answer to `offer` as we send it: a new o= version when it says
    /// something other than what we sent last (RFC 3264 §8), the same one
    /// otherwise.
    fn describe(&mut self, offer: &Sdp, answer: Sdp) -> Bytes {
        let text = answer.to_text();
        if text.as_bytes() != &self.sdp[..] {
            self.media.session_version += 1;
            if let Ok((again, _)) = sdp::answer(offer, &self.media) {
                self.sdp = Bytes::from(again.to_text());
            }
        }
        self.sdp.clone()
    }
}
