//! Reading a node's event stream: `Subscribe` from the cursor stored in the
//! database, apply each event (one transaction with the cursor and its
//! webhook events, see `store::switch_events`), then `Ack` what was applied:
//! once [`ACK_EVERY`] events are in, or [`ACK_DELAY`] after the first of
//! them was (the node makes each ack durable, which a catch-up of many
//! thousands of events one ack each would wait on). A restart of
//! either side resumes from the stored cursor: an event applied before the
//! crash is at or below the cursor and skipped when resent; one that was
//! not is applied now.
//!
//! A node that lost its journal starts a new one with a new id; its first
//! event under that id is logged loudly, the cursor is reset to the new
//! journal, and reading goes on from there (what the old journal still
//! held unacknowledged is gone with it).

use std::sync::Arc;
use std::time::Duration;

use codeb_proto::v1 as pb;
use codeb_types::UtcMillis;

use super::backoff::Backoff;
use super::node::Node;
use crate::clock::Clock;
use crate::store::{
    Applied, AttemptEnd, EventKind, InboundStart, MAX_INBOUND_FIELD, Speaker, Store, StoreError,
    SwitchEvent,
};

/// Events applied before they are acknowledged, at most...
pub const ACK_EVERY: u64 = 256;
/// ...and how long an applied event waits for its acknowledgement.
pub const ACK_DELAY: Duration = Duration::from_millis(50);

/// Longest id or tenant a node may send.
const MAX_ID: usize = 256;
/// Longest outcome / free-text field kept.
const MAX_SHORT: usize = 256;

/// Why an event from the wire was not usable as sent.
fn bad(what: &str) -> String {
    format!("invalid switch event: {what}")
}

fn i64_of(what: &str, v: u64) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| bad(&format!("{what} {v} is out of range")))
}

fn short(s: &str) -> String {
    crate::store::cut_text(s, MAX_SHORT)
}

/// A caller-controlled value (a DID, a From number): kept, but cut to
/// `MAX_INBOUND_FIELD` bytes with control characters replaced, so a caller
/// can neither bloat the record nor make the call vanish from it.
fn caller_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    crate::store::cut_text(&clean, MAX_INBOUND_FIELD)
}

/// A virtual number as the API accepts one: 1–32 digits, optional `+`.
fn valid_virtual_number(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    (1..=32).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn inbound(ev: &pb::Event, i: &pb::InboundCall) -> Result<EventKind, String> {
    // The id and tenant identify the record; without them it cannot be
    // attributed (and the following events could not find it).
    if codeb_types::VnumCallId::parse(&ev.call_id).is_err() {
        return Err(bad(&format!(
            "inbound call id '{}' is not vnum + 12 lowercase hex",
            short(&ev.call_id)
        )));
    }
    if ev.tenant.is_empty() {
        return Err(bad("inbound call without a tenant"));
    }
    if !valid_virtual_number(&i.virtual_number) {
        return Err(bad(&format!(
            "inbound virtual_number '{}' is not 1-32 digits",
            short(&i.virtual_number)
        )));
    }
    let trunk_id = match i.trunk_id.as_str() {
        "" => None,
        t if t.len() <= MAX_INBOUND_FIELD && t.chars().all(|c| c.is_ascii_graphic()) => {
            Some(t.to_owned())
        }
        t => {
            tracing::warn!(call = %ev.call_id, "inbound call with an invalid trunk id '{}':                 recorded without it", short(t));
            None
        }
    };
    Ok(EventKind::Inbound(InboundStart {
        did: caller_text(&i.did),
        from_number: caller_text(&i.from_number),
        virtual_number: i.virtual_number.clone(),
        trunk_id,
        instance: instance_id(&i.instance_id),
    }))
}

/// A node's instance id as we keep it: up to 64 printable ASCII
/// characters, else none ('': the call is then only ended by the node
/// being unreachable, not by its restart).
pub(crate) fn instance_id(s: &str) -> String {
    if s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) {
        s.to_owned()
    } else {
        String::new()
    }
}

