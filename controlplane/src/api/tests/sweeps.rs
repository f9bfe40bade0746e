//! Sweeps over the whole route table: no protected route answers without a
//! valid admin bearer, and no route shows or changes another tenant's rows.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Harness, TENANT, on_both_backends};
use crate::api::{Access, ENDPOINTS};
use crate::auth::jwt::{AccessClaims, SigningKey};
use crate::store::Role;

on_both_backends!(
    every_protected_route_refuses_bad_bearers,
    no_route_crosses_tenants
);

const OTHER_TENANT: &str = "other.example.test";

/// Sample path values for each parameterised route (the sweep fails for a
/// new route until it is given one here).
struct Ids {
    call: String,
    number: String,
    transcript: String,
    did: String,
    webhook: String,
    delivery: String,
    share: String,
    share_token: String,
    trunk: String,
    key: String,
    inbound: String,
    prompt: String,
    sip_user: String,
    email: String,
}

fn concrete(path: &str, ids: &Ids) -> String {
    let replaced = path
        .replace(
            "/webhooks/deliveries/{id}",
            &format!("/webhooks/deliveries/{}", ids.delivery),
        )
        .replace("/shares/{id}", &format!("/shares/{}", ids.share))
        .replace("/share/{token}", &format!("/share/{}", ids.share_token))
        .replace("/calls/{id}", &format!("/calls/{}", ids.call))
        .replace("/emails/{id}", &format!("/emails/{}", ids.email))
        .replace(
            "/inbound-calls/{callId}",
            &format!("/inbound-calls/{}", ids.inbound),
        )
        .replace("{number}", &ids.number)
        .replace("{slug}", &ids.prompt)
        .replace("/sip-users/{name}", &format!("/sip-users/{}", ids.sip_user))
        .replace("{callId}", &ids.transcript)
        .replace("{did}", &ids.did)
        .replace("/webhooks/{id}", &format!("/webhooks/{}", ids.webhook))
        .replace("/trunks/{id}", &format!("/trunks/{}", ids.trunk))
        .replace("/api-keys/{id}", &format!("/api-keys/{}", ids.key));
    assert!(
        !replaced.contains('{'),
        "give the sweep a sample value for {path}"
    );
    replaced
}

