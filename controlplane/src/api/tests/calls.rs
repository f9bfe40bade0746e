//! `/api.ashx/v1/calls`: validation, scheduling, the bridge errors, lists
//! and hangup.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ADMIN, Harness, TENANT, on_both_backends};

on_both_backends!(
    every_field_is_validated,
    scheduled_call_is_stored_and_listed,
    immediate_call_without_switch_is_503_and_not_stored,
    hangup_is_idempotent,
    list_filters_and_pages,
    list_rows_are_the_single_gets,
    voice_follows_the_model_vendor,
    several_trunks_and_no_default_need_a_trunk_id,
);

fn call_body() -> Value {
    json!({
        "phone": "+15551234567",
        "displayName": "Reminder",
        "email": "ops@example.com",
        "systemPrompt": "You are calling Alex to remind them about a test appointment tomorrow at 14:00.",
        "apiKey": "AIza-test-key-0123456789",
        "voice": "Aoede",
        "language": "en-US",
        "maxSeconds": 180,
        "scheduleAtUtc": "2026-06-05T09:00:00Z"
    })
}

async fn every_field_is_validated(h: Harness) {
    let t = h.admin().await;
    let cases: &[(&str, Value, &str)] = &[
        ("phone", json!(null), "phone: is required"),
        ("phone", json!("15551234567"), "phone: must start with '+'"),
        ("phone", json!("+1555abc"), "phone:"),
        ("phone", json!(15551234567_i64), "phone: invalid type"),
        ("email", json!(null), "email: is required"),
        ("email", json!("not-an-email"), "email:"),
        ("systemPrompt", json!(""), "systemPrompt: is required"),
        (
            "systemPrompt",
            json!("x".repeat(20_001)),
            "systemPrompt: must be at most",
        ),
        ("apiKey", json!(null), "apiKey: is required"),
        ("apiKey", json!("has space"), "apiKey:"),
        (
            "maxSeconds",
            json!(9),
            "maxSeconds: must be between 10 and 3600",
        ),
        (
            "maxSeconds",
            json!(3601),
            "maxSeconds: must be between 10 and 3600",
        ),
        ("maxSeconds", json!("300"), "maxSeconds: invalid type"),
        ("maxSeconds", json!(30.5), "maxSeconds: invalid type"),
        ("retries", json!(11), "retries: must be between 0 and 10"),
        ("retries", json!(-1), "retries: must be between 0 and 10"),
        (
            "retryDelayMinutes",
            json!(0),
            "retryDelayMinutes: must be between 1 and 1440",
        ),
        (
            "retryDelayMinutes",
            json!(1441),
            "retryDelayMinutes: must be between 1 and 1440",
        ),
        ("scheduleAtUtc", json!("tomorrow"), "scheduleAtUtc:"),
        (
            "scheduleAtUtc",
            json!("2026-06-05 09:00:00"),
            "scheduleAtUtc:",
        ),
        (
            "scheduleAtUtc",
            json!("2020-01-01T00:00:00Z"),
            "scheduleAtUtc: is in the past",
        ),
        (
            "scheduleAtUtc",
            json!("2030-01-01T00:00:00Z"),
            "scheduleAtUtc: is more than 366 days ahead",
        ),
        ("language", json!("english"), "language:"),
        ("voice", json!("Ao de"), "voice:"),
        (
            "displayName",
            json!("x".repeat(65)),
            "displayName: must be at most 64",
        ),
        (
            "displayName",
            json!("a\u{7}b"),
            "displayName: must not contain control",
        ),
        ("trunkId", json!("tr_nothex"), "trunkId:"),
        ("trunkId", json!("tr_0123456789abcdef"), "trunkId: no trunk"),
    ];
    for (field, value, want) in cases {
        let mut body = call_body();
        body[*field] = value.clone();
        let r = h.post("/api.ashx/v1/calls", &t, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{field}={value}: {}",
            r.text
        );
        assert_eq!(r.json["error"], "invalid_request");
        let d = r.json["error_description"].as_str().unwrap();
        assert!(
            d.starts_with(want),
            "{field}={value}: got {d:?}, want prefix {want:?}"
        );
    }
    // The spec's quick-start body (phone, displayName, systemPrompt): every
    // missing required field is named in one answer.
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15551234567", "displayName": "Reminder",
                   "systemPrompt": "reminder"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(
        r.json["error_description"], "email, apiKey: are required",
        "{}",
        r.text
    );
    let mut body = call_body();
    body["status"] = json!("ended-success");
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "no mass assignment");
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("unknown field `status`")
    );
    assert_eq!(
        h.get("/api.ashx/v1/calls", &t).await.json["total"],
        0,
        "nothing stored"
    );
}

