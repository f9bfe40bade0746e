//! Unattended (blind) transfer by REFER (RFC 3515) inside a bridged call.
//!
//! Either party of a confirmed two-leg call may send an in-dialog REFER
//! whose `Refer-To` names a target. Its user part is resolved as a SIP
//! user of the tenant by that name, else the way an inbound call to it is
//! routed (the tenant's inbound route table, when it routes to a SIP user
//! of the tenant); anything else, a trunk or a number in particular, is
//! refused with 403 and nothing is dialled (an open Refer-To on a carrier
//! switch is toll fraud). An accepted REFER gets 202 and a first NOTIFY
//! (`100 Trying`, and the target's first 180/183 in another); the target
//! is dialled on the referrer's side with the AI transfer's machinery
//! (forking branches, `TRANSFER_RING`), as a leg built from scratch
//! (topology hiding: the target sees none of the referrer's Via, Contact
//! or Call-ID; a `Referred-By` is passed on with the referrer's user and
//! name, at our host). When the target answers, it
//! becomes the call's leg on that side, the other party is bridged to it
//! (the relay follows the new leg's media), the referrer gets the final
//! NOTIFY (`200 OK`) and then our BYE. When it does not, the referrer gets a
//! final NOTIFY with the target's status and the call stays as it was.
//!
//! `Refer-Sub: false` (RFC 4488) suppresses the NOTIFYs and is echoed in
//! the 202. A 481 or a timeout on a NOTIFY ends only the subscription
//! (RFC 5057), never the call. A second REFER while one is in progress gets
//! 491 Request Pending: the refusal is transient (the first transfer ends
//! within the ring time) and 491 is how SIP says "retry later" inside a
//! dialog, where 403 would say the request is never allowed. A REFER
//! outside a dialog gets 403 (the switch accepts REFER only in a call),
//! one naming an unknown dialog 481 (RFC 3261 §12.2.2).
//!
//! A `Refer-To` carrying a Replaces header is an attended transfer: the
//! referrer's other call is joined instead of a target dialled (see
//! `attended.rs`, which reuses this module's subscription and BYE).

use std::time::Instant;

use bytes::Bytes;
use codeb_sip::header::{HeaderName, KnownHeader, MediaType, NameAddr};
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Dialog, DialogId, Method, Request, Response, StatusCode};

use super::attended::{Replacing, replaces_in};
use super::originate::{CallEvent, CallEventKind, Deadline};
use super::transfer::{TRANSFER_RING, Transfer, TransferTarget, answered_leg};
use super::*;
use crate::ai::user_name_ok;
use crate::config::RouteTarget;
use crate::routing::{self, CallFacts};

const fn status(code: u16) -> StatusCode {
    match StatusCode::new(code) {
        Some(s) => s,
        None => StatusCode::SERVER_INTERNAL_ERROR,
    }
}

const ACCEPTED: StatusCode = status(202);
pub(super) const REQUEST_PENDING: StatusCode = status(491);
/// The implicit subscription's lifetime as the first NOTIFY states it:
/// the ring time and a margin; the final NOTIFY comes before it runs out.
const SUBSCRIPTION_SECS: u64 = TRANSFER_RING.as_secs() + 30;
/// The transfer type `CallTransferred` reports for a REFER.
pub const REFER_TRANSFER: &str = "refer-to-user";

fn refer_sub() -> HeaderName {
    HeaderName::Other(Bytes::from_static(b"Refer-Sub"))
}

