//! SIP users: CRUD, the write-only password, uniqueness across tenants,
//! validation, and that every change is a configuration change.

use axum::http::StatusCode;
use serde_json::json;

use super::{Harness, on_both_backends};
use crate::store::Role;

on_both_backends!(sip_users_crud, sip_user_input_is_checked);

const SECRET: &str = "s3cret-digest-pw";

async fn sip_users_crud(h: Harness) {
    let t = h.admin().await;
    let r = h.get("/api.ashx/v1/sip-users", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["total"], 0);
    let v0 = h.db.store.config_version().await.unwrap();
    // Either casing; the password never comes back.
    let r = h
        .post(
            "/api.ashx/v1/sip-users",
            &t,
            json!({"Name": "bob", "DisplayName": "Bob at the desk", "Password": SECRET}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"name": "bob", "displayName": "Bob at the desk", "passwordSet": true,
            "contact": "", "createdAtUtc": "2026-06-04T17:55:12.401Z",
            "updatedAtUtc": "2026-06-04T17:55:12.401Z"})
    );
    assert!(h.db.store.config_version().await.unwrap() > v0);
    let r = h
        .post(
            "/api.ashx/v1/sip-users",
            &t,
            json!({"name": "pbx", "contact": "sip:pbx@192.0.2.20:5060"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["passwordSet"], false);
    assert_eq!(r.json["displayName"], "");
    let r = h
        .post("/api.ashx/v1/sip-users", &t, json!({"name": "al.b+1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Duplicates: in this tenant, and in another one (names are unique on
    // the platform, as a switch node's registrar needs).
    let r = h
        .post("/api.ashx/v1/sip-users", &t, json!({"name": "bob"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "duplicate_sip_user");
    h.add_user("bea", "other-tenant-pw", Role::Admin, "other.example.test")
        .await;
    let b = h.token_for("bea", "other-tenant-pw").await;
    let r = h
        .post("/api.ashx/v1/sip-users", &b, json!({"name": "bob"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(!r.text.contains("Bob at the desk"), "{}", r.text);
    assert_eq!(h.get("/api.ashx/v1/sip-users", &b).await.json["total"], 0);
    // List by name, paged.
    let r = h.get("/api.ashx/v1/sip-users?limit=2", &t).await;
    assert_eq!(r.json["total"], 3);
    let names: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["al.b+1", "bob"]);
    assert_eq!(r.json["next"], "/api.ashx/v1/sip-users?limit=2&offset=2");
    assert!(!r.text.contains(SECRET), "{}", r.text);
    // Get; change only what is given; an empty string clears.
    let r = h.get("/api.ashx/v1/sip-users/bob", &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text.contains(SECRET), "{}", r.text);
    h.clock.advance_ms(60_000);
    let v1 = h.db.store.config_version().await.unwrap();
    let r = h
        .put(
            "/api.ashx/v1/sip-users/bob",
            &t,
            json!({"contact": "sip:[2001:db8::5]:5070;transport=udp", "name": "bob"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["contact"], "sip:[2001:db8::5]:5070;transport=udp");
    assert_eq!(r.json["displayName"], "Bob at the desk");
    assert_eq!(r.json["passwordSet"], true);
    assert_eq!(r.json["updatedAtUtc"], "2026-06-04T17:56:12.401Z");
    assert!(h.db.store.config_version().await.unwrap() > v1);
    let stored = h.db.store.sip_user(super::TENANT, "bob").await.unwrap();
    assert_eq!(stored.unwrap().password, SECRET, "kept for the switch");
    let r = h
        .put("/api.ashx/v1/sip-users/bob", &t, json!({"password": ""}))
        .await;
    assert_eq!(r.json["passwordSet"], false);
    // The name is the path's.
    let r = h
        .put("/api.ashx/v1/sip-users/bob", &t, json!({"name": "robert"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_request");
    // Another tenant sees none of it.
    for r in [
        h.get("/api.ashx/v1/sip-users/bob", &b).await,
        h.put(
            "/api.ashx/v1/sip-users/bob",
            &b,
            json!({"displayName": "x"}),
        )
        .await,
        h.delete("/api.ashx/v1/sip-users/bob", &b).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(r.json["error"], "not_found");
    }
    // Delete; then it is gone, and the name is free again.
    let r = h.delete("/api.ashx/v1/sip-users/bob", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"deleted": "bob"}));
    for r in [
        h.get("/api.ashx/v1/sip-users/bob", &t).await,
        h.delete("/api.ashx/v1/sip-users/bob", &t).await,
        h.put(
            "/api.ashx/v1/sip-users/bob",
            &t,
            json!({"displayName": "x"}),
        )
        .await,
        h.get("/api.ashx/v1/sip-users/no%20such", &t).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    }
    let r = h
        .post("/api.ashx/v1/sip-users", &b, json!({"name": "bob"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

async fn sip_user_input_is_checked(h: Harness) {
    let t = h.admin().await;
    let long_name = "a".repeat(65);
    let long_pw = "p".repeat(129);
    let long_display = "d".repeat(65);
    let cases = [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": long_name}), "name"),
        (json!({"name": "a b"}), "name"),
        (json!({"name": "a@b"}), "name"),
        (json!({"name": "a;b"}), "name"),
        (json!({"name": "ok", "password": "short"}), "password"),
        (
            json!({"name": "ok", "password": "has\"quote-in-it"}),
            "password",
        ),
        (json!({"name": "ok", "password": long_pw}), "password"),
        (
            json!({"name": "ok", "displayName": long_display}),
            "displayName",
        ),
        (
            json!({"name": "ok", "displayName": "a\u{7}b"}),
            "displayName",
        ),
        (json!({"name": "ok", "contact": "pbx@192.0.2.1"}), "contact"),
        (
            json!({"name": "ok", "contact": "sip:pbx.example.com"}),
            "contact",
        ),
        (json!({"name": "ok", "contact": "sip:224.0.0.1"}), "contact"),
        (
            json!({"name": "ok", "contact": "sip:10.0.0.1:99999"}),
            "contact",
        ),
        (json!({"name": "ok", "contact": 5}), ""),
        (json!({"name": "ok", "realm": "x"}), ""),
    ];
    for (body, field) in cases {
        let r = h.post("/api.ashx/v1/sip-users", &t, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.json["error"], "invalid_request", "{body}");
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(h.get("/api.ashx/v1/sip-users", &t).await.json["total"], 0);
    let r = h
        .post("/api.ashx/v1/sip-users", &t, json!({"name": "ok"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .put(
            "/api.ashx/v1/sip-users/ok",
            &t,
            json!({"contact": "sip:10.0.0.1;"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(
        h.get("/api.ashx/v1/sip-users/ok", &t).await.json["contact"],
        "",
        "a refused change changes nothing"
    );
}