/// Checks and converts one event. `Err` when the envelope itself is
/// unusable (then it cannot be applied or skipped by seq); a bad payload
/// becomes `EventKind::Ignored`, so the cursor still moves past it.
pub fn convert(ev: &pb::Event) -> Result<SwitchEvent, String> {
    let seq = i64_of("seq", ev.seq)?;
    if seq == 0 {
        return Err(bad("seq 0 (sequences start at 1)"));
    }
    if ev.journal_id.is_empty() || ev.journal_id.len() > MAX_ID {
        return Err(bad("journal_id is empty or too long"));
    }
    let at = UtcMillis(i64_of("at_unix_ms", ev.at_unix_ms)?);
    let mut out = SwitchEvent {
        journal_id: ev.journal_id.clone(),
        seq,
        at,
        call_id: String::new(),
        attempt: i64::from(ev.attempt),
        tenant: String::new(),
        kind: EventKind::Ignored("invalid"),
    };
    if ev.call_id.len() > MAX_ID || ev.tenant.len() > MAX_ID {
        tracing::error!(
            seq,
            "switch event with an oversized call id or tenant: skipped"
        );
        return Ok(out);
    }
    out.call_id.clone_from(&ev.call_id);
    out.tenant.clone_from(&ev.tenant);
    out.kind = match kind(ev) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(seq, call = %ev.call_id, "{e}: skipped");
            EventKind::Ignored("invalid")
        }
    };
    Ok(out)
}

fn kind(ev: &pb::Event) -> Result<EventKind, String> {
    use pb::event::Kind;
    Ok(match &ev.kind {
        None => return Err(bad("no kind")),
        Some(Kind::Answered(a)) => EventKind::Answered {
            trunk_id: short(&a.trunk_id),
            answer_ms: i64::from(a.answer_ms),
        },
        Some(Kind::Started(_)) => EventKind::Started,
        Some(Kind::Transferred(t)) => EventKind::Transferred {
            to_user: short(&t.to_user),
            to_phone: short(&t.to_phone),
            trunk_id: short(&t.trunk_id),
            transfer_type: short(&t.transfer_type),
        },
        Some(Kind::Ended(e)) => {
            let answered_at = (e.answered && e.answered_at_unix_ms > 0)
                .then(|| i64_of("answered_at_unix_ms", e.answered_at_unix_ms))
                .transpose()?
                .map(UtcMillis);
            let outcome = if e.outcome.is_empty() {
                // A node that reports only a failure detail failed.
                if e.error_detail.is_empty() {
                    return Err(bad("ended without an outcome"));
                }
                "failed".to_owned()
            } else {
                short(&e.outcome)
            };
            let mut detail = e.error_detail.clone();
            // The far end's final answer says why the dialling ended; a
            // 487 only answers our own CANCEL (a hangup, the ring timeout),
            // which the outcome says already.
            if e.sip_status != 0
                && e.sip_status != 487
                && outcome != "cancelled"
                && detail.is_empty()
                && !e.answered
            {
                detail = format!("SIP {}", e.sip_status);
            }
            EventKind::Ended(AttemptEnd {
                outcome,
                error_detail: detail,
                answered: e.answered,
                answered_at,
                ended_at: UtcMillis(i64_of("at_unix_ms", ev.at_unix_ms)?),
                talk_seconds: i64::from(e.talk_seconds),
                duration_seconds: i64::from(e.duration_seconds),
                input_turns: i64::from(e.input_turns),
                output_turns: i64::from(e.output_turns),
                sip_status: i64::from(e.sip_status),
            })
        }
        Some(Kind::Turn(t)) => EventKind::Turn {
            speaker: match t.role.as_str() {
                "ai" | "AI" => Speaker::Ai,
                "caller" | "Caller" => Speaker::Caller,
                other => return Err(bad(&format!("turn role '{}'", short(other)))),
            },
            text: t.text.clone(),
            at_ms: i64::from(t.at_ms),
        },
        Some(Kind::Usage(u)) => EventKind::Usage {
            input: i64_of("input_tokens", u.input_tokens)?,
            output: i64_of("output_tokens", u.output_tokens)?,
        },
        Some(Kind::Inbound(i)) => inbound(ev, i)?,
    })
}

/// Why a stream session ended.
#[derive(Debug)]
enum StreamEnd {
    /// Transport or node error: reconnect after a backoff.
    Link(String),
    /// The database failed: retry after a backoff (nothing was acked).
    Store(StoreError),
    /// The node sent an event whose envelope is unusable (it cannot even
    /// be skipped by seq): nothing to do but complain and retry.
    Invalid(String),
}