/// Two trunks, none marked default: a call that names no trunk would be
/// stored, answered `ok`, and fail when placed; it is refused instead.
async fn several_trunks_and_no_default_need_a_trunk_id(h: Harness) {
    let t = h.admin().await;
    let mut ids = Vec::new();
    for host in ["sip.a.example", "sip.b.example"] {
        let r = h
            .post("/api.ashx/v1/trunks", &t, json!({"host": host}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }
    let r = h.post("/api.ashx/v1/calls", &t, call_body()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_request");
    let d = r.json["error_description"].as_str().unwrap();
    assert!(d.starts_with("trunkId: is required"), "{d}");
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], 0);
    // Naming one works...
    let mut body = call_body();
    body["trunkId"] = json!(ids[1]);
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // ...and so does marking one default.
    let r = h
        .put(
            &format!("/api.ashx/v1/trunks/{}", ids[0]),
            &t,
            json!({"isDefault": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.post("/api.ashx/v1/calls", &t, call_body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn scheduled_call_is_stored_and_listed(h: Harness) {
    let t = h.admin().await;
    // PascalCase is accepted for every field.
    let body = json!({
        "Phone": "+15551234567", "DisplayName": "Reminder", "Email": "ops@example.com",
        "SystemPrompt": "Remind Alex.", "ApiKey": "AIza-test-key-0123456789",
        "MaxSeconds": 180, "Retries": 2, "RetryDelayMinutes": 7,
        "ScheduleAtUtc": "2026-06-05T11:00:00+02:00"
    });
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.json["tenant"], TENANT);
    assert_eq!(r.json["whitelistAdded"], true);
    assert_eq!(r.json["whitelistError"], Value::Null);
    assert_eq!(r.json["status"], "scheduled");
    let id = r.json["callId"].as_str().unwrap().to_owned();
    assert!(codeb_types::CallId::parse(&id).is_ok(), "{id}");
    // Same number again: already on the whitelist.
    let r = h.post("/api.ashx/v1/calls", &t, call_body()).await;
    assert_eq!(r.json["whitelistAdded"], false);
    let one = h.get(&format!("/api.ashx/v1/calls/{id}"), &t).await;
    assert_eq!(one.status, StatusCode::OK);
    let c = &one.json;
    assert_eq!(c["callId"], id.as_str());
    assert_eq!(c["status"], "scheduled");
    assert_eq!(c["requestedBy"], ADMIN);
    assert_eq!(c["phone"], "+15551234567");
    assert_eq!(c["displayName"], "Reminder");
    assert_eq!(c["email"], "ops@example.com");
    assert_eq!(c["voice"], "Aoede");
    assert_eq!(c["language"], "en-US");
    assert_eq!(c["createdAtUtc"], "2026-06-04T17:55:12.401Z");
    assert_eq!(c["scheduledForUtc"], "2026-06-05T09:00:00.000Z");
    assert_eq!(c["dispatchedAtUtc"], Value::Null);
    assert_eq!(c["endedReason"], "");
    assert_eq!(c["attempt"], 0);
    assert_eq!(c["retriesLeft"], 2);
    assert_eq!(c["retryDelayMinutes"], 7);
    assert!(
        c.get("apiKey").is_none() && !one.text.contains("AIza"),
        "the AI key is never returned"
    );
    // Every field of the spec's list item is present.
    let list = h.get("/api.ashx/v1/calls", &t).await;
    for f in [
        "callId",
        "tenant",
        "requestedBy",
        "phone",
        "displayName",
        "email",
        "voice",
        "language",
        "model",
        "status",
        "createdAtUtc",
        "scheduledForUtc",
        "dispatchedAtUtc",
        "answeredAtUtc",
        "endedAtUtc",
        "endedReason",
        "durationSec",
        "trunkId",
        "transcriptPath",
        "errorDetail",
        "attempt",
        "retriesLeft",
        "retryDelayMinutes",
    ] {
        assert!(list.json["data"][0].get(f).is_some(), "list item lacks {f}");
    }
    assert_eq!(list.json["total"], 2);
    let r = h.get("/api.ashx/v1/calls/oac-000000000000", &t).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"], "not_found");
    assert_eq!(
        r.json["error_description"],
        "No call with id=oac-000000000000"
    );
    assert_eq!(
        h.get("/api.ashx/v1/calls/not-an-id", &t).await.status,
        StatusCode::NOT_FOUND
    );
    // A long id is not echoed whole.
    let long = format!("/api.ashx/v1/calls/oac-{}", "a".repeat(2000));
    let r = h.get(&long, &t).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let d = r.json["error_description"].as_str().unwrap();
    assert!(d.chars().count() <= 201 && d.ends_with('…'), "{d}");
}

async fn immediate_call_without_switch_is_503_and_not_stored(h: Harness) {
    let t = h.admin().await;
    let mut body = call_body();
    body.as_object_mut().unwrap().remove("scheduleAtUtc");
    let r = h.post("/api.ashx/v1/calls", &t, body.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"], "bridge_not_configured");
    // A time that has already come counts as immediate.
    body["scheduleAtUtc"] = json!("2026-06-04T17:55:00Z");
    assert_eq!(
        h.post("/api.ashx/v1/calls", &t, body).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], 0);
    assert!(
        !h.db
            .store
            .is_whitelisted(TENANT, "+15551234567")
            .await
            .unwrap()
    );
}

async fn hangup_is_idempotent(h: Harness) {
    let t = h.admin().await;
    let id = h.post("/api.ashx/v1/calls", &t, call_body()).await.json["callId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .post(&format!("/api.ashx/v1/calls/{id}/hangup"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"ok": true, "callId": id, "newStatus": "cancelled", "actor": ADMIN, "wasNoop": false})
    );
    let c = h.get(&format!("/api.ashx/v1/calls/{id}"), &t).await.json;
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["endedReason"], "cancelled");
    assert_eq!(c["endedAtUtc"], "2026-06-04T17:55:12.401Z");
    // No body at all is fine too, and a second hangup is a no-op.
    let r = h
        .call(
            axum::http::Method::POST,
            &format!("/api.ashx/v1/calls/{id}/hangup"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["wasNoop"], true);
    assert_eq!(r.json["newStatus"], "cancelled");
    let r = h
        .post("/api.ashx/v1/calls/oac-ffffffffffff/hangup", &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Every row of `GET /calls` (unfiltered and by status) is byte for byte
/// the body of `GET /calls/{id}` for that call.
async fn assert_rows_are_gets(h: &Harness, t: &str, ids: &[String], what: &str) {
    for uri in [
        "/api.ashx/v1/calls",
        "/api.ashx/v1/calls?status=scheduled,cancelled",
    ] {
        let list = h.get(uri, t).await;
        assert_eq!(list.status, StatusCode::OK, "{what}: {}", list.text);
        assert_eq!(list.json["data"].as_array().unwrap().len(), ids.len());
        for id in ids {
            let one = h.get(&format!("/api.ashx/v1/calls/{id}"), t).await;
            assert_eq!(one.status, StatusCode::OK);
            assert!(
                list.text.contains(&one.text),
                "{what}: {uri} lacks {}\nin {}",
                one.text,
                list.text
            );
        }
    }
}

/// On SQLite list rows come from the cache of rendered rows (filed by row
/// version): a list read before a write must not show in one after it.
async fn list_rows_are_the_single_gets(h: Harness) {
    let t = h.admin().await;
    let mut ids = Vec::new();
    for name in ["First", "Quote \" and \\ back", "\u{e9}t\u{e9} </b>"] {
        let mut body = call_body();
        body["displayName"] = json!(name);
        let r = h.post("/api.ashx/v1/calls", &t, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        ids.push(r.json["callId"].as_str().unwrap().to_owned());
    }
    assert_rows_are_gets(&h, &t, &ids, "stored").await;
    assert_rows_are_gets(&h, &t, &ids, "read again").await;
    let r = h
        .post(
            &format!("/api.ashx/v1/calls/{}/hangup", ids[1]),
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.json["newStatus"], "cancelled", "{}", r.text);
    assert_rows_are_gets(&h, &t, &ids, "after a hangup").await;
}

async fn list_filters_and_pages(h: Harness) {
    let t = h.admin().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        h.clock.advance_ms(1000);
        let mut body = call_body();
        body["phone"] = json!(format!("+1555123456{i}"));
        ids.push(
            h.post("/api.ashx/v1/calls", &t, body).await.json["callId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    h.post(
        &format!("/api.ashx/v1/calls/{}/hangup", ids[1]),
        &t,
        json!({}),
    )
    .await;
    // Newest first.
    let r = h.get("/api.ashx/v1/calls?limit=2", &t).await;
    assert_eq!(r.json["total"], 5);
    assert_eq!(r.json["limit"], 2);
    assert_eq!(r.json["offset"], 0);
    assert_eq!(r.json["data"][0]["callId"], ids[4].as_str());
    assert_eq!(r.json["next"], "/api.ashx/v1/calls?limit=2&offset=2");
    let r = h.get("/api.ashx/v1/calls?limit=2&offset=4", &t).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["next"], Value::Null);
    let r = h.get("/api.ashx/v1/calls?status=cancelled", &t).await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["data"][0]["callId"], ids[1].as_str());
    let r = h
        .get("/api.ashx/v1/calls?status=scheduled,in-flight&limit=3", &t)
        .await;
    assert_eq!(r.json["total"], 4);
    assert_eq!(
        r.json["next"],
        "/api.ashx/v1/calls?status=scheduled%2Cin-flight&limit=3&offset=3"
    );
    let r = h.get("/api.ashx/v1/calls?status=ringing", &t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("status: unknown status 'ringing'")
    );
    for bad in ["limit=0", "limit=x", "offset=-1", "limit=5&limit=6"] {
        assert_eq!(
            h.get(&format!("/api.ashx/v1/calls?{bad}"), &t).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert_eq!(
        h.get("/api.ashx/v1/calls?limit=100000", &t).await.json["limit"],
        500
    );
}

#[tokio::test]
async fn unreachable_switch_is_502_and_not_stored() {
    let db = crate::store::testing::TestDb::sqlite().await;
    // Port 1 on loopback: nothing listens, the connect is refused at once.
    let h = Harness::with_switch(db, vec!["http://127.0.0.1:1".into()]).await;
    let t = h.admin().await;
    let mut body = call_body();
    body.as_object_mut().unwrap().remove("scheduleAtUtc");
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.json["error"], "bridge_unreachable");
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1")
    );
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], 0);
    // Scheduled calls do not need the switch yet.
    assert_eq!(
        h.post("/api.ashx/v1/calls", &t, call_body()).await.status,
        StatusCode::OK
    );
}

/// A hangup of an in-flight call whose node cannot be reached is a 502,
/// and the call's retries are called off: however its attempt ends (lost
/// with the node), the callee is not dialled again.
#[tokio::test]
async fn a_hangup_that_cannot_reach_the_node_calls_off_the_retries() {
    let db = crate::store::testing::TestDb::sqlite().await;
    let node = "http://127.0.0.1:1";
    let h = Harness::with_switch(db, vec![node.into()]).await;
    let t = h.admin().await;
    let mut body = call_body();
    body["retries"] = json!(2);
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = codeb_types::CallId::parse(r.json["callId"].as_str().unwrap()).unwrap();
    let s = &h.db.store;
    let now = h.clock.now();
    let claimed = s.claim_call(&id, now).await.unwrap().unwrap();
    assert!(
        s.set_dispatch_node(&claimed, node, None, now)
            .await
            .unwrap()
    );
    assert!(s.mark_placed(&claimed, "", "", now).await.unwrap());
    let r = h
        .post(&format!("/api.ashx/v1/calls/{id}/hangup"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.json["error"], "bridge_unreachable");
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("its retries are called off"),
        "{}",
        r.text
    );
    let r = h.get(&format!("/api.ashx/v1/calls/{id}"), &t).await;
    assert_eq!(r.json["status"], "in-flight", "{}", r.text);
    assert_eq!(r.json["retriesLeft"], 0, "{}", r.text);
}

async fn voice_follows_the_model_vendor(h: Harness) {
    let t = h.admin().await;
    // No voice: the default of the model's vendor, not Gemini's Aoede
    // for an OpenAI session (which OpenAI would refuse mid-dial).
    for (model, voice) in [
        (None, "Aoede"),
        (Some("openai/gpt-realtime"), "marin"),
        (Some("gpt-realtime-mini"), "marin"),
    ] {
        let mut body = call_body();
        body.as_object_mut().unwrap().remove("voice");
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        let r = h.post("/api.ashx/v1/calls", &t, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let id = r.json["callId"].as_str().unwrap().to_owned();
        let c = h.get(&format!("/api.ashx/v1/calls/{id}"), &t).await.json;
        assert_eq!(c["voice"], voice, "{model:?}");
    }
    // A voice the vendor does not have is refused, and nothing stored.
    let before = h.get("/api.ashx/v1/calls", &t).await.json["total"].clone();
    let mut body = call_body();
    body["model"] = json!("openai/gpt-realtime");
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_request");
    let d = r.json["error_description"].as_str().unwrap();
    assert!(d.starts_with("voice: ") && d.contains("marin"), "{d}");
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], before);
    // A model neither vendor has is refused, not rung and then failed
    // when the switch cannot start its session.
    for model in [
        "banana",
        "models/banana",
        "google/claude",
        "gpt-",
        "openai/",
    ] {
        let mut body = call_body();
        body["model"] = json!(model);
        let r = h.post("/api.ashx/v1/calls", &t, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{model}: {}", r.text);
        let d = r.json["error_description"].as_str().unwrap();
        assert!(d.starts_with("model: "), "{d}");
    }
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], before);
    // An OpenAI voice for OpenAI, and any well-formed name for Gemini.
    let mut body = call_body();
    body["model"] = json!("openai/gpt-realtime");
    body["voice"] = json!("cedar");
    assert_eq!(
        h.post("/api.ashx/v1/calls", &t, body).await.status,
        StatusCode::OK
    );
    let mut body = call_body();
    body["voice"] = json!("Zephyr");
    assert_eq!(
        h.post("/api.ashx/v1/calls", &t, body).await.status,
        StatusCode::OK
    );
}