/// A REFER being acted on.
#[derive(Debug)]
pub(super) struct Referral {
    /// The referrer's side and dialog. The dialog stays the referrer's
    /// after the target took the side's leg, until our BYE.
    pub(super) side: Side,
    pub(super) dialog: DialogId,
    /// The REFER's CSeq: the `id` of its subscription's Event.
    event_id: u32,
    /// NOTIFYs are wanted (no `Refer-Sub: false`) and the referrer has
    /// not ended the subscription (481, timeout).
    notify: bool,
    /// What the target's INVITE carries as Referred-By.
    referred_by: Option<String>,
    /// The side's leg towards the target: its offer; it replaces the
    /// referrer's leg when the target answers.
    pending: Leg,
    /// The referrer hung up while the target rang.
    gone: bool,
    /// The target answered.
    answered: bool,
    /// The referrer was told the target rings.
    rang: bool,
    /// The final NOTIFY, awaiting its response (then the referrer's BYE).
    final_notify: Option<TransactionId>,
    /// An attended transfer (`Refer-To` with Replaces, see
    /// `attended.rs`): the call whose far party joins this one; `pending`
    /// is then the offer it is re-invited with.
    pub(super) replaces: Option<Replacing>,
}

impl Referral {
    pub(super) fn referred_by(&self) -> Option<&str> {
        self.referred_by.as_deref()
    }

    /// An attended transfer's referral: no target is dialled, `pending`
    /// is the far party's leg-to-be.
    pub(super) fn attended(
        side: Side,
        dialog: DialogId,
        (notify, event_id): (bool, u32),
        pending: Leg,
        replaces: Replacing,
    ) -> Referral {
        Referral {
            side,
            dialog,
            event_id,
            notify,
            referred_by: None,
            pending,
            gone: false,
            answered: false,
            rang: false,
            final_notify: None,
            replaces: Some(replaces),
        }
    }

    /// The far party's leg-to-be of an attended transfer still waiting for
    /// the re-INVITE's answer, if `joining` is the call it comes from.
    pub(super) fn waiting_for(&self, joining: CallKey) -> Option<&Leg> {
        let ours = self.replaces.as_ref().is_some_and(|r| r.call == joining);
        (ours && !self.answered).then_some(&self.pending)
    }

    pub(super) fn set_answered(&mut self) {
        self.answered = true;
    }

    pub(super) fn set_final_notify(&mut self, tx: TransactionId) {
        self.final_notify = Some(tx);
    }
}

/// Why a REFER is not acted on.
pub(super) type Refusal = (StatusCode, String);

