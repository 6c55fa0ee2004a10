//! The API's one error type and its single mapping to HTTP, in Label
//! Studio's error shape: `{"id", "status_code", "version", "detail",
//! "exc_info", "validation_errors"?}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use labelport_db::DbError;
use labelport_domain::ValidationErrors;
use serde_json::{json, Value};

/// Reported as `version` in error bodies.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Validation error: {0}")]
    Validation(ValidationErrors),
    /// A 400 like [`ApiError::Validation`] whose body carries more members
    /// beside `validation_errors`: Test connection's `permissions` (which
    /// IAM permissions are missing, and the roles that grant them).
    #[error("Validation error: {0}")]
    Diagnosed(ValidationErrors, Box<serde_json::Map<String, Value>>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(std::borrow::Cow<'static, str>),
    /// Signed in, but the role (or ownership) does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// Over a rate limit (login attempts).
    #[error("{0}")]
    TooManyRequests(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The storage failed while serving media (Label Studio's 424 shape).
    #[error("storage failed: {0}")]
    Upstream(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A service this request needs is down or not configured (503).
    #[error("{0}")]
    Unavailable(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error answer (Label Studio's shape), for the OpenAPI
/// document; [`ApiError`]'s `IntoResponse` writes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ApiErrorBody {
    /// A UUID that the server log repeats.
    id: String,
    /// The HTTP status.
    status_code: i64,
    /// The server's version.
    version: String,
    /// What went wrong, in words.
    detail: String,
    /// Always null (Label Studio puts a traceback here in debug mode).
    #[schema(value_type = Option<String>)]
    exc_info: Option<String>,
    /// For 400: the problems by field (`non_field_errors` for the body as a whole).
    #[schema(value_type = Option<Object>)]
    validation_errors: Option<std::collections::HashMap<String, Vec<String>>>,
    /// For a failed Test connection that lacks IAM permissions:
    /// `{account, missing: [{permission, resource, used_for, role,
    /// role_title, grant_command?}]}` (a Labelport addition).
    #[schema(value_type = Option<Object>)]
    permissions: Option<serde_json::Value>,
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationErrors::field(field, message))
    }

    pub fn body(message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationErrors::non_field(message))
    }

    pub fn not_found() -> Self {
        ApiError::NotFound("Not found.".into())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::Diagnosed(..) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Upstream(_) => StatusCode::FAILED_DEPENDENCY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::not_found(),
            DbError::Invalid(message) => ApiError::body(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<labelport_views::ViewError> for ApiError {
    fn from(e: labelport_views::ViewError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Upstream(detail) = &self {
            tracing::warn!("media proxy: {detail}");
            let body = json!({"error": "Storage stream failed while proxying data", "detail": detail});
            return (status, Json(body)).into_response();
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut body = json!({
            "id": id,
            "status_code": status.as_u16(),
            "version": VERSION,
            "exc_info": null,
        });
        match &self {
            ApiError::Validation(errors) | ApiError::Diagnosed(errors, _) => {
                tracing::info!(error.id = %id, "rejected request: {}", errors.summary());
                body["detail"] = "Validation error".into();
                body["validation_errors"] = serde_json::to_value(errors).unwrap_or_default();
                if let ApiError::Diagnosed(_, details) = &self {
                    for (name, value) in details.iter() {
                        body[name] = value.clone();
                    }
                }
            }
            ApiError::Internal(message) => {
                // The cause goes to the log only: it may name internals.
                tracing::error!(error.id = %id, "internal error: {message}");
                body["detail"] = "Internal server error; see the server log for this error id.".into();
            }
            ApiError::NotFound(message) => body["detail"] = message.as_str().into(),
            ApiError::Unauthorized(message) => body["detail"] = message.as_ref().into(),
            ApiError::Forbidden(message) | ApiError::TooManyRequests(message) | ApiError::Unavailable(message) => {
                body["detail"] = message.as_str().into()
            }
            ApiError::MethodNotAllowed => body["detail"] = "Method not allowed on this route.".into(),
            ApiError::Upstream(_) => unreachable!("answered above"),
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            // The per-account limit frees one attempt every 30 s.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("30"),
            );
        }
        response
    }
}
