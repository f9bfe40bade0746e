//! Inbound calls to a virtual number: the switch answers them itself and
//! the number's AI persona talks to the caller (an AI receptionist). The
//! call is booked like a placed call with a node-chosen id (`vnum` + 12
//! hex digits): InboundCall, then CallAnswered (inbound), the AI's
//! events, and CallEnded; Hangup works on it by that id.

use std::time::{Duration, Instant};

use codeb_sip::sdp::{LocalMedia, Sdp};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Request, StatusCode};

use super::inbound::OpenedA;
use super::originate::{CallEvent, CallEventKind, Deadline, Origin};
use super::*;
use crate::ai::Persona;
use crate::config::{AiConfig, TrunkConfig};

/// What the routing found for an inbound call to a virtual number.
pub(super) struct VnumCall<'a> {
    pub trunk: &'a TrunkConfig,
    pub did: &'a str,
    pub from: &'a str,
    pub number: &'a str,
}

/// How long a virtual number's caller rings while its AI session starts,
/// by default; past it the call is refused (503). The engine's own
/// connect timeout (5 s less) normally reports first.
pub const AI_READY_TIMEOUT: Duration = Duration::from_secs(15);

fn persona(ai: &AiConfig) -> Persona {
    Persona {
        model: ai.model.clone(),
        voice: ai.voice.clone(),
        language: ai.language.clone(),
        system_prompt: ai.system_prompt.clone(),
        api_key: ai.api_key.clone(),
        transfer_targets: ai.transfer_targets.clone(),
        save_transcript: ai.save_transcript,
    }
}

