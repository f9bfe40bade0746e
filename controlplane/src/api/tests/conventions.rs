//! Cross-cutting conventions: error shapes, 404/405/413/415, caching,
//! the catalogue, OpenAPI and metrics.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use super::{Harness, on_both_backends};
use crate::api::ENDPOINTS;

on_both_backends!(
    errors_and_methods,
    bodies_are_bounded_and_typed,
    catalogue_matches_the_route_table,
    openapi_and_metrics,
    health_and_readiness,
    control_characters_in_the_url_are_bad_input,
);

/// A NUL (or any control character) in a path id or a query parameter is
/// bad input, a 400, on either database: PostgreSQL cannot hold a NUL in
/// text, which made these 500s.
async fn control_characters_in_the_url_are_bad_input(h: Harness) {
    let t = h.admin().await;
    for path in [
        "/api.ashx/v1/transcripts/%00",
        "/api.ashx/v1/transcripts/oac-%00abc",
        "/api.ashx/v1/calls/oac-%1f",
        "/api.ashx/v1/prompts/den%00tist",
        "/api.ashx/v1/transcripts?q=a%00b",
        "/api.ashx/v1/calls?status=%7F",
    ] {
        let r = h.get(path, &t).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.json["error"], "invalid_request", "{path}: {}", r.text);
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{path}: {}",
            r.text
        );
    }
    let r = h.delete("/api.ashx/v1/prompts/den%00tist", &t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // A percent sign that is no control character is left alone.
    let r = h.get("/api.ashx/v1/transcripts?q=100%25", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn errors_and_methods(h: Harness) {
    let t = h.admin().await;
    let r = h.get("/api.ashx/v1/nope", &t).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"], "not_found");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let r = h
        .call(
            Method::PATCH,
            "/api.ashx/v1/calls",
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json["error"], "method_not_allowed");
    let allow = r.headers[header::ALLOW].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let r = h.call(Method::DELETE, "/api.ashx/v1", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    // A path parameter that is not UTF-8 once decoded is the API's 400
    // JSON on every route that has one (it was axum's text/plain).
    for ep in ENDPOINTS
        .iter()
        .filter(|e| e.method == Method::GET && e.path.contains('{'))
    {
        let uri = ep
            .path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "%FF" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let r = h.get(&uri, &t).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.json["error"], "invalid_request", "{uri}");
        assert!(r.json["error_description"].is_string(), "{uri}");
    }
    // Every route answers with no-store, successes and failures alike.
    for ep in ENDPOINTS
        .iter()
        .filter(|e| e.method == Method::GET && !e.path.contains('{'))
    {
        let r = h.get(ep.path, &t).await;
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{}", ep.path);
        assert!(r.status.is_success(), "{}: {}", ep.path, r.status);
    }
}

async fn bodies_are_bounded_and_typed(h: Harness) {
    let t = h.admin().await;
    let send = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api.ashx/v1/inbound-routes")
            .header(header::AUTHORIZATION, format!("Bearer {t}"));
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(body)).unwrap()
    };
    let ok = br#"{"Did":"+15550001111","User":"alex"}"#.to_vec();
    let r = h.send(send(None, ok.clone())).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let r = h.send(send(Some("text/plain"), ok.clone())).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = h
        .send(send(Some("application/json; charset=utf-8"), ok))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .send(send(Some("application/json"), b"{\"Did\": ".to_vec()))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let r = h.send(send(Some("application/json"), b"[]".to_vec())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let mut big = br#"{"Did":"+1","User":"a","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 10));
    big.extend(b"\"}");
    let r = h.send(send(Some("application/json"), big)).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // A body under the limit but huge for its field is still a clean 400.
    let mut fat = br#"{"Did":""#.to_vec();
    fat.extend(std::iter::repeat_n(b'9', 500_000));
    fat.extend(br#"","User":"a"}"#);
    assert_eq!(
        h.send(send(Some("application/json"), fat)).await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn catalogue_matches_the_route_table(h: Harness) {
    let r = h.call(Method::GET, "/api.ashx/v1", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], "CodeB Platform REST API");
    assert_eq!(r.json["version"], "v1");
    assert!(r.json["build"].as_str().is_some_and(|b| !b.is_empty()));
    let eps = r.json["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), ENDPOINTS.len());
    // Every endpoint of the spec's catalogue, with the spec's wording.
    let spec = [
        (
            "POST",
            "/api.ashx/v1/calls",
            "Initiate an outbound AI call",
            "outbound-ai",
        ),
        (
            "GET",
            "/api.ashx/v1/calls",
            "List outbound AI calls",
            "outbound-ai",
        ),
        (
            "GET",
            "/api.ashx/v1/calls/{id}",
            "Get one call's status + outcome",
            "outbound-ai",
        ),
        (
            "POST",
            "/api.ashx/v1/calls/{id}/hangup",
            "Cancel/terminate a call",
            "outbound-ai",
        ),
        (
            "GET",
            "/api.ashx/v1/numbers",
            "List virtual numbers",
            "numbers",
        ),
        (
            "GET",
            "/api.ashx/v1/transcripts",
            "List transcripts",
            "transcripts",
        ),
        (
            "GET",
            "/api.ashx/v1/transcripts/{callId}",
            "Get full transcript by callId",
            "transcripts",
        ),
        (
            "GET",
            "/api.ashx/v1/inbound-routes",
            "List inbound DID routes",
            "inbound-routes",
        ),
        (
            "POST",
            "/api.ashx/v1/inbound-routes",
            "Create an inbound route",
            "inbound-routes",
        ),
        (
            "GET",
            "/api.ashx/v1/inbound-routes/{did}",
            "Get one inbound route by DID",
            "inbound-routes",
        ),
        (
            "DELETE",
            "/api.ashx/v1/inbound-routes/{did}",
            "Delete one inbound route by DID",
            "inbound-routes",
        ),
        (
            "PUT",
            "/api.ashx/v1/inbound-routes/{did}",
            "Update one inbound route's User",
            "inbound-routes",
        ),
        (
            "GET",
            "/api.ashx/v1/webhooks",
            "List webhook subscriptions",
            "webhooks",
        ),
    ];
    for (m, p, d, a) in spec {
        let found = eps.iter().find(|e| e["method"] == m && e["path"] == p);
        let e = found.unwrap_or_else(|| panic!("catalogue lacks {m} {p}"));
        assert_eq!(
            (e["description"].as_str(), e["area"].as_str()),
            (Some(d), Some(a)),
            "{m} {p}"
        );
    }
    assert!(r.json["auth"].as_str().unwrap().contains("ak_"));
    assert!(
        r.json["errors"]
            .as_str()
            .unwrap()
            .contains("error_description")
    );
}

async fn openapi_and_metrics(h: Harness) {
    let t = h.admin().await;
    let r = h.get("/api.ashx/v1/openapi.json", &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["openapi"], "3.1.0");
    for ep in ENDPOINTS {
        let op = &r.json["paths"][ep.path][ep.method.as_str().to_lowercase()];
        assert!(op.is_object(), "OpenAPI lacks {} {}", ep.method, ep.path);
    }
    let schema = &r.json["components"]["schemas"]["CreateCall"];
    assert!(schema["properties"]["systemPrompt"].is_object(), "{schema}");
    assert!(schema["properties"]["scheduleAtUtc"].is_object());
    // What the spec requires is marked so (the handlers take every field
    // as optional, to answer a missing one with a 400 naming it).
    let required = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = r.json["components"]["schemas"][name]["required"]
            .as_array()
            .map(|a| a.iter().map(|f| f.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        required("CreateCall"),
        ["apiKey", "email", "phone", "systemPrompt"]
    );
    assert_eq!(required("RouteInput"), ["did", "user"]);
    assert_eq!(required("RouteUserInput"), ["user"]);
    assert_eq!(
        schema["properties"]["phone"]["type"], "string",
        "required, so not null either: {schema}"
    );
    assert!(r.json["components"]["schemas"]["CallView"]["properties"]["retriesLeft"].is_object());
    let post_calls = &r.json["paths"]["/api.ashx/v1/calls"]["post"];
    assert_eq!(
        post_calls["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateCall"
    );
    // Query parameters are described: paging on lists, and the filters.
    let names = |path: &str, method: &str| -> Vec<String> {
        r.json["paths"][path][method]["parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        names("/api.ashx/v1/calls", "get"),
        ["limit", "offset", "status"]
    );
    assert_eq!(
        names("/api.ashx/v1/transcripts", "get"),
        ["limit", "offset", "source", "q", "since"]
    );
    assert_eq!(
        names("/api.ashx/v1/inbound-routes/{did}", "delete"),
        ["fromNumber"]
    );
    assert!(names("/api.ashx/v1/calls", "post").is_empty());
    // A call in hand shows among the live calls.
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            serde_json::json!({"phone": "+15551234567", "email": "ops@example.com",
                "systemPrompt": "reminder", "apiKey": "AIza-test-key-0123456789",
                "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["callId"].as_str().unwrap().to_owned();
    let m = h.get("/metrics", &t).await;
    assert!(
        m.text.contains(r#"codeb_calls{status="scheduled"} 1"#),
        "{}",
        m.text
    );
    assert!(
        !m.text.contains("codeb_outbound_call_ends_total{"),
        "{}",
        m.text
    );
    // Cancelled: counted among the ended, and no longer in hand.
    let r = h
        .post(
            &format!("/api.ashx/v1/calls/{id}/hangup"),
            &t,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let m = h.get("/metrics", &t).await;
    assert!(
        m.text.contains(
            r#"codeb_outbound_call_ends_total{status="cancelled",outcome="cancelled"} 1"#
        ),
        "{}",
        m.text
    );
    assert!(
        m.text.contains(r#"codeb_calls{status="scheduled"} 0"#),
        "{}",
        m.text
    );
    assert!(
        m.text.contains(r#"codeb_calls{status="in-flight"} 0"#),
        "{}",
        m.text
    );
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.text.contains(r#"codeb_http_requests_total{route="/api.ashx/v1/openapi.json",method="GET",status="200"} 1"#), "{}", m.text);
    assert!(
        m.text
            .contains("codeb_http_request_duration_seconds_bucket")
    );
    assert!(
        m.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
}

async fn health_and_readiness(h: Harness) {
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    h.db.store.close().await;
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}
