//! Applying a node's events to inbound calls (see the parent module for
//! the decisions and the webhook payloads).

use codeb_types::{EventName, UtcMillis};
use serde_json::json;

use super::{ATTEMPT, InboundCallRecord};
use crate::metrics::outcome_label;
use crate::store::dispatch::{AttemptEnd, MAX_ERROR_DETAIL, cut};
use crate::store::numbers::number_from_row;
use crate::store::switch_events::{InboundStart, Usage};
use crate::store::tx::{Ended, StoreTx, on_tx};
use crate::store::{
    Applied, EventKind, NumberRecord, Result, Store, SwitchEvent, TranscriptRecord, Turn, on_pool,
};

impl Store {
    /// Ends every inbound call still up on a node that is gone: outcome
    /// `failed` with `detail`, `call.ended`, and the transcript when the
    /// number saves them; one transaction per call, each ended at `at`
    /// (when the node was last heard from). Returns their ids.
    pub(in crate::store) async fn fail_inbound_calls_on_node(
        &self,
        node_url: &str,
        lost: crate::store::Lost<'_>,
        detail: &str,
        at: UtcMillis,
        now: UtcMillis,
    ) -> Result<Vec<String>> {
        let ids: Vec<(String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT call_id, node_instance FROM inbound_calls \
                 WHERE node_url = $1 AND ended_at IS NULL ORDER BY created_at, call_id",
            )
            .bind(node_url)
            .fetch_all(pool)
            .await?
        });
        let mut ended = Vec::new();
        // An inbound call's instance is set when it begins and never
        // changes: the one read here stands.
        for (id, _) in ids.iter().filter(|(_, i)| lost.takes(i)) {
            let mut tx = self.begin().await?;
            let Some(call) = tx.lock_inbound_call(id).await? else {
                continue;
            };
            if call.ended_at.is_some() || call.node_url != node_url {
                continue;
            }
            // Not before the call began, nor its answer.
            let at = UtcMillis(at.0.max(call.answered_at.unwrap_or(call.created_at).0));
            let since = |t: UtcMillis| at.seconds_since(t);
            let end = AttemptEnd {
                outcome: "failed".into(),
                error_detail: detail.to_owned(),
                answered: call.answered_at.is_some(),
                answered_at: call.answered_at,
                ended_at: at,
                talk_seconds: call.answered_at.map_or(0, since),
                duration_seconds: since(call.created_at),
                ..AttemptEnd::default()
            };
            self.finish_inbound(&mut tx, &call, &end, InboundFinish::Lost, now)
                .await?;
            tx.commit().await?;
            ended.push(id.clone());
        }
        Ok(ended)
    }

    /// Applies one event of an inbound call inside the cursor's
    /// transaction (see the module docs).
    pub(in crate::store) async fn apply_inbound_event(
        &self,
        tx: &mut StoreTx,
        node_url: &str,
        ev: &SwitchEvent,
        now: UtcMillis,
    ) -> Result<Applied> {
        if let EventKind::Inbound(start) = &ev.kind {
            return start_inbound(tx, node_url, ev, start, now).await;
        }
        let Some(call) = tx.lock_inbound_call(&ev.call_id).await? else {
            return Ok(Applied::Skipped("no such inbound call".into()));
        };
        if call.tenant != ev.tenant {
            return Ok(Applied::Skipped(format!(
                "event tenant {} is not the call's",
                ev.tenant
            )));
        }
        if call.node_url != node_url {
            return Ok(Applied::Skipped(format!(
                "the call is on {}, not this node",
                call.node_url
            )));
        }
        // A call ended because its node was lost, whose node now answers
        // again: as for outbound calls (`store::switch_events`), the node's
        // turns and usage are kept, its answer time too (no late
        // `call.answered`), and its end replaces the one made at the loss.
        let lost = call.ended_at.is_some() && call.lost;
        if call.ended_at.is_some() && !lost {
            return Ok(Applied::Skipped("the call already ended".into()));
        }
        let id = call.call_id.as_str();
        match &ev.kind {
            // Its start is not sent late (the corrected end says it was
            // answered); its transfer is, marked corrected.
            EventKind::Started if lost => {
                return Ok(Applied::Skipped(
                    "an event of an inbound call ended as lost (its end corrects the record)"
                        .into(),
                ));
            }
            EventKind::Answered {
                trunk_id,
                answer_ms,
            } if lost => {
                let trunk = (!trunk_id.is_empty()).then_some(trunk_id.as_str());
                on_tx!(tx, |t| {
                    sqlx::query(
                        "UPDATE inbound_calls SET answered_at = COALESCE(answered_at, $1), \
                         answer_ms = COALESCE(answer_ms, $2), \
                         trunk_id = COALESCE(trunk_id, $5), updated_at = $3 \
                         WHERE call_id = $4",
                    )
                    .bind(ev.at.0)
                    .bind(*answer_ms)
                    .bind(now.0)
                    .bind(id)
                    .bind(trunk)
                    .execute(&mut **t)
                    .await?;
                });
            }
            EventKind::Answered {
                trunk_id,
                answer_ms,
            } => {
                if call.answered_at.is_some() {
                    return Ok(Applied::Skipped("the call was already answered".into()));
                }
                let trunk = call
                    .trunk_id
                    .clone()
                    .or_else(|| (!trunk_id.is_empty()).then(|| trunk_id.clone()));
                on_tx!(tx, |t| {
                    sqlx::query(
                        "UPDATE inbound_calls SET answered_at = $1, answer_ms = $2, \
                         trunk_id = $3, updated_at = $4 WHERE call_id = $5",
                    )
                    .bind(ev.at.0)
                    .bind(*answer_ms)
                    .bind(&trunk)
                    .bind(now.0)
                    .bind(id)
                    .execute(&mut **t)
                    .await?;
                });
                let data = json!({
                    "callId": id,
                    "did": call.did,
                    "fromNumber": call.from_number,
                    "direction": "inbound",
                    "source": "gemini-live",
                    "answerMs": answer_ms,
                });
                tx.record_event(&call.tenant, EventName::CallAnswered, data, Some(id), now)
                    .await?;
            }
            EventKind::Started => {
                if call.started_at.is_some() {
                    return Ok(Applied::Skipped("the call already started".into()));
                }
                on_tx!(tx, |t| {
                    sqlx::query(
                        "UPDATE inbound_calls SET started_at = $1, updated_at = $2 \
                         WHERE call_id = $3",
                    )
                    .bind(ev.at.0)
                    .bind(now.0)
                    .bind(id)
                    .execute(&mut **t)
                    .await?;
                });
                let data = json!({
                    "callId": id,
                    "number": call.number,
                    "did": call.did,
                    "direction": "inbound",
                    "source": "gemini-live",
                });
                tx.record_event(&call.tenant, EventName::CallStarted, data, Some(id), now)
                    .await?;
            }
            EventKind::Transferred {
                to_user,
                to_phone,
                trunk_id: _,
                transfer_type,
            } => {
                // The spec's transferType for a node that did not say: a
                // number is PSTN, a user is an office-tab user.
                let kind = match (transfer_type.is_empty(), to_phone.is_empty()) {
                    (false, _) => transfer_type.as_str(),
                    (true, false) => "vnum-to-pstn",
                    (true, true) => "vnum-to-officetab",
                };
                on_tx!(tx, |t| {
                    sqlx::query(
                        "UPDATE inbound_calls SET transfers = transfers + 1, updated_at = $1 \
                         WHERE call_id = $2",
                    )
                    .bind(now.0)
                    .bind(id)
                    .execute(&mut **t)
                    .await?;
                });
                let mut data = json!({
                    "callId": id,
                    "fromVnum": call.number,
                    "transferType": kind,
                    "room": "",
                    "source": "vnum",
                });
                if lost {
                    data["corrected"] = json!(true);
                }
                for (k, v) in [("toUser", to_user), ("toPhone", to_phone)] {
                    if !v.is_empty() {
                        data[k] = json!(v);
                    }
                }
                tx.record_event(
                    &call.tenant,
                    EventName::CallTransferred,
                    data,
                    Some(id),
                    now,
                )
                .await?;
            }
            EventKind::Turn {
                speaker,
                text,
                at_ms,
            } => {
                if !call.save_transcripts {
                    // Not kept: the number does not save transcripts.
                    return Ok(Applied::Applied);
                }
                let turn = (*speaker, text.as_str(), *at_ms);
                if let Some(skipped) = tx.add_turn(id, ATTEMPT, ev, turn).await? {
                    return Ok(skipped);
                }
            }
            EventKind::Usage { input, output } => {
                tx.add_usage(Usage::Inbound, id, (*input, *output), now)
                    .await?;
            }
            EventKind::Ended(end) if lost => {
                let mut end = end.clone();
                // An end from the hangup sent when the node came back keeps
                // the loss's outcome and detail.
                if end.outcome == crate::store::LOST_HANGUP_OUTCOME {
                    end.outcome.clone_from(&call.outcome);
                    end.error_detail.clone_from(&call.error_detail);
                }
                // The answer time just stored, if the node's came late.
                let call = tx
                    .lock_inbound_call(id)
                    .await?
                    .unwrap_or_else(|| call.clone());
                self.finish_inbound(tx, &call, &end, InboundFinish::Correction, now)
                    .await?;
                tracing::warn!(call = %id, "the end of an inbound call ended as lost arrived \
                    from its node; the record is corrected");
            }
            EventKind::Ended(end) => {
                self.finish_inbound(tx, &call, end, InboundFinish::Ended, now)
                    .await?;
            }
            EventKind::Inbound(_) | EventKind::Ignored(_) => {}
        }
        Ok(Applied::Applied)
    }

    /// Finalizes an inbound call inside `tx`: the record, the transcript
    /// (file, row) when the number saves them and there were turns, then
    /// `call.ended` and `transcript.saved`, in that order.
    async fn finish_inbound(
        &self,
        tx: &mut StoreTx,
        call: &InboundCallRecord,
        end: &AttemptEnd,
        how: InboundFinish,
        now: UtcMillis,
    ) -> Result<()> {
        let id = call.call_id.as_str();
        // The answer time from the Answered event stands.
        let answered_at = call.answered_at.or(end.answered_at);
        let answered = end.answered || answered_at.is_some();
        let detail = cut(&end.error_detail, MAX_ERROR_DETAIL);
        let outcome = cut(&end.outcome, 64);
        // A correction's call was counted when it was ended as lost.
        tx.ends(match how {
            InboundFinish::Correction => Ended::Correction {
                inbound: true,
                outcome: outcome_label(&outcome),
            },
            InboundFinish::Ended | InboundFinish::Lost => Ended::Inbound(outcome_label(&outcome)),
        });
        let tokens = call.tokens_in.saturating_add(call.tokens_out);
        let turns = if call.save_transcripts {
            tx.attempt_turns(id, ATTEMPT).await?
        } else {
            Vec::new()
        };
        let counted = end.with_turn_counts(&turns);
        let end = &counted;
        let transcript = if turns.is_empty() {
            None
        } else {
            let base = answered_at.unwrap_or(call.created_at);
            let record = TranscriptRecord {
                call_id: call.call_id.clone(),
                tenant: call.tenant.clone(),
                caller_source: "vnum".into(),
                started_at: call.created_at,
                answered_at,
                ended_at: Some(end.ended_at),
                duration_sec: end.duration_seconds,
                rule: call.rule(),
                caller: Some(call.from_number.clone()),
                number: Some(call.number.clone()),
                outcome: outcome.clone(),
                trunk_id: call.trunk_id.clone(),
                answered: Some(answered),
                error_detail: Some(detail.clone()),
                tokens_total: tokens,
                input_turns: end.input_turns,
                output_turns: end.output_turns,
                turns: turns
                    .into_iter()
                    .map(|(speaker, text, at_ms)| Turn {
                        speaker,
                        text,
                        ts: base.plus_ms(at_ms),
                    })
                    .collect(),
                ..TranscriptRecord::default()
            };
            let record = self.write_transcript_file(record, now).await?;
            tx.insert_transcript_row(&record).await?;
            // A correction's transcript replaces the loss's file.
            if how == InboundFinish::Correction
                && !call.transcript_path.is_empty()
                && call.transcript_path != record.file
            {
                tx.remove_after_commit(self.transcripts_dir().join(&call.transcript_path));
            }
            Some(record)
        };
        on_tx!(tx, |t| {
            sqlx::query(
                "UPDATE inbound_calls SET ended_at = $1, outcome = $2, error_detail = $3, \
                 answered = $4, answered_at = $5, talk_sec = $6, duration_sec = $7, \
                 sip_status = $8, input_turns = $9, output_turns = $10, \
                 transcript_path = $11, updated_at = $12, lost = $14 WHERE call_id = $13",
            )
            .bind(end.ended_at.0)
            .bind(&outcome)
            .bind(&detail)
            .bind(i64::from(answered))
            .bind(answered_at.map(|t| t.0))
            .bind(end.talk_seconds)
            .bind(end.duration_seconds)
            .bind(end.sip_status)
            .bind(end.input_turns)
            .bind(end.output_turns)
            .bind(transcript.as_ref().map_or("", |t| t.file.as_str()))
            .bind(now.0)
            .bind(id)
            .bind(i64::from(how == InboundFinish::Lost))
            .execute(&mut **t)
            .await?;
        });
        let corrected = |mut data: serde_json::Value| {
            if how == InboundFinish::Correction {
                data["corrected"] = json!(true);
            }
            data
        };
        let number = if call.did.is_empty() {
            &call.number
        } else {
            &call.did
        };
        let mut data = corrected(json!({
            "callId": id,
            "number": number,
            "room": "",
            "outcome": outcome,
            "durationSec": end.duration_seconds,
            "tokens": tokens,
            "source": "sip",
        }));
        // Beside the spec's fields, why a call failed: what went wrong
        // (as `outbound-ai.finished` says it), and the SIP status the
        // caller was refused with.
        if !detail.is_empty() {
            data["errorDetail"] = json!(detail);
        }
        if end.sip_status > 0 {
            data["sipStatus"] = json!(end.sip_status);
        }
        tx.record_event(&call.tenant, EventName::CallEnded, data, Some(id), now)
            .await?;
        if let Some(t) = &transcript {
            let data = corrected(json!({
                "callId": id,
                "number": call.number,
                "file": t.file,
                "outcome": t.outcome,
                "source": "vnum",
            }));
            tx.record_event(
                &call.tenant,
                EventName::TranscriptSaved,
                data,
                Some(id),
                now,
            )
            .await?;
        }
        tracing::info!(call = %id, number = %call.number, outcome = %outcome, detail = %detail,
            "inbound call ended");
        Ok(())
    }
}

