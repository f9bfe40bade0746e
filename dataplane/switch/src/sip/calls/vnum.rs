//! Inbound calls to a virtual number: the switch answers them itself and
//! the number's AI persona talks to the caller (an AI receptionist). The
//! call is booked like a placed call with a node-chosen id (`vnum` + 12
//! hex digits): InboundCall, then CallAnswered (inbound), the AI's
//! events, and CallEnded; Hangup works on it by that id.

use std::time::Instant;

use codeb_sip::sdp::{LocalMedia, Sdp};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Request, StatusCode};

use super::inbound::OpenedA;
use super::originate::{CallEvent, CallEventKind, Origin};
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
        let opened = match self.open_a_leg(now, id, &req, source, offer) {
            Ok(o) => o,
            Err((status, why)) => return self.refused(now, &tenant, &v, status, &why),
        };
        let OpenedA {
            a,
            call_media,
            b_port,
        } = opened;
        let Some(a_id) = a.dialog.clone() else {
            return;
        };
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let call_id = format!("vnum{:012x}", self.ids.next_u64() & 0xffff_ffff_ffff);
        // The B side's port stays unused: the AI is the other party.
        let b = Leg::new(LocalMedia {
            port: b_port,
            ..a.media.clone()
        });
        let answered_ms = self.wall_ms(now);
        let call = Call {
            key,
            phase: Phase::Answered,
            a_invite_tx: Some(id),
            a_invite: req,
            a,
            b,
            branches: Vec::new(),
            sent: Vec::new(),
            bye_a_when_acked: false,
            trunks: vec![v.trunk.id.clone()],
            started: now,
            answered_at: Some(now),
            origin: Some(Box::new(Origin::inbound(
                now,
                call_id.clone(),
                tenant.clone(),
                v.trunk.id.clone(),
                persona,
                vn.max_seconds,
                answered_ms,
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
        self.book_inbound(now, key);
        let event = |kind| CallEvent {
            at_unix_ms: answered_ms,
            call_id: call_id.clone(),
            attempt: 1,
            tenant: tenant.clone(),
            kind,
        };
        self.calls
            .placed
            .events
            .push_back(event(CallEventKind::Inbound {
                did: v.did.to_owned(),
                from_number: v.from.to_owned(),
                virtual_number: vn.number.clone(),
                trunk_id: v.trunk.id.clone(),
            }));
        self.answer_a(now, key);
        self.calls
            .placed
            .events
            .push_back(event(CallEventKind::Answered {
                trunk_id: v.trunk.id.clone(),
                answer_ms: 0,
                inbound: true,
            }));
        self.stats.virtual_number_calls += 1;
        tracing::info!(call = key, %call_id, number = %vn.number, "virtual number answered");
        self.sync_media(key);
        self.start_recording(now, key);
        // A late offer's answer comes with the ACK; the AI starts then.
        if offer.is_some() {
            self.start_ai(now, key);
        }
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
