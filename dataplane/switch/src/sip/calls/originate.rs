//! Calls the switch places itself (the control plane's `PlaceCall`): only
//! a B-leg, an INVITE through a trunk to a number, with our SDP offer. The
//! trunk's digest answer, its call and CPS limits, the ring timeout (then
//! CANCEL), and the talk-time limit apply; hanging up is CANCEL before the
//! answer and BYE after it. Each call reports what happened to it as
//! [`CallEvent`]s, which the IO loop hands to the event journal.
//!
//! An answered call is joined to its persona's voice-AI session (see
//! [`super::ai`]); it ends when the AI calls `end_call`, the far end hangs
//! up, the control plane hangs it up, or its talk time runs out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::sdp::{self, Direction, LocalMedia};

use super::*;
use crate::config::number_ok;

/// Ring time when the request says 0.
pub const DEFAULT_RING_SECONDS: u32 = 60;
/// Longest ring time accepted.
pub const MAX_RING_SECONDS: u32 = 600;
/// Talk time when the request says 0.
pub const DEFAULT_MAX_SECONDS: u32 = 3600;
/// Longest talk time accepted.
pub const MAX_TALK_SECONDS: u32 = 86_400;
/// Finished attempts remembered (a repeated PlaceCall of an attempt that
/// already ended is still a duplicate).
const RECENT_IDS: usize = 65_536;

/// A call to place.
#[derive(Debug, Clone, Default)]
pub struct Originate {
    pub call_id: String,
    pub tenant: String,
    pub phone: String,
    pub display_name: String,
    /// Empty: the tenant's default trunk.
    pub trunk_id: String,
    /// 0: [`DEFAULT_MAX_SECONDS`].
    pub max_seconds: u32,
    /// 0: [`DEFAULT_RING_SECONDS`].
    pub ring_timeout_seconds: u32,
    /// Which attempt of the call this is (a retry is a new attempt of the
    /// same call id; 0 counts as 1).
    pub attempt: u32,
    /// Who talks to the callee once it answers; `None`: nobody (the call
    /// carries no audio).
    pub ai: Option<crate::ai::Persona>,
    /// Record the answered call (if the node records at all).
    pub record: bool,
}

/// A call was accepted for dialling (or had been already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub trunk_id: String,
    pub duplicate: bool,
}

/// Why a call was not placed; each maps to one gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

/// No call with that id is on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no call {0} on this node")]
pub struct UnknownCall(pub String);

/// Something that happened to a placed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub at_unix_ms: u64,
    pub call_id: String,
    /// The attempt of the call (a retry is a new attempt of the same id).
    pub attempt: u32,
    pub tenant: String,
    pub kind: CallEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// An inbound call reached a virtual number (its first event; the
    /// node chose its call id).
    Inbound {
        did: String,
        from_number: String,
        virtual_number: String,
        trunk_id: String,
    },
    Answered {
        trunk_id: String,
        /// From the INVITE to the 2xx.
        answer_ms: u32,
        /// An inbound call answered by the AI (not a placed call).
        inbound: bool,
    },
    /// The AI session is up and audio flows.
    Started,
    /// One whole turn of the conversation.
    Turn {
        role: crate::ai::Role,
        text: String,
        /// From the answer.
        at_ms: u32,
        interrupted: bool,
    },
    /// The AI session's token usage.
    Usage {
        input: u64,
        output: u64,
        estimated: bool,
    },
    /// The AI's party was handed to a person (or a number).
    Transferred {
        to_user: String,
        to_phone: String,
        trunk_id: String,
        /// The spec's `transferType`.
        transfer_type: String,
    },
    Ended {
        outcome: String,
        error_detail: String,
        answered: bool,
        answered_at_unix_ms: u64,
        talk_seconds: u32,
        duration_seconds: u32,
        /// Final status of the dialling; 0 when answered.
        sip_status: u16,
        /// Transcript turns of the caller and of the AI.
        input_turns: u32,
        output_turns: u32,
    },
}

