//! The OpenAPI 3.1 document, generated from the route table and the
//! request/response types (their `utoipa::ToSchema` derives follow the same
//! serde attributes the handlers use), so it cannot drift from the code.

use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::{Access, Body, ENDPOINTS};

pub type Components = Vec<(String, RefOr<Schema>)>;
/// Registers a type's schemas and returns its component name.
pub type SchemaFn = fn(&mut Components) -> String;

pub fn schema<T: ToSchema>(out: &mut Components) -> String {
    let name = T::name().into_owned();
    out.push((name.clone(), T::schema()));
    T::schemas(out);
    name
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body_content(body: &Body, components: &mut Components) -> Option<Value> {
    match body {
        Body::None => None,
        Body::One(f) => {
            Some(json!({ "application/json": { "schema": reference(&f(components)) } }))
        }
        Body::List(f) => {
            let item = f(components);
            Some(json!({ "application/json": { "schema": {
                "type": "object",
                "required": ["data", "total", "limit", "offset", "next"],
                "properties": {
                    "data": { "type": "array", "items": reference(&item) },
                    "total": { "type": "integer" },
                    "limit": { "type": "integer" },
                    "offset": { "type": "integer" },
                    "next": { "type": ["string", "null"], "description": "Relative URL of the next page; null on the last page" },
                }
            } } }))
        }
        Body::Other(mime) => Some(json!({ (*mime): {} })),
    }
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

/// The query parameters `method path` takes: paging on every list, and
/// each endpoint's filters.
fn query_params(method: &str, path: &str, list: bool) -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description });
    let text = || json!({ "type": "string" });
    let mut out = Vec::new();
    if list {
        out.push(q(
            "limit",
            json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50 }),
            "Items per page (more than 500 is taken as 500)",
        ));
        out.push(q(
            "offset",
            json!({ "type": "integer", "minimum": 0, "default": 0 }),
            "Items to skip",
        ));
    }
    match (method, path) {
        ("GET", "/api.ashx/v1/calls") => out.push(q(
            "status",
            text(),
            "Only calls in these statuses (comma-separated)",
        )),
        ("GET", "/api.ashx/v1/emails") => out.push(q(
            "status",
            json!({ "type": "string", "enum": ["queued", "sent", "failed"] }),
            "Only emails in this state",
        )),
        ("GET", "/api.ashx/v1/transcripts") => {
            out.push(q(
                "source",
                json!({ "type": "string", "enum": ["vnum", "outbound-ai"] }),
                "Only transcripts of calls to virtual numbers, or of outbound AI calls",
            ));
            out.push(q(
                "q",
                text(),
                "Only transcripts whose caller, number, phone, display name or rule contains this",
            ));
            out.push(q(
                "since",
                json!({ "type": "string", "format": "date-time" }),
                "Only transcripts of calls started at or after this time",
            ));
        }
        ("GET", "/api.ashx/v1/webhooks/{id}/deliveries") => out.push(q(
            "state",
            json!({ "type": "string", "enum": ["pending", "held", "succeeded", "failed"] }),
            "Only deliveries in this state",
        )),
        (_, "/api.ashx/v1/inbound-routes/{did}") => out.push(q(
            "fromNumber",
            text(),
            "The route's FromNumber filter; left out: the route with none",
        )),
        _ => {}
    }
    out
}

/// The whole document for a server at `server_url`.
pub fn document(server_url: &str, build: &str) -> Value {
    let mut components: Components = Vec::new();
    let error_name = schema::<super::error::ErrorBody>(&mut components);
    let mut paths: Map<String, Value> = Map::new();
    for ep in ENDPOINTS {
        let mut op = Map::new();
        op.insert("summary".into(), json!(ep.description));
        op.insert("tags".into(), json!([ep.area]));
        op.insert(
            "operationId".into(),
            json!(format!(
                "{}_{}",
                ep.method.as_str().to_lowercase(),
                ep.path
                    .trim_start_matches('/')
                    .replace(['/', '.', '{', '}', '-'], "_")
            )),
        );
        let mut params = path_params(ep.path);
        params.extend(query_params(
            ep.method.as_str(),
            ep.path,
            matches!(ep.response.1, Body::List(_)),
        ));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(content) = body_content(&ep.request, &mut components) {
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": content }),
            );
        }
        let mut responses = Map::new();
        let mut ok = json!({ "description": "Success" });
        if let Some(content) = body_content(&ep.response.1, &mut components) {
            ok["content"] = content;
        }
        responses.insert(ep.response.0.to_string(), ok);
        let err = json!({ "description": "Error", "content": { "application/json": { "schema": reference(&error_name) } } });
        responses.insert("default".into(), err);
        op.insert("responses".into(), Value::Object(responses));
        match ep.access {
            Access::Public => {
                op.insert("security".into(), json!([]));
            }
            Access::Admin | Access::OidcAdmin => {
                op.insert("security".into(), json!([{ "bearer": [] }]));
            }
        }
        let item = paths
            .entry(ep.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(ep.method.as_str().to_lowercase(), Value::Object(op));
        }
    }
    let mut schemas = Map::new();
    for (name, s) in components {
        schemas.insert(name, serde_json::to_value(s).unwrap_or(Value::Null));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CodeB Platform REST API",
            "version": build,
            "description": "Outbound AI calls, virtual numbers, transcripts, inbound routes, webhooks, trunks and API keys.",
        },
        "servers": [{ "url": server_url }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "An OIDC access token (role=admin) from /oidc.ashx/token, or an ak_ API key",
                }
            }
        },
        "security": [{ "bearer": [] }],
    })
}
