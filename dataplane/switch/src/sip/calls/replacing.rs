//! An incoming INVITE with a Replaces header (RFC 3891): a phone taking
//! over one of the switch's legs, e.g. the transferee of an attended
//! transfer done by REFER between phones, whose INVITE names the
//! transferor's dialog with the switch. The new dialog becomes the call's
//! leg on that side: it is answered with that side's port (the relay
//! already uses it; a new o= session, as it is a new dialog) and the
//! other party's codec first, the relay follows its address, and the
//! replaced dialog gets our BYE. The other party hears nothing.
//!
//! What may be replaced: the current leg of a confirmed call whose other
//! party is a confirmed SIP leg (not an AI), of the same tenant as the
//! trunk the INVITE came through (it passed the same source check as any
//! call; knowing the dialog's Call-ID and both tags is the rest of the
//! proof RFC 3891 §6 asks for). The INVITE must carry an SDP offer. The
//! answers RFC 3891 §3 names: no such dialog, or an early one, 481 (the
//! switch does not take over early dialogs); `early-only` on a confirmed
//! one 486; a dialog that has ended 603; a malformed or repeated Replaces
//! 400. Another tenant's dialog, or one whose other party is not a SIP
//! leg, is 403; a call with a transfer in progress 480 (try again later).
//! The INVITE counts against its trunk's limits like a new call, and the
//! call then holds that trunk's count too.

use std::time::Instant;

use bytes::Bytes;
use codeb_sip::dialog::DialogState;
use codeb_sip::header::{KnownHeader, Replaces};
use codeb_sip::sdp::{self, Direction, Sdp, SdpLimits};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Dialog, DialogId, Limits, Method, Request, StatusCode};

use super::attended::replaces_error;
use super::*;
use crate::config::{TrunkConfig, number_ok};

/// The transfer type `CallTransferred` reports when an INVITE replaced a
/// party of a placed or virtual-number call.
pub const REPLACES_TRANSFER: &str = "invite-replaces";

const fn status(code: u16) -> StatusCode {
    match StatusCode::new(code) {
        Some(s) => s,
        None => StatusCode::SERVER_INTERNAL_ERROR,
    }
}

const DECLINE: StatusCode = status(603);