/// What a placed call carries beside the B2BUA state.
#[derive(Debug)]
pub(super) struct Origin {
    pub(super) call_id: String,
    pub(super) attempt: u32,
    pub(super) tenant: String,
    pub(super) ai: Option<crate::ai::Persona>,
    /// The caller called in (a virtual number): the AI is on the A leg.
    pub(super) inbound: bool,
    pub(super) trunk_id: String,
    /// The call asked to be recorded.
    pub(super) record: bool,
    max_seconds: u32,
    /// Why the call ends, decided by whoever ended it first.
    end: Option<(String, String)>,
    /// The last final failure of the dialling: status, reason, and why
    /// when it was our own 408 (no SIP response, or a transport failure).
    failure: Option<(u16, String, Option<&'static str>)>,
    /// The next failure noted is our own 408, for this reason, not the
    /// trunk's answer.
    pub(super) no_answer: Option<&'static str>,
    pub(super) answered_at_ms: Option<u64>,
    /// Its entries in the deadline set, removed when it ends.
    ring_at: Instant,
    talk_at: Option<Instant>,
    /// Its CallEnded is out: an answered call is over once it starts
    /// ending (RFC 3261 §15.1.1: the session ends as the BYE is sent),
    /// however long the far end takes to answer that BYE.
    reported: bool,
}

impl Origin {
    /// The side its AI takes, which a transfer hands to a person: A of a
    /// placed call (the callee is B), B of a virtual number's (the caller
    /// is A).
    pub(super) fn ai_side(&self) -> Side {
        if self.inbound { Side::B } else { Side::A }
    }

    /// An inbound call the switch answers itself (a virtual number), with
    /// `max_seconds` of talk time once answered; it rings until
    /// `ready_by` at the latest.
    pub(super) fn inbound(
        call_id: String,
        tenant: String,
        trunk_id: String,
        persona: crate::ai::Persona,
        max_seconds: u32,
        ready_by: Instant,
    ) -> Origin {
        Origin {
            call_id,
            attempt: 1,
            tenant,
            ai: Some(persona),
            inbound: true,
            trunk_id,
            record: false,
            max_seconds: if max_seconds == 0 {
                DEFAULT_MAX_SECONDS
            } else {
                max_seconds.min(MAX_TALK_SECONDS)
            },
            end: None,
            failure: None,
            no_answer: None,
            reported: false,
            answered_at_ms: None,
            ring_at: ready_by,
            talk_at: None,
        }
    }

    /// The call was answered (`now`, `at_ms` on the wall clock): its talk
    /// time starts. Returns its ring deadline, which no longer applies,
    /// and its talk deadline.
    pub(super) fn answered(&mut self, now: Instant, at_ms: u64) -> (Instant, Instant) {
        self.answered_at_ms = Some(at_ms);
        let talk_at = now + Duration::from_secs(u64::from(self.max_seconds));
        self.talk_at = Some(talk_at);
        (self.ring_at, talk_at)
    }
}

/// A timed step of a placed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    Ring,
    Talk,
    /// A transfer's target rang too long.
    TransferRing,
    /// A routed call (not placed) rang too long: Timer C.
    RouteRing,
}

/// The last [`RECENT_IDS`] attempts (call id, attempt) remembered with a
/// value, oldest forgotten first.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<(String, u32), V>,
    order: VecDeque<(String, u32)>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn insert(&mut self, key: (String, u32), value: V) {
        if self.map.insert(key.clone(), value).is_some() {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
    }

    fn get(&self, key: &(String, u32)) -> Option<&V> {
        self.map.get(key)
    }
}

