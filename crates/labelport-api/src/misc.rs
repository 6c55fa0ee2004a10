//! Health, the current user, and the fallback for unknown routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::AuthUser;
use crate::state::AppState;
use crate::views::user_json;

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The database answers"), (status = 503, description = "The database does not answer")))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "UP"}))),
        Err(e) => {
            tracing::warn!("health check failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "DOWN", "detail": "database unreachable"})),
            )
        }
    }
}

#[utoipa::path(get, path = "/api/current-user/whoami", tag = "users",
    responses((status = 200, description = "The authenticated user")))]
pub async fn whoami(AuthUser(user): AuthUser) -> Json<Value> {
    Json(user_json(&user))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not found: no such route.".into())
}

pub async fn method_not_allowed() -> ApiResult<()> {
    Err(ApiError::MethodNotAllowed)
}