impl Core {
    /// Answers an INVITE routed to a virtual number and joins the caller
    /// to the number's AI persona.
    pub(super) fn answer_virtual_number(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        source: Flow,
        offer: Option<&Sdp>,
        v: VnumCall<'_>,
    ) {
        let tenant = v.trunk.tenant.clone();
        if self.calls.journal_full {
            // Its record (events) could not be kept: refused, and not
            // recorded either.
            let why = "the switch's event journal is full";
            tracing::warn!(number = v.number, "virtual number call refused: {why}");
            self.stats.virtual_number_refused += 1;
            return self.reject(now, id, &req, StatusCode::SERVICE_UNAVAILABLE, Some(why));
        }
        let Some(vn) = self
            .config
            .virtual_numbers
            .iter()
            .find(|n| n.number == v.number && (n.tenant.is_empty() || n.tenant == tenant))
            .cloned()
        else {
            let why = "route names no virtual number";
            self.reject(now, id, &req, StatusCode::SERVICE_UNAVAILABLE, Some(why));
            return self.refused(now, &tenant, &v, StatusCode::SERVICE_UNAVAILABLE, why);
        };
        let persona = persona(&vn.ai);
        if let Err(e) = persona.check() {
            tracing::warn!(number = v.number, error = %e, "virtual number has a persona the node cannot run");
            self.reject(now, id, &req, StatusCode::SERVICE_UNAVAILABLE, Some(&e));
            return self.refused(now, &tenant, &v, StatusCode::SERVICE_UNAVAILABLE, &e);
        }
        // The AI is the other party: no B side (and no port for it) until
        // the call is transferred to a person.
        let opened = match self.open_a_leg(now, id, &req, source, offer, false) {
            Ok(o) => o,
            Err((status, why)) => return self.refused(now, &tenant, &v, status, &why),
        };
        let OpenedA { mut a, call_media } = opened;
        // A late offer from a caller that takes reliable provisional
        // responses: ours goes in the 180 and its PRACK answers it, so the
        // caller can ring while the AI starts, as with an early offer.
        let late = offer.is_none();
        a.reliable |= late && branches::supports_100rel(&req);
        let Some(a_id) = a.dialog.clone() else {
            return;
        };
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let call_id = format!("vnum{:012x}", self.ids.next_u64() & 0xffff_ffff_ffff);
        // The B side gets its port if the call is transferred
        // (`start_transfer`).
        let b = Leg::new(LocalMedia {
            port: 0,
            ..a.media.clone()
        });
        let call = Call {
            key,
            phase: Phase::Routing,
            a_invite_tx: Some(id),
            a_invite_id: Some(id),
            a_invite: req,
            a,
            b,
            branches: Vec::new(),
            sent: Vec::new(),
            byes: Vec::new(),
            bye_a_when_acked: false,
            a_held_1xx: None,
            trunks: vec![v.trunk.id.clone()],
            started: now,
            answered_at: None,
            origin: Some(Box::new(Origin::inbound(
                call_id.clone(),
                tenant.clone(),
                v.trunk.id.clone(),
                persona,
                vn.max_seconds,
                now + self.calls.ai_ready_timeout,
            ))),
            media: call_media,
            bridged: None,
            tapped: None,
            transfer: None,
            transferred: false,
            referral: None,
            joining: None,
        };
        self.calls.by_tx.insert(id, key);
        self.calls.owners.insert(a_id, (key, Side::A));
        self.calls
            .trunks
            .entry(v.trunk.id.clone())
            .or_default()
            .active += 1;
        if let Some(h) = call.media.handle {
            self.calls.by_media.insert(h, key);
        }
        if let Some(k) = request_key(&call.a_invite) {
            self.calls.by_a_request.insert(k, key);
        }
        self.calls.calls.insert(key, Box::new(call));
        self.book_inbound(key);
        let event = CallEvent {
            at_unix_ms: self.wall_ms(now),
            call_id: call_id.clone(),
            attempt: 1,
            tenant,
            kind: CallEventKind::Inbound {
                did: v.did.to_owned(),
                from_number: v.from.to_owned(),
                virtual_number: vn.number.clone(),
                trunk_id: v.trunk.id.clone(),
            },
        };
        self.calls.placed.events.push_back(event);
        let ringing = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| !late || c.a.reliable);
        if !ringing {
            // A late offer without 100rel: the codec is known only from
            // the answer in A's ACK, so the call is answered at once (our
            // 2xx carries the offer) and the AI starts with that ACK.
            return self.answer_vnum(now, key);
        }
        // The caller rings while the AI session starts, and is answered
        // once it is up: an engine that cannot be reached gets the
        // caller a 503 (its carrier may route elsewhere), not an answer
        // and a hang-up it is billed for.
        tracing::info!(call = key, %call_id, number = %vn.number, "virtual number rings while its AI starts");
        self.provisional_to_a(now, key, StatusCode::RINGING, false);
        // No media to the caller yet: its address is set on the answer
        // (until then the tap sends nothing and keeps the engine's audio).
        // A late offer's AI starts once A's PRACK has answered our offer
        // (the codec is A's choice).
        if !late {
            self.start_ai(now, key);
        }
    }

    /// A virtual number's call is answered: its AI session is up (or,
    /// for a late offer without 100rel, is to start with A's ACK). The
    /// 2xx goes to A, CallAnswered is reported, and the talk time starts.
    pub(super) fn answer_vnum(&mut self, now: Instant, key: CallKey) {
        let at_ms = self.wall_ms(now);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call.phase != Phase::Routing {
            return;
        }
        let started = call.started;
        let Some(o) = call.origin.as_mut().filter(|o| o.inbound) else {
            return;
        };
        call.phase = Phase::Answered;
        call.answered_at = Some(now);
        let (ready_by, talk_at) = o.answered(now, at_ms);
        let event = CallEvent {
            at_unix_ms: at_ms,
            call_id: o.call_id.clone(),
            attempt: 1,
            tenant: o.tenant.clone(),
            kind: CallEventKind::Answered {
                trunk_id: o.trunk_id.clone(),
                answer_ms: u32::try_from(now.saturating_duration_since(started).as_millis())
                    .unwrap_or(u32::MAX),
                inbound: true,
            },
        };
        let call_id = o.call_id.clone();
        let placed = &mut self.calls.placed;
        placed.deadlines.remove(&(ready_by, key, Deadline::Ring));
        placed.deadlines.insert((talk_at, key, Deadline::Talk));
        self.answer_a(now, key);
        self.calls.placed.events.push_back(event);
        self.stats.virtual_number_calls += 1;
        tracing::info!(call = key, %call_id, "virtual number answered");
        self.sync_media(key);
        self.start_recording(now, key);
    }

    /// A call routed to a virtual number was refused before any answer
    /// (`status` sent): it is reported all the same, InboundCall then an
    /// unanswered CallEnded (`failed`, the status and why), so the call
    /// has a record an operator can find when a caller says it failed.
    fn refused(
        &mut self,
        now: Instant,
        tenant: &str,
        v: &VnumCall<'_>,
        status: StatusCode,
        why: &str,
    ) {
        let at = self.wall_ms(now);
        let call_id = format!("vnum{:012x}", self.ids.next_u64() & 0xffff_ffff_ffff);
        let event = |kind| CallEvent {
            at_unix_ms: at,
            call_id: call_id.clone(),
            attempt: 1,
            tenant: tenant.to_owned(),
            kind,
        };
        let code = status.as_u16();
        let reason: String = why.chars().filter(|c| !c.is_control()).take(160).collect();
        let events = [
            event(CallEventKind::Inbound {
                did: v.did.to_owned(),
                from_number: v.from.to_owned(),
                virtual_number: v.number.to_owned(),
                trunk_id: v.trunk.id.clone(),
            }),
            event(CallEventKind::Ended {
                outcome: "failed".into(),
                error_detail: format!("refused with SIP {code}: {reason}"),
                answered: false,
                answered_at_unix_ms: 0,
                talk_seconds: 0,
                duration_seconds: 0,
                sip_status: code,
                input_turns: 0,
                output_turns: 0,
            }),
        ];
        self.calls.placed.events.extend(events);
        self.stats.virtual_number_refused += 1;
        tracing::info!(%call_id, number = %v.number, status = code, why, "virtual number call refused");
    }
}
