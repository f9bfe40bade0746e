//! What comes back on the transactions a call started: provisional
//! responses relayed to A, failures collected until every fork has failed,
//! a trunk's digest challenge or a 422 answered by sending the INVITE
//! again, responses to in-dialog requests handed to their dialog, and
//! transaction timeouts and ends.

use std::time::Instant;

use bytes::BytesMut;
use codeb_sip::dialog::{TAG_100REL, min_se_of_422};
use codeb_sip::header::KnownHeader;
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::transaction::{Timer, TransactionId};
use codeb_sip::{Header, Request, Response, StatusCode};

use super::*;

impl Core {
    /// A response to one of our client transactions.
    pub(crate) fn on_response(&mut self, now: Instant, tx: TransactionId, resp: Response) {
        let Some(key) = self.calls.by_tx.get(&tx).copied() else {
            return;
        };
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if let Some(bi) = call.branches.iter().position(|b| b.tx == tx) {
            return self.on_branch_response(now, key, bi, resp);
        }
        // A NOTIFY's answer concerns the REFER's subscription, not the
        // dialog (RFC 5057: a 481 to it ends only the subscription).
        let notify = call
            .sent
            .iter()
            .any(|(t, _, k)| *t == tx && *k == Sent::Notify);
        // A request we sent in a dialog: the dialog learns from every
        // response (session timer restart, 491 back-off, 422, 481 ends it).
        let dialog = self.calls.dialogs.find_response(&resp);
        if !notify && let Some(id) = &dialog {
            self.calls
                .dialogs
                .update(id, |d| d.handle_response(now, &resp));
        }
        if !resp.status.is_final() {
            return;
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(pos) = call.sent.iter().position(|(t, _, _)| *t == tx) else {
            return;
        };
        let (_, side, kind) = call.sent.remove(pos);
        let refresh_here = dialog.is_some() && call.leg(side).dialog == dialog;
        if kind == Sent::Bye {
            self.bye_answered(tx, key);
        }
        // A refresh answered in a dialog that has since left its side (an
        // attended transfer or a Replaces took the side over) says nothing
        // of the leg's media now.
        if kind == Sent::Refresh && refresh_here {
            self.refresh_answered(now, key, side, &resp);
        }
        if kind == Sent::Notify {
            self.notify_answered(now, key, tx, resp.status);
        }
        if kind == Sent::Join {
            self.join_answered(now, key, side, &resp);
        }
        self.settle(now, key);
    }

    fn on_branch_response(&mut self, now: Instant, key: CallKey, bi: usize, resp: Response) {
        let status = resp.status;
        if status == StatusCode::TRYING {
            return;
        }
        if status.is_provisional() {
            // A transfer target rings inside an answered call: A has
            // nothing to hear (a REFER's referrer is told, once).
            if self.transfer_branch(key, bi) {
                return self.refer_ringing(now, key, status);
            }
            return self.relay_provisional(now, key, &resp);
        }
        if status.is_success() {
            return self.on_branch_answered(now, key, bi, resp);
        }
        if matches!(status.as_u16(), 401 | 407) && self.retry_branch_with_auth(now, key, bi, &resp)
        {
            return;
        }
        if status.as_u16() == 422 && self.retry_branch_with_interval(now, key, bi, &resp) {
            return;
        }
        if (300..400).contains(&status.as_u16())
            && !self.transfer_branch(key, bi)
            && self.follow_redirect(now, key, bi, &resp)
        {
            return;
        }
        // A branch failed; when all have, A gets the best failure.
        self.note_failure(key, status.as_u16(), &resp.reason);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if let Some(b) = call.branches.get_mut(bi) {
            b.failed = Some(status);
        }
        if self.transfer_branch(key, bi) {
            self.transfer_branch_failed(now, key, status);
            return self.settle(now, key);
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let all_failed = call.branches.iter().all(|b| b.failed.is_some());
        // A 6xx is a global failure (RFC 3261 §16.7 step 5, §21.6): the
        // callee declines everywhere, so the other branches are cancelled
        // and A gets it now, not after they give up.
        if call.phase == Phase::Routing && status.as_u16() >= 600 && !all_failed {
            return self.fail_call(now, key, status);
        }
        if call.phase == Phase::Routing && all_failed {
            let best = call
                .branches
                .iter()
                .filter_map(|b| b.failed)
                .min_by_key(|s| failure_rank(*s))
                .unwrap_or(StatusCode::TEMPORARILY_UNAVAILABLE);
            self.fail_call(now, key, redirect::relayed_failure(best));
        } else if call.phase == Phase::Ending {
            // A call given up (CANCEL) is over once its last branch is.
            self.settle(now, key);
        }
    }

    /// Ringing (or early media) on the B side: A hears it in its early
    /// dialog, with our SDP answer for early media.
    fn relay_provisional(&mut self, now: Instant, key: CallKey, resp: &Response) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if call.a_invite_tx.is_none() || call.a.dialog.is_none() {
            return;
        }
        // Early media (RFC 3960: an 18x with SDP, 183 or a 180 that plays
        // its own ringback) needs A's offer answered; a late-offer call
        // just rings (B's early answer is kept for when A answers ours in
        // a PRACK).
        let b_early = !resp.body.is_empty();
        let early = b_early && call.a.negotiated.is_some();
        let status = if early && resp.status != StatusCode::RINGING {
            StatusCode::SESSION_PROGRESS
        } else {
            StatusCode::RINGING
        };
        // The callee's early media flows to A from now on: the branch that
        // last sent SDP is the B side's far end until one answers (whose
        // answer then takes its place).
        if b_early {
            let early_answer = Sdp::parse(&resp.body, &SdpLimits::default())
                .ok()
                .and_then(|a| sdp::read_answer(&call.b.media, &a).ok());
            if let Some(n) = early_answer
                && let Some(c) = self.calls.calls.get_mut(&key)
            {
                c.b.negotiated = Some(n);
                self.sync_media(key);
            }
        }
        self.provisional_to_a(now, key, status, early);
    }

    /// Sends A a provisional response on its INVITE (with our answer when
    /// `early`), reliably when A requires it (RFC 3262). To an INVITE
    /// without an offer, the first reliable one carries ours (RFC 3262
    /// §5: "the first reliable non-failure message"), and A's PRACK the
    /// answer.
    pub(super) fn provisional_to_a(
        &mut self,
        now: Instant,
        key: CallKey,
        status: StatusCode,
        early: bool,
    ) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let (Some(a_tx), Some(a_id)) = (call.a_invite_tx, call.a.dialog.clone()) else {
            return;
        };
        let Some(mut b) = self
            .calls
            .dialogs
            .get(&a_id)
            .map(|d| d.reply(&call.a_invite, status))
        else {
            return;
        };
        b = b.header(KnownHeader::Server, "CodeB-Switch");
        let offer = call.a.reliable && call.a.negotiated.is_none() && !call.a.offer_in_1xx;
        if early || offer {
            b = b.body(&sdp_type(), call.a.sdp.clone());
        }
        if !call.a.reliable {
            if let Ok(r) = b.build() {
                self.respond(now, a_tx, r);
            }
            return;
        }
        // RFC 3262: reliably, and only once the last one is PRACKed (a
        // ringing tone that cannot go yet is not worth holding).
        match self
            .calls
            .dialogs
            .update(&a_id, |d| d.send_reliably(now, b))
        {
            Some(Some(Ok(r))) => {
                if offer && let Some(call) = self.calls.calls.get_mut(&key) {
                    call.a.offer_in_1xx = true;
                }
                self.respond(now, a_tx, r)
            }
            Some(Some(Err(e))) => {
                tracing::warn!(call = key, error = %e, "could not build a reliable 1xx")
            }
            // The last one is not PRACKed yet: early media waits for it
            // (the latest replaces any held), ringing is dropped.
            Some(None) if early => {
                tracing::debug!(call = key, "an early-media 1xx waits for A's PRACK");
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.a_held_1xx = Some(status);
                }
            }
            Some(None) => {
                tracing::debug!(call = key, "a 1xx waits for A's PRACK; this one is dropped")
            }
            None => {}
        }
    }

    /// A trunk challenged a B-leg INVITE: send it again with credentials.
    /// Only once, and only for the trunk's realm; true if the retry went
    /// out.
    fn retry_branch_with_auth(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: &Response,
    ) -> bool {
        let Some(branch) = self.calls.calls.get(&key).and_then(|c| c.branches.get(bi)) else {
            return false;
        };
        if branch.auth_tried {
            return false;
        }
        let Some(t) = branch
            .trunk
            .as_ref()
            .and_then(|id| self.config.trunks.iter().find(|t| &t.id == id))
            .cloned()
        else {
            return false;
        };
        let mut uri = BytesMut::new();
        branch.invite.uri.render(&mut uri);
        let uri = String::from_utf8_lossy(&uri).into_owned();
        let Some((header, value)) = self.answer_trunk_challenge(&t, resp, "INVITE", &uri) else {
            return false;
        };
        self.resend_branch(now, key, bi, |invite, branch| {
            branch.auth_tried = true;
            invite.headers.push(Header::new(header, value)?);
            Ok(())
        })
    }

    /// B wants a longer session interval (RFC 4028 §7.4: 422 with Min-SE):
    /// send the INVITE again asking for it. Once.
    fn retry_branch_with_interval(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: &Response,
    ) -> bool {
        let (Some(min_se), Some(timer)) = (min_se_of_422(resp), self.settings.session_timer) else {
            return false;
        };
        let Some(branch) = self.calls.calls.get(&key).and_then(|c| c.branches.get(bi)) else {
            return false;
        };
        if branch.interval_raised {
            return false;
        }
        let interval = min_se.max(timer.sanitized().session_expires);
        self.resend_branch(now, key, bi, |invite, branch| {
            branch.interval_raised = true;
            let h = &mut invite.headers;
            h.remove(KnownHeader::SessionExpires);
            h.remove(KnownHeader::MinSe);
            let refresher = if timer.we_refresh {
                ";refresher=uac"
            } else {
                ""
            };
            h.push(Header::new(
                KnownHeader::SessionExpires,
                format!("{interval}{refresher}"),
            )?);
            h.push(Header::new(KnownHeader::MinSe, min_se.to_string())?);
            Ok(())
        })
    }

    /// Sends a branch's INVITE again after a response asked for a change
    /// (§8.1.3.5): same Call-ID and tags, the next CSeq, a new Via branch,
    /// and `change` applied. True if it went out.
    fn resend_branch(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        change: impl FnOnce(&mut Request, &mut Branch) -> Result<(), codeb_sip::ValueError>,
    ) -> bool {
        let Some(transport) = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.branches.get(bi))
            .map(|b| b.flow.transport())
        else {
            return false;
        };
        let Some(via) = self.our_via(transport) else {
            return false;
        };
        let Some(branch) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.branches.get_mut(bi))
        else {
            return false;
        };
        let mut invite = branch.invite.clone();
        let Ok(seq) = invite.headers.cseq().map(|c| c.seq.saturating_add(1)) else {
            return false;
        };
        let mut rendered = BytesMut::new();
        via.render(&mut rendered);
        invite.headers.remove(KnownHeader::Via);
        invite.headers.remove(KnownHeader::CSeq);
        let edited = Header::new(KnownHeader::Via, rendered.freeze())
            .and_then(|v| {
                invite.headers.insert(0, v);
                Header::new(KnownHeader::CSeq, format!("{seq} INVITE"))
            })
            .and_then(|c| {
                invite.headers.push(c);
                change(&mut invite, branch)
            });
        if let Err(e) = edited {
            tracing::warn!(call = key, error = %e, "could not rebuild the B-leg INVITE");
            return false;
        }
        let flow = branch.flow;
        match self.layer.send_request(now, invite.clone(), flow) {
            Ok(tx) => {
                self.calls.by_tx.insert(tx, key);
                if let Some(b) = self
                    .calls
                    .calls
                    .get_mut(&key)
                    .and_then(|c| c.branches.get_mut(bi))
                {
                    b.tx = tx;
                    b.invite = invite;
                }
                true
            }
            Err(e) => {
                tracing::warn!(call = key, error = %e, "could not send the B-leg INVITE again");
                false
            }
        }
    }

    /// Timer B or F: a branch counts as failed with 408; a request in a
    /// dialog that got no answer ends that dialog (§12.2.1.2), and with it
    /// the call (see `session.rs`).
    pub(crate) fn on_timeout(&mut self, now: Instant, tx: TransactionId, timer: Timer) {
        self.branch_got_no_answer(now, tx, timer, NO_SIP_RESPONSE);
    }

    /// [`Core::on_timeout`], for a request that got no answer because of
    /// `why` (for a placed call's record).
    fn branch_got_no_answer(
        &mut self,
        now: Instant,
        tx: TransactionId,
        timer: Timer,
        why: &'static str,
    ) {
        let Some(key) = self.calls.by_tx.get(&tx).copied() else {
            return;
        };
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if let Some(bi) = call.branches.iter().position(|b| b.tx == tx) {
            tracing::info!(call = key, ?timer, "B-leg timed out");
            let fake = call.branches[bi]
                .invite
                .reply(StatusCode::REQUEST_TIMEOUT, Some(b"timeout"))
                .build();
            if let Some(o) = self
                .calls
                .calls
                .get_mut(&key)
                .and_then(|c| c.origin.as_mut())
            {
                o.no_answer = Some(why);
            }
            if let Ok(resp) = fake {
                self.on_branch_response(now, key, bi, resp);
            }
            return;
        }
        let Some(&(_, side, kind)) = call.sent.iter().find(|(t, _, _)| *t == tx) else {
            return;
        };
        if kind == Sent::Notify {
            return self.notify_answered(now, key, tx, StatusCode::REQUEST_TIMEOUT);
        }
        if kind == Sent::Join {
            self.join_timed_out(now, key);
        }
        let dialog = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.leg(side).dialog.clone());
        if kind != Sent::Bye
            && let Some(id) = dialog
        {
            tracing::info!(call = key, ?side, ?timer, "in-dialog request timed out");
            self.calls.dialogs.update(&id, |d| d.request_failed(now));
        }
    }

    pub(crate) fn on_transport_error(&mut self, now: Instant, tx: TransactionId) {
        // A's INVITE transaction: its response could not be sent, and the
        // transaction is over. Its connection could not be made, or the
        // message was refused for want of room (the connection's queue or
        // the table full): either way nothing more reaches A.
        if let Some(&key) = self.calls.by_tx.get(&tx)
            && self
                .calls
                .calls
                .get(&key)
                .is_some_and(|c| c.phase != Phase::Ending && c.a_invite_id == Some(tx))
        {
            return self.caller_unreachable(now, key);
        }
        self.branch_got_no_answer(now, tx, Timer::B, TRANSPORT_FAILED);
    }

    /// A transaction of a call is gone: a branch that ended without a final
    /// answer counts as failed, and the call may now be over.
    pub(crate) fn on_terminated(&mut self, now: Instant, tx: TransactionId) {
        let Some(key) = self.calls.by_tx.remove(&tx) else {
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if let Some(b) = call.branches.iter_mut().find(|b| b.tx == tx) {
            b.failed.get_or_insert(StatusCode::REQUEST_TERMINATED);
        }
        call.sent.retain(|(t, _, _)| *t != tx);
        self.bye_answered(tx, key);
        self.settle(now, key);
    }

    /// Our BYE `tx` (if it is one) is over: a BYE in the dialog it ended
    /// no longer crosses it.
    fn bye_answered(&mut self, tx: TransactionId, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if let Some(pos) = call.byes.iter().position(|(t, _)| *t == tx) {
            let (_, id) = call.byes.swap_remove(pos);
            self.calls.owners.remove(&id);
        }
    }
}

/// A placed call's errorDetail when its INVITE got no SIP response at all.
pub(super) const NO_SIP_RESPONSE: &str = "the trunk did not answer the INVITE (no SIP response)";
/// ... and when it could not even be sent (a TCP connection refused).
pub(super) const TRANSPORT_FAILED: &str =
    "the trunk could not be reached (its connection failed; see the switch's log)";

/// Whether the caller's INVITE requires reliable provisional responses
/// (`Require: 100rel`, RFC 3262).
pub(super) fn requires_100rel(invite: &Request) -> bool {
    lists_100rel(invite, KnownHeader::Require)
}

/// The INVITE says its sender takes reliable provisional responses
/// (`100rel` in Supported or Require).
pub(super) fn supports_100rel(invite: &Request) -> bool {
    lists_100rel(invite, KnownHeader::Supported) || requires_100rel(invite)
}

fn lists_100rel(invite: &Request, header: KnownHeader) -> bool {
    invite.headers.option_tags(header).is_ok_and(|tags| {
        tags.iter()
            .any(|t| t.eq_ignore_ascii_case(TAG_100REL.as_bytes()))
    })
}