/// The placed calls' bookkeeping inside [`Calls`].
#[derive(Debug, Default)]
pub(super) struct Placements {
    /// Calls in progress by call id: their key, attempt and trunk.
    by_id: HashMap<String, (CallKey, u32, String)>,
    /// Ended attempts (call id, attempt) and their trunks, oldest first.
    recent: Bounded<String>,
    /// Attempts hung up before this node placed them (their PlaceCall was
    /// still on its way): never placed after.
    hung_up: Bounded<()>,
    pub(super) deadlines: std::collections::BTreeSet<(Instant, CallKey, Deadline)>,
    pub(super) events: VecDeque<CallEvent>,
    /// Calls with an AI leg, what the hub must do, and when held ends
    /// are released without their session.
    pub(super) ai: HashMap<CallKey, super::ai::AiCall>,
    pub(super) ai_requests: VecDeque<crate::ai::AiRequest>,
    pub(super) ai_close: std::collections::BTreeSet<(Instant, CallKey)>,
}

impl Placements {
    /// The key of a call in progress.
    pub(super) fn key_of(&self, call_id: &str) -> Option<CallKey> {
        self.by_id.get(call_id).map(|(k, _, _)| *k)
    }

    fn remember(&mut self, attempt: (String, u32), trunk: String) {
        self.recent.insert(attempt, trunk);
    }

    fn forbid(&mut self, attempt: (String, u32)) {
        self.hung_up.insert(attempt, ());
    }

    /// The trunk of this attempt if it was placed already; an error when
    /// another attempt of the call is still in progress here.
    fn duplicate(&self, call_id: &str, attempt: u32) -> Result<Option<String>, OriginateError> {
        if let Some((_, a, t)) = self.by_id.get(call_id) {
            if *a == attempt {
                return Ok(Some(t.clone()));
            }
            return Err(OriginateError::FailedPrecondition(format!(
                "attempt {a} of call {call_id} is still in progress on this node"
            )));
        }
        Ok(self.recent.get(&(call_id.to_owned(), attempt)).cloned())
    }
}

