//! Handing an AI call's party to a person: the AI's `transfer_to_user`
//! tool or the control plane's `Transfer`. The switch dials the target on
//! the call's free side (A for a placed call, whose callee is B; B for a
//! virtual-number call, whose caller is A) with the same forking branches
//! a routed call uses, while the AI keeps the line. The first answer
//! wins: the AI session is stopped, the tap gives way to the relay (or a
//! transcoding bridge when the codecs differ), and `CallTransferred` is
//! reported; the call then ends as any bridged call does, with the
//! outcome `transferred-to-vnum` (the glossary's "handed off to another
//! virtual number / human queue"). A target that is busy, unreachable or
//! does not answer within [`TRANSFER_RING`] leaves the call with the AI,
//! which is told why.
//!
//! A party's REFER in a bridged call (see `refer.rs`) dials its target
//! with this same machinery, on the referrer's side.

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::sdp::{self, Sdp, SdpLimits};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Dialog, DialogId, Method, Response};

use super::originate::{CallEvent, CallEventKind, Deadline};
use super::*;
use crate::ai::{AiRequest, user_name_ok};
use crate::config::number_ok;

/// How long a transfer target may ring before the AI gets the caller back.
pub const TRANSFER_RING: Duration = Duration::from_secs(30);
/// The outcome of a call whose AI handed its party to someone.
pub const TRANSFERRED: &str = "transferred-to-vnum";

/// Who a call is handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// A SIP user of the call's tenant (its registrations and contact).
    User(String),
    /// A number dialled through a trunk (empty: the call's own trunk, or
    /// the tenant's default).
    Phone { number: String, trunk_id: String },
}

/// Why a transfer was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("no call {0} on this node")]
    UnknownCall(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

/// A transfer in progress: its branches are `branches[first_branch..]` of
/// the call.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) target: TransferTarget,
    pub(super) side: Side,
    pub(super) first_branch: usize,
    /// The AI's tool call waiting for the result, if the AI asked.
    pub(super) tool: Option<String>,
    pub(super) ring_at: Instant,
    pub(super) trunk_id: String,
    /// A party's REFER asked for it (see `refer.rs`), not the AI.
    pub(super) refer: bool,
}

impl Core {
    /// Starts a transfer of the placed or virtual-number call `call_id`
    /// (the control plane's `Transfer`). It returns once the target is
    /// being dialled; `CallTransferred` reports the answer.
    pub fn transfer_call(
        &mut self,
        now: Instant,
        call_id: &str,
        target: TransferTarget,
    ) -> Result<(), TransferError> {
        let Some(key) = self.placed_key(call_id) else {
            return Err(TransferError::UnknownCall(call_id.to_owned()));
        };
        let r = self.start_transfer(now, key, target, None);
        self.drain(now);
        r
    }

    /// The AI asked to transfer its party to `user`; the tool call `id`
    /// is answered now if that cannot be done.
    pub(super) fn ai_transfer(&mut self, now: Instant, key: CallKey, id: String, user: String) {
        let target = TransferTarget::User(user);
        if let Err(e) = self.start_transfer(now, key, target, Some(id.clone())) {
            tracing::info!(call = key, error = %e, "AI transfer refused");
            self.tool_answer(key, id, false, e.to_string());
        }
        self.drain(now);
    }

