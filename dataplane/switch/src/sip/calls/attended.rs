//! Attended transfer by REFER with Replaces (RFC 5589 §7, RFC 3891).
//!
//! The transferor B talks to A through the switch (call 1) and to C
//! through the switch (call 2). Inside call 1 it sends a REFER whose
//! `Refer-To` carries `?Replaces=<call-id>;to-tag=..;from-tag=..` naming
//! its own dialog of call 2 with the switch. A real transferee would send
//! C an INVITE with that Replaces; here both of B's dialogs end on the
//! switch, which does the join itself: no new INVITE, C's existing leg is
//! re-INVITEd with an offer from call 1's media on B's side (the port A's
//! relay already uses), and on C's 2xx C's leg becomes call 1's leg on
//! that side, exactly as a blind transfer's answering target does. Call 1
//! keeps its worker and relay; call 2's media is released when it ends.
//!
//! The dialog is found by Call-ID and tags "as if they were tags present
//! in an incoming request" (RFC 3891 §3): B writes `to-tag` = its remote
//! tag (the switch's local tag on that leg) and `from-tag` = its own (the
//! switch's remote tag). It must be the current leg of another call of the
//! same tenant, confirmed, reached from the same IP address as the REFER's
//! own dialog (knowing a dialog's three identifiers is not enough to take
//! over another party's call), and the call's other party must be a
//! confirmed SIP leg (not an AI). Every such refusal is decided before
//! anything is sent, so the REFER gets 403 with a Warning and both calls
//! stay as they were; RFC 3891's 481 is for the INVITE a transferee would
//! send, and a 481 to the REFER itself would tell B its call 1 is gone. An
//! `early-only` Replaces is refused (the switch joins only confirmed
//! dialogs); a malformed one (unescaped, a tag missing, too long, repeated)
//! is 400; URI headers other than one Replaces stay 403. Either call
//! already transferring is 491, as for a second REFER.
//!
//! The referrer gets 202 and `100 Trying`, then the final NOTIFY: `200 OK`
//! once C answered (then our BYE on call 1's dialog), or C's refusal (the
//! re-INVITE's status; a timeout is 408, call 2 ending meanwhile 481), in
//! which case both calls stay. A 491 (C had an offer of its own in flight,
//! RFC 3261 §14.1) is not a refusal: the dialog's back-off runs and the
//! same offer goes again, up to [`JOIN_RETRIES`] times. Call 2 ends at the join: B's dialog of it
//! gets our BYE, C's dialog has moved, and a placed or virtual-number
//! call 2 ends with the outcome `transferred-to-vnum`; call 1 reports
//! `CallTransferred` (`refer-attended`). Trunk counts of call 2 move to
//! call 1, which holds both until it ends. If B hangs up either of its
//! dialogs while C is re-invited, the join goes on without it; if A's call
//! ends meanwhile and C accepts, C is re-invited back to call 2's media.

use std::time::Instant;

use bytes::Bytes;
use codeb_sip::dialog::DialogState;
use codeb_sip::header::Replaces;
use codeb_sip::sdp::{self, Direction, Sdp, SdpLimits};
use codeb_sip::{DialogId, Limits, Method, Response, SipUri, StatusCode, ValueError};

use super::refer::{REQUEST_PENDING, Referral, Refusal};
use super::transfer::TRANSFERRED;
use super::*;
use crate::config::number_ok;

/// The transfer type `CallTransferred` reports for an attended transfer.
pub const ATTENDED_TRANSFER: &str = "refer-attended";
/// URI headers looked at in one Refer-To (the URI's length bounds them
/// too); more is a malformed request.
const MAX_URI_HEADERS: usize = 8;
/// Times the join's re-INVITE is sent again after a 491 (glare resolves in
/// one retry unless the far party keeps re-inviting).
pub(super) const JOIN_RETRIES: u8 = 2;

/// In the referrer's call: the call whose far party it joins.
#[derive(Debug, Clone)]
pub(super) struct Replacing {
    pub(super) call: CallKey,
    /// Who joins, as `CallTransferred` reports it: (to_user, to_phone).
    to: (String, String),
}