/// Reads `node`'s events until aborted, reconnecting with backoff.
pub async fn run(node: Arc<Node>, store: Store, clock: Clock) {
    let mut backoff = Backoff::default();
    loop {
        match session(&node, &store, &clock, &mut backoff).await {
            StreamEnd::Link(e) => {
                tracing::debug!(node = %node.url(), "event stream ended: {e}");
            }
            StreamEnd::Store(e) => {
                tracing::error!(node = %node.url(), "applying switch events: {e}");
            }
            StreamEnd::Invalid(e) => {
                tracing::error!(node = %node.url(), "{e}; the stream is stuck on it until the \
                    node sends a valid event");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One Subscribe call: resume from the stored cursor and apply until the
/// stream breaks.
async fn session(node: &Node, store: &Store, clock: &Clock, backoff: &mut Backoff) -> StreamEnd {
    let mut client = match node.client() {
        Ok(c) => c,
        Err(e) => return StreamEnd::Link(e),
    };
    let mut cursor = match store.switch_cursor(node.url()).await {
        Ok(c) => c,
        Err(e) => return StreamEnd::Store(e),
    };
    let (journal_id, after_seq) = cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.journal_id.clone(), u64::try_from(c.last_seq).unwrap_or(0))
    });
    let request = pb::SubscribeRequest {
        journal_id,
        after_seq,
    };
    let mut stream = match client.subscribe(request).await {
        Ok(s) => s.into_inner(),
        Err(s) => return StreamEnd::Link(s.message().to_owned()),
    };
    tracing::info!(node = %node.url(), after_seq, "subscribed to switch events");
    let mut unacked = Unacked::default();
    loop {
        let next = match unacked.due() {
            // Applied events wait a moment for more, then are acked.
            Some(due) => match tokio::time::timeout_at(due, stream.message()).await {
                Ok(next) => next,
                Err(_) => {
                    ack(&mut client, node, unacked.take()).await;
                    continue;
                }
            },
            None => stream.message().await,
        };
        let ev = match next {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                ack(&mut client, node, unacked.take()).await;
                return StreamEnd::Link("stream closed by the node".into());
            }
            Err(s) => {
                ack(&mut client, node, unacked.take()).await;
                return StreamEnd::Link(s.message().to_owned());
            }
        };
        backoff.reset();
        let ev = match convert(&ev) {
            Ok(ev) => ev,
            Err(e) => return StreamEnd::Invalid(e),
        };
        if cursor.as_ref().map(|c| c.journal_id.as_str()) != Some(ev.journal_id.as_str()) {
            match &cursor {
                Some(c) => tracing::error!(node = %node.url(), old = %c.journal_id,
                    new = %ev.journal_id, applied_up_to = c.last_seq,
                    "SWITCH NODE LOST ITS EVENT JOURNAL: events it had not delivered are gone; \
                     reading its new journal from the start"),
                None => tracing::info!(node = %node.url(), journal = %ev.journal_id,
                    "first contact with this node's journal"),
            }
            if let Err(e) = store
                .reset_switch_cursor(node.url(), &ev.journal_id, clock.now())
                .await
            {
                return StreamEnd::Store(e);
            }
            // Another control plane may have been first: what it applied
            // is not applied again (the cursor says where it stands).
            cursor = match store.switch_cursor(node.url()).await {
                Ok(c) => c,
                Err(e) => return StreamEnd::Store(e),
            };
        }
        node.record_event(clock.now());
        match store.apply_switch_event(node.url(), &ev, clock.now()).await {
            Ok(Applied::WrongJournal) => {
                return StreamEnd::Link("cursor moved to another journal meanwhile".into());
            }
            Ok(_) => {}
            Err(e) => return StreamEnd::Store(e),
        }
        if let Some(c) = cursor.as_mut() {
            c.last_seq = c.last_seq.max(ev.seq);
        }
        let seq = u64::try_from(ev.seq).unwrap_or(0);
        let (before, due) = unacked.applied(&ev.journal_id, seq, tokio::time::Instant::now());
        ack(&mut client, node, before).await;
        if due {
            ack(&mut client, node, unacked.take()).await;
        }
    }
}

/// Events applied and not yet acknowledged: acknowledged once
/// [`ACK_EVERY`] are in, or [`ACK_DELAY`] after the first of them.
#[derive(Debug, Default)]
struct Unacked {
    /// (journal, up to seq, how many).
    applied: Option<(String, u64, u64)>,
    due: Option<tokio::time::Instant>,
}