fn printable_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The failure outcome of a dialling that ended with `code` (`local`: why,
/// when it is our own 408 for an INVITE that got no answer at all, not even
/// 100 Trying, or could not be sent: the trunk is down or unreachable,
/// which is not a callee who did not pick up).
fn failure_outcome(code: u16, reason: &str, local: Option<&str>) -> (String, String) {
    if let Some(why) = local {
        return ("failed".into(), why.to_owned());
    }
    match code {
        486 | 600 => ("busy".into(), String::new()),
        480 | 408 => ("no-answer".into(), String::new()),
        _ => ("failed".into(), format!("SIP {code} {reason}")),
    }
}

impl Core {
    /// Unix milliseconds at `now` (the wall clock passed in at start).
    pub(crate) fn wall_ms(&self, now: Instant) -> u64 {
        let (base, ms) = self.settings.wall_base_ms;
        let since = now.saturating_duration_since(base).as_millis();
        ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Places a call: checks it, picks the trunk, and sends the INVITE.
    /// Placing the same attempt of a `call_id` again returns the first
    /// result and starts nothing; a new attempt (a retry) is a new call.
    pub fn place_call(&mut self, now: Instant, req: Originate) -> Result<Placed, OriginateError> {
        use OriginateError::*;
        if !printable_id(&req.call_id) {
            return Err(InvalidArgument(
                "call_id: 1-64 characters of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        // A repeat of an attempt placed here is answered as such first,
        // whatever else stops new calls: the control plane that asks again
        // (its first answer was lost) must learn the call rings, not that
        // it may place it elsewhere.
        let attempt = req.attempt.max(1);
        if let Some(trunk_id) = self.calls.placed.duplicate(&req.call_id, attempt)? {
            return Ok(Placed {
                trunk_id,
                duplicate: true,
            });
        }
        if self
            .calls
            .placed
            .hung_up
            .get(&(req.call_id.clone(), attempt))
            .is_some()
        {
            return Err(FailedPrecondition(format!(
                "attempt {attempt} of call {} was hung up before it was placed here",
                req.call_id
            )));
        }
        if self.calls.draining {
            return Err(ResourceExhausted("the switch is shutting down".into()));
        }
        if self.calls.journal_full {
            return Err(ResourceExhausted(
                "the switch's event journal is full (unacknowledged events); call refused".into(),
            ));
        }
        if !number_ok(&req.phone) {
            return Err(InvalidArgument(
                "phone: an optional + and 1-32 digits".into(),
            ));
        }
        if req.tenant.len() > 253 || req.display_name.len() > 256 || req.trunk_id.len() > 64 {
            return Err(InvalidArgument(
                "tenant, display_name or trunk_id too long".into(),
            ));
        }
        if req.ring_timeout_seconds > MAX_RING_SECONDS {
            return Err(InvalidArgument(format!(
                "ring_timeout_seconds: at most {MAX_RING_SECONDS}"
            )));
        }
        if req.max_seconds > MAX_TALK_SECONDS {
            return Err(InvalidArgument(format!(
                "max_seconds: at most {MAX_TALK_SECONDS}"
            )));
        }
        // Trunks without a tenant serve every tenant on the node.
        let trunk = if req.trunk_id.is_empty() {
            self.config
                .default_trunk(&req.tenant)
                .or_else(|| self.config.default_trunk(""))
                .cloned()
                .ok_or_else(|| {
                    FailedPrecondition(format!(
                        "no default trunk for tenant {:?} on this node",
                        req.tenant
                    ))
                })?
        } else {
            self.config
                .trunks
                .iter()
                .find(|t| t.id == req.trunk_id && (t.tenant.is_empty() || t.tenant == req.tenant))
                .cloned()
                .ok_or_else(|| {
                    FailedPrecondition(format!("no trunk {} for this tenant", req.trunk_id))
                })?
        };
        if !self.config.may_dial(&req.tenant, &req.phone) {
            return Err(FailedPrecondition(format!(
                "{} is not on the tenant's whitelist",
                req.phone
            )));
        }
        if let Some(why) = self.trunk_down(&trunk.id) {
            return Err(FailedPrecondition(format!(
                "trunk {} is down ({why})",
                trunk.id
            )));
        }
        let Some(target) = self.trunk_target(&trunk, &req.phone) else {
            return Err(FailedPrecondition(format!(
                "trunk {} has no address (its host does not resolve)",
                trunk.id
            )));
        };
        let Some(flow) = self.target_flow(&target) else {
            return Err(FailedPrecondition("no SIP socket".into()));
        };
        if self.calls.calls.len() >= self.calls.max_calls {
            return Err(ResourceExhausted("the node's call limit is reached".into()));
        }
        if let Some(why) = self.trunk_refusal(&trunk, now) {
            return Err(ResourceExhausted(why));
        }
        // B's port is in the INVITE; the AI is the other party, so A has
        // none until the call is transferred to a person
        // (`start_transfer`).
        let Some((call_media, port)) = self
            .calls
            .media
            .open(media::Legs::Only(crate::media::LegSide::B))
            .and_then(|m| Some((m, m.ports[1]?)))
        else {
            return Err(ResourceExhausted("no media ports left".into()));
        };
        let media = LocalMedia {
            addr: self.calls.media_ip,
            port,
            codecs: CODECS.to_vec(),
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: self.ids.next_u64() >> 1,
            session_version: 1,
        };
        let mut b = Leg::new(media.clone());
        b.sdp = Bytes::from(sdp::offer(&b.media).to_text());
        let display: String = req
            .display_name
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .take(64)
            .collect();
        let user = [&trunk.from_user, &trunk.username]
            .into_iter()
            .find(|u| !u.is_empty())
            .cloned()
            .unwrap_or_else(|| "codeb".into());
        let identity = Identity {
            user,
            host: if trunk.from_domain.is_empty() {
                trunk.host.clone()
            } else {
                trunk.from_domain.clone()
            },
            display: (!display.is_empty()).then_some(display),
        };
        let tag = self.ids.tag();
        let invite = self.build_b_invite(&flow, &target.uri, &identity, &tag, 70, b.sdp.clone());
        let sent = invite.ok_or_else(|| "the INVITE could not be built".to_owned());
        let sent = sent.and_then(|invite| {
            self.layer
                .send_request(now, invite.clone(), flow)
                .map(|tx| (tx, invite))
                .map_err(|e| e.to_string())
        });
        let (tx, invite) = match sent {
            Ok(x) => x,
            Err(e) => {
                self.calls.media.close(call_media);
                return Err(ResourceExhausted(format!("call not started: {e}")));
            }
        };
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let ring = match req.ring_timeout_seconds {
            0 => DEFAULT_RING_SECONDS,
            s => s,
        };
        let ring_at = now + Duration::from_secs(u64::from(ring));
        // No A side yet: no port (the AI takes its place), and
        // `a_invite` holds our INVITE, which nothing answers (the A-side
        // paths all need `a_invite_tx`, which stays None).
        let a = Leg::new(LocalMedia { port: 0, ..media });
        let call = Call {
            key,
            phase: Phase::Routing,
            a_invite_tx: None,
            a_invite_id: None,
            a_invite: invite.clone(),
            a,
            b,
            branches: vec![Branch {
                tx,
                invite,
                flow,
                failed: None,
                won: false,
                dropped: false,
                trunk: Some(trunk.id.clone()),
                auth_tried: false,
                interval_raised: false,
            }],
            sent: Vec::new(),
            byes: Vec::new(),
            bye_a_when_acked: false,
            a_held_1xx: None,
            trunks: vec![trunk.id.clone()],
            started: now,
            answered_at: None,
            media: call_media,
            bridged: None,
            tapped: None,
            transfer: None,
            transferred: false,
            referral: None,
            joining: None,
            origin: Some(Box::new(Origin {
                call_id: req.call_id.clone(),
                attempt,
                tenant: req.tenant,
                ai: req.ai,
                inbound: false,
                trunk_id: trunk.id.clone(),
                record: req.record,
                max_seconds: if req.max_seconds == 0 {
                    DEFAULT_MAX_SECONDS
                } else {
                    req.max_seconds
                },
                end: None,
                failure: None,
                no_answer: None,
                reported: false,
                answered_at_ms: None,
                ring_at,
                talk_at: None,
            })),
        };
        self.calls.by_tx.insert(tx, key);
        self.calls
            .trunks
            .entry(trunk.id.clone())
            .or_default()
            .active += 1;
        self.calls
            .placed
            .deadlines
            .insert((ring_at, key, Deadline::Ring));
        self.calls
            .placed
            .by_id
            .insert(req.call_id.clone(), (key, attempt, trunk.id.clone()));
        if let Some(h) = call_media.handle {
            self.calls.by_media.insert(h, key);
        }
        self.calls.calls.insert(key, Box::new(call));
        tracing::info!(call = key, call_id = %req.call_id, trunk = %trunk.id, "placing call");
        self.drain(now);
        Ok(Placed {
            trunk_id: trunk.id,
            duplicate: false,
        })
    }

    /// Ends a placed call: CANCEL while it rings, BYE once answered.
    /// `outcome` (default "cancelled") is what its end reports. A call
    /// already ending is left to end, and the answer says so (`true`:
    /// this hangup changed nothing).
    pub fn hangup_call(
        &mut self,
        now: Instant,
        call_id: &str,
        outcome: Option<&str>,
    ) -> Result<bool, UnknownCall> {
        self.hangup_attempt(now, call_id, outcome, 0)
    }

    /// [`Self::hangup_call`] for `attempt` of the call (0: not said). An
    /// attempt placed here and ended since is already over (true); one
    /// this node has not placed is refused if its PlaceCall comes after
    /// all (it was on its way as the call was hung up), so that what the
    /// control plane cancels never rings.
    pub fn hangup_attempt(
        &mut self,
        now: Instant,
        call_id: &str,
        outcome: Option<&str>,
        attempt: u32,
    ) -> Result<bool, UnknownCall> {
        let Some((key, carried, _)) = self.calls.placed.by_id.get(call_id).cloned() else {
            if attempt > 0 {
                let id = (call_id.to_owned(), attempt);
                if self.calls.placed.recent.get(&id).is_some() {
                    return Ok(true);
                }
                self.calls.placed.forbid(id);
            }
            return Err(UnknownCall(call_id.to_owned()));
        };
        // Another attempt of the call is up here (an earlier one, lost to
        // the control plane): it is ended, and the attempt named is never
        // placed after it.
        if attempt > 0 && carried != attempt {
            self.calls.placed.forbid((call_id.to_owned(), attempt));
        }
        let already = self
            .calls
            .calls
            .get(&key)
            .is_none_or(|c| c.phase == Phase::Ending);
        let outcome = outcome
            .filter(|o| !o.is_empty())
            .map(|o| o.chars().take(64).collect::<String>())
            .unwrap_or_else(|| "cancelled".into());
        self.end_placed(now, key, &outcome, "");
        self.drain(now);
        Ok(already)
    }

    /// Ends a placed call for a reason of ours.
    pub(super) fn end_placed(&mut self, now: Instant, key: CallKey, outcome: &str, detail: &str) {
        let Some(phase) = self.calls.calls.get(&key).map(|c| c.phase) else {
            return;
        };
        self.note_end(key, outcome, detail);
        let answering = self
            .calls
            .calls
            .get(&key)
            .is_some_and(|c| c.a_invite_tx.is_some());
        match phase {
            // A virtual number's caller still rings: it gets a final
            // answer (503 when something failed, else 480).
            Phase::Routing if answering => {
                let status = if outcome == "failed" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::TEMPORARILY_UNAVAILABLE
                };
                self.note_failure(key, status.as_u16(), status.canonical_reason().as_bytes());
                self.stats.virtual_number_refused += 1;
                self.fail_call(now, key, status);
            }
            Phase::Routing => {
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.phase = Phase::Ending;
                }
                self.calls.failed += 1;
                self.cancel_branches(now, key);
                self.settle(now, key);
            }
            Phase::Answered | Phase::Confirmed => self.hang_up(now, key),
            Phase::Ending => {}
        }
    }

    /// The call is a virtual number's (its caller is on A).
    pub(super) fn is_inbound(&self, key: CallKey) -> bool {
        self.calls
            .calls
            .get(&key)
            .and_then(|c| c.origin.as_ref())
            .is_some_and(|o| o.inbound)
    }

    /// Records why a placed call ends, unless something ended it first.
    pub(super) fn note_end(&mut self, key: CallKey, outcome: &str, detail: &str) {
        if let Some(o) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.origin.as_mut())
            && o.end.is_none()
        {
            o.end = Some((outcome.to_owned(), detail.to_owned()));
        }
    }

    /// A placed call's dialling failed with a final response.
    pub(super) fn note_failure(&mut self, key: CallKey, code: u16, reason: &[u8]) {
        if let Some(o) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.origin.as_mut())
        {
            let reason: String = String::from_utf8_lossy(reason)
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            let local = o.no_answer.take();
            o.failure = Some((code, reason, local));
        }
    }

    /// A placed call was answered: it is confirmed at once (our ACK is
    /// out; there is no A side to wait for), reports CallAnswered, and its
    /// talk time starts.
    pub(super) fn placed_answered(&mut self, now: Instant, key: CallKey) {
        let at_ms = self.wall_ms(now);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let started = call.started;
        let Some(o) = call.origin.as_mut() else {
            return;
        };
        call.phase = Phase::Confirmed;
        o.answered_at_ms = Some(at_ms);
        let talk_at = now + Duration::from_secs(u64::from(o.max_seconds));
        o.talk_at = Some(talk_at);
        let event = CallEvent {
            at_unix_ms: at_ms,
            call_id: o.call_id.clone(),
            attempt: o.attempt,
            tenant: o.tenant.clone(),
            kind: CallEventKind::Answered {
                trunk_id: o.trunk_id.clone(),
                answer_ms: u32::try_from(now.saturating_duration_since(started).as_millis())
                    .unwrap_or(u32::MAX),
                inbound: o.inbound,
            },
        };
        let placed = &mut self.calls.placed;
        placed.deadlines.insert((talk_at, key, Deadline::Talk));
        placed.events.push_back(event);
        self.start_ai(now, key);
    }

    /// Books an inbound AI call as a call with an id of its own (Hangup
    /// and events use it), ringing until its deadline.
    pub(super) fn book_inbound(&mut self, key: CallKey) {
        let Some(o) = self.calls.calls.get(&key).and_then(|c| c.origin.as_ref()) else {
            return;
        };
        let placed = &mut self.calls.placed;
        placed.deadlines.insert((o.ring_at, key, Deadline::Ring));
        placed
            .by_id
            .insert(o.call_id.clone(), (key, o.attempt, o.trunk_id.clone()));
    }

    /// An answered placed call starts ending (either side hung up): its
    /// CallEnded goes out now, timed now, not when the far end answers
    /// our BYE (up to 64·T1 later, or never).
    pub(super) fn placed_ending(&mut self, now: Instant, key: CallKey) {
        self.report_end(now, key, true);
    }

    /// Sends a placed call's CallEnded as of `now`, once (nothing if it
    /// went already, or `answered_only` and the call was not answered).
    fn report_end(&mut self, now: Instant, key: CallKey, answered_only: bool) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let Some(o) = call.origin.as_ref() else {
            return;
        };
        if o.reported || (answered_only && o.answered_at_ms.is_none()) {
            return;
        }
        let event = self.ended_event(now, call, o);
        if let Some(o) = self
            .calls
            .calls
            .get_mut(&key)
            .and_then(|c| c.origin.as_mut())
        {
            o.reported = true;
        }
        self.end_with_ai(now, key, event);
    }

    /// The switch stops with calls still ending (a far end that never
    /// answered our CANCEL): each placed call whose CallEnded is not out
    /// yet reports its end now, as of `now`, so the link journals it
    /// (else the control plane only learns of it as a lost node).
    /// Returns how many; ends held for an AI session are released by
    /// [`Self::release_held_ends`], called after this.
    pub fn report_unfinished_ends(&mut self, now: Instant) -> usize {
        let keys: Vec<CallKey> = self
            .calls
            .calls
            .values()
            .filter(|c| c.origin.as_ref().is_some_and(|o| !o.reported))
            .map(|c| c.key)
            .collect();
        for &key in &keys {
            self.report_end(now, key, false);
        }
        keys.len()
    }

    /// A placed call's CallEnded, as of `now`.
    fn ended_event(&self, now: Instant, call: &Call, o: &Origin) -> CallEvent {
        let answered = o.answered_at_ms.is_some();
        let (outcome, error_detail) = match (&o.end, &o.failure) {
            (Some(end), _) => end.clone(),
            (None, _) if answered => ("far-hangup".into(), String::new()),
            (None, Some((code, reason, local))) => failure_outcome(*code, reason, *local),
            (None, None) => ("failed".into(), "the call ended before any answer".into()),
        };
        let sip_status = if answered {
            0
        } else {
            o.failure.as_ref().map(|(c, _, _)| *c).unwrap_or(0)
        };
        // Whole seconds to the nearest, half up (the spec's example rounds
        // 144.5 s of talk to 145).
        let secs = |d: Duration| u32::try_from((d.as_millis() + 500) / 1000).unwrap_or(u32::MAX);
        CallEvent {
            at_unix_ms: self.wall_ms(now),
            call_id: o.call_id.clone(),
            attempt: o.attempt,
            tenant: o.tenant.clone(),
            kind: CallEventKind::Ended {
                outcome,
                error_detail,
                answered,
                answered_at_unix_ms: o.answered_at_ms.unwrap_or(0),
                talk_seconds: call
                    .answered_at
                    .filter(|_| answered)
                    .map(|a| secs(now.saturating_duration_since(a)))
                    .unwrap_or(0),
                duration_seconds: secs(now.saturating_duration_since(call.started)),
                sip_status,
                input_turns: 0,
                output_turns: 0,
            },
        }
    }

    /// A placed call is gone: its CallEnded, and its id is remembered.
    pub(super) fn placed_finished(&mut self, now: Instant, call: &Call) {
        let Some(o) = call.origin.as_ref() else {
            return;
        };
        let event = (!o.reported).then(|| self.ended_event(now, call, o));
        let placed = &mut self.calls.placed;
        placed
            .deadlines
            .remove(&(o.ring_at, call.key, Deadline::Ring));
        if let Some(at) = o.talk_at {
            placed.deadlines.remove(&(at, call.key, Deadline::Talk));
        }
        placed.by_id.remove(&o.call_id);
        placed.remember((o.call_id.clone(), o.attempt), o.trunk_id.clone());
        if let Some(event) = event {
            self.end_with_ai(now, call.key, event);
        }
    }

    /// The next event of a placed call, oldest first.
    pub fn poll_call_event(&mut self) -> Option<CallEvent> {
        self.calls.placed.events.pop_front()
    }

    /// Placed calls in progress.
    pub fn placed_calls(&self) -> usize {
        self.calls.placed.by_id.len()
    }

    pub(crate) fn placed_timeout(&self) -> Option<Instant> {
        let ring_talk = self.calls.placed.deadlines.first().map(|(at, _, _)| *at);
        match (ring_talk, self.ai_close_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ring and talk deadlines that fell due.
    pub(crate) fn placed_deadlines(&mut self, now: Instant) {
        self.ai_close_deadlines(now);
        while let Some(&(at, key, what)) = self.calls.placed.deadlines.first() {
            if at > now {
                break;
            }
            self.calls.placed.deadlines.pop_first();
            let Some(phase) = self.calls.calls.get(&key).map(|c| c.phase) else {
                continue;
            };
            match (what, phase) {
                (Deadline::Ring, Phase::Routing) if self.is_inbound(key) => {
                    let secs = self.calls.ai_ready_timeout.as_secs();
                    // A late offer's AI starts only once the caller's
                    // PRACK has answered our offer.
                    let unanswered = self
                        .calls
                        .calls
                        .get(&key)
                        .is_some_and(|c| c.a.offer_in_1xx && c.a.negotiated.is_none());
                    let why = if unanswered {
                        format!(
                            "the caller did not answer our SDP offer (no PRACK) within {secs} s"
                        )
                    } else {
                        format!("the AI engine was not ready within {secs} s")
                    };
                    tracing::warn!(call = key, "{why}; refusing the caller");
                    self.end_placed(now, key, "failed", &why);
                }
                (Deadline::Ring, Phase::Routing) => {
                    tracing::info!(call = key, "ring timeout; cancelling");
                    self.end_placed(now, key, "no-answer", "");
                }
                (Deadline::Talk, Phase::Answered | Phase::Confirmed) => {
                    tracing::info!(call = key, "talk time limit reached; hanging up");
                    self.end_placed(now, key, "max-duration", "");
                }
                (Deadline::TransferRing, _) => self.transfer_ring_timeout(now, key),
                (Deadline::RouteRing, Phase::Routing) => {
                    tracing::info!(call = key, "nobody answered within the ring timeout; 408");
                    self.fail_call(now, key, StatusCode::REQUEST_TIMEOUT);
                }
                _ => {}
            }
        }
    }
}
