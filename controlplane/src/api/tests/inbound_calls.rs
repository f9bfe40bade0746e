//! Inbound virtual-number calls through the API: `/inbound-calls` lists and
//! shows them, `/transcripts` shows their transcripts as the spec shows a
//! vnum one, and the outbound-only `/calls` does not show them.

use axum::http::StatusCode;
use codeb_types::UtcMillis;
use serde_json::json;

use super::{Harness, TENANT, on_both_backends};
use crate::store::{Applied, AttemptEnd, EventKind, InboundStart, Speaker, SwitchEvent};

on_both_backends!(inbound_calls_show_as_records_and_vnum_transcripts);

const NODE: &str = "http://10.0.0.1:50051";

/// Applies `kinds` to `call` as the next events of NODE's journal j1.
async fn report(h: &Harness, call: &str, first_seq: i64, kinds: Vec<EventKind>) {
    let start = UtcMillis::parse_rfc3339("2026-06-04T17:14:03.836Z").unwrap();
    for (i, kind) in kinds.into_iter().enumerate() {
        let seq = first_seq + i64::try_from(i).unwrap();
        let ev = SwitchEvent {
            journal_id: "j1".into(),
            seq,
            at: start.plus_ms((seq - 1) * 1000),
            call_id: call.into(),
            attempt: 1,
            tenant: TENANT.into(),
            kind,
        };
        let applied =
            h.db.store
                .apply_switch_event(NODE, &ev, h.clock.now())
                .await;
        assert_eq!(applied.unwrap(), Applied::Applied);
    }
}

fn inbound(number: &str) -> EventKind {
    EventKind::Inbound(InboundStart {
        did: "+15551234567".into(),
        from_number: "+35699123456".into(),
        virtual_number: number.into(),
        trunk_id: Some("tr_0123456789abcdef".into()),
        instance: String::new(),
    })
}