/// In the call being taken over, while its far party is re-invited.
#[derive(Debug, Clone, Copy)]
pub(super) struct Joining {
    /// The referrer's call.
    into: CallKey,
    /// The referrer's side here: the dialog Replaces names.
    side: Side,
    /// The referrer hung that dialog up meanwhile.
    gone: bool,
    /// 491s answered so far.
    retries: u8,
    /// A 491's back-off is running: the dialog's `RetryRequest` sends the
    /// offer again.
    backing_off: bool,
}

/// The Replaces a `Refer-To` URI carries, unescaped and parsed; None
/// without URI headers.
pub(super) fn replaces_in(uri: &SipUri) -> Result<Option<Replaces>, Refusal> {
    if uri.headers.is_none() {
        return Ok(None);
    }
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    if uri.header_pairs().nth(MAX_URI_HEADERS).is_some() {
        return Err(bad("Refer-To carries too many URI headers".into()));
    }
    let mut found = None;
    for (name, value) in uri.header_pairs() {
        if !name.eq_ignore_ascii_case(b"Replaces") {
            return Err((
                StatusCode::FORBIDDEN,
                "only a Replaces header is supported in Refer-To".into(),
            ));
        }
        if found.is_some() {
            return Err(bad("Refer-To carries more than one Replaces".into()));
        }
        let value = Bytes::copy_from_slice(&value);
        let r = Replaces::parse(&value, &value, &Limits::default())
            .map_err(|e| bad(replaces_error(&e).to_owned()))?;
        found = Some(r);
    }
    Ok(found)
}

/// What is wrong with a Replaces value, for a Warning.
pub(super) fn replaces_error(e: &ValueError) -> &'static str {
    match e {
        ValueError::Missing => "Replaces lacks its to-tag or from-tag",
        ValueError::TooLong => "Replaces has a Call-ID or tag over 256 octets",
        ValueError::Repeated => "Replaces repeats a parameter",
        ValueError::TooMany => "Replaces has too many parameters",
        _ => "Replaces is malformed",
    }
}