    /// The engine called off its tool call `id`: the transfer it asked
    /// for, if it still rings, stops (its branches cancelled) with no
    /// answer to the engine, which no longer waits for one.
    pub(super) fn ai_transfer_called_off(&mut self, now: Instant, key: CallKey, id: &str) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call
            .transfer
            .as_ref()
            .is_none_or(|t| t.tool.as_deref() != Some(id))
        {
            return;
        }
        if let Some(mut t) = call.transfer.take() {
            t.tool = None;
            self.transfer_failed(
                now,
                key,
                *t,
                "the AI called it off".into(),
                StatusCode::REQUEST_TERMINATED,
            );
        }
        self.drain(now);
    }

    fn tool_answer(&mut self, key: CallKey, id: String, ok: bool, detail: String) {
        self.calls
            .placed
            .ai_requests
            .push_back(AiRequest::ToolResult {
                key,
                id,
                name: codeb_ai::config::TOOL_TRANSFER_TO_USER.into(),
                ok,
                detail,
            });
    }

    /// Users an AI call may hand its party to: the persona's list, else
    /// every SIP user of the tenant, at most 64.
    pub(super) fn transfer_users(&self, tenant: &str, persona: &crate::ai::Persona) -> Vec<String> {
        let mine = |u: &&crate::config::UserConfig| u.tenant.is_empty() || u.tenant == tenant;
        let known: Vec<&str> = self
            .config
            .users
            .iter()
            .filter(mine)
            .map(|u| u.name.as_str())
            .filter(|n| user_name_ok(n))
            .collect();
        let mut out: Vec<String> = if persona.transfer_targets.is_empty() {
            known.iter().map(|n| (*n).to_owned()).collect()
        } else {
            persona
                .transfer_targets
                .iter()
                .filter(|t| known.contains(&t.as_str()))
                .cloned()
                .collect()
        };
        out.truncate(64);
        out
    }

    fn start_transfer(
        &mut self,
        now: Instant,
        key: CallKey,
        target: TransferTarget,
        tool: Option<String>,
    ) -> Result<(), TransferError> {
        use TransferError::*;
        let call = self
            .calls
            .calls
            .get(&key)
            .ok_or_else(|| UnknownCall(key.to_string()))?;
        let o = call
            .origin
            .as_ref()
            .ok_or_else(|| FailedPrecondition("not an AI call".into()))?;
        let persona =
            o.ai.as_ref()
                .ok_or_else(|| FailedPrecondition("the call has no AI to hand over from".into()))?;
        if !matches!(call.phase, Phase::Answered | Phase::Confirmed) {
            return Err(FailedPrecondition("the call is not answered".into()));
        }
        if call.transferred || call.transfer.is_some() {
            return Err(FailedPrecondition(
                "the call is already transferred or being transferred".into(),
            ));
        }
        let side = o.ai_side();
        let party = side.other();
        if call.leg(side).dialog.is_some() {
            return Err(FailedPrecondition("the call has no free side".into()));
        }
        let tenant = o.tenant.clone();
        let (targets, trunk_id) = match &target {
            TransferTarget::User(user) => {
                if !self.transfer_users(&tenant, persona).contains(user) {
                    return Err(InvalidArgument(format!(
                        "{user} is not a user this call may be transferred to"
                    )));
                }
                let t = self.user_targets(user, now);
                if t.is_empty() {
                    return Err(FailedPrecondition(format!(
                        "{user} is offline (no registration or contact)"
                    )));
                }
                (t, String::new())
            }
            TransferTarget::Phone { number, trunk_id } => {
                let trunk = self.transfer_trunk(&tenant, trunk_id, &o.trunk_id)?;
                if !number_ok(number) {
                    return Err(InvalidArgument(
                        "to_phone: an optional + and 1-32 digits".into(),
                    ));
                }
                if !self.config.may_dial(&tenant, number) {
                    return Err(FailedPrecondition(format!(
                        "{number} is not on the tenant's whitelist"
                    )));
                }
                let t = self.trunk_target(&trunk, number).ok_or_else(|| {
                    FailedPrecondition(format!("trunk {} has no address", trunk.id))
                })?;
                if let Some(why) = self.trunk_refusal(&trunk, now) {
                    return Err(ResourceExhausted(why));
                }
                (vec![t], trunk.id.clone())
            }
        };
        let Some(mut call) = self.calls.calls.remove(&key) else {
            return Err(UnknownCall(key.to_string()));
        };
        // The free side opened without a port (the AI had it): it gets
        // one now, from the call's worker, and keeps it until the call
        // ends, whether or not the target answers.
        let port = match self.calls.media.leg_port(&mut call.media, side.media()) {
            Ok(p) => p,
            Err(e) => {
                self.calls.calls.insert(key, call);
                return Err(ResourceExhausted(format!(
                    "no media port for the transfer: {e}"
                )));
            }
        };
        call.leg_mut(side).media.port = port;
        // The party is presented as the caller; the offer prefers its
        // codec, so the bridge can be a plain relay.
        let shown = if side == Side::B {
            call.a_invite.headers.from().ok()
        } else {
            call.a_invite.headers.to().ok()
        };
        let first = call.leg(party).negotiated.as_ref().map(|n| n.codec);
        let leg = call.leg_mut(side);
        leg.media.codecs = preferring(first);
        leg.media.session_id = self.ids.next_u64() >> 1;
        leg.sdp = Bytes::from(sdp::offer(&leg.media).to_text());
        let first_branch = call.branches.len();
        self.fork(now, &mut call, targets, side, shown.as_ref());
        let started = call.branches.len() > first_branch;
        if started {
            if !trunk_id.is_empty() {
                call.trunks.push(trunk_id.clone());
                self.calls
                    .trunks
                    .entry(trunk_id.clone())
                    .or_default()
                    .active += 1;
            }
            let ring_at = now + TRANSFER_RING;
            call.transfer = Some(Box::new(Transfer {
                target,
                side,
                first_branch,
                tool,
                ring_at,
                trunk_id,
                refer: false,
            }));
            self.calls
                .placed
                .deadlines
                .insert((ring_at, key, Deadline::TransferRing));
        }
        self.calls.calls.insert(key, call);
        if !started {
            return Err(FailedPrecondition("the target could not be dialled".into()));
        }
        tracing::info!(call = key, "transfer: dialling the target");
        Ok(())
    }

    /// The trunk a transfer to a number goes through: the one named, else
    /// the call's own, else the tenant's default.
    fn transfer_trunk(
        &self,
        tenant: &str,
        named: &str,
        own: &str,
    ) -> Result<crate::config::TrunkConfig, TransferError> {
        let usable = |t: &&crate::config::TrunkConfig| t.tenant.is_empty() || t.tenant == tenant;
        let find = |id: &str| {
            self.config
                .trunks
                .iter()
                .filter(usable)
                .find(|t| t.id == id)
        };
        let trunk = if named.is_empty() {
            find(own).or_else(|| {
                self.config
                    .default_trunk(tenant)
                    .or_else(|| self.config.default_trunk(""))
            })
        } else {
            find(named)
        };
        trunk
            .cloned()
            .ok_or_else(|| TransferError::FailedPrecondition("no trunk to dial the number".into()))
    }

    /// Whether branch `bi` of the call dials a transfer (and which side
    /// its dialog takes).
    pub(super) fn transfer_branch(&self, key: CallKey, bi: usize) -> bool {
        self.calls
            .calls
            .get(&key)
            .and_then(|c| c.transfer.as_ref())
            .is_some_and(|t| bi >= t.first_branch)
    }

    /// A transfer branch answered: it becomes the call's other leg; the
    /// AI leaves; the two parties are bridged.
    pub(super) fn transfer_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        dialog: Dialog<Flow>,
        resp: &Response,
    ) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(t) = call.transfer.take() else {
            return self.drop_fork(now, key, dialog);
        };
        if t.refer {
            return self.refer_answered(now, key, bi, dialog, resp, *t);
        }
        let side = t.side;
        let negotiated = Sdp::parse(&resp.body, &SdpLimits::default())
            .ok()
            .and_then(|a| sdp::read_answer(&call.leg(side).media, &a).ok());
        let Some(id) = self.keep_target_dialog(now, key, dialog) else {
            return self.transfer_failed(
                now,
                key,
                *t,
                "the switch is full".into(),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        };
        self.calls.owners.insert(id.clone(), (key, side));
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        answered_leg(call.leg_mut(side), id, negotiated, resp);
        if let Some(b) = call.branches.get_mut(bi) {
            b.won = true;
        }
        self.cancel_other_branches(now, key, t.first_branch, bi);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call.leg(side).negotiated.is_none() {
            tracing::info!(call = key, "transfer target answered without usable SDP");
            // The side stays taken by the ended dialog: no second try.
            self.hang_up_side(now, key, side);
            return self.transfer_failed(
                now,
                key,
                *t,
                "the target's answer has no usable audio".into(),
                StatusCode::NOT_ACCEPTABLE_HERE,
            );
        }
        call.transferred = true;
        self.calls
            .placed
            .deadlines
            .remove(&(t.ring_at, key, Deadline::TransferRing));
        self.note_end(key, TRANSFERRED, "");
        // The session says its last words (turns, usage) as it closes;
        // the call's end no longer waits for the AI.
        self.stop_ai(key);
        self.unhook_ai(key);
        self.sync_media(key);
        self.transferred_event(now, key, &t);
        tracing::info!(call = key, "transfer answered; parties bridged");
    }

    /// Keeps an answering transfer target's dialog. A full table hangs the
    /// target up (ACK, BYE) instead of dropping its dialog unanswered.
    pub(super) fn keep_target_dialog(
        &mut self,
        now: Instant,
        key: CallKey,
        dialog: Dialog<Flow>,
    ) -> Option<DialogId> {
        if self.calls.dialogs.len() >= self.calls.dialog_capacity() {
            tracing::warn!(call = key, "dialog table full; transfer target hung up");
            self.drop_fork(now, key, dialog);
            return None;
        }
        match self.calls.dialogs.insert(dialog) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(call = key, error = %e, "transfer target's dialog not kept");
                None
            }
        }
    }

    /// CANCELs the branches of a transfer's fork (from `first`) that are
    /// still ringing, other than `won`, which answered.
    pub(super) fn cancel_other_branches(
        &mut self,
        now: Instant,
        key: CallKey,
        first: usize,
        won: usize,
    ) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let others: Vec<TransactionId> = call
            .branches
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(i, b)| *i != won && b.failed.is_none())
            .map(|(_, b)| b.tx)
            .collect();
        for tx in others {
            let _ = self.layer.cancel(now, tx);
        }
    }

    /// The tap leaves the call's worker: its legs go back to the relay
    /// (which `sync_media` turns into a bridge if their codecs differ).
    fn unhook_ai(&mut self, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        call.bridged = None;
        if let (media::MediaPorts::Engine(engine), Some(h)) =
            (&mut self.calls.media, call.media.handle)
            // The pipeline's clock is the worker's, not the core's.
            && let Err(e) = engine.set_bridge(Instant::now(), h, None)
        {
            tracing::warn!(call = key, error = %e, "AI tap not removed");
        }
    }

    fn transferred_event(&mut self, now: Instant, key: CallKey, t: &Transfer) {
        let Some(o) = self.calls.calls.get(&key).and_then(|c| c.origin.as_ref()) else {
            return;
        };
        let (to_user, to_phone) = match &t.target {
            TransferTarget::User(u) => (u.clone(), String::new()),
            TransferTarget::Phone { number, .. } => (String::new(), number.clone()),
        };
        let transfer_type = match (o.inbound, &t.target) {
            (true, TransferTarget::Phone { .. }) => "vnum-to-pstn",
            (true, TransferTarget::User(_)) => "vnum-to-officetab",
            (false, _) => "outbound-to-user",
        };
        let event = CallEvent {
            at_unix_ms: self.wall_ms(now),
            call_id: o.call_id.clone(),
            attempt: o.attempt,
            tenant: o.tenant.clone(),
            kind: CallEventKind::Transferred {
                to_user,
                to_phone,
                trunk_id: if t.trunk_id.is_empty() {
                    o.trunk_id.clone()
                } else {
                    t.trunk_id.clone()
                },
                transfer_type: transfer_type.into(),
            },
        };
        self.calls.placed.events.push_back(event);
    }

    /// A transfer branch failed; once all have, the AI gets its party
    /// back and is told why.
    pub(super) fn transfer_branch_failed(
        &mut self,
        now: Instant,
        key: CallKey,
        status: StatusCode,
    ) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let Some(t) = call.transfer.as_ref() else {
            return;
        };
        let all_failed = call.branches[t.first_branch..]
            .iter()
            .all(|b| b.failed.is_some());
        if !all_failed || call.phase == Phase::Ending {
            return;
        }
        // The target's answer, as a caller would have had it.
        let best = call.branches[t.first_branch..]
            .iter()
            .filter_map(|b| b.failed)
            .min_by_key(|s| failure_rank(*s))
            .unwrap_or(status);
        // Said of the best answer, not the last branch's.
        let why = match best.as_u16() {
            486 | 600 | 603 => "the target is busy".to_owned(),
            408 | 480 | 487 => "the target did not answer".to_owned(),
            c => format!("the target could not be reached (SIP {c})"),
        };
        if let Some(t) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.transfer.take())
        {
            self.transfer_failed(now, key, *t, why, best);
        }
    }

    /// The transfer is over without an answer: ringing branches are
    /// cancelled, the trunk it counted against is released, the AI (or
    /// the referrer, told `status`) told.
    pub(super) fn transfer_failed(
        &mut self,
        now: Instant,
        key: CallKey,
        t: Transfer,
        why: String,
        status: StatusCode,
    ) {
        tracing::info!(call = key, %why, refer = t.refer, "transfer failed; the call stays as it was");
        self.calls
            .placed
            .deadlines
            .remove(&(t.ring_at, key, Deadline::TransferRing));
        self.cancel_branches(now, key);
        if let Some(call) = self.calls.calls.get_mut(&key)
            && !t.trunk_id.is_empty()
            && let Some(pos) = call.trunks.iter().rposition(|x| *x == t.trunk_id)
        {
            call.trunks.remove(pos);
            if let Some(load) = self.calls.trunks.get_mut(&t.trunk_id) {
                load.active = load.active.saturating_sub(1);
            }
        }
        if let Some(id) = t.tool {
            self.tool_answer(key, id, false, why);
        }
        if t.refer {
            self.refer_failed(now, key, status);
        }
    }

    /// The transfer target rang too long.
    pub(super) fn transfer_ring_timeout(&mut self, now: Instant, key: CallKey) {
        if let Some(t) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.transfer.take())
        {
            self.transfer_failed(
                now,
                key,
                *t,
                "the target did not answer".into(),
                StatusCode::REQUEST_TIMEOUT,
            );
        }
    }

    /// A placed or virtual-number call's key by its id.
    fn placed_key(&self, call_id: &str) -> Option<CallKey> {
        self.calls.placed.key_of(call_id)
    }
}

/// A transfer target's answer, on the leg that now leads to it: its
/// dialog, the media it agreed to, whether it takes UPDATE.
pub(super) fn answered_leg(
    leg: &mut Leg,
    dialog: DialogId,
    negotiated: Option<Negotiated>,
    resp: &Response,
) {
    leg.dialog = Some(dialog);
    leg.negotiated = negotiated;
    leg.update = resp
        .headers
        .allow()
        .is_ok_and(|m| m.contains(&Method::Update));
}