async fn inbound_calls_show_as_records_and_vnum_transcripts(h: Harness) {
    let t = h.admin().await;
    for (number, save) in [("666", true), ("777", false)] {
        let body = json!({"number": number, "name": "Shortletsmalta", "systemPrompt": "x",
            "saveTranscripts": save});
        let r = h.post("/api.ashx/v1/numbers", &t, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    h.db.store
        .reset_switch_cursor(NODE, "j1", h.clock.now())
        .await
        .unwrap();
    let saved = "vnum0123456789ab";
    let unsaved = "vnum00000000cafe";
    let ended = |outcome: &str| {
        EventKind::Ended(AttemptEnd {
            outcome: outcome.into(),
            answered: true,
            ended_at: UtcMillis::parse_rfc3339("2026-06-04T17:15:19.500Z").unwrap(),
            talk_seconds: 74,
            duration_seconds: 75,
            input_turns: 4,
            output_turns: 4,
            ..AttemptEnd::default()
        })
    };
    let answered = EventKind::Answered {
        trunk_id: String::new(),
        answer_ms: 95,
    };
    report(
        &h,
        saved,
        1,
        vec![
            inbound("666"),
            answered.clone(),
            EventKind::Started,
            EventKind::Turn {
                speaker: Speaker::Ai,
                text: "Welcome to Shortlets Malta.".into(),
                at_ms: 500,
            },
            EventKind::Usage {
                input: 5000,
                output: 1240,
            },
            ended("empty-room"),
        ],
    )
    .await;
    // Still up: listed as in-flight, no transcript.
    report(&h, unsaved, 7, vec![inbound("777"), answered]).await;

    let list = h.get("/api.ashx/v1/inbound-calls?limit=1", &t).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json["total"], 2);
    assert_eq!(list.json["data"][0]["callId"], unsaved, "newest first");
    assert_eq!(list.json["data"][0]["status"], "in-flight");
    assert_eq!(list.json["data"][0]["endedAtUtc"], serde_json::Value::Null);
    assert_eq!(
        list.json["data"][0]["answered"], true,
        "answered while up, as its answeredAtUtc says"
    );
    assert_eq!(
        list.json["next"],
        "/api.ashx/v1/inbound-calls?limit=1&offset=1"
    );
    let one = h
        .get(&format!("/api.ashx/v1/inbound-calls/{saved}"), &t)
        .await;
    assert_eq!(
        one.json,
        json!({
            "callId": saved,
            "tenant": TENANT,
            "status": "ended",
            "number": "666",
            "numberName": "Shortletsmalta",
            "numberKnown": true,
            "did": "+15551234567",
            "fromNumber": "+35699123456",
            "trunkId": "tr_0123456789abcdef",
            "saveTranscripts": true,
            "createdAtUtc": "2026-06-04T17:14:03.836Z",
            "answeredAtUtc": "2026-06-04T17:14:04.836Z",
            "startedAtUtc": "2026-06-04T17:14:05.836Z",
            "endedAtUtc": "2026-06-04T17:15:19.500Z",
            "answerMs": 95,
            "answered": true,
            "outcome": "empty-room",
            "errorDetail": "",
            "talkSec": 74,
            "durationSec": 75,
            "sipStatus": 0,
            "inputTurns": 4,
            "outputTurns": 4,
            "tokensTotal": 6240,
            "tokensPrompt": 5000,
            "transfers": 0,
            "transcriptPath": format!("vnum-666-20260604-171403-{saved}.txt"),
        })
    );
    for bad in ["vnum00000000ffff", "oac-0123456789ab", "x"] {
        let r = h
            .get(&format!("/api.ashx/v1/inbound-calls/{bad}"), &t)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json["error"], "not_found");
    }

    // Hangup: an ended call is a no-op; a live one goes to the switch node
    // carrying it, which this harness does not know (502, the record is
    // left as it is); an unknown id is 404.
    let r = h
        .post(
            &format!("/api.ashx/v1/inbound-calls/{saved}/hangup"),
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"ok": true, "callId": saved, "newStatus": "ended", "actor": super::ADMIN,
               "wasNoop": true})
    );
    let r = h
        .post(
            &format!("/api.ashx/v1/inbound-calls/{unsaved}/hangup"),
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.json["error"], "bridge_unreachable");
    let d = r.json["error_description"].as_str().unwrap();
    assert!(
        d.starts_with("The switch node carrying the call cannot be reached"),
        "{d}"
    );
    let live = h
        .get(&format!("/api.ashx/v1/inbound-calls/{unsaved}"), &t)
        .await;
    assert_eq!(live.json["status"], "in-flight");
    let r = h
        .post(
            "/api.ashx/v1/inbound-calls/vnum00000000ffff/hangup",
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The transcript list item has the keys of the spec's vnum example
    // (plus mtimeUtc, which every item carries, and caller).
    let vnum = h.get("/api.ashx/v1/transcripts?source=vnum", &t).await;
    assert_eq!(vnum.json["total"], 1, "{}", vnum.text);
    let item = &vnum.json["data"][0];
    let mut keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "callId",
            "caller",
            "callerSource",
            "durationSec",
            "endedUtc",
            "file",
            "mtimeUtc",
            "number",
            "outcome",
            "rule",
            "size",
            "startedUtc",
            "tokensTotal",
            "turnCount"
        ]
    );
    assert_eq!(item["callerSource"], "vnum");
    assert_eq!(item["rule"], "vnum:Shortletsmalta");
    assert_eq!(item["number"], "666");
    assert_eq!(item["outcome"], "empty-room");
    assert_eq!(item["tokensTotal"], 6240);
    assert_eq!(item["durationSec"], 75);
    assert_eq!(item["startedUtc"], "2026-06-04T17:14:03.836Z");
    assert_eq!(
        h.get("/api.ashx/v1/transcripts?source=outbound-ai", &t)
            .await
            .json["total"],
        0
    );
    let q = h.get("/api.ashx/v1/transcripts?q=shortlets", &t).await;
    assert_eq!(q.json["total"], 1);
    let full = h
        .get(&format!("/api.ashx/v1/transcripts/{saved}"), &t)
        .await;
    assert_eq!(full.json["turns"][0]["speaker"], "AI");
    assert_eq!(full.json["turns"][0]["ts"], "2026-06-04T17:14:05.336Z");
    assert_eq!(
        h.get(&format!("/api.ashx/v1/transcripts/{unsaved}"), &t)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // /calls is outbound AI calls only.
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], 0);
    // The catalogue lists the routes.
    let cat = h
        .call(axum::http::Method::GET, "/api.ashx/v1", None, None)
        .await
        .json;
    let paths: Vec<&str> = cat["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"/api.ashx/v1/inbound-calls/{callId}"));
}
