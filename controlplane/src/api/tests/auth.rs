//! The OIDC issuer, bearer checks and API keys.

use axum::http::{Method, StatusCode, header};
use base64::Engine as _;
use serde_json::json;

use super::{ADMIN, ADMIN_PW, Harness, ISSUER, Resp, TENANT, on_both_backends};
use crate::auth::jwt::{AccessClaims, SigningKey};
use crate::store::Role;

on_both_backends!(
    password_grant_issues_signed_tokens,
    oauth_errors,
    failed_logins_are_throttled,
    refresh_tokens_rotate_and_replay_revokes_family,
    signing_out_ends_the_sessions_access_tokens,
    password_change_and_removal_revoke_tokens,
    forged_and_expired_tokens_are_refused,
    api_keys_lifecycle,
    discovery_and_jwks,
);

/// A password grant of the bootstrap admin with `offline_access` (a
/// session with a refresh token).
async fn offline_sign_in(h: &Harness) -> Resp {
    h.form(
        "/oidc.ashx/token",
        &[
            ("grant_type", "password"),
            ("client_id", "codeb-admin"),
            ("username", ADMIN),
            ("password", ADMIN_PW),
            ("scope", "openid offline_access"),
        ],
    )
    .await
}

async fn refresh_grant(h: &Harness, refresh_token: &str) -> Resp {
    h.form(
        "/oidc.ashx/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "codeb-admin"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn password_grant_issues_signed_tokens(h: Harness) {
    let r = h.login(ADMIN, ADMIN_PW).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 3600);
    assert_eq!(r.json["scope"], "openid");
    assert!(
        r.json.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let at = r.json["access_token"].as_str().unwrap();
    let c = claims_of(at);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], "codeb-api");
    assert_eq!(c["preferred_username"], ADMIN);
    assert_eq!(c["role"], "admin");
    assert_eq!(c["tenant"], TENANT);
    assert!(c["sub"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["jti"].as_str().unwrap().len(), 32);
    let id = claims_of(r.json["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], "codeb-admin");
    // The token works on the API, and an ID token does not.
    assert_eq!(h.get("/api.ashx/v1/calls", at).await.status, StatusCode::OK);
    let idt = r.json["id_token"].as_str().unwrap();
    assert_eq!(
        h.get("/api.ashx/v1/calls", idt).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn oauth_errors(h: Harness) {
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("grant_type", "password"),
            ("client_id", "codeb-admin"),
            ("username", ADMIN),
            ("password", ADMIN_PW),
        ];
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            if !val.is_empty() {
                v.push((k, val));
            }
        }
        v
    };
    let r = h
        .form("/oidc.ashx/token", &base(&[("password", "wrong-password")]))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let r = h
        .form("/oidc.ashx/token", &base(&[("username", "nobody")]))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let r = h
        .form("/oidc.ashx/token", &base(&[("client_id", "evil")]))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let r = h
        .form(
            "/oidc.ashx/token",
            &base(&[("grant_type", "client_credentials")]),
        )
        .await;
    assert_eq!(r.json["error"], "unsupported_grant_type");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.form("/oidc.ashx/token", &base(&[("password", "")])).await;
    assert_eq!(r.json["error"], "invalid_request");
    let r = h
        .form("/oidc.ashx/token", &base(&[("scope", "openid admin")]))
        .await;
    assert_eq!(r.json["error"], "invalid_scope");
    let r = h
        .form("/oidc.ashx/token", &[("client_id", "codeb-admin")])
        .await;
    assert_eq!(r.json["error"], "invalid_request");
    let r = h
        .call(
            Method::POST,
            "/oidc.ashx/token",
            None,
            Some(json!({"grant_type": "password"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let r = h
        .form(
            "/oidc.ashx/token",
            &[("grant_type", "password"), ("grant_type", "password")],
        )
        .await;
    assert_eq!(r.json["error"], "invalid_request");
    // Every error carries a description.
    assert!(
        r.json["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
}

async fn failed_logins_are_throttled(h: Harness) {
    for _ in 0..5 {
        assert_eq!(
            h.login(ADMIN, "wrong-password").await.status,
            StatusCode::BAD_REQUEST
        );
    }
    let r = h.login(ADMIN, ADMIN_PW).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "locked out even with the right password"
    );
    assert_eq!(r.headers[header::RETRY_AFTER], "30");
    h.clock.advance_ms(30_000);
    assert_eq!(h.login(ADMIN, ADMIN_PW).await.status, StatusCode::OK);
    // Success cleared the record: a single failure does not lock again.
    assert_eq!(
        h.login(ADMIN, "wrong-password").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(h.login(ADMIN, ADMIN_PW).await.status, StatusCode::OK);
}

async fn refresh_tokens_rotate_and_replay_revokes_family(h: Harness) {
    let r = offline_sign_in(&h).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rt1 = r.json["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String| {
        let h = &h;
        async move { refresh_grant(h, &rt).await }
    };
    let r = refresh(rt1.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rt2 = r.json["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(
        h.get(
            "/api.ashx/v1/calls",
            r.json["access_token"].as_str().unwrap()
        )
        .await
        .status,
        StatusCode::OK
    );
    // Replaying the spent token fails and revokes the family, so rt2 dies too.
    let r = refresh(rt1).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(refresh(rt2).await.json["error"], "invalid_grant");
    // Revocation endpoint.
    let r = offline_sign_in(&h).await;
    let rt3 = r.json["refresh_token"].as_str().unwrap().to_owned();
    // A JSON body is refused (RFC 7009 takes a form), naming what it takes
    // (not another endpoint), and revokes nothing.
    let at = r.json["access_token"].as_str().unwrap().to_owned();
    let rv = h
        .post(
            "/oidc.ashx/revoke",
            &at,
            serde_json::json!({"client_id": "codeb-admin", "token": rt3}),
        )
        .await;
    assert_eq!(rv.status, StatusCode::BAD_REQUEST, "{}", rv.text);
    assert_eq!(rv.json["error"], "invalid_request");
    assert_eq!(
        rv.json["error_description"],
        "This endpoint takes an application/x-www-form-urlencoded body"
    );
    assert_eq!(
        h.get("/api.ashx/v1/calls", &at).await.status,
        StatusCode::OK
    );
    let rv = h
        .form(
            "/oidc.ashx/revoke",
            &[("client_id", "codeb-admin"), ("token", &rt3)],
        )
        .await;
    assert_eq!(rv.status, StatusCode::OK);
    assert_eq!(refresh(rt3).await.json["error"], "invalid_grant");
    assert_eq!(
        refresh("rt_garbage".into()).await.json["error"],
        "invalid_grant"
    );
}

/// Sign-out (RFC 7009 revocation of the refresh token, or of an access
/// token) ends the session: every access token of it is refused at once,
/// not an hour later. Another session of the same user is untouched. A
/// replayed refresh token, which revokes its session, ends the session's
/// access tokens too.
async fn signing_out_ends_the_sessions_access_tokens(h: Harness) {
    let sign_in = || async {
        let r = offline_sign_in(&h).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (
            r.json["access_token"].as_str().unwrap().to_owned(),
            r.json["refresh_token"].as_str().unwrap().to_owned(),
        )
    };
    let refresh = |rt: String| {
        let h = &h;
        async move { refresh_grant(h, &rt).await }
    };
    let revoke = |token: String| {
        let h = &h;
        async move {
            h.form(
                "/oidc.ashx/revoke",
                &[("client_id", "codeb-admin"), ("token", &token)],
            )
            .await
            .status
        }
    };
    let calls = |at: String| {
        let h = &h;
        async move { h.get("/api.ashx/v1/calls", &at).await }
    };

    // Session A: an access token, then a rotated one; session B beside it.
    let (a1, rt) = sign_in().await;
    let r = refresh(rt).await;
    let a2 = r.json["access_token"].as_str().unwrap().to_owned();
    let a_rt = r.json["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&a1)["sid"], claims_of(&a2)["sid"], "one session");
    let (b, _) = sign_in().await;
    assert_ne!(claims_of(&a1)["sid"], claims_of(&b)["sid"]);
    for at in [&a1, &a2, &b] {
        assert_eq!(calls(at.clone()).await.status, StatusCode::OK);
    }
    // Signing A out by its refresh token ends both of its access tokens.
    assert_eq!(revoke(a_rt).await, StatusCode::OK);
    for at in [&a1, &a2] {
        let r = calls(at.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert!(r.text.contains("signed out"), "{}", r.text);
    }
    assert_eq!(calls(b.clone()).await.status, StatusCode::OK, "B lives on");

    // Revoking an access token ends its session, refresh token included.
    let (c, c_rt) = sign_in().await;
    assert_eq!(revoke(c.clone()).await, StatusCode::OK);
    assert_eq!(calls(c).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh(c_rt).await.json["error"], "invalid_grant");

    // A replayed refresh token ends its session's access tokens too.
    let (d, d_rt) = sign_in().await;
    assert_eq!(refresh(d_rt.clone()).await.status, StatusCode::OK);
    assert_eq!(refresh(d_rt).await.json["error"], "invalid_grant");
    assert_eq!(calls(d).await.status, StatusCode::UNAUTHORIZED);

    // Without offline_access there is no session to end: no sid.
    let r = h.login(ADMIN, ADMIN_PW).await;
    assert!(
        claims_of(r.json["access_token"].as_str().unwrap())
            .get("sid")
            .is_none()
    );
    assert_eq!(calls(b).await.status, StatusCode::OK);

    // Revoking an expired access token of a session ends it too.
    let (e_old, e_rt) = sign_in().await;
    h.clock.advance_ms(3_700_000);
    let r = refresh(e_rt).await;
    let e_new = r.json["access_token"].as_str().unwrap().to_owned();
    assert_eq!(calls(e_old.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls(e_new.clone()).await.status, StatusCode::OK);
    assert_eq!(revoke(e_old).await, StatusCode::OK);
    assert_eq!(calls(e_new).await.status, StatusCode::UNAUTHORIZED);
}

async fn password_change_and_removal_revoke_tokens(h: Harness) {
    h.add_user("sam", "sam-password-1", Role::Admin, TENANT)
        .await;
    let t = h.token_for("sam", "sam-password-1").await;
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.status, StatusCode::OK);
    h.clock.advance_ms(2_000);
    let hash = crate::auth::password::hash("sam-password-2").unwrap();
    assert!(
        h.db.store
            .update_user("sam", Some(&hash), None, h.clock.now())
            .await
            .unwrap()
    );
    assert_eq!(
        h.get("/api.ashx/v1/calls", &t).await.status,
        StatusCode::UNAUTHORIZED
    );
    let t2 = h.token_for("sam", "sam-password-2").await;
    assert_eq!(
        h.get("/api.ashx/v1/calls", &t2).await.status,
        StatusCode::OK
    );
    // A token issued earlier in the same second as the change is revoked
    // too (the check was by whole seconds, so it stayed good for an hour).
    h.clock
        .advance_ms(2_000 - h.clock.now().0.rem_euclid(1000) + 100);
    let same_second = h.token_for("sam", "sam-password-2").await;
    h.clock.advance_ms(500);
    let hash = crate::auth::password::hash("sam-password-3").unwrap();
    assert!(
        h.db.store
            .update_user("sam", Some(&hash), None, h.clock.now())
            .await
            .unwrap()
    );
    assert_eq!(
        h.get("/api.ashx/v1/calls", &same_second).await.status,
        StatusCode::UNAUTHORIZED
    );
    // One issued just after it, in that same second, is good.
    h.clock.advance_ms(100);
    let after = h.token_for("sam", "sam-password-3").await;
    assert_eq!(
        h.get("/api.ashx/v1/calls", &after).await.status,
        StatusCode::OK
    );
    assert!(h.db.store.remove_user("sam").await.unwrap());
    assert_eq!(
        h.get("/api.ashx/v1/calls", &t2).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn forged_and_expired_tokens_are_refused(h: Harness) {
    let good = h.admin().await;
    let c: AccessClaims = serde_json::from_value(claims_of(&good)).unwrap();
    let key = &h.state.signing_key;
    let now = h.clock.now().0 / 1000;
    let mut expired = c.clone();
    expired.iat = now - 7200;
    expired.exp = now - 3600;
    let mut wrong_aud = c.clone();
    wrong_aud.aud = "someone-else".into();
    let mut wrong_iss = c.clone();
    wrong_iss.iss = "https://evil.example".into();
    let other_key = SigningKey::generate().unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let body = good.split('.').nth(1).unwrap();
    let cases = [
        key.sign("at+jwt", &expired),
        key.sign("at+jwt", &wrong_aud),
        key.sign("at+jwt", &wrong_iss),
        other_key.sign("at+jwt", &c),
        format!("{}.{body}.", b64(r#"{"alg":"none","typ":"at+jwt"}"#)),
        format!(
            "{}.{body}.",
            b64(&format!(
                r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            ))
        ),
        "garbage".to_owned(),
        format!("{good}x"),
    ];
    for (i, t) in cases.iter().enumerate() {
        let r = h.get("/api.ashx/v1/calls", t).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "case {i}");
        assert_eq!(r.json["error"], "unauthorized", "case {i}");
        assert!(r.headers.contains_key(header::WWW_AUTHENTICATE), "case {i}");
    }
    // Other schemes are not bearer tokens.
    let req = axum::http::Request::builder()
        .uri("/api.ashx/v1/calls")
        .header(header::AUTHORIZATION, format!("Basic {}", b64("alex:pw")))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNAUTHORIZED);
    // A viewer is authenticated but not authorized.
    h.add_user("vic", "viewer-password", Role::Viewer, TENANT)
        .await;
    let v = h.token_for("vic", "viewer-password").await;
    let r = h.get("/api.ashx/v1/calls", &v).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}

async fn api_keys_lifecycle(h: Harness) {
    let admin = h.admin().await;
    let r = h
        .post("/api.ashx/v1/api-keys", &admin, json!({"name": "crm-sync"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.json["key"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ak_") && key.len() == 35, "{key}");
    assert!(
        key[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(r.json["name"], "crm-sync");
    assert!(r.json["createdAtUtc"].as_str().unwrap().ends_with('Z'));
    // The key works like an admin token.
    let r = h.get("/api.ashx/v1/inbound-routes", &key).await;
    assert_eq!(r.status, StatusCode::OK);
    // ... except for minting keys.
    let r = h
        .post("/api.ashx/v1/api-keys", &key, json!({"name": "sibling"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The list never shows a key.
    let r = h.get("/api.ashx/v1/api-keys", &admin).await;
    assert_eq!(r.json["total"], 1);
    assert!(!r.text.contains(&key));
    assert!(!r.text.contains(&key[3..]));
    assert_eq!(r.json["data"][0]["id"], id.as_str());
    assert_eq!(r.json["data"][0]["createdBy"], ADMIN);
    // Nor does the database.
    let stored: String = crate::store::on_pool!(h.db.store, |pool| {
        sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(stored, crate::crypto::sha256_hex(key.as_bytes()));
    // Revoked: refused at once.
    let r = h
        .delete(&format!("/api.ashx/v1/api-keys/{id}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        h.get("/api.ashx/v1/calls", &key).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/api-keys/{id}"), &admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/api.ashx/v1/api-keys", &admin).await.json["total"],
        0
    );
    // Bad input.
    let r = h.post("/api.ashx/v1/api-keys", &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("name:")
    );
    let r = h
        .get("/api.ashx/v1/calls", "ak_00000000000000000000000000000000")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn discovery_and_jwks(h: Harness) {
    let r = h
        .call(Method::GET, "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["issuer"], ISSUER);
    assert_eq!(
        r.json["token_endpoint"],
        format!("{ISSUER}/oidc.ashx/token")
    );
    assert_eq!(r.json["jwks_uri"], format!("{ISSUER}/oidc.ashx/jwks"));
    let r = h.call(Method::GET, "/oidc.ashx/jwks", None, None).await;
    let k = &r.json["keys"][0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert_eq!(k["kid"], h.state.signing_key.kid());
    // The token's kid is in the JWKS.
    let t = h.admin().await;
    let header = t.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], k["kid"]);
    assert_eq!(header["alg"], "ES256");
}
