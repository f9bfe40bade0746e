//! Inbound calls to a virtual number: the switch answers them itself and
//! the number's AI persona talks to the caller (an AI receptionist). The
//! call is booked like a placed call with a node-chosen id (`vnum` + 12
//! hex digits): InboundCall, then CallAnswered (inbound), the AI's
//! events, and CallEnded; Hangup works on it by that id.

use std::time::Instant;

use bytes::Bytes;
use codeb_sip::sdp::{self, Direction, LocalMedia, Sdp};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Dialog, Method, Request, StatusCode};

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
        offer: &Sdp,
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
            return self.reject(
                now,
                id,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("route names no virtual number"),
            );
        };
        let persona = persona(&vn.ai);
        if let Err(e) = persona.check() {
            tracing::warn!(number = v.number, error = %e, "virtual number has a persona the node cannot run");
            return self.reject(now, id, &req, StatusCode::SERVICE_UNAVAILABLE, Some(&e));
        }
        let a_tag = self.ids.tag();
        let Some(local) = self.dialog_local(&source) else {
            return self.reject(now, id, &req, StatusCode::SERVER_INTERNAL_ERROR, None);
        };
        let config = self.dialog_config(Side::A);
        let a_dialog = match Dialog::uas(&req, &a_tag, local, source, config, &mut self.ids) {
            Ok(d) => d,
            Err(e) => {
                let warning = e.to_string();
                return self.reject(now, id, &req, StatusCode::BAD_REQUEST, Some(&warning));
            }
        };
        let Some(call_media) = self.calls.media.open() else {
            return self.reject(
                now,
                id,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no media ports left"),
            );
        };
        let [a_port, b_port] = call_media.ports;
        let a_media = LocalMedia {
            addr: self.calls.media_ip,
            port: a_port,
            codecs: CODECS.to_vec(),
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: self.ids.next_u64() >> 1,
            session_version: 1,
        };
        let (answer, negotiated) = match sdp::answer(offer, &a_media) {
            Ok(x) => x,
            Err(e) => {
                self.calls.media.close(call_media);
                let warning = e.to_string();
                return self.reject(
                    now,
                    id,
                    &req,
                    StatusCode::NOT_ACCEPTABLE_HERE,
                    Some(&warning),
                );
            }
        };
        let a_id = match self.calls.dialogs.insert(a_dialog) {
            Ok(a_id) => a_id,
            Err(e) => {
                self.calls.media.close(call_media);
                let warning = e.to_string();
                return self.reject(
                    now,
                    id,
                    &req,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(&warning),
                );
            }
        };
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let call_id = format!("vnum{:012x}", self.ids.next_u64() & 0xffff_ffff_ffff);
        let mut a = Leg::new(a_media.clone());
        a.dialog = Some(a_id.clone());
        a.sdp = Bytes::from(answer.to_text());
        a.negotiated = Some(negotiated);
        a.update = req
            .headers
            .allow()
            .is_ok_and(|m| m.contains(&Method::Update));
        // The B side's port stays unused: the AI is the other party.
        let b = Leg::new(LocalMedia {
            port: b_port,
            ..a_media
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
        self.calls.calls.insert(key, call);
        self.book_inbound(now, key);
        let event = |kind| CallEvent {
            at_unix_ms: answered_ms,
            call_id: call_id.clone(),
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
        self.start_ai(now, key);
    }
}