impl Core {
    /// A REFER in one of a call's dialogs (already through the dialog's
    /// own checks): 202 and the transfer started, or a refusal.
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        side: Side,
        dialog: &DialogId,
        req: &Request,
    ) {
        let (status, warning, wants_notify) = match self.start_refer(now, key, side, dialog, req) {
            Ok(notify) => (ACCEPTED, None, notify),
            Err((status, why)) => {
                tracing::info!(call = key, ?side, status = status.as_u16(), %why, "REFER refused");
                if status == StatusCode::FORBIDDEN {
                    self.count_refer("refused");
                }
                (status, Some(why), true)
            }
        };
        let Some(mut b) = self.calls.dialogs.get(dialog).map(|d| d.reply(req, status)) else {
            return;
        };
        b = b.header(KnownHeader::Server, "CodeB-Switch");
        if status == ACCEPTED {
            if let Some(contact) = self
                .calls
                .dialogs
                .get(dialog)
                .map(|d| *d.remote())
                .and_then(|flow| self.our_contact(&flow))
            {
                b = b.contact(&contact);
            }
            if !wants_notify {
                b = b.header(refer_sub(), "false");
            }
        }
        if let Some(w) = warning {
            b = b.header(KnownHeader::Warning, format!("399 codeb \"{w}\""));
        }
        if let Ok(r) = b.build() {
            self.respond(now, id, r);
        }
        if status == ACCEPTED {
            tracing::info!(call = key, ?side, "REFER accepted; dialling the target");
            self.refer_notify(now, key, StatusCode::TRYING, false);
        }
    }

    /// Checks a REFER and dials its target; whether NOTIFYs are wanted.
    fn start_refer(
        &mut self,
        now: Instant,
        key: CallKey,
        side: Side,
        dialog: &DialogId,
        req: &Request,
    ) -> Result<bool, Refusal> {
        let forbidden = |why: &str| (StatusCode::FORBIDDEN, why.to_owned());
        let call = self
            .calls
            .calls
            .get(&key)
            .ok_or((StatusCode::CALL_DOES_NOT_EXIST, "no such call".to_owned()))?;
        if call.phase != Phase::Confirmed || call.leg(side.other()).dialog.is_none() {
            return Err(forbidden("the call is not established"));
        }
        if call.origin.as_ref().is_some_and(|o| o.ai.is_some()) && !call.transferred {
            return Err(forbidden("the other party is an AI"));
        }
        // A call whose far party is being re-invited into another (an
        // attended transfer, `attended.rs`) is being transferred too.
        if call.transfer.is_some() || call.referral.is_some() || call.joining.is_some() {
            return Err((
                REQUEST_PENDING,
                "a transfer of this call is in progress".to_owned(),
            ));
        }
        // RFC 3515 §2.4.1: exactly one Refer-To, else 400.
        if req.headers.count(KnownHeader::ReferTo) != 1 {
            return Err((
                StatusCode::BAD_REQUEST,
                "exactly one Refer-To is required".to_owned(),
            ));
        }
        let refer_to = req
            .headers
            .get(KnownHeader::ReferTo)
            .and_then(|v| NameAddr::from_bytes(v.clone()).ok())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "Refer-To is not a valid address".to_owned(),
            ))?;
        let mut rendered = bytes::BytesMut::new();
        refer_to.uri.render(&mut rendered);
        let rendered = String::from_utf8_lossy(&rendered).to_ascii_lowercase();
        // Another method than INVITE, or URI headers other than one
        // Replaces, are not what this switch does.
        if rendered.contains(";method=") && !rendered.contains(";method=invite") {
            return Err(forbidden("only an INVITE to the target is supported"));
        }
        let replaces = match refer_to.uri.as_sip() {
            Some(uri) => replaces_in(uri)?,
            None => None,
        };
        if let Some(replaces) = replaces {
            return self.start_attended(now, (key, side, dialog), subscription_of(req), &replaces);
        }
        let user = refer_to
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .map(|u| String::from_utf8_lossy(&u).into_owned())
            .filter(|u| user_name_ok(u))
            .ok_or_else(|| forbidden("Refer-To names no user this switch routes"))?;
        let tenant = self.call_tenant(call);
        // The other party is presented to the target as the caller, as in
        // an AI transfer.
        let shown = if side == Side::B {
            call.a_invite.headers.from().ok()
        } else {
            call.a_invite.headers.to().ok()
        };
        let from = shown
            .as_ref()
            .and_then(user_of)
            .filter(|u| !routing::is_anonymous(Some(u)));
        let target = self
            .refer_user(&tenant, &user, from.as_deref())
            .ok_or_else(|| forbidden("Refer-To names no user this switch routes"))?;
        let targets = self.user_targets(&target, now);
        if targets.is_empty() {
            return Err((
                StatusCode::TEMPORARILY_UNAVAILABLE,
                format!("{target} is offline"),
            ));
        }
        let (notify, event_id) = subscription_of(req);
        let referred_by = req
            .headers
            .get(KnownHeader::ReferredBy)
            .and_then(|v| NameAddr::from_bytes(v.clone()).ok())
            .map(|by| {
                let who = self.caller_identity(&by, None);
                match who.display {
                    Some(d) => format!("\"{d}\" <sip:{}@{}>", who.user, who.host),
                    None => format!("<sip:{}@{}>", who.user, who.host),
                }
            });
        let Some(mut call) = self.calls.calls.remove(&key) else {
            return Err((StatusCode::CALL_DOES_NOT_EXIST, "no such call".to_owned()));
        };
        // The target's offer: the side's port, the other party's codec
        // first (so the bridge can be a plain relay), a new session.
        let first = call.leg(side.other()).negotiated.as_ref().map(|n| n.codec);
        let mut pending = Leg::new(call.leg(side).media.clone());
        pending.media.codecs = preferring(first);
        pending.media.session_id = self.ids.next_u64() >> 1;
        pending.sdp = Bytes::from(sdp::offer(&pending.media).to_text());
        call.referral = Some(Box::new(Referral {
            side,
            dialog: dialog.clone(),
            event_id,
            notify,
            referred_by,
            pending: pending.clone(),
            gone: false,
            answered: false,
            rang: false,
            final_notify: None,
            replaces: None,
        }));
        // `fork` offers the side's description: the target's, meanwhile.
        let kept = std::mem::replace(&mut call.leg_mut(side).sdp, pending.sdp);
        let first_branch = call.branches.len();
        self.fork(now, &mut call, targets, side, shown.as_ref());
        call.leg_mut(side).sdp = kept;
        let started = call.branches.len() > first_branch;
        if started {
            let ring_at = now + TRANSFER_RING;
            call.transfer = Some(Box::new(Transfer {
                target: TransferTarget::User(target),
                side,
                first_branch,
                tool: None,
                ring_at,
                trunk_id: String::new(),
                refer: true,
            }));
            self.calls
                .placed
                .deadlines
                .insert((ring_at, key, Deadline::TransferRing));
        } else {
            call.referral = None;
        }
        self.calls.calls.insert(key, call);
        if !started {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the target could not be dialled".to_owned(),
            ));
        }
        Ok(notify)
    }

    /// The tenant a call belongs to: its placement's, else its inbound
    /// trunk's.
    pub(super) fn call_tenant(&self, call: &Call) -> String {
        if let Some(o) = &call.origin {
            return o.tenant.clone();
        }
        call.trunks
            .first()
            .and_then(|id| self.config.trunks.iter().find(|t| &t.id == id))
            .map(|t| t.tenant.clone())
            .unwrap_or_default()
    }

    /// The SIP user a Refer-To's user part reaches: the tenant's user of
    /// that name (an extension, even where a catch-all route would send
    /// the number elsewhere), else what an inbound call of the tenant to
    /// it would ring, when that is a user of the tenant. Trunks and
    /// virtual numbers are never targets.
    pub(super) fn refer_user(
        &self,
        tenant: &str,
        user: &str,
        from: Option<&str>,
    ) -> Option<String> {
        let mine = |name: &str| {
            self.config
                .users
                .iter()
                .any(|u| u.name == name && (u.tenant.is_empty() || u.tenant == tenant))
        };
        if mine(user) {
            return Some(user.to_owned());
        }
        routing::route(
            &self.config.routes,
            &CallFacts {
                tenant,
                did: user,
                from,
            },
        )
        .and_then(|r| match r.target() {
            Some(RouteTarget::User(u)) if mine(u) => Some(u.to_owned()),
            _ => None,
        })
    }

    /// The REFER's target answered: it takes the referrer's side of the
    /// call, the other party is bridged to it, the referrer is told (and
    /// then hung up).
    pub(super) fn refer_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        dialog: Dialog<Flow>,
        resp: &Response,
        t: Transfer,
    ) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(r) = call.referral.as_ref() else {
            return self.drop_fork(now, key, dialog);
        };
        let side = t.side;
        let negotiated = Sdp::parse(&resp.body, &SdpLimits::default())
            .ok()
            .and_then(|a| sdp::read_answer(&r.pending.media, &a).ok());
        let mut leg = r.pending.clone();
        self.cancel_other_branches(now, key, t.first_branch, bi);
        self.calls
            .placed
            .deadlines
            .remove(&(t.ring_at, key, Deadline::TransferRing));
        if negotiated.is_none() {
            tracing::info!(call = key, "REFER target answered without usable SDP");
            self.drop_fork(now, key, dialog);
            return self.refer_failed(now, key, StatusCode::NOT_ACCEPTABLE_HERE);
        }
        let Some(id) = self.keep_target_dialog(now, key, dialog) else {
            return self.refer_failed(now, key, StatusCode::SERVICE_UNAVAILABLE);
        };
        self.calls.owners.insert(id.clone(), (key, side));
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        answered_leg(&mut leg, id, negotiated, resp);
        *call.leg_mut(side) = leg;
        if let Some(b) = call.branches.get_mut(bi) {
            b.won = true;
        }
        if let Some(r) = call.referral.as_mut() {
            r.answered = true;
        }
        self.sync_media(key);
        self.count_refer("transferred");
        if let TransferTarget::User(user) = &t.target {
            self.transfer_event(now, key, (user, ""), None, REFER_TRANSFER);
        }
        tracing::info!(call = key, ?side, "REFER target answered; parties bridged");
        match self.refer_notify(now, key, StatusCode::OK, true) {
            Some(tx) => {
                if let Some(r) = self.referral_mut(key) {
                    r.final_notify = Some(tx);
                }
            }
            None => self.refer_done(now, key),
        }
    }

    /// The call's transfer by REFER in progress, if any.
    fn referral_mut(&mut self, key: CallKey) -> Option<&mut Referral> {
        self.calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.referral.as_deref_mut())
    }

    /// The REFER's target rings (180, 183): the referrer hears of it
    /// once, in a NOTIFY of the still active subscription.
    pub(super) fn refer_ringing(&mut self, now: Instant, key: CallKey, status: StatusCode) {
        let Some(r) = self.referral_mut(key) else {
            return;
        };
        if r.rang || r.answered {
            return;
        }
        r.rang = true;
        self.refer_notify(now, key, status, false);
    }

    /// `CallTransferred` for a placed or virtual-number call (routed calls
    /// have no id the control plane knows) whose party was transferred by
    /// REFER or replaced: the new party `to` (user, phone), and the trunk
    /// it came through (`None`: the call's own).
    pub(super) fn transfer_event(
        &mut self,
        now: Instant,
        key: CallKey,
        (to_user, to_phone): (&str, &str),
        trunk_id: Option<&str>,
        transfer_type: &str,
    ) {
        let at_unix_ms = self.wall_ms(now);
        let Some(o) = self.calls.calls.get(&key).and_then(|c| c.origin.as_ref()) else {
            return;
        };
        let event = CallEvent {
            at_unix_ms,
            call_id: o.call_id.clone(),
            attempt: o.attempt,
            tenant: o.tenant.clone(),
            kind: CallEventKind::Transferred {
                to_user: to_user.to_owned(),
                to_phone: to_phone.to_owned(),
                trunk_id: trunk_id.map_or_else(|| o.trunk_id.clone(), str::to_owned),
                transfer_type: transfer_type.into(),
            },
        };
        self.calls.placed.events.push_back(event);
    }

    /// The REFER's target did not answer (`status`): the referrer is
    /// told, and keeps the call, unless it hung up meanwhile, in which
    /// case the other party is alone and the call ends.
    pub(super) fn refer_failed(&mut self, now: Instant, key: CallKey, status: StatusCode) {
        self.count_refer("failed");
        let notify = self.refer_notify(now, key, status, true);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(r) = call.referral.as_mut() else {
            return;
        };
        if r.gone {
            call.referral = None;
            tracing::info!(
                call = key,
                "REFER failed after the referrer left; hanging up"
            );
            self.note_end(key, "failed", "the transfer target did not answer");
            return self.hang_up(now, key);
        }
        match notify {
            Some(tx) => r.final_notify = Some(tx),
            None => call.referral = None,
        }
    }

    /// Sends the referrer a NOTIFY with `status` as the sipfrag, if it
    /// wants them; the transaction.
    pub(super) fn refer_notify(
        &mut self,
        now: Instant,
        key: CallKey,
        status: StatusCode,
        last: bool,
    ) -> Option<TransactionId> {
        let r = self.calls.calls.get(&key)?.referral.as_ref()?;
        if !r.notify || r.gone {
            return None;
        }
        let (side, dialog, event_id) = (r.side, r.dialog.clone(), r.event_id);
        let flow = self.calls.dialogs.get(&dialog).map(|d| *d.remote())?;
        let contact = self.our_contact(&flow)?;
        let state = if last {
            "terminated;reason=noresource".to_owned()
        } else {
            format!("active;expires={SUBSCRIPTION_SECS}")
        };
        let frag = Bytes::from(format!(
            "SIP/2.0 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason()
        ));
        let sipfrag =
            MediaType::from_bytes(Bytes::from_static(b"message/sipfrag;version=2.0")).ok()?;
        let sent =
            self.send_in_dialog_id(now, key, side, &dialog, Method::Notify, Sent::Notify, |b| {
                b.contact(&contact)
                    .header(KnownHeader::Event, format!("refer;id={event_id}"))
                    .header(KnownHeader::SubscriptionState, state)
                    .body(&sipfrag, frag)
            });
        match sent {
            Ok(tx) => Some(tx),
            Err(e) => {
                tracing::debug!(call = key, error = %e, "NOTIFY not sent");
                None
            }
        }
    }

    /// The final response (or the timeout) of a NOTIFY of ours: a 481 or
    /// 408 ends the subscription only (RFC 5057 §5.2); the final NOTIFY's
    /// answer lets the referrer go.
    pub(super) fn notify_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        tx: TransactionId,
        status: StatusCode,
    ) {
        let Some(r) = self.referral_mut(key) else {
            return;
        };
        if !status.is_success() {
            r.notify = false;
        }
        if r.final_notify == Some(tx) {
            self.refer_done(now, key);
        }
    }

    /// The REFER is over: after a transfer, the referrer is hung up.
    pub(super) fn refer_done(&mut self, now: Instant, key: CallKey) {
        let Some(r) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.referral.take())
        else {
            return;
        };
        if r.answered && !r.gone {
            let sent =
                self.send_in_dialog_id(now, key, r.side, &r.dialog, Method::Bye, Sent::Bye, |b| b);
            if let Err(e) = sent {
                tracing::debug!(call = key, error = %e, "referrer not hung up");
            }
        }
    }

    /// A call hung up while the referrer still has its final NOTIFY
    /// outstanding: the referrer's dialog ends too.
    pub(super) fn hang_up_referrer(&mut self, now: Instant, key: CallKey) {
        let answered = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.referral.as_ref())
            .is_some_and(|r| r.answered);
        if answered {
            self.refer_done(now, key);
        }
    }

    /// BYE from the referrer while its target rings: it leaves, the
    /// transfer goes on (as unattended transfer means). True if so.
    pub(super) fn referrer_left(&mut self, key: CallKey, side: Side) -> bool {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return false;
        };
        let ringing = call.transfer.as_ref().is_some_and(|t| t.refer);
        match call.referral.as_mut() {
            // An attended transfer's far party is being re-invited: the
            // join goes on without the referrer.
            Some(r) if r.side == side && (ringing || r.replaces.is_some() && !r.answered) => {
                tracing::info!(call = key, ?side, "referrer hung up; the transfer goes on");
                r.gone = true;
                true
            }
            _ => false,
        }
    }

    /// A request in a referrer's dialog after its transfer answered (the
    /// dialog is no longer its side's leg): its BYE is answered and ends
    /// only that dialog; anything else gets 481.
    pub(super) fn former_leg_request(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        req: &Request,
    ) {
        if req.method == Method::Bye {
            if let Some(r) = self.referral_mut(key) {
                r.gone = true;
            }
            return self.simple(now, id, req, StatusCode::OK);
        }
        self.simple(now, id, req, StatusCode::CALL_DOES_NOT_EXIST);
    }

    pub(super) fn count_refer(&mut self, result: &'static str) {
        *self.stats.refer_transfers.entry(result).or_default() += 1;
    }
}

/// Whether a REFER wants NOTIFYs (no `Refer-Sub: false`, RFC 4488) and
/// its CSeq, the `id` of its subscription's Event.
fn subscription_of(req: &Request) -> (bool, u32) {
    let notify = !req
        .headers
        .get_named(b"Refer-Sub")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"false"));
    (notify, req.headers.cseq().map(|c| c.seq).unwrap_or(0))
}