impl Unacked {
    /// An event of `journal` up to `seq` applied at `now`: what to
    /// acknowledge first (another journal's events), and whether these
    /// are to be acknowledged at once (ACK_EVERY of them, or their time
    /// has come: a stream that always has the next event ready never lets
    /// the wait for it time out).
    fn applied(
        &mut self,
        journal: &str,
        seq: u64,
        now: tokio::time::Instant,
    ) -> (Option<(String, u64)>, bool) {
        let (before, count) = match self.applied.take() {
            Some((j, _, n)) if j == journal => (None, n + 1),
            other => {
                self.due = Some(now + ACK_DELAY);
                (other.map(|(j, s, _)| (j, s)), 1)
            }
        };
        self.applied = Some((journal.to_owned(), seq, count));
        let overdue = self.due.is_some_and(|d| now >= d);
        (before, count >= ACK_EVERY || overdue)
    }

    /// When what is applied is to be acknowledged, if anything is.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.applied.as_ref().and(self.due)
    }

    /// What to acknowledge now; nothing is pending after.
    fn take(&mut self) -> Option<(String, u64)> {
        self.due = None;
        self.applied.take().map(|(j, s, _)| (j, s))
    }
}

/// Acknowledges what was applied (a journal's events up to a seq). A lost
/// ack only means the node resends; the cursor skips what it resends.
async fn ack(client: &mut super::node::Client, node: &Node, applied: Option<(String, u64)>) {
    let Some((journal_id, up_to_seq)) = applied else {
        return;
    };
    let request = pb::AckRequest {
        journal_id,
        up_to_seq,
    };
    match tokio::time::timeout(Duration::from_secs(5), client.ack(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => tracing::debug!(node = %node.url(), "ack refused: {s}"),
        Err(_) => tracing::debug!(node = %node.url(), "ack timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applied events are acknowledged every ACK_EVERY, or ACK_DELAY after
    /// the first of them whatever follows; another journal's events first
    /// acknowledge the old journal's.
    #[test]
    fn applied_events_are_acknowledged_in_batches_and_soon() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut u = Unacked::default();
        assert_eq!(u.due(), None);
        assert_eq!(u.applied("j", 1, ms(0)), (None, false));
        assert_eq!(u.due(), Some(ms(0) + ACK_DELAY));
        // A steady trickle does not push the acknowledgement back...
        for seq in 2..10 {
            assert_eq!(u.applied("j", seq, ms(seq * 5)), (None, false));
        }
        assert_eq!(u.due(), Some(ms(0) + ACK_DELAY));
        // ...and one applied past it is acknowledged with the rest.
        assert_eq!(u.applied("j", 10, ms(50)), (None, true));
        assert_eq!(u.take(), Some(("j".into(), 10)));
        u.applied("j", 9, ms(60));
        assert_eq!(u.take(), Some(("j".into(), 9)));
        assert_eq!((u.due(), u.take()), (None, None));
        // A backlog: every ACK_EVERY at once.
        for seq in 10..10 + ACK_EVERY - 1 {
            assert_eq!(u.applied("j", seq, ms(100)), (None, false));
        }
        assert_eq!(u.applied("j", 9 + ACK_EVERY, ms(100)), (None, true));
        assert_eq!(u.take(), Some(("j".into(), 9 + ACK_EVERY)));
        // A new journal: the old one's events are acknowledged first.
        u.applied("j", 500, ms(200));
        assert_eq!(u.applied("k", 1, ms(210)), (Some(("j".into(), 500)), false));
        assert_eq!(u.due(), Some(ms(210) + ACK_DELAY));
    }

    fn ev(kind: pb::event::Kind) -> pb::Event {
        pb::Event {
            seq: 3,
            journal_id: "j".into(),
            at_unix_ms: 1_000,
            call_id: "oac-0123456789ab".into(),
            attempt: 1,
            tenant: "t".into(),
            kind: Some(kind),
        }
    }

    #[test]
    fn envelopes_are_checked() {
        let mut e = ev(pb::event::Kind::Started(pb::CallStarted {}));
        assert!(convert(&e).is_ok());
        e.seq = 0;
        assert!(convert(&e).is_err());
        e.seq = u64::MAX;
        assert!(convert(&e).is_err());
        e.seq = 1;
        e.journal_id = String::new();
        assert!(convert(&e).is_err());
        e.journal_id = "j".repeat(300);
        assert!(convert(&e).is_err());
    }

    #[test]
    fn bad_payloads_are_skipped_not_fatal() {
        let e = ev(pb::event::Kind::Turn(pb::TranscriptTurn {
            role: "robot".into(),
            text: "hi".into(),
            at_ms: 5,
            interrupted: false,
        }));
        assert_eq!(convert(&e).unwrap().kind, EventKind::Ignored("invalid"));
        let e = ev(pb::event::Kind::Usage(pb::Usage {
            input_tokens: u64::MAX,
            output_tokens: 1,
            estimated: false,
        }));
        assert_eq!(convert(&e).unwrap().kind, EventKind::Ignored("invalid"));
        let mut e = ev(pb::event::Kind::Started(pb::CallStarted {}));
        e.call_id = "x".repeat(1000);
        let c = convert(&e).unwrap();
        assert_eq!(c.kind, EventKind::Ignored("invalid"));
        assert!(c.call_id.is_empty());
    }

    #[test]
    fn inbound_calls_are_checked_and_bounded() {
        let inbound = |id: &str, tenant: &str, i: pb::InboundCall| {
            let mut e = ev(pb::event::Kind::Inbound(i));
            e.call_id = id.into();
            e.tenant = tenant.into();
            convert(&e).unwrap().kind
        };
        let ok = pb::InboundCall {
            did: "+15551234567".into(),
            from_number: "anonymous\u{0}".into(),
            virtual_number: "+1234".into(),
            trunk_id: String::new(),
            instance_id: "0123456789abcdef".into(),
        };
        assert_eq!(
            inbound("vnum0123456789ab", "t", ok.clone()),
            EventKind::Inbound(InboundStart {
                did: "+15551234567".into(),
                from_number: "anonymous?".into(),
                virtual_number: "+1234".into(),
                trunk_id: None,
                instance: "0123456789abcdef".into(),
            })
        );
        let long = pb::InboundCall {
            did: "1".repeat(65),
            trunk_id: "tr_0123456789abcdef".into(),
            instance_id: "x".repeat(65),
            ..ok.clone()
        };
        let EventKind::Inbound(s) = inbound("vnum0123456789ab", "t", long) else {
            panic!("not inbound")
        };
        assert_eq!(s.did.len(), MAX_INBOUND_FIELD);
        assert_eq!(s.instance, "", "an unusable instance id is not kept");
        assert_eq!(s.trunk_id.as_deref(), Some("tr_0123456789abcdef"));
        // Unattributable: skipped, not recorded.
        let invalid = EventKind::Ignored("invalid");
        assert_eq!(inbound("vnum0123456789AB", "t", ok.clone()), invalid);
        assert_eq!(inbound("oac-0123456789ab", "t", ok.clone()), invalid);
        assert_eq!(inbound("vnum0123456789ab", "", ok.clone()), invalid);
        for bad in ["", "12a4", "+", &"1".repeat(33)] {
            let i = pb::InboundCall {
                virtual_number: bad.to_owned(),
                ..ok.clone()
            };
            assert_eq!(inbound("vnum0123456789ab", "t", i), invalid, "{bad}");
        }
    }

    #[test]
    fn ended_maps_sip_status_and_missing_outcome() {
        let e = ev(pb::event::Kind::Ended(pb::CallEnded {
            outcome: String::new(),
            error_detail: "engine closed".into(),
            ..Default::default()
        }));
        let EventKind::Ended(end) = convert(&e).unwrap().kind else {
            panic!("not ended")
        };
        assert_eq!(end.outcome, "failed");
        assert_eq!(end.error_detail, "engine closed");
        let e = ev(pb::event::Kind::Ended(pb::CallEnded {
            outcome: "busy".into(),
            sip_status: 486,
            ..Default::default()
        }));
        let EventKind::Ended(end) = convert(&e).unwrap().kind else {
            panic!("not ended")
        };
        assert_eq!(end.error_detail, "SIP 486");
        assert!(!end.answered);
        assert_eq!(end.ended_at, UtcMillis(1_000));
        // Our own CANCEL's 487 (a hangup while ringing, the ring timeout)
        // is no error.
        for outcome in ["cancelled", "no-answer"] {
            let e = ev(pb::event::Kind::Ended(pb::CallEnded {
                outcome: outcome.into(),
                sip_status: 487,
                ..Default::default()
            }));
            let EventKind::Ended(end) = convert(&e).unwrap().kind else {
                panic!("not ended")
            };
            assert_eq!(end.error_detail, "", "{outcome}");
            assert_eq!(end.sip_status, 487);
        }
    }
}
