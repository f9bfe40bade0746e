//! Request extractors with the API's error conventions: JSON bodies that
//! accept camelCase or PascalCase and refuse unknown fields, query strings
//! with strict pagination, and the client's IP address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters (`{id}`, `{did}`, …) deserialized into `T`, with the
/// API's 400 `{error, error_description}` when they cannot be (a `%FF`
/// that is not UTF-8 once decoded, say) instead of axum's plain-text one.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // No id, slug or number has a control character; the database
        // would refuse a NUL (PostgreSQL text cannot hold one) with an
        // error that is no fault of the server's.
        if has_control_escape(parts.uri.path()) {
            return Err(ApiError::bad_request(
                "the URL's path has a control character (such as %00) in it",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "the URL's path is not usable: {}",
                e.body_text()
            ))),
        }
    }
}

/// Whether a percent-encoded URL part decodes to a control character
/// (`%00`–`%1F`, `%7F`).
fn has_control_escape(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()),
                (b'0' | b'1', b'0'..=b'9' | b'A'..=b'F') | (b'7', b'F')
            )
    })
}

/// Largest request body accepted anywhere (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON request body deserialized into `T`.
///
/// Keys may be camelCase or PascalCase (`did` or `Did`): the first letter is
/// folded to lower case before `T` (camelCase, `deny_unknown_fields`) sees
/// them, so every field accepts both spellings and nothing else. A key given
/// in both spellings is refused rather than silently picking one.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json_content_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn camel_key(k: &str) -> String {
    let mut chars = k.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON body's top level as written: every member in order, a name