/// Why an INVITE with Replaces is refused.
type Refusal = (StatusCode, &'static str);

impl Core {
    /// A new INVITE (from `trunk`'s source) carrying Replaces.
    pub(super) fn on_replacing_invite(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
        source: Flow,
        trunk: &TrunkConfig,
    ) {
        match self.replace_leg(now, id, req, source, trunk) {
            Ok(()) => {}
            Err((status, why)) => {
                tracing::info!(
                    status = status.as_u16(),
                    why,
                    "INVITE with Replaces refused"
                );
                self.reject(now, id, req, status, Some(why));
            }
        }
    }

    fn replace_leg(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
        source: Flow,
        trunk: &TrunkConfig,
    ) -> Result<(), Refusal> {
        let bad = |why| (StatusCode::BAD_REQUEST, why);
        let malformed = |e| (StatusCode::BAD_REQUEST, replaces_error(&e));
        let mut values = req.headers.get_all(KnownHeader::Replaces);
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(bad("exactly one Replaces is required"));
        };
        let replaces = Replaces::parse(value, value, &Limits::default()).map_err(malformed)?;
        let named = DialogId {
            call_id: replaces.call_id.clone(),
            local_tag: replaces.to_tag.clone(),
            remote_tag: replaces.from_tag.clone(),
        };
        let no_dialog = (
            StatusCode::CALL_DOES_NOT_EXIST,
            "Replaces names no confirmed dialog of this switch",
        );
        let (key, side) = self.calls.owners.get(&named).copied().ok_or(no_dialog)?;
        let state = self.calls.dialogs.get(&named).map(|d| d.state());
        let call = self.calls.calls.get(&key).ok_or(no_dialog)?;
        if call.leg(side).dialog.as_ref() != Some(&named) || state == Some(DialogState::Terminated)
        {
            return Err((DECLINE, "the dialog Replaces names has ended"));
        }
        if state != Some(DialogState::Confirmed) || call.phase != Phase::Confirmed {
            return Err(no_dialog);
        }
        if replaces.early_only {
            return Err((
                StatusCode::BUSY_HERE,
                "Replaces is early-only and the dialog is confirmed",
            ));
        }
        if self.call_tenant(call) != trunk.tenant {
            return Err((
                StatusCode::FORBIDDEN,
                "Replaces names a dialog of another tenant",
            ));
        }
        let other = call.leg(side.other());
        let ai = call.origin.as_ref().is_some_and(|o| o.ai.is_some()) && !call.transferred;
        let other_up = other
            .dialog
            .as_ref()
            .and_then(|d| self.calls.dialogs.get(d))
            .is_some_and(|d| d.state() == DialogState::Confirmed);
        if ai || !other_up || other.negotiated.is_none() {
            return Err((
                StatusCode::FORBIDDEN,
                "the other party of the replaced dialog is not a SIP party of this switch",
            ));
        }
        if call.transfer.is_some() || call.referral.is_some() || call.joining.is_some() {
            return Err((
                StatusCode::TEMPORARILY_UNAVAILABLE,
                "the call is being transferred; try again later",
            ));
        }
        if req.body.is_empty() {
            return Err((
                StatusCode::NOT_ACCEPTABLE_HERE,
                "an INVITE with Replaces needs an SDP offer",
            ));
        }
        let offer = Sdp::parse(&req.body, &SdpLimits::default()).map_err(|_| {
            (
                StatusCode::NOT_ACCEPTABLE_HERE,
                "the SDP offer is not usable",
            )
        })?;
        // A new dialog, a new SDP session, on the port the relay already
        // uses for this side.
        let mut media = call.leg(side).media.clone();
        media.codecs = preferring(other.negotiated.as_ref().map(|n| n.codec));
        media.direction = Direction::SendRecv;
        media.session_id = self.ids.next_u64() >> 1;
        media.session_version = 1;
        let (answer, negotiated) = sdp::answer(&offer, &media).map_err(|_| {
            (
                StatusCode::NOT_ACCEPTABLE_HERE,
                "no codec in common with the offer",
            )
        })?;
        if self.calls.dialogs.len() >= self.calls.dialog_capacity() {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "dialog table full"));
        }
        if self
            .trunk_admit(
                &trunk.id,
                trunk.max_concurrent_calls,
                trunk.calls_per_second,
                now,
            )
            .is_some()
        {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the trunk is at its call or CPS limit",
            ));
        }
        let local = self
            .dialog_local(&source)
            .ok_or((StatusCode::SERVER_INTERNAL_ERROR, "no local address"))?;
        let tag = self.ids.tag();
        let config = self.dialog_config(Side::A);
        let dialog = Dialog::uas(req, &tag, local, source, config, &mut self.ids)
            .map_err(|_| bad("the INVITE makes no dialog"))?;
        let new_id = self
            .calls
            .dialogs
            .insert(dialog)
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "dialog table full"))?;
        let mut leg = Leg::new(media);
        leg.dialog = Some(new_id.clone());
        leg.sdp = Bytes::from(answer.to_text());
        leg.negotiated = Some(negotiated);
        leg.update = req
            .headers
            .allow()
            .is_ok_and(|m| m.contains(&Method::Update));
        let body = leg.sdp.clone();
        let built = self
            .calls
            .dialogs
            .get(&new_id)
            .map(|d| d.reply(req, StatusCode::OK))
            .map(|b| {
                b.header(KnownHeader::Server, "CodeB-Switch")
                    .body(&sdp_type(), body)
                    .build()
            });
        let Some(Ok(ok)) = built else {
            self.calls.dialogs.remove(&new_id);
            return Err((StatusCode::SERVER_INTERNAL_ERROR, "no 2xx could be built"));
        };
        self.calls
            .dialogs
            .update(&new_id, |d| d.sent_response(now, &ok));
        self.respond(now, id, ok);
        let caller = req.headers.from().ok();
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return Ok(());
        };
        *call.leg_mut(side) = leg;
        call.trunks.push(trunk.id.clone());
        self.calls
            .trunks
            .entry(trunk.id.clone())
            .or_default()
            .active += 1;
        self.calls.owners.insert(new_id, (key, side));
        tracing::info!(call = key, ?side, "INVITE with Replaces took over a leg");
        self.sync_media(key);
        // The replaced party is hung up; its dialog is no longer the leg's.
        if let Err(e) =
            self.send_in_dialog_id(now, key, side, &named, Method::Bye, Sent::Bye, |b| b)
        {
            tracing::debug!(call = key, error = %e, "replaced dialog not hung up");
        }
        let number = caller
            .as_ref()
            .and_then(user_of)
            .filter(|n| number_ok(n))
            .unwrap_or_default();
        self.transfer_event(now, key, ("", &number), Some(&trunk.id), REPLACES_TRANSFER);
        Ok(())
    }
}
