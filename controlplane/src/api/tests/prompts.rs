//! The prompt library: CRUD, built-ins, overrides and validation.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Harness, on_both_backends};

on_both_backends!(
    prompts_crud_and_builtins,
    prompt_input_is_checked,
    a_call_keeps_the_slug_it_was_given,
    a_prompt_in_use_is_not_deleted,
);

/// A prompt a virtual number or a call waiting to be dialled names is not
/// deleted: its slug would become the AI's instructions, word for word.
async fn a_prompt_in_use_is_not_deleted(h: Harness) {
    let t = h.admin().await;
    for slug in ["recep", "later"] {
        let r = h
            .post(
                "/api.ashx/v1/prompts",
                &t,
                json!({"slug": slug, "text": "Greet and end_call."}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &t,
            json!({"name": "desk", "number": "1261", "systemPrompt": "recep"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15551234567", "email": "ops@example.com", "systemPrompt": "later",
                "apiKey": "k", "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.delete("/api.ashx/v1/prompts/recep", &t).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "prompt_in_use");
    assert!(r.text.contains("virtual numbers 1261"), "{}", r.text);
    let r = h.delete("/api.ashx/v1/prompts/later", &t).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("1 call still to be dialled"), "{}", r.text);
    // Once the number names another prompt, it goes.
    let r = h
        .put(
            "/api.ashx/v1/numbers/1261",
            &t,
            json!({"systemPrompt": "Say hi."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.delete("/api.ashx/v1/prompts/recep", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn prompts_crud_and_builtins(h: Harness) {
    let t = h.admin().await;
    // Only the built-in at first.
    let r = h.get("/api.ashx/v1/prompts", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["total"], 1);
    let reminder = &r.json["data"][0];
    assert_eq!(reminder["slug"], "reminder");
    assert_eq!(reminder["builtin"], true);
    assert_eq!(reminder["createdAtUtc"], Value::Null);
    assert!(reminder["text"].as_str().unwrap().contains("end_call"));
    // Create (either casing), read, list in slug order.
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"Slug": "dentist-reminder", "Name": "Dentist", "Text": "Remind them.\nThen end_call."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["builtin"], false);
    assert_eq!(r.json["createdAtUtc"], "2026-06-04T17:55:12.401Z");
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"slug": "zz-last", "text": "z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["name"], "zz-last", "the name defaults to the slug");
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"slug": "dentist-reminder", "text": "again"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "duplicate_prompt");
    let r = h.get("/api.ashx/v1/prompts?limit=2", &t).await;
    assert_eq!(r.json["total"], 3);
    let slugs: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["dentist-reminder", "reminder"]);
    assert_eq!(r.json["next"], "/api.ashx/v1/prompts?limit=2&offset=2");
    let r = h.get("/api.ashx/v1/prompts?limit=2&offset=2", &t).await;
    assert_eq!(r.json["data"][0]["slug"], "zz-last");
    // Update changes what it names.
    h.clock.advance_ms(1000);
    let r = h
        .put(
            "/api.ashx/v1/prompts/dentist-reminder",
            &t,
            json!({"text": "New text."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["name"].as_str(), r.json["text"].as_str()),
        (Some("Dentist"), Some("New text."))
    );
    assert_eq!(r.json["updatedAtUtc"], "2026-06-04T17:55:13.401Z");
    assert_eq!(
        h.get("/api.ashx/v1/prompts/dentist-reminder", &t)
            .await
            .json["text"],
        "New text."
    );
    // Built-ins are read-only ...
    for r in [
        h.put("/api.ashx/v1/prompts/reminder", &t, json!({"text": "x"}))
            .await,
        h.delete("/api.ashx/v1/prompts/reminder", &t).await,
    ] {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.json["error"], "builtin_prompt");
    }
    // ... but a tenant prompt with the slug overrides one, and deleting it
    // brings the built-in back.
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"slug": "reminder", "text": "Our own reminder."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h.get("/api.ashx/v1/prompts/reminder", &t).await;
    assert_eq!(
        (r.json["text"].as_str(), r.json["builtin"].as_bool()),
        (Some("Our own reminder."), Some(false))
    );
    let r = h.get("/api.ashx/v1/prompts", &t).await;
    assert_eq!(r.json["total"], 3, "the override replaces the built-in");
    let r = h.delete("/api.ashx/v1/prompts/reminder", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["deleted"]["text"], "Our own reminder.");
    assert_eq!(
        h.get("/api.ashx/v1/prompts/reminder", &t).await.json["builtin"],
        true
    );
    // Delete, then it is gone.
    let r = h.delete("/api.ashx/v1/prompts/zz-last", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for r in [
        h.get("/api.ashx/v1/prompts/zz-last", &t).await,
        h.delete("/api.ashx/v1/prompts/zz-last", &t).await,
        h.put("/api.ashx/v1/prompts/zz-last", &t, json!({"text": "x"}))
            .await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(r.json["error"], "not_found");
    }
}

async fn prompt_input_is_checked(h: Harness) {
    let t = h.admin().await;
    let big = "x".repeat(32 * 1024 + 1);
    let big_utf8 = "é".repeat(16 * 1024 + 1);
    for (body, field) in [
        (json!({"text": "x"}), "slug"),
        (json!({"slug": "Upper", "text": "x"}), "slug"),
        (json!({"slug": "a b", "text": "x"}), "slug"),
        (json!({"slug": "x".repeat(65), "text": "x"}), "slug"),
        (json!({"slug": "ok"}), "text"),
        (json!({"slug": "ok", "text": "  "}), "text"),
        (json!({"slug": "ok", "text": big}), "text"),
        (json!({"slug": "ok", "text": big_utf8}), "text"),
        (
            json!({"slug": "ok", "text": "x", "name": "n".repeat(129)}),
            "name",
        ),
        (json!({"slug": "ok", "text": "bell\u{7}"}), "text"),
    ] {
        let r = h.post("/api.ashx/v1/prompts", &t, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.text);
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{}",
            r.text
        );
    }
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"slug": "ok", "text": "x", "builtin": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("unknown field"), "{}", r.text);
    let r = h
        .post(
            "/api.ashx/v1/prompts",
            &t,
            json!({"slug": "ok", "text": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .put("/api.ashx/v1/prompts/ok", &t, json!({"slug": "renamed"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // Nothing was changed by the refusals.
    assert_eq!(h.get("/api.ashx/v1/prompts", &t).await.json["total"], 2);
}

async fn a_call_keeps_the_slug_it_was_given(h: Harness) {
    let t = h.admin().await;
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15551234567", "email": "ops@example.com", "systemPrompt": "reminder",
                "apiKey": "k", "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["callId"].as_str().unwrap();
    let call =
        h.db.store
            .claim_call(&codeb_types::CallId::parse(id).unwrap(), h.clock.now())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(call.system_prompt, "reminder", "the record keeps the slug");
    let placed =
        h.db.store
            .expand_call_prompt(
                &call.tenant,
                &call.system_prompt,
                &call.phone,
                &call.display_name,
            )
            .await
            .unwrap();
    let builtin = crate::store::builtin_prompt("reminder").unwrap().text;
    assert!(placed.starts_with(builtin), "{placed}");
    assert!(
        placed.ends_with(
            "Call context: you are calling +15551234567; the call's caller-ID name is \"+15551234567\"."
        ),
        "{placed}"
    );
    // Plain text is placed as given, even when it mentions a slug.
    let plain =
        h.db.store
            .expand_call_prompt(&call.tenant, "Say reminder.", "+1", "x")
            .await
            .unwrap();
    assert_eq!(plain, "Say reminder.");
}