/// given twice kept twice (a `Value` keeps the last silently), or `None`
/// when the body is valid JSON but not an object.
struct Members(Option<Vec<(String, serde_json::Value)>>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, serde_json::Value>()? {
                    out.push(kv);
                }
                Ok(Members(Some(out)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Members, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Members(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
                Ok(Members(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
                Ok(Members(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
                Ok(Members(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
                Ok(Members(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Members, E> {
                Ok(Members(None))
            }
            fn visit_unit<E>(self) -> Result<Members, E> {
                Ok(Members(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Parses and normalizes a JSON object body; shared by `JsonBody` and tests.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let Members(members) = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Body is not valid JSON: {e}")))?;
    let Some(members) = members else {
        return Err(ApiError::bad_request("Body must be a JSON object"));
    };
    let mut normalized = serde_json::Map::with_capacity(members.len());
    for (k, v) in members {
        let key = camel_key(&k);
        if normalized.contains_key(&key) {
            return Err(ApiError::bad_request(format!(
                "Field '{key}' is given more than once (names are taken in camelCase or PascalCase)"
            )));
        }
        normalized.insert(key, v);
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(normalized)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's messages already name unknown and missing fields.
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        if path.is_empty() || path == "." {
            ApiError::bad_request(inner)
        } else {
            ApiError::field(&path, inner)
        }
    })
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !ct.is_some_and(is_json_content_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(format!("Could not read the body: {rej}"))
            }
        })?;
        parse_json_object(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be left out: no body at all gives `T::default()`
/// (so `curl -X POST` without `-d` works); a body given follows the
/// `JsonBody` rules.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_content_type);
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(format!("Could not read the body: {rej}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with Content-Type: application/json",
            ));
        }
        parse_json_object(&bytes).map(OptionalJsonBody)
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("The body exceeds the limit of {MAX_BODY_BYTES} bytes"),
    )
}

/// The peer's IP address (unspecified when the request did not come over a
/// socket, as in tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// The decoded query string, in order. A parameter given twice is refused
/// (which one would win is not obvious, so neither does).
#[derive(Debug, Clone, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn parse(query: Option<&str>) -> Result<QueryParams, ApiError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k.chars().chain(v.chars()).any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "Query parameter '{}' has a control character (such as %00) in it",
                    k.chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                )));
            }
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::bad_request(format!(
                    "Query parameter '{k}' is given twice"
                )));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(QueryParams(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Builds `path?query` with `limit` and `offset` replaced, keeping every
    /// other parameter (the filters) as given.
    pub fn link(&self, path: &str, limit: i64, offset: i64) -> String {
        let mut link = String::with_capacity(path.len() + 40);
        link.push_str(path);
        link.push('?');
        let query_start = link.len();
        let mut ser = url::form_urlencoded::Serializer::for_suffix(link, query_start);
        for (k, v) in &self.0 {
            if k != "limit" && k != "offset" {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("limit", &limit.to_string());
        ser.append_pair("offset", &offset.to_string());
        ser.finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        QueryParams::parse(parts.uri.query())
    }
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// Offsets past this are refused: no real page is that deep, and it bounds
/// the work one request can ask of the database.
pub const MAX_OFFSET: i64 = 10_000_000;

/// `?limit=N&offset=M` (defaults 50 / 0; limit capped at 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
}

impl Paging {
    pub fn from_query(q: &QueryParams) -> Result<Paging, ApiError> {
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(MAX_LIMIT),
                _ => {
                    return Err(ApiError::field(
                        "limit",
                        "must be a whole number from 1 to 500",
                    ));
                }
            },
        };
        let offset = match q.get("offset") {
            None => 0,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (0..=MAX_OFFSET).contains(&n) => n,
                _ => {
                    return Err(ApiError::field(
                        "offset",
                        format!("must be a whole number from 0 to {MAX_OFFSET}"),
                    ));
                }
            },
        };
        Ok(Paging { limit, offset })
    }
}

/// The list envelope: `{data, total, limit, offset, next}` (`next` is the
/// relative URL of the following page, null on the last one).
#[derive(Debug, Serialize)]
pub struct ListEnvelope<T> {
    pub data: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    pub next: Option<String>,
    /// Only `GET /numbers` carries this sibling (as the spec shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl<T> ListEnvelope<T> {
    pub fn new(data: Vec<T>, total: i64, paging: Paging, query: &QueryParams, path: &str) -> Self {
        let next_offset = paging.offset.saturating_add(paging.limit);
        let next = (next_offset < total).then(|| query.link(path, paging.limit, next_offset));
        ListEnvelope {
            data,
            total,
            limit: paging.limit,
            offset: paging.offset,
            next,
            tenant: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Route {
        did: String,
        from_number: Option<String>,
        user: String,
    }

    #[test]
    fn both_casings_and_nothing_else() {
        let a: Route =
            parse_json_object(br#"{"Did":"+1","FromNumber":"*","User":"alex"}"#).unwrap();
        let b: Route =
            parse_json_object(br#"{"did":"+1","fromNumber":"*","user":"alex"}"#).unwrap();
        assert_eq!(a, b);
        let e =
            parse_json_object::<Route>(br#"{"did":"+1","user":"a","role":"admin"}"#).unwrap_err();
        assert!(
            e.description.contains("unknown field `role`"),
            "{}",
            e.description
        );
        let e = parse_json_object::<Route>(br#"{"did":"+1","Did":"+2","user":"a"}"#).unwrap_err();
        assert!(e.description.contains("given more than once"));
        // The same spelling twice: refused too, not the last one taken.
        let e = parse_json_object::<Route>(br#"{"did":"+1","did":"+2","user":"a"}"#).unwrap_err();
        assert!(
            e.description
                .starts_with("Field 'did' is given more than once"),
            "{}",
            e.description
        );
        // Valid JSON that is not an object.
        assert!(parse_json_object::<Route>(b"\"text\"").is_err());
        assert!(parse_json_object::<Route>(b"null").is_err());
        let e = parse_json_object::<Route>(br#"{"user":"a"}"#).unwrap_err();
        assert!(
            e.description.contains("missing field `did`"),
            "{}",
            e.description
        );
        let e = parse_json_object::<Route>(br#"{"did":5,"user":"a"}"#).unwrap_err();
        assert!(
            e.description.starts_with("did: invalid type"),
            "{}",
            e.description
        );
        assert!(parse_json_object::<Route>(b"[1]").is_err());
        assert!(parse_json_object::<Route>(b"{").is_err());
        assert!(parse_json_object::<Route>(b"").is_err());
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("Application/JSON"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
    }

    #[test]
    fn paging_rules() {
        let p = |q: &str| Paging::from_query(&QueryParams::parse(Some(q)).unwrap());
        assert_eq!(
            p("").unwrap(),
            Paging {
                limit: 50,
                offset: 0
            }
        );
        assert_eq!(
            p("limit=20&offset=40").unwrap(),
            Paging {
                limit: 20,
                offset: 40
            }
        );
        assert_eq!(p("limit=100000").unwrap().limit, 500);
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=abc",
            "limit=",
            "offset=-5",
            "offset=1e3",
            "limit=99999999999999999999",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(QueryParams::parse(Some("limit=1&limit=2")).is_err());
    }

    #[test]
    fn next_link_keeps_filters() {
        let q = QueryParams::parse(Some("status=in-flight,scheduled&limit=20")).unwrap();
        let env = ListEnvelope::new(
            vec![1],
            45,
            Paging {
                limit: 20,
                offset: 20,
            },
            &q,
            "/api.ashx/v1/calls",
        );
        assert_eq!(
            env.next.as_deref(),
            Some("/api.ashx/v1/calls?status=in-flight%2Cscheduled&limit=20&offset=40")
        );
        let last = ListEnvelope::new(
            vec![1],
            45,
            Paging {
                limit: 20,
                offset: 40,
            },
            &q,
            "/x",
        );
        assert_eq!(last.next, None);
    }
}
