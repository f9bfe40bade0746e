//! The AI leg as the call sees it: when an answered call gets its voice-AI
//! session (a tap on the media engine plus a request to the AI hub), what
//! the session's notes mean for the call, and holding a call's CallEnded
//! until its session has said its last word (transcript turns, usage), so
//! the control plane gets them before the call's end.

use std::time::{Duration, Instant};

use codeb_ai::Codec as AiCodec;
use codeb_media::pipeline::Pipeline;
use codeb_sip::sdp::Codec;

use super::originate::{CallEvent, CallEventKind};
use super::*;
use crate::ai::{AiNote, AiRequest, AiStart, Persona, Role, end_outcome};
use crate::media::{LegSide, tap_pipeline_config};

/// How long a call's end waits for its AI session to close.
pub const AI_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A call with an AI leg, from its start until its CallEnded is out.
#[derive(Debug)]
pub(super) struct AiCall {
    call_id: String,
    attempt: u32,
    tenant: String,
    /// Transcript turns: [caller, ai].
    turns: [u32; 2],
    /// The call's CallEnded, held until the session closes.
    ended: Option<CallEvent>,
    closed: bool,
    close_by: Option<Instant>,
    /// Its session was told to stop (once).
    stopping: bool,
    /// What the conversation had reached when its session was stopped
    /// ([`AiNote::Reached`]).
    reached: Option<String>,
}

impl Core {
    /// The next thing the AI hub must do.
    pub fn poll_ai_request(&mut self) -> Option<AiRequest> {
        self.calls.placed.ai_requests.pop_front()
    }

    /// AI calls whose session is open or closing.
    pub fn ai_calls(&self) -> usize {
        self.calls.placed.ai.len()
    }

    /// Joins a just-answered call to its persona's AI session: the callee
    /// of a placed call (B), or the caller of a virtual number (A).
    pub(super) fn start_ai(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let Some(o) = call.origin.as_ref() else {
            return;
        };
        let Some(persona) = o.ai.clone() else {
            tracing::info!(call_id = %o.call_id, "placed call has no AI persona; it carries no audio");
            return;
        };
        let (call_id, tenant, attempt) = (o.call_id.clone(), o.tenant.clone(), o.attempt);
        let inbound = o.inbound;
        let phase = call.phase;
        let transfer_users = self.transfer_users(&tenant, &persona);
        let calls = &mut self.calls;
        let Some(call) = calls.calls.get(&key) else {
            return;
        };
        let (side, media_side) = if inbound {
            (&call.a, LegSide::A)
        } else {
            (&call.b, LegSide::B)
        };
        let model = match persona.check() {
            Ok(m) => m,
            Err(e) => return self.end_placed(now, key, "failed", &format!("AI persona: {e}")),
        };
        let Some(negotiated) = side.negotiated.clone() else {
            return self.end_placed(now, key, "failed", "the far end's SDP has no usable audio");
        };
        let ssrc = self.ids.next_u64() as u32;
        let Some(mut leg) = media::leg_config(&negotiated, ssrc) else {
            return self.end_placed(now, key, "failed", "the far end's SDP has no audio codec");
        };
        if phase == Phase::Routing {
            // Not answered yet: nothing may reach the caller until the
            // answer sets its address (the tap holds the engine's audio).
            leg.remote_rtp = None;
        }
        let tap_cfg = Persona::tap_config(model.provider, calls.ai_quiet_batch_ms);
        let tap = match (&mut calls.media, call.media.handle) {
            (media::MediaPorts::Engine(engine), Some(h)) => engine
                .start_tap(now, h, media_side, leg, tap_cfg)
                .map_err(|e| e.to_string()),
            // Without an engine (the sans-IO tests) the tap exists but
            // nothing drives its worker side.
            _ => Pipeline::ai_tap(now, tap_pipeline_config(now), leg, tap_cfg)
                .map(|(_, engine)| engine)
                .map_err(|e| e.to_string()),
        };
        let tap = match tap {
            Ok(t) => t,
            Err(e) => return self.end_placed(now, key, "failed", &format!("media: {e}")),
        };
        if let Some(call) = self.calls.calls.get_mut(&key) {
            call.tapped = Some(media::tap_key(&negotiated));
        }
        let placed = &mut self.calls.placed;
        placed.ai.insert(
            key,
            AiCall {
                call_id: call_id.clone(),
                attempt,
                tenant,
                turns: [0, 0],
                reached: None,
                ended: None,
                closed: false,
                close_by: None,
                stopping: false,
            },
        );
        placed
            .ai_requests
            .push_back(AiRequest::Start(Box::new(AiStart {
                key,
                call_id,
                persona,
                model,
                telephony: if negotiated.codec == Codec::Pcma {
                    AiCodec::Pcma
                } else {
                    AiCodec::Pcmu
                },
                tap,
                // A call still ringing is answered as the session starts.
                answered_at: (phase != Phase::Routing).then_some(now),
                detect_voicemail: !inbound,
                narrowband_caller: matches!(negotiated.codec, Codec::Pcmu | Codec::Pcma),
                transfer_users,
            })));
    }

