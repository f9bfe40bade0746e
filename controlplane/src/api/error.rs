//! The one place API errors become HTTP: `{error, error_description}` with
//! the v1 spec's codes and statuses. Internal failures are logged with their
//! cause and answered with a generic 500, never with the cause.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// Value for `WWW-Authenticate` on 401s.
    pub www_authenticate: Option<&'static str>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `not_found`.
    pub error: String,
    /// Human-readable explanation.
    pub error_description: String,
}

/// Most characters of a 404's description.
pub const MAX_ECHO: usize = 200;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// A 400 naming the offending field.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("{field}: {problem}"))
    }

    /// A 404; the description (which names the id asked for) is cut at
    /// [`MAX_ECHO`] characters, so a long id is not echoed whole.
    pub fn not_found(description: impl Into<String>) -> Self {
        let mut description = description.into();
        if let Some((at, _)) = description.char_indices().nth(MAX_ECHO) {
            description.truncate(at);
            description.push('…');
        }
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
    }

    pub fn conflict(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, description)
    }

    pub fn unauthorized(description: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", description);
        e.www_authenticate = Some(r#"Bearer realm="codeb", error="invalid_token""#);
        e
    }

    pub fn missing_bearer() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing bearer token: send Authorization: Bearer <token>",
        );
        e.www_authenticate = Some(r#"Bearer realm="codeb""#);
        e
    }

    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", description)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error; the details are in the server log",
        )
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            error_description: self.description,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(v) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
