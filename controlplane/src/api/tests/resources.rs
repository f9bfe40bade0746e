//! Numbers, trunks, inbound routes, transcripts and webhooks.

use axum::http::StatusCode;
use codeb_types::UtcMillis;
use serde_json::{Value, json};

use super::{ADMIN, Harness, TENANT, on_both_backends};
use crate::store::{TranscriptRecord, Turn};

on_both_backends!(
    numbers_crud_masks_keys,
    number_voice_follows_the_model_vendor,
    trunks_crud_keeps_password_write_only,
    a_trunk_a_waiting_call_names_is_not_deleted,
    inbound_routes_as_the_spec_shows,
    inbound_route_get_and_delete_take_the_first_row_whose_did_matches,
    transcripts_list_filter_and_fetch,
    webhooks_secret_shown_once,
    lengths_are_bounded_in_bytes_as_the_switch_takes_them,
);

/// A DID, or a number's instructions, within the API's bound in
/// characters but past the switch's in bytes would have been stored, and
/// then made every node refuse the configuration: they are a 400.
async fn lengths_are_bounded_in_bytes_as_the_switch_takes_them(h: Harness) {
    let t = h.admin().await;
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"Did": "é".repeat(33), "User": "alex"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("64 bytes"), "{}", r.text);
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"name": "desk", "number": "1262", "systemPrompt": "😀".repeat(16_385)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("60000 bytes"), "{}", r.text);
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"name": "desk", "number": "1262", "systemPrompt": "😀".repeat(15_000)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// A trunk that a call waiting to be dialled names (its `trunkId`) is not
/// deleted: the call would fail at its turn and spend its retries. Once
/// that call is cancelled, it goes.
async fn a_trunk_a_waiting_call_names_is_not_deleted(h: Harness) {
    let t = h.admin().await;
    let r = h
        .post(
            "/api.ashx/v1/trunks",
            &t,
            json!({"name": "later", "host": "192.0.2.7", "port": 5060}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let trunk = r.json["id"].as_str().unwrap().to_owned();
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15551234567", "email": "ops@example.com", "systemPrompt": "Hi.",
                "apiKey": "k", "trunkId": trunk, "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let call = r.json["callId"].as_str().unwrap().to_owned();
    let r = h.delete(&format!("/api.ashx/v1/trunks/{trunk}"), &t).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "trunk_in_use");
    assert!(r.text.contains("would dial 1 call"), "{}", r.text);
    let r = h
        .post(&format!("/api.ashx/v1/calls/{call}/hangup"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The tenant's only trunk is its default: a call naming no trunk
    // waits on it too.
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15551234567", "email": "ops@example.com", "systemPrompt": "Hi.",
                "apiKey": "k", "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let call = r.json["callId"].as_str().unwrap().to_owned();
    let r = h.delete(&format!("/api.ashx/v1/trunks/{trunk}"), &t).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "trunk_in_use");
    let r = h
        .post(&format!("/api.ashx/v1/calls/{call}/hangup"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.delete(&format!("/api.ashx/v1/trunks/{trunk}"), &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["deleted"], trunk.as_str());
}

async fn numbers_crud_masks_keys(h: Harness) {
    let t = h.admin().await;
    let body = json!({
        "name": "codebdemo", "number": "1234", "voice": "Aoede", "language": "en-US",
        "saveTranscripts": true, "maxDurationSec": 3500, "visibility": "public",
        "systemPrompt": "You are the CodeB receptionist.", "geminiApiKey": "AIzaSyA-secret-key-0123456789wxyz"
    });
    let r = h.post("/api.ashx/v1/numbers", &t, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["mode"], "live-voice-ai");
    assert_eq!(r.json["geminiApiKey"], "...wxyz");
    assert!(!r.text.contains("AIzaSyA"));
    assert_eq!(
        h.post("/api.ashx/v1/numbers", &t, body).await.status,
        StatusCode::CONFLICT
    );
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"name": "MUSC", "number": "24345", "voice": "Charon",
        "visibility": "signed-in", "systemPrompt": "Hi"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["geminiApiKey"], Value::Null);
    let list = h.get("/api.ashx/v1/numbers", &t).await;
    assert_eq!(list.json["tenant"], TENANT, "tenant beside the envelope");
    assert_eq!(list.json["total"], 2);
    assert_eq!(list.json["next"], Value::Null);
    let first = &list.json["data"][0];
    for (k, v) in [
        ("name", json!("codebdemo")),
        ("number", json!("1234")),
        ("mode", json!("live-voice-ai")),
        ("voice", json!("Aoede")),
        ("language", json!("en-US")),
        ("saveTranscripts", json!(true)),
        ("maxDurationSec", json!(3500)),
        ("visibility", json!("public")),
    ] {
        assert_eq!(first[k], v, "{k}");
    }
    // PUT changes only what it names; the key stays unless replaced.
    let r = h
        .put(
            "/api.ashx/v1/numbers/1234",
            &t,
            json!({"Voice": "Kore", "MaxDurationSec": 600}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["voice"].as_str(), r.json["maxDurationSec"].as_i64()),
        (Some("Kore"), Some(600))
    );
    assert_eq!(r.json["geminiApiKey"], "...wxyz");
    assert_eq!(r.json["name"], "codebdemo");
    // Read and write back: the masked key keeps the real one.
    let mut back = h.get("/api.ashx/v1/numbers/1234", &t).await.json;
    for k in ["createdAtUtc", "updatedAtUtc", "tenant"] {
        back.as_object_mut().unwrap().remove(k);
    }
    let r = h.put("/api.ashx/v1/numbers/1234", &t, back).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["geminiApiKey"], "...wxyz");
    let stored = h.db.store.number(TENANT, "1234").await.unwrap().unwrap();
    assert_eq!(stored.ai_api_key, "AIzaSyA-secret-key-0123456789wxyz");
    for (body, field) in [
        (json!({"maxDurationSec": 5}), "maxDurationSec"),
        (json!({"mode": "pstn"}), "mode"),
        (json!({"visibility": "everyone"}), "visibility"),
        (json!({"number": "999"}), "number"),
        (json!({"language": "xx_YY"}), "language"),
        (json!({"systemPrompt": ""}), "systemPrompt"),
    ] {
        let r = h.put("/api.ashx/v1/numbers/1234", &t, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}: {}",
            r.text
        );
    }
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"number": "12a4", "systemPrompt": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.get("/api.ashx/v1/numbers/1234", &t).await;
    assert_eq!(r.json["voice"], "Kore");
    let r = h.delete("/api.ashx/v1/numbers/1234", &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["deleted"]["number"], "1234");
    assert_eq!(
        h.get("/api.ashx/v1/numbers/1234", &t).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.delete("/api.ashx/v1/numbers/1234", &t).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn trunks_crud_keeps_password_write_only(h: Harness) {
    let t = h.admin().await;
    let r = h.post("/api.ashx/v1/trunks", &t, json!({
        "name": "carrier-a", "host": "sip.carrier.example", "username": "acct1", "password": "s3cret-pass",
        "fromUser": "+15550001111", "maxConcurrentCalls": 30, "callsPerSecond": 5, "register": true
    })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(codeb_types::TrunkId::parse(&id).is_ok(), "{id}");
    assert_eq!(r.json["port"], 5060);
    assert_eq!(r.json["transport"], "udp");
    assert_eq!(r.json["passwordSet"], true);
    assert!(!r.text.contains("s3cret"));
    // Only trunk: it is the default for calls.
    assert_eq!(
        h.db.store
            .default_trunk(TENANT)
            .await
            .unwrap()
            .unwrap()
            .id
            .as_str(),
        id
    );
    let r2 = h
        .post(
            "/api.ashx/v1/trunks",
            &t,
            json!({"host": "10.0.0.7", "transport": "tls", "isDefault": true}),
        )
        .await;
    assert_eq!(
        r2.status,
        StatusCode::BAD_REQUEST,
        "no TLS on the switch: {}",
        r2.text
    );
    assert!(
        r2.json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("transport:")
    );
    let r2 = h
        .post(
            "/api.ashx/v1/trunks",
            &t,
            json!({"host": "10.0.0.7", "transport": "tcp", "isDefault": true}),
        )
        .await;
    assert_eq!(r2.status, StatusCode::CREATED, "{}", r2.text);
    assert_eq!(r2.json["port"], 5060);
    let id2 = r2.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.db.store
            .default_trunk(TENANT)
            .await
            .unwrap()
            .unwrap()
            .id
            .as_str(),
        id2
    );
    // Marking the first as default unmarks the second.
    let r = h
        .put(
            &format!("/api.ashx/v1/trunks/{id}"),
            &t,
            json!({"isDefault": true, "port": 5080}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["port"], 5080);
    assert_eq!(r.json["passwordSet"], true, "password kept");
    assert_eq!(
        h.get(&format!("/api.ashx/v1/trunks/{id2}"), &t).await.json["isDefault"],
        false
    );
    let list = h.get("/api.ashx/v1/trunks", &t).await;
    assert_eq!(list.json["total"], 2);
    assert!(!list.text.contains("s3cret"));
    for (body, field) in [
        (json!({"host": "bad host"}), "host"),
        (json!({"port": 70000}), "port"),
        (json!({"transport": "sctp"}), "transport"),
        (json!({"password": "a\"b"}), "password"),
        (json!({"callsPerSecond": -1}), "callsPerSecond"),
    ] {
        let r = h
            .put(&format!("/api.ashx/v1/trunks/{id}"), &t, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{}",
            r.text
        );
    }
    assert_eq!(
        h.post("/api.ashx/v1/trunks", &t, json!({"name": "no host"}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = h
        .post(
            "/api.ashx/v1/trunks",
            &t,
            json!({"host": "x.example", "register": true}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "register needs credentials"
    );
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/trunks/{id2}"), &t)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get(&format!("/api.ashx/v1/trunks/{id2}"), &t)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/api.ashx/v1/trunks/tr_nothex", &t).await.status,
        StatusCode::NOT_FOUND
    );
}

/// GET and DELETE without `fromNumber` act on "the first row whose Did
/// matches" in evaluation order, scoped or not (the spec's words); only
/// the catchall itself is refused, not a `*` row with a From filter.
async fn inbound_route_get_and_delete_take_the_first_row_whose_did_matches(h: Harness) {
    let t = h.admin().await;
    for body in [
        json!({"Did": "anonymous", "FromNumber": "*", "User": "callcentre"}),
        json!({"Did": "anonymous", "User": "frontdesk"}),
        json!({"Did": "*", "FromNumber": "+356*", "User": "malta"}),
    ] {
        let r = h.post("/api.ashx/v1/inbound-routes", &t, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = h.get("/api.ashx/v1/inbound-routes/anonymous", &t).await;
    assert_eq!(
        r.json,
        json!({"did": "anonymous", "fromNumber": "*", "user": "callcentre"})
    );
    let r = h.delete("/api.ashx/v1/inbound-routes/anonymous", &t).await;
    assert_eq!(
        r.json,
        json!({"deleted": {"Did": "anonymous", "FromNumber": "*", "User": "callcentre"}})
    );
    let r = h.delete("/api.ashx/v1/inbound-routes/anonymous", &t).await;
    assert_eq!(
        r.json,
        json!({"deleted": {"Did": "anonymous", "User": "frontdesk"}})
    );
    // The scoped `*` row comes before the catchall: it goes first.
    let r = h.get("/api.ashx/v1/inbound-routes/%2A", &t).await;
    assert_eq!(
        r.json,
        json!({"did": "*", "fromNumber": "+356*", "user": "malta"})
    );
    let r = h.delete("/api.ashx/v1/inbound-routes/%2A", &t).await;
    assert_eq!(
        r.json,
        json!({"deleted": {"Did": "*", "FromNumber": "+356*", "User": "malta"}})
    );
    let r = h.delete("/api.ashx/v1/inbound-routes/%2A", &t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"], "cannot_delete_catchall");
    // `fromNumber` still addresses one row exactly.
    let r = h
        .get("/api.ashx/v1/inbound-routes/%2A?fromNumber=%2B356*", &t)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn inbound_routes_as_the_spec_shows(h: Harness) {
    let t = h.admin().await;
    let r = h.get("/api.ashx/v1/inbound-routes", &t).await;
    assert_eq!(
        r.json["data"],
        json!([{"did": "*", "user": "operator"}]),
        "catchall always present"
    );
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"Did": "+15551234567", "User": "alex"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json, json!({"Did": "+15551234567", "User": "alex"}));
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"did": "anonymous", "fromNumber": "*", "user": "callcentre"}),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"Did": "anonymous", "FromNumber": "*", "User": "callcentre"})
    );
    // Rotate the catchall's user.
    let r = h
        .put(
            "/api.ashx/v1/inbound-routes/%2A",
            &t,
            json!({"User": "codeb"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"Did": "*", "User": "codeb"}));
    let r = h.get("/api.ashx/v1/inbound-routes", &t).await;
    assert_eq!(
        r.json,
        json!({
            "data": [
                {"did": "+15551234567", "user": "alex"},
                {"did": "anonymous", "fromNumber": "*", "user": "callcentre"},
                {"did": "*", "user": "codeb"}
            ],
            "total": 3, "limit": 50, "offset": 0, "next": null
        })
    );
    // Duplicate composite.
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"Did": "+15551234567", "User": "bob"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.json,
        json!({"error": "duplicate_route", "error_description": "An inbound route already exists for Did='+15551234567'"})
    );
    // The same DID with a From filter is a different row, placed before the catchall.
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"Did": "+15551234567", "FromNumber": "+356*", "User": "malta"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .post(
            "/api.ashx/v1/inbound-routes",
            &t,
            json!({"Did": "*", "User": "x"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "the catchall already exists"
    );
    let list = h.get("/api.ashx/v1/inbound-routes", &t).await.json;
    assert_eq!(
        list["data"][3],
        json!({"did": "*", "user": "codeb"}),
        "catchall last"
    );
    // Composite addressing.
    let r = h
        .put(
            "/api.ashx/v1/inbound-routes/anonymous?fromNumber=%2A",
            &t,
            json!({"User": "frontdesk"}),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"Did": "anonymous", "FromNumber": "*", "User": "frontdesk"})
    );
    let r = h
        .put(
            "/api.ashx/v1/inbound-routes/anonymous",
            &t,
            json!({"User": "x"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no unfiltered anonymous row"
    );
    assert_eq!(
        r.json["error_description"],
        "No inbound route with Did='anonymous'"
    );
    let r = h
        .put(
            "/api.ashx/v1/inbound-routes/anonymous?fromNumber=%2B1*",
            &t,
            json!({"User": "x"}),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"error": "not_found", "error_description": "No inbound route with Did='anonymous' FromNumber='+1*'"})
    );
    let r = h.get("/api.ashx/v1/inbound-routes/%2A", &t).await;
    assert_eq!(r.json, json!({"did": "*", "user": "codeb"}));
    let r = h.get("/api.ashx/v1/inbound-routes/%2B4400000000", &t).await;
    assert_eq!(
        r.json,
        json!({"error": "not_found", "error_description": "No inbound route with did='+4400000000'"})
    );
    // Deleting: the unfiltered row first, the catchall never.
    let r = h
        .delete("/api.ashx/v1/inbound-routes/%2B15551234567", &t)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({"deleted": {"Did": "+15551234567", "User": "alex"}})
    );
    let r = h
        .delete(
            "/api.ashx/v1/inbound-routes/%2B15551234567?fromNumber=%2B356*",
            &t,
        )
        .await;
    assert_eq!(
        r.json,
        json!({"deleted": {"Did": "+15551234567", "FromNumber": "+356*", "User": "malta"}})
    );
    let r = h
        .delete("/api.ashx/v1/inbound-routes/%2B4400000000", &t)
        .await;
    assert_eq!(
        r.json,
        json!({"error": "not_found", "error_description": "No inbound route with Did='+4400000000'"})
    );
    let r = h.delete("/api.ashx/v1/inbound-routes/%2A", &t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json,
        json!({"error": "cannot_delete_catchall",
        "error_description": "The '*' catchall row cannot be deleted -- the bridge requires it for unmatched inbound calls"})
    );
    // Validation.
    for body in [
        json!({"User": "alex"}),
        json!({"Did": "+1"}),
        json!({"Did": "a b", "User": "x"}),
        json!({"Did": "+1", "User": "al ex"}),
        json!({"Did": "+1", "User": "x", "Priority": 1}),
    ] {
        assert_eq!(
            h.post("/api.ashx/v1/inbound-routes", &t, body.clone())
                .await
                .status,
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
}

pub(super) fn transcript(call_id: &str, source: &str, started: &str) -> TranscriptRecord {
    let started = UtcMillis::parse_rfc3339(started).unwrap();
    let outbound = source == "outbound-ai";
    TranscriptRecord {
        call_id: call_id.into(),
        tenant: TENANT.into(),
        caller_source: source.into(),
        started_at: started,
        answered_at: Some(started.plus_ms(5_500)),
        ended_at: Some(started.plus_ms(150_000)),
        duration_sec: 150,
        rule: if outbound {
            "outbound: +15551234567 (Reminder)".into()
        } else {
            "vnum:Shortletsmalta".into()
        },
        phone: outbound.then(|| "+15551234567".into()),
        number: (!outbound).then(|| "666".into()),
        display_name: outbound.then(|| "Reminder".into()),
        requested_by: outbound.then(|| ADMIN.into()),
        email: outbound.then(|| "ops@example.com".into()),
        outcome: "finished".into(),
        voice: Some("Aoede".into()),
        language: Some("en-US".into()),
        model: Some("live-voice-ai".into()),
        answered: Some(true),
        error_detail: Some(String::new()),
        tokens_total: 18420,
        tokens_prompt: Some(1240),
        input_turns: 1,
        output_turns: 2,
        source: Some("tenant".into()),
        turns: vec![
            Turn {
                speaker: "AI".into(),
                text: "Hi Alex, calling about your test appointment.".into(),
                ts: started.plus_ms(6_450),
            },
            Turn {
                speaker: "Caller".into(),
                text: "Hi, yes, what about it?".into(),
                ts: started.plus_ms(10_880),
            },
            Turn {
                speaker: "AI".into(),
                text: "Just confirming — ünïcode ok?".into(),
                ts: started.plus_ms(15_120),
            },
        ],
        ..Default::default()
    }
}

async fn transcripts_list_filter_and_fetch(h: Harness) {
    let t = h.admin().await;
    let now = h.clock.now();
    let a =
        h.db.store
            .save_transcript(
                transcript("oac-0123456789ab", "outbound-ai", "2026-01-01T12:00:00Z"),
                now,
            )
            .await
            .unwrap();
    assert_eq!(a.file, "outbound-ai-20260101-120000-oac-0123456789ab.txt");
    let b =
        h.db.store
            .save_transcript(
                transcript("vnum0123456789ab", "office-tab", "2026-06-04T17:14:03.836Z"),
                now,
            )
            .await
            .unwrap();
    assert_eq!(b.file, "vnum-666-20260604-171403-vnum0123456789ab.txt");
    let text = std::fs::read_to_string(h.db.dir.path().join("transcripts").join(&a.file)).unwrap();
    assert!(text.contains("Caller: Hi, yes, what about it?"), "{text}");
    assert_eq!(a.size, i64::try_from(text.len()).unwrap());
    let r = h.get("/api.ashx/v1/transcripts", &t).await;
    assert_eq!(r.json["total"], 2);
    assert_eq!(
        r.json["data"][0]["callId"], "vnum0123456789ab",
        "newest first"
    );
    let v = &r.json["data"][0];
    assert_eq!(v["number"], "666");
    assert!(v.get("phone").is_none(), "absent fields are left out");
    let o = &r.json["data"][1];
    for (k, want) in [
        ("callerSource", json!("outbound-ai")),
        ("startedUtc", json!("2026-01-01T12:00:00.000Z")),
        ("endedUtc", json!("2026-01-01T12:02:30.000Z")),
        ("durationSec", json!(150)),
        ("rule", json!("outbound: +15551234567 (Reminder)")),
        ("phone", json!("+15551234567")),
        ("displayName", json!("Reminder")),
        ("outcome", json!("finished")),
        ("tokensTotal", json!(18420)),
        ("tokensPrompt", json!(1240)),
        ("turnCount", json!(3)),
        ("source", json!("tenant")),
        (
            "file",
            json!("outbound-ai-20260101-120000-oac-0123456789ab.txt"),
        ),
    ] {
        assert_eq!(o[k], want, "{k}");
    }
    assert!(o["mtimeUtc"].is_string() && o["size"].as_i64().unwrap() > 0);
    let r = h
        .get("/api.ashx/v1/transcripts?source=outbound-ai", &t)
        .await;
    assert_eq!(
        (
            r.json["total"].as_i64(),
            r.json["data"][0]["callId"].as_str()
        ),
        (Some(1), Some("oac-0123456789ab"))
    );
    let r = h.get("/api.ashx/v1/transcripts?source=vnum", &t).await;
    assert_eq!(r.json["total"], 1, "vnum matches office-tab too");
    let r = h.get("/api.ashx/v1/transcripts?q=REMINDER", &t).await;
    assert_eq!(r.json["total"], 1, "case-insensitive substring");
    let r = h.get("/api.ashx/v1/transcripts?q=shortlets", &t).await;
    assert_eq!(r.json["data"][0]["callId"], "vnum0123456789ab");
    let r = h.get("/api.ashx/v1/transcripts?q=%25", &t).await;
    assert_eq!(r.json["total"], 0, "LIKE wildcards are literal");
    let r = h
        .get("/api.ashx/v1/transcripts?since=2026-03-01T00:00:00Z", &t)
        .await;
    assert_eq!(r.json["total"], 1);
    let r = h.get("/api.ashx/v1/transcripts?limit=1", &t).await;
    assert_eq!(r.json["next"], "/api.ashx/v1/transcripts?limit=1&offset=1");
    for bad in ["source=pstn", "since=yesterday", "limit=-3"] {
        assert_eq!(
            h.get(&format!("/api.ashx/v1/transcripts?{bad}"), &t)
                .await
                .status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let r = h.get("/api.ashx/v1/transcripts/oac-0123456789ab", &t).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = &r.json;
    assert_eq!(j["answered"], true);
    assert_eq!(j["answeredUtc"], "2026-01-01T12:00:05.500Z");
    assert_eq!(j["requestedBy"], ADMIN);
    assert_eq!(j["inputTurns"], 1);
    assert_eq!(j["outputTurns"], 2);
    assert_eq!(
        j["turns"][0],
        json!({"speaker": "AI", "text": "Hi Alex, calling about your test appointment.", "ts": "2026-01-01T12:00:06.450Z"})
    );
    assert_eq!(j["turns"][2]["text"], "Just confirming — ünïcode ok?");
    let r = h.get("/api.ashx/v1/transcripts/oac-ffffffffffff", &t).await;
    assert_eq!(
        r.json,
        json!({"error": "not_found", "error_description": "No transcript for callId=oac-ffffffffffff"})
    );
}

async fn webhooks_secret_shown_once(h: Harness) {
    let t = h.admin().await;
    let r = h
        .post(
            "/api.ashx/v1/webhooks",
            &t,
            json!({"url": "https://hooks.example.com/codeb", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let secret = r.json["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 6 + 43,
        "{secret}"
    );
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(codeb_types::SubscriptionId::parse(&id).is_ok());
    h.clock.advance_ms(1000);
    let r2 = h
        .post(
            "/api.ashx/v1/webhooks",
            &t,
            json!({"url": "https://ops.example.com/codeb-alerts",
        "events": ["call.ended", "transcript.saved"]}),
        )
        .await;
    assert_ne!(r2.json["secret"], secret.as_str());
    let list = h.get("/api.ashx/v1/webhooks", &t).await;
    assert!(!list.text.contains(&secret) && !list.text.contains("secret"));
    assert_eq!(list.json["total"], 2);
    let item = &list.json["data"][0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["url"], "https://hooks.example.com/codeb");
    assert_eq!(item["events"], json!(["*"]));
    assert_eq!(item["active"], true);
    assert_eq!(item["createdBy"], ADMIN);
    assert_eq!(item["lastFiredUtc"], Value::Null);
    assert_eq!(item["failures"], 0);
    for body in [
        json!({"url": "ftp://x.example/", "events": ["*"]}),
        json!({"url": "https://x.example/", "events": []}),
        json!({"url": "https://x.example/", "events": ["call.nope"]}),
        json!({"events": ["*"]}),
    ] {
        assert_eq!(
            h.post("/api.ashx/v1/webhooks", &t, body.clone())
                .await
                .status,
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/webhooks/{id}"), &t)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/webhooks/{id}"), &t)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.get("/api.ashx/v1/webhooks", &t).await.json["total"], 1);
}

async fn number_voice_follows_the_model_vendor(h: Harness) {
    let t = h.admin().await;
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"number": "2001", "systemPrompt": "Receptionist", "model": "openai/gpt-realtime"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["voice"], "marin");
    // A Gemini number's default voice follows a change of model to
    // OpenAI; a voice named in the same request must be OpenAI's.
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"number": "2002", "systemPrompt": "Receptionist"}),
        )
        .await;
    assert_eq!(r.json["voice"], "Aoede");
    let r = h
        .put(
            "/api.ashx/v1/numbers/2002",
            &t,
            json!({"model": "openai/gpt-realtime"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["voice"], "marin");
    let r = h
        .put("/api.ashx/v1/numbers/2002", &t, json!({"voice": "Charon"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("voice: ")
    );
    assert_eq!(
        h.get("/api.ashx/v1/numbers/2002", &t).await.json["voice"],
        "marin"
    );
    // A model neither vendor has is refused; the number keeps its own.
    let r = h
        .put("/api.ashx/v1/numbers/2002", &t, json!({"model": "banana"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("model: ")
    );
    assert_eq!(
        h.get("/api.ashx/v1/numbers/2002", &t).await.json["model"],
        "openai/gpt-realtime"
    );
    // Empty is the default model, as on POST /calls.
    let r = h
        .put("/api.ashx/v1/numbers/2002", &t, json!({"model": ""}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["model"], crate::api::calls::DEFAULT_MODEL);
    assert_eq!(r.json["voice"], "Aoede", "the voice follows back to Gemini");
    let r = h
        .put(
            "/api.ashx/v1/numbers/2002",
            &t,
            json!({"model": "openai/gpt-realtime"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // And back: OpenAI's marin is no Gemini voice.
    let r = h
        .put(
            "/api.ashx/v1/numbers/2002",
            &t,
            json!({"model": "models/gemini-2.5-flash-native-audio-preview-12-2025"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["voice"], "Aoede");
    // A voice named with the change stands.
    let r = h
        .put(
            "/api.ashx/v1/numbers/2002",
            &t,
            json!({"model": "openai/gpt-realtime", "voice": "cedar"}),
        )
        .await;
    assert_eq!(
        (r.json["voice"].as_str(), r.status),
        (Some("cedar"), StatusCode::OK)
    );
}