    /// What an AI call's session reports.
    pub fn ai_note(&mut self, now: Instant, key: CallKey, note: AiNote) {
        let at = self.wall_ms(now);
        // Once the party is handed over, the AI no longer decides how the
        // call ends (a note may have crossed the stop).
        let handed_over = self.calls.calls.get(&key).is_some_and(|c| c.transferred);
        let placed = &mut self.calls.placed;
        let Some(ai) = placed.ai.get_mut(&key) else {
            return;
        };
        let (call_id, tenant, attempt) = (ai.call_id.clone(), ai.tenant.clone(), ai.attempt);
        let event = |kind| CallEvent {
            at_unix_ms: at,
            call_id: call_id.clone(),
            attempt,
            tenant: tenant.clone(),
            kind,
        };
        match note {
            // A session that comes up after its call was given up (the
            // caller left, or it was not ready in time) started nothing.
            AiNote::Started if ai.stopping => {
                tracing::debug!(call = key, "AI session up after its call ended; ignored");
            }
            AiNote::Started => {
                // A virtual number's caller has rung while the session
                // started: the call is answered now (before `Started`).
                self.answer_vnum(now, key);
                self.calls
                    .placed
                    .events
                    .push_back(event(CallEventKind::Started));
                self.drain(now);
            }
            // A turn cut before a word was said (or heard) is none: not
            // in the transcript, not counted.
            AiNote::Turn { text, .. } if text.trim().is_empty() => {
                tracing::debug!(call = key, "an empty transcript turn; dropped");
            }
            AiNote::Turn {
                role,
                text,
                at_ms,
                interrupted,
            } => {
                let i = usize::from(role == Role::Ai);
                ai.turns[i] = ai.turns[i].saturating_add(1);
                placed.events.push_back(event(CallEventKind::Turn {
                    role,
                    text,
                    at_ms,
                    interrupted,
                }));
            }
            AiNote::Usage {
                input,
                output,
                estimated,
            } => {
                if input > 0 || output > 0 {
                    placed.events.push_back(event(CallEventKind::Usage {
                        input,
                        output,
                        estimated,
                    }));
                }
            }
            AiNote::EndCall { .. }
            | AiNote::Failed { .. }
            | AiNote::Transfer { .. }
            | AiNote::ToolCancelled { .. }
                if handed_over =>
            {
                tracing::debug!(call = key, ?note, "AI note after the transfer; ignored");
            }
            AiNote::EndCall { reason } => {
                self.end_placed(now, key, end_outcome(&reason), "");
                self.drain(now);
            }
            AiNote::Transfer { id, user } => self.ai_transfer(now, key, id, user),
            AiNote::ToolCancelled { id } => self.ai_transfer_called_off(now, key, &id),
            AiNote::Failed { detail } => {
                tracing::info!(call = key, %detail, "AI leg failed; ending the call");
                self.end_placed(now, key, "failed", &detail);
                self.drain(now);
            }
            AiNote::Reached { outcome } => ai.reached = outcome,
            AiNote::Closed => {
                ai.closed = true;
                if ai.ended.is_some() {
                    self.release_ended(key);
                }
            }
        }
    }

    /// A placed call is over: its CallEnded goes out now, or once its AI
    /// session has closed (at most [`AI_CLOSE_GRACE`] later).
    pub(super) fn end_with_ai(&mut self, now: Instant, key: CallKey, event: CallEvent) {
        let placed = &mut self.calls.placed;
        let Some(ai) = placed.ai.get_mut(&key) else {
            placed.events.push_back(event);
            return;
        };
        ai.ended = Some(event);
        if ai.closed {
            self.release_ended(key);
            return;
        }
        let by = now + AI_CLOSE_GRACE;
        ai.close_by = Some(by);
        placed.ai_close.insert((by, key));
        self.stop_ai(key);
    }

    /// Tells a call's AI session to stop, once: the call is ending (its
    /// far end may take up to 64·T1 to answer our BYE, or to ACK our 2xx
    /// before we may send one, and the session would talk on and bill
    /// meanwhile), or the AI handed its party over.
    pub(super) fn stop_ai(&mut self, key: CallKey) {
        let placed = &mut self.calls.placed;
        if let Some(ai) = placed.ai.get_mut(&key)
            && !ai.stopping
        {
            ai.stopping = true;
            placed.ai_requests.push_back(AiRequest::Stop(key));
        }
    }

    /// Sends a held CallEnded with the call's turn counts.
    fn release_ended(&mut self, key: CallKey) {
        let placed = &mut self.calls.placed;
        let Some(ai) = placed.ai.remove(&key) else {
            return;
        };
        if let Some(by) = ai.close_by {
            placed.ai_close.remove(&(by, key));
        }
        if let Some(mut ev) = ai.ended {
            if let CallEventKind::Ended {
                outcome,
                input_turns,
                output_turns,
                ..
            } = &mut ev.kind
            {
                *input_turns = ai.turns[0];
                *output_turns = ai.turns[1];
                // A far end that hung up after a real exchange, or during
                // the AI's goodbye, ended a conversation that was done.
                if outcome == "far-hangup"
                    && let Some(reached) = ai.reached
                {
                    *outcome = reached;
                }
            }
            placed.events.push_back(ev);
        }
    }

    /// The switch stops now: every CallEnded still held for its AI
    /// session goes out without it (as after [`AI_CLOSE_GRACE`]), so the
    /// link can journal and send it. Returns how many.
    pub fn release_held_ends(&mut self) -> usize {
        let held: Vec<CallKey> = self
            .calls
            .placed
            .ai
            .iter()
            .filter(|(_, ai)| ai.ended.is_some())
            .map(|(k, _)| *k)
            .collect();
        for &key in &held {
            self.release_ended(key);
        }
        held.len()
    }

    /// Calls whose AI session did not close in time end without it.
    pub(super) fn ai_close_deadlines(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.calls.placed.ai_close.first() {
            if at > now {
                break;
            }
            self.calls.placed.ai_close.pop_first();
            tracing::warn!(
                call = key,
                "AI session did not close in time; the call's end is reported without it"
            );
            self.release_ended(key);
        }
    }

    pub(super) fn ai_close_timeout(&self) -> Option<Instant> {
        self.calls.placed.ai_close.first().map(|(at, _)| *at)
    }
}
