//! Browser login: a session cookie for the web UI and the media URLs it
//! loads (`<img src="/tasks/…/resolve/…">` cannot send a token header).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{session_cookie, ClientAddr, JsonBody, SESSION_COOKIE};
use crate::state::AppState;
use crate::views::user_json;

/// Longest username or e-mail considered (longer ones cannot exist).
const MAX_LOGIN_CHARS: usize = 254;

/// How long a session lasts.
const SESSION_DAYS: i64 = 14;

/// (No `Debug`: it holds a password.)
#[derive(Deserialize, ToSchema)]
pub struct LoginInput {
    /// Username or email (one of the two is required).
    #[schema(min_length = 1)]
    pub username: Option<String>,
    #[schema(min_length = 1)]
    pub email: Option<String>,
    #[schema(required = true, nullable = false, min_length = 1)]
    pub password: Option<String>,
}

#[utoipa::path(post, path = "/api/auth/login", request_body = LoginInput, tag = "users",
    responses((status = 200, description = "Logged in; sets the session cookie (HttpOnly, SameSite=Lax, Secure when the public URL is https; 14 days, ended by a password or token reset)"),
        (status = 400, description = "Wrong username or password (the same answer for an unknown user)"),
        (status = 429, description = "Too many attempts for this account or from this address")))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    JsonBody(input): JsonBody<LoginInput>,
) -> ApiResult<Response> {
    let login = input.username.or(input.email).filter(|s| !s.is_empty());
    let (Some(login), Some(password)) = (login, input.password) else {
        return Err(ApiError::body("username (or email) and password are required."));
    };
    if login.chars().count() > MAX_LOGIN_CHARS {
        return Err(ApiError::body("Wrong username or password."));
    }
    if !state.login_limits.allow(&login, peer) {
        tracing::warn!(
            client = ?peer,
            login.chars = login.chars().count(),
            "login attempts over the limit; refused without checking"
        );
        return Err(ApiError::TooManyRequests(
            "Too many login attempts for this account or from this address; try again in 30 seconds.".into(),
        ));
    }
    let Some(user) = state.db.user_by_login(&login, &password).await? else {
        return Err(ApiError::body("Wrong username or password."));
    };
    let token = state
        .db
        .create_session(user.id, chrono::Duration::days(SESSION_DAYS))
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        SESSION_DAYS * 24 * 3600,
        if state.secure_cookies { "; Secure" } else { "" }
    );
    Ok(([(header::SET_COOKIE, cookie)], Json(user_json(&user))).into_response())
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "users",
    responses((status = 204, description = "The session is ended and its cookie cleared")))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session_cookie(&headers) {
        state.db.delete_session(&token).await?;
    }
    let clear = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if state.secure_cookies { "; Secure" } else { "" }
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}