/// Whose account ends an inbound call ([`Store::finish_inbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboundFinish {
    /// The node's (its `Ended` event).
    Ended,
    /// The control plane's: its node was lost.
    Lost,
    /// The node's, read after the call was ended as lost.
    Correction,
}

/// Creates the record of a new inbound call; a second `InboundCall` for the
/// same id is a duplicate and changes nothing.
async fn start_inbound(
    tx: &mut StoreTx,
    node_url: &str,
    ev: &SwitchEvent,
    start: &InboundStart,
    now: UtcMillis,
) -> Result<Applied> {
    if ev.tenant.is_empty() {
        return Ok(Applied::Skipped("inbound call without a tenant".into()));
    }
    if let Some(existing) = tx.lock_inbound_call(&ev.call_id).await? {
        return Ok(Applied::Skipped(format!(
            "inbound call already recorded (reported by {})",
            existing.node_url
        )));
    }
    let number = tx.number(&ev.tenant, &start.virtual_number).await?;
    if number.is_none() {
        tracing::warn!(call = %ev.call_id, tenant = %ev.tenant, number = %start.virtual_number,
            node = %node_url, "inbound call to a virtual number this tenant does not have: \
            recorded without its transcript");
    }
    on_tx!(tx, |t| {
        sqlx::query(
            "INSERT INTO inbound_calls (call_id, tenant, node_url, number, did, from_number, \
             trunk_id, number_known, number_name, save_transcripts, created_at, updated_at, \
             node_instance) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
        )
        .bind(&ev.call_id)
        .bind(&ev.tenant)
        .bind(node_url)
        .bind(&start.virtual_number)
        .bind(&start.did)
        .bind(&start.from_number)
        .bind(&start.trunk_id)
        .bind(i64::from(number.is_some()))
        .bind(number.as_ref().map_or("", |n| n.name.as_str()))
        .bind(i64::from(
            number.as_ref().is_some_and(|n| n.save_transcripts),
        ))
        .bind(ev.at.0)
        .bind(now.0)
        .bind(&start.instance)
        .execute(&mut **t)
        .await?;
    });
    Ok(Applied::Applied)
}

impl StoreTx {
    /// A tenant's virtual number, read inside this transaction.
    async fn number(&mut self, tenant: &str, number: &str) -> Result<Option<NumberRecord>> {
        on_tx!(self, |t| {
            let row = sqlx::query(
                "SELECT tenant, number, name, mode, voice, language, model, save_transcripts, \
                 max_duration_sec, visibility, system_prompt, ai_api_key, created_at, updated_at \
                 FROM numbers WHERE tenant = $1 AND number = $2",
            )
            .bind(tenant)
            .bind(number)
            .fetch_optional(&mut **t)
            .await?;
            row.as_ref().map(number_from_row).transpose()
        })
    }
}