/// A body that passes validation, so only authorization or tenancy can
/// refuse the request.
fn valid_body(method: &Method, path: &str) -> Option<Value> {
    let body = match (method.as_str(), path) {
        ("POST", "/api.ashx/v1/calls") => json!({"phone": "+15557654321", "email": "a@b.example",
            "systemPrompt": "x", "apiKey": "k", "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        ("POST", "/api.ashx/v1/numbers") => json!({"number": "5555", "systemPrompt": "x"}),
        ("PUT", "/api.ashx/v1/numbers/{number}") => json!({"voice": "Kore"}),
        ("POST", "/api.ashx/v1/trunks") => json!({"host": "sip.example.com"}),
        ("PUT", "/api.ashx/v1/trunks/{id}") => json!({"port": 5070}),
        ("POST", "/api.ashx/v1/inbound-routes") => json!({"Did": "+15550000000", "User": "bob"}),
        ("PUT", "/api.ashx/v1/inbound-routes/{did}") => json!({"User": "mallory"}),
        ("POST", "/api.ashx/v1/webhooks") => json!({"url": "https://x.example/h", "events": ["*"]}),
        ("POST", "/api.ashx/v1/api-keys") => json!({"name": "k"}),
        ("POST", "/api.ashx/v1/prompts") => json!({"slug": "other-prompt", "text": "x"}),
        ("PUT", "/api.ashx/v1/prompts/{slug}") => json!({"text": "changed"}),
        ("POST", "/api.ashx/v1/sip-users") => {
            json!({"name": "other-sip", "password": "pw-secret-1"})
        }
        ("PUT", "/api.ashx/v1/sip-users/{name}") => json!({"contact": "sip:10.6.6.6"}),
        ("POST", _) | ("PUT", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

async fn seed(h: &Harness, token: &str) -> Ids {
    let call = h
        .post(
            "/api.ashx/v1/calls",
            token,
            valid_body(&Method::POST, "/api.ashx/v1/calls").unwrap(),
        )
        .await;
    let trunk = h
        .post(
            "/api.ashx/v1/trunks",
            token,
            json!({"host": "tenant-a-host.example", "password": "pw-secret"}),
        )
        .await;
    let webhook = h
        .post(
            "/api.ashx/v1/webhooks",
            token,
            json!({"url": "https://x.example/h", "events": ["*"]}),
        )
        .await;
    let key = h
        .post("/api.ashx/v1/api-keys", token, json!({"name": "k"}))
        .await;
    let number = h
        .post(
            "/api.ashx/v1/numbers",
            token,
            json!({"number": "1234", "name": "tenant-a-number", "systemPrompt": "x"}),
        )
        .await;
    let route = h
        .post(
            "/api.ashx/v1/inbound-routes",
            token,
            json!({"Did": "+15551234567", "User": "tenant-a-user"}),
        )
        .await;
    let prompt = h
        .post(
            "/api.ashx/v1/prompts",
            token,
            json!({"slug": "tenant-a-prompt", "name": "tenant-a-prompt-name", "text": "x"}),
        )
        .await;
    let sip_user = h
        .post(
            "/api.ashx/v1/sip-users",
            token,
            json!({"name": "tenant-a-sip", "displayName": "tenant-a-sip-display",
                "password": "sip-secret-1", "contact": "sip:10.1.2.3:5070"}),
        )
        .await;
    for r in [
        &call, &trunk, &webhook, &key, &number, &route, &prompt, &sip_user,
    ] {
        assert!(r.status.is_success(), "seed: {}", r.text);
    }
    let t = super::resources::transcript("oac-0123456789ab", "outbound-ai", "2026-01-01T12:00:00Z");
    h.db.store.save_transcript(t, h.clock.now()).await.unwrap();
    let share = h
        .post(
            "/api.ashx/v1/transcripts/oac-0123456789ab/shares",
            token,
            json!({"ttlHours": 0}),
        )
        .await;
    let fired = h
        .post(
            &format!(
                "/api.ashx/v1/webhooks/{}/test",
                webhook.json["id"].as_str().unwrap()
            ),
            token,
            json!({}),
        )
        .await;
    for r in [&share, &fired] {
        assert!(r.status.is_success(), "seed: {}", r.text);
    }
    // An inbound call to the number, as a switch node reports it.
    let inbound = "vnum0123456789ab";
    let s = &h.db.store;
    let node = "http://10.0.0.1:50051";
    s.reset_switch_cursor(node, "j1", h.clock.now())
        .await
        .unwrap();
    let ev = crate::store::SwitchEvent {
        journal_id: "j1".into(),
        seq: 1,
        at: h.clock.now(),
        call_id: inbound.into(),
        attempt: 1,
        tenant: TENANT.into(),
        kind: crate::store::EventKind::Inbound(crate::store::InboundStart {
            instance: String::new(),
            did: "+15551234567".into(),
            from_number: "+15557654321".into(),
            virtual_number: "1234".into(),
            trunk_id: None,
        }),
    };
    let applied = s.apply_switch_event(node, &ev, h.clock.now()).await;
    assert_eq!(applied.unwrap(), crate::store::Applied::Applied);
    // A cancelled call's email.
    let cancelled = h
        .post(
            "/api.ashx/v1/calls",
            token,
            valid_body(&Method::POST, "/api.ashx/v1/calls").unwrap(),
        )
        .await;
    let cancelled = cancelled.json["callId"].as_str().unwrap();
    let r = h
        .post(
            &format!("/api.ashx/v1/calls/{cancelled}/hangup"),
            token,
            json!({}),
        )
        .await;
    assert!(r.status.is_success(), "seed: {}", r.text);
    let email = s.email_page(TENANT, None, 1, 0).await.unwrap().items;
    Ids {
        call: call.json["callId"].as_str().unwrap().into(),
        number: "1234".into(),
        transcript: "oac-0123456789ab".into(),
        did: "%2B15551234567".into(),
        webhook: webhook.json["id"].as_str().unwrap().into(),
        delivery: fired.json["deliveryId"].as_str().unwrap().into(),
        share: share.json["id"].as_str().unwrap().into(),
        share_token: share.json["token"].as_str().unwrap().into(),
        trunk: trunk.json["id"].as_str().unwrap().into(),
        key: key.json["id"].as_str().unwrap().into(),
        inbound: inbound.into(),
        prompt: "tenant-a-prompt".into(),
        sip_user: "tenant-a-sip".into(),
        email: email[0].id.clone(),
    }
}

async fn every_protected_route_refuses_bad_bearers(h: Harness) {
    let admin = h.admin().await;
    let ids = seed(&h, &admin).await;
    h.add_user("vic", "viewer-password", Role::Viewer, TENANT)
        .await;
    let viewer = h.token_for("vic", "viewer-password").await;
    let (revoked_id, revoked_key) = h.api_key(&admin).await;
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/api-keys/{revoked_id}"), &admin)
            .await
            .status,
        StatusCode::OK
    );
    let payload = admin.split('.').nth(1).unwrap();
    let claims: AccessClaims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let now = h.clock.now().0 / 1000;
    let key = &h.state.signing_key;
    let expired = key.sign(
        "at+jwt",
        &AccessClaims {
            iat: now - 7200,
            exp: now - 3600,
            ..claims.clone()
        },
    );
    let wrong_aud = key.sign(
        "at+jwt",
        &AccessClaims {
            aud: "x".into(),
            ..claims.clone()
        },
    );
    let wrong_iss = key.sign(
        "at+jwt",
        &AccessClaims {
            iss: "https://evil".into(),
            ..claims.clone()
        },
    );
    let foreign = SigningKey::generate().unwrap().sign("at+jwt", &claims);
    let none = format!(
        "{}.{payload}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
            key.kid()
        ))
    );
    let bad: Vec<(&str, Option<&str>)> = vec![
        ("missing", None),
        ("garbage", Some("garbage")),
        ("expired", Some(&expired)),
        ("wrong aud", Some(&wrong_aud)),
        ("wrong iss", Some(&wrong_iss)),
        ("foreign key", Some(&foreign)),
        ("alg none", Some(&none)),
        ("revoked key", Some(&revoked_key)),
        ("malformed key", Some("ak_xyz")),
    ];
    let mut checked = 0;
    for ep in ENDPOINTS.iter().filter(|e| e.access != Access::Public) {
        let uri = concrete(ep.path, &ids);
        let body = valid_body(&ep.method, ep.path);
        for (what, token) in &bad {
            let r = h.call(ep.method.clone(), &uri, *token, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{} {uri} with {what}: {}",
                ep.method,
                r.text
            );
            assert_eq!(
                r.json["error"], "unauthorized",
                "{} {uri} with {what}",
                ep.method
            );
        }
        let r = h
            .call(ep.method.clone(), &uri, Some(&viewer), body.clone())
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{} {uri} as viewer: {}",
            ep.method,
            r.text
        );
        checked += 1;
    }
    assert!(checked >= 37, "the sweep covered only {checked} routes");
    // And the public ones really are public.
    for ep in ENDPOINTS
        .iter()
        .filter(|e| e.access == Access::Public && e.method == Method::GET)
    {
        let uri = concrete(ep.path, &ids);
        assert_eq!(
            h.call(Method::GET, &uri, None, None).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
}

async fn no_route_crosses_tenants(h: Harness) {
    let a = h.admin().await;
    let ids = seed(&h, &a).await;
    h.add_user("bea", "other-tenant-pw", Role::Admin, OTHER_TENANT)
        .await;
    let b = h.token_for("bea", "other-tenant-pw").await;
    for ep in ENDPOINTS
        .iter()
        .filter(|e| e.access != Access::Public && e.path.contains('{'))
    {
        let uri = concrete(ep.path, &ids);
        let r = h
            .call(
                ep.method.clone(),
                &uri,
                Some(&b),
                valid_body(&ep.method, ep.path),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{} {uri} from another tenant: {}",
            ep.method,
            r.text
        );
        for marker in [
            "tenant-a-host",
            "tenant-a-number",
            "tenant-a-user",
            "tenant-a-prompt-name",
            "tenant-a-sip-display",
            "10.1.2.3",
            "Reminder",
        ] {
            assert!(
                !r.text.contains(marker),
                "{} {uri} leaked {marker}: {}",
                ep.method,
                r.text
            );
        }
    }
    // Lists show only the caller's tenant.
    for path in [
        "calls",
        "numbers",
        "trunks",
        "webhooks",
        "api-keys",
        "transcripts",
        "inbound-calls",
        "sip-users",
        "emails",
    ] {
        let r = h.get(&format!("/api.ashx/v1/{path}"), &b).await;
        assert_eq!(r.json["total"], 0, "{path}: {}", r.text);
    }
    // Only the built-ins are in B's prompt library.
    let r = h.get("/api.ashx/v1/prompts", &b).await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    assert_eq!(r.json["data"][0]["slug"], "reminder");
    let r = h.get("/api.ashx/v1/inbound-routes", &b).await;
    assert_eq!(
        r.json["data"],
        json!([{"did": "*", "user": "operator"}]),
        "its own catchall only"
    );
    let r = h.get("/api.ashx/v1/numbers", &b).await;
    assert_eq!(r.json["tenant"], OTHER_TENANT);
    // Everything of tenant A is intact after B's attempts.
    assert_eq!(
        h.get(&format!("/api.ashx/v1/calls/{}", ids.call), &a)
            .await
            .json["status"],
        "scheduled"
    );
    assert_eq!(
        h.get("/api.ashx/v1/numbers/1234", &a).await.json["voice"],
        "Aoede"
    );
    assert_eq!(
        h.get(&format!("/api.ashx/v1/trunks/{}", ids.trunk), &a)
            .await
            .json["port"],
        5060
    );
    assert_eq!(
        h.get("/api.ashx/v1/inbound-routes/%2B15551234567", &a)
            .await
            .json["user"],
        "tenant-a-user"
    );
    assert_eq!(h.get("/api.ashx/v1/webhooks", &a).await.json["total"], 1);
    assert_eq!(
        h.get("/api.ashx/v1/prompts/tenant-a-prompt", &a).await.json["text"],
        "x"
    );
    assert_eq!(h.get("/api.ashx/v1/api-keys", &a).await.json["total"], 1);
    assert_eq!(
        h.get("/api.ashx/v1/sip-users/tenant-a-sip", &a).await.json["contact"],
        "sip:10.1.2.3:5070"
    );
    assert_eq!(
        h.get(&format!("/api.ashx/v1/inbound-calls/{}", ids.inbound), &a)
            .await
            .json["numberName"],
        "tenant-a-number"
    );
    // B's own writes land in B's tenant.
    let r = h
        .post(
            "/api.ashx/v1/numbers",
            &b,
            json!({"number": "1234", "systemPrompt": "B's"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "same number in another tenant is its own row"
    );
    assert_eq!(
        h.get("/api.ashx/v1/numbers/1234", &a).await.json["systemPrompt"],
        "x"
    );
}