impl Core {
    /// A REFER with Replaces in call `key`'s dialog of `side`: checks the
    /// dialog it names and re-INVITEs that call's far party towards this
    /// call's media; whether NOTIFYs are wanted.
    pub(super) fn start_attended(
        &mut self,
        now: Instant,
        (key, side, dialog): (CallKey, Side, &DialogId),
        subscription: (bool, u32),
        replaces: &Replaces,
    ) -> Result<bool, Refusal> {
        let forbidden = |why: &str| (StatusCode::FORBIDDEN, why.to_owned());
        if replaces.early_only {
            return Err(forbidden(
                "Replaces is early-only; the switch joins confirmed dialogs only",
            ));
        }
        let named = DialogId {
            call_id: replaces.call_id.clone(),
            local_tag: replaces.to_tag.clone(),
            remote_tag: replaces.from_tag.clone(),
        };
        let (other, rside) = self
            .calls
            .owners
            .get(&named)
            .copied()
            .ok_or_else(|| forbidden("Replaces names no dialog of this switch"))?;
        if other == key {
            return Err(forbidden(
                "Replaces names a dialog of the call being referred",
            ));
        }
        let (Some(call), Some(joined)) = (self.calls.calls.get(&key), self.calls.calls.get(&other))
        else {
            return Err(forbidden("Replaces names no dialog of this switch"));
        };
        let confirmed = |id: Option<&DialogId>| {
            id.and_then(|id| self.calls.dialogs.get(id))
                .is_some_and(|d| d.state() == DialogState::Confirmed)
        };
        if joined.leg(rside).dialog.as_ref() != Some(&named) {
            return Err(forbidden("Replaces names a dialog that has left its call"));
        }
        if joined.phase != Phase::Confirmed || !confirmed(Some(&named)) {
            return Err(forbidden("Replaces names a dialog that is not confirmed"));
        }
        let far = joined.leg(rside.other());
        let ai = joined.origin.as_ref().is_some_and(|o| o.ai.is_some()) && !joined.transferred;
        if ai || !confirmed(far.dialog.as_ref()) || far.negotiated.is_none() {
            return Err(forbidden(
                "the other party of the dialog Replaces names is not a SIP party of this switch",
            ));
        }
        if self.call_tenant(call) != self.call_tenant(joined) {
            return Err(forbidden("Replaces names a dialog of another tenant"));
        }
        let peer = |id: &DialogId| self.calls.dialogs.get(id).map(|d| d.remote().peer().ip());
        if peer(dialog).is_none() || peer(dialog) != peer(&named) {
            return Err(forbidden("Replaces names a dialog of another party"));
        }
        if joined.transfer.is_some() || joined.referral.is_some() || joined.joining.is_some() {
            return Err((
                REQUEST_PENDING,
                "the call Replaces names is being transferred".to_owned(),
            ));
        }
        if call.joining.is_some() {
            return Err((
                REQUEST_PENDING,
                "this call is being joined to another".to_owned(),
            ));
        }
        // The far party's offer: call 1's port on the referrer's side,
        // the remaining party's codec first (so the relay needs no
        // transcoding), and the far party's own o= session, one version
        // on (RFC 3264 §8: same session, a new description).
        let first = call.leg(side.other()).negotiated.as_ref().map(|n| n.codec);
        let mut media = call.leg(side).media.clone();
        media.codecs = preferring(first);
        media.direction = Direction::SendRecv;
        media.session_id = far.media.session_id;
        media.session_version = far.media.session_version.saturating_add(1);
        let mut pending = Leg::new(media);
        pending.sdp = Bytes::from(sdp::offer(&pending.media).to_text());
        pending.update = far.update;
        let to = self.far_party(joined, rside.other());
        let offer = pending.sdp.clone();
        let sent =
            self.send_in_dialog(now, other, rside.other(), Method::Invite, Sent::Join, |b| {
                b.body(&sdp_type(), offer)
            });
        match sent {
            Ok(_) => {}
            Err(LegError::Dialog(codeb_sip::dialog::DialogError::Pending)) => {
                return Err((
                    REQUEST_PENDING,
                    "the other party has an offer pending; retry".to_owned(),
                ));
            }
            Err(e) => {
                tracing::info!(call = other, error = %e, "re-INVITE for an attended transfer not sent");
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the other party could not be re-invited".to_owned(),
                ));
            }
        }
        tracing::info!(
            call = key,
            joined = other,
            "attended transfer: re-inviting the far party"
        );
        if let Some(c) = self.calls.calls.get_mut(&other) {
            c.joining = Some(Joining {
                into: key,
                side: rside,
                gone: false,
                retries: 0,
                backing_off: false,
            });
        }
        if let Some(c) = self.calls.calls.get_mut(&key) {
            c.referral = Some(Box::new(Referral::attended(
                side,
                dialog.clone(),
                subscription,
                pending,
                Replacing { call: other, to },
            )));
        }
        Ok(subscription.0)
    }

    /// Who a call's party on `side` is, as `CallTransferred` reports the
    /// party an attended transfer joins: a caller by its number; a callee
    /// by the number a trunk dialled, or as the tenant's SIP user its
    /// contact names; else neither (`Refer-To` is the referrer's word,
    /// usually our own Contact, and says nothing of it).
    fn far_party(&self, call: &Call, side: Side) -> (String, String) {
        let number = |n: Option<String>| n.filter(|n| number_ok(n)).unwrap_or_default();
        if side == Side::A {
            let from = call.a_invite.headers.from().ok();
            return (String::new(), number(from.as_ref().and_then(user_of)));
        }
        let Some(won) = call.branches.iter().rev().find(|b| b.won) else {
            return Default::default();
        };
        let user = won
            .invite
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .map(|u| String::from_utf8_lossy(&u).into_owned());
        if won.trunk.is_some() {
            return (String::new(), number(user));
        }
        let tenant = self.call_tenant(call);
        let known = user.filter(|n| {
            self.config
                .users
                .iter()
                .any(|u| &u.name == n && (u.tenant.is_empty() || u.tenant == tenant))
        });
        (known.unwrap_or_default(), String::new())
    }

    /// Takes the join call `key`'s far party is re-invited for, if any:
    /// whoever handles its end (answer, failure, interruption) owns it.
    fn take_joining(&mut self, key: CallKey) -> Option<Joining> {
        self.calls.calls.get_mut(&key)?.joining.take()
    }

    /// The final response to the re-INVITE of call `key`'s far party (on
    /// `side`) for an attended transfer.
    pub(super) fn join_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        side: Side,
        resp: &Response,
    ) {
        let Some(j) = self.take_joining(key) else {
            return;
        };
        let pending = self.join_pending(j, key).cloned();
        if resp.status == REQUEST_PENDING && pending.is_some() && j.retries < JOIN_RETRIES {
            tracing::info!(
                call = j.into,
                joined = key,
                "far party re-inviting too (491); the join's offer goes again after the back-off"
            );
            if let Some(c) = self.calls.calls.get_mut(&key) {
                c.joining = Some(Joining {
                    retries: j.retries + 1,
                    backing_off: true,
                    ..j
                });
            }
            return;
        }
        if !resp.status.is_success() {
            tracing::info!(
                call = j.into,
                joined = key,
                status = resp.status.as_u16(),
                "attended transfer refused by the far party"
            );
            if pending.is_some() {
                self.refer_failed(now, j.into, resp.status);
            }
            return self.joined_alone(now, key, j);
        }
        let Some(pending) = pending else {
            // The referrer's call ended meanwhile: the far party goes back
            // to its own call's media.
            tracing::info!(
                call = key,
                "attended transfer's call ended first; far party restored"
            );
            return self.restore(now, key, side, j);
        };
        let negotiated = Sdp::parse(&resp.body, &SdpLimits::default())
            .ok()
            .and_then(|a| sdp::read_answer(&pending.media, &a).ok());
        let moved = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.leg(side).dialog.clone());
        let (Some(negotiated), Some(id)) = (negotiated, moved) else {
            tracing::info!(call = key, "far party's answer to the join is not usable");
            self.refer_failed(now, j.into, StatusCode::NOT_ACCEPTABLE_HERE);
            return self.restore(now, key, side, j);
        };
        let Some(joined) = self.calls.calls.get_mut(&key) else {
            return;
        };
        joined.leg_mut(side).dialog = None;
        let trunks = std::mem::take(&mut joined.trunks);
        let mut leg = pending;
        leg.dialog = Some(id.clone());
        leg.negotiated = Some(negotiated);
        let Some(call) = self.calls.calls.get_mut(&j.into) else {
            return;
        };
        let Some(r) = call.referral.as_mut() else {
            return;
        };
        r.set_answered();
        let rside = r.side;
        let to = r
            .replaces
            .as_ref()
            .map(|p| p.to.clone())
            .unwrap_or_default();
        *call.leg_mut(rside) = leg;
        call.trunks.extend(trunks);
        self.calls.owners.insert(id, (j.into, rside));
        self.sync_media(j.into);
        self.count_refer("transferred");
        self.transfer_event(now, j.into, (&to.0, &to.1), None, ATTENDED_TRANSFER);
        tracing::info!(
            call = j.into,
            joined = key,
            "attended transfer: parties joined"
        );
        // Call 2 ends: only the referrer's dialog is left in it.
        self.note_end(key, TRANSFERRED, "");
        self.hang_up(now, key);
        match self.refer_notify(now, j.into, StatusCode::OK, true) {
            Some(tx) => {
                if let Some(r) = self
                    .calls
                    .calls
                    .get_mut(&j.into)
                    .and_then(|c| c.referral.as_deref_mut())
                {
                    r.set_final_notify(tx);
                }
            }
            None => self.refer_done(now, j.into),
        }
    }

    /// The leg call `key`'s far party becomes in the referrer's call once
    /// it accepts the join, while that call still waits for it.
    fn join_pending(&self, j: Joining, key: CallKey) -> Option<&Leg> {
        self.calls
            .calls
            .get(&j.into)
            .filter(|c| c.phase == Phase::Confirmed)
            .and_then(|c| c.referral.as_ref())
            .and_then(|r| r.waiting_for(key))
    }

    /// Whether the dialog's `RetryRequest` on `side` of call `key` is the
    /// end of a join's 491 back-off (and not a session refresh's).
    pub(super) fn join_backing_off(&self, key: CallKey, side: Side) -> bool {
        self.calls
            .calls
            .get(&key)
            .and_then(|c| c.joining)
            .is_some_and(|j| j.backing_off && side == j.side.other())
    }

    /// Sends the join's offer to call `key`'s far party again, after a 491's
    /// back-off; if the referrer's call is gone meanwhile, the join ends
    /// with call `key` as it was.
    pub(super) fn retry_join(&mut self, now: Instant, key: CallKey) {
        let Some(j) = self.take_joining(key) else {
            return;
        };
        let offer = self.join_pending(j, key).map(|leg| leg.sdp.clone());
        let Some(offer) = offer else {
            return self.joined_alone(now, key, j);
        };
        let sent = self.send_in_dialog(now, key, j.side.other(), Method::Invite, Sent::Join, |b| {
            b.body(&sdp_type(), offer)
        });
        if let Err(e) = sent {
            tracing::info!(call = key, error = %e, "attended transfer's re-INVITE not sent again");
            self.refer_failed(now, j.into, StatusCode::SERVICE_UNAVAILABLE);
            return self.joined_alone(now, key, j);
        }
        if let Some(c) = self.calls.calls.get_mut(&key) {
            c.joining = Some(Joining {
                backing_off: false,
                ..j
            });
        }
    }

    /// The join failed and call `key` stays as it was, unless the referrer
    /// left it meanwhile: then its far party is alone and is hung up.
    fn joined_alone(&mut self, now: Instant, key: CallKey, j: Joining) {
        if j.gone {
            tracing::info!(
                call = key,
                "join failed after the referrer left; hanging up"
            );
            self.note_end(key, "far-hangup", "");
            self.hang_up(now, key);
        }
    }

    /// The far party accepted the join's offer but the join cannot be
    /// made: it is re-invited back to call `key`'s own port (a newer o=
    /// version than the join's offer), or hung up if it is alone there.
    fn restore(&mut self, now: Instant, key: CallKey, side: Side, j: Joining) {
        if j.gone {
            return self.joined_alone(now, key, j);
        }
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let leg = call.leg_mut(side);
        leg.media.session_version = leg.media.session_version.saturating_add(2);
        leg.sdp = Bytes::from(sdp::offer(&leg.media).to_text());
        let offer = leg.sdp.clone();
        let sent = self.send_in_dialog(now, key, side, Method::Invite, Sent::Refresh, |b| {
            b.body(&sdp_type(), offer)
        });
        if let Err(e) = sent {
            tracing::warn!(call = key, error = %e, "far party not restored; hanging up");
            self.note_end(key, "failed", "the far party could not be restored");
            self.hang_up(now, key);
        }
    }

    /// Call `key` starts ending while its far party is re-invited for an
    /// attended transfer: the referrer is told (481, the dialog it named
    /// is gone) and keeps its call.
    pub(super) fn join_interrupted(&mut self, now: Instant, key: CallKey) {
        let Some(j) = self.take_joining(key) else {
            return;
        };
        let waiting = self
            .calls
            .calls
            .get(&j.into)
            .and_then(|c| c.referral.as_ref())
            .is_some_and(|r| r.waiting_for(key).is_some());
        if waiting {
            tracing::info!(
                call = j.into,
                joined = key,
                "attended transfer: the joined call ended"
            );
            self.refer_failed(now, j.into, StatusCode::CALL_DOES_NOT_EXIST);
        }
    }

    /// BYE from the referrer in the dialog its Replaces named, while the
    /// far party is re-invited: it leaves, the join goes on. True if so.
    pub(super) fn replaced_left(&mut self, key: CallKey, side: Side) -> bool {
        match self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.joining.as_mut())
        {
            Some(j) if j.side == side => {
                tracing::info!(
                    call = key,
                    "referrer left the replaced dialog; the join goes on"
                );
                j.gone = true;
                true
            }
            _ => false,
        }
    }

    /// The re-INVITE of a join got no answer (Timer B): as a 408.
    pub(super) fn join_timed_out(&mut self, now: Instant, key: CallKey) {
        let waiting = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.joining)
            .filter(|j| {
                self.calls
                    .calls
                    .get(&j.into)
                    .and_then(|c| c.referral.as_ref())
                    .is_some_and(|r| r.waiting_for(key).is_some())
            });
        if let Some(c) = self.calls.calls.get_mut(&key) {
            c.joining = None;
        }
        if let Some(j) = waiting {
            self.refer_failed(now, j.into, StatusCode::REQUEST_TIMEOUT);
            self.joined_alone(now, key, j);
        }
    }
}
