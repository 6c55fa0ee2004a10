//! Users, the current user's token, and project members, in Label Studio's
//! API shapes (`shared/reference/ls-users-roles.md` §3, §5). Who may call
//! each route is in `access.rs`: admins manage users; managers list them
//! and manage the members of their projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use labelport_db::users::{generate_token, UserFields};
use labelport_db::DbError;
use labelport_domain::access::Role;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId, QueryParams};
use crate::projects::{page_window, PageQuery};
use crate::state::AppState;
use crate::views::user_json;

/// A user as an admin sends it. (No `Debug`: it may hold a password.)
#[derive(Default, Deserialize, ToSchema)]
pub struct UserInput {
    /// Required at create; cannot change.
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `admin`, `manager` or `annotator` (default at create).
    pub role: Option<String>,
    /// Sets the password (and ends the user's browser sessions).
    pub password: Option<String>,
}

fn parse_role(v: Option<&str>) -> ApiResult<Option<Role>> {
    match v {
        None => Ok(None),
        Some(name) => Role::parse(name)
            .map(Some)
            .ok_or_else(|| ApiError::field("role", format!("Must be one of {}.", Role::NAMES.join(", ")))),
    }
}

/// Passwords shorter than this are refused.
const MIN_PASSWORD_CHARS: usize = 8;

fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::field(
            "password",
            format!("Must be at least {MIN_PASSWORD_CHARS} characters."),
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/users", params(PageQuery), tag = "users",
    responses((status = 200, description = "Users in id order: a plain list as Label Studio's, in pages (`page_size` default 1000)"),
        (status = 403, description = "Annotators may not list users")))]
pub async fn list_users(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Value>> {
    let (page, size) = page_window(q.page, q.page_size, 1000)?;
    let users = state.db.user_page((page - 1) * size, size).await?;
    Ok(Json(Value::Array(users.iter().map(user_json).collect())))
}

#[utoipa::path(post, path = "/api/users", request_body = UserInput, tag = "users",
    responses((status = 201, description = "The user, with its API token (`token`, shown only here)"),
        (status = 400, description = "A field is missing or wrong, or the username is taken")))]
pub async fn create_user(
    State(state): State<AppState>,
    _admin: AuthUser,
    JsonBody(input): JsonBody<UserInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let username = input
        .username
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::field("username", "This field is required."))?;
    let role = parse_role(input.role.as_deref())?;
    // Without a password the user signs in with the token only.
    let password = match input.password {
        Some(p) => {
            check_password(&p)?;
            p
        }
        None => generate_token(),
    };
    let token = generate_token();
    let fields = UserFields {
        email: input.email.unwrap_or_default(),
        first_name: input.first_name.unwrap_or_default(),
        last_name: input.last_name.unwrap_or_default(),
        role,
    };
    let user = state
        .db
        .create_user(username, &password, &token, &fields)
        .await?
        .ok_or_else(|| ApiError::field("username", "A user with that username already exists."))?;
    tracing::info!(user.id = user.id, role = user.role_name, "user created");
    let mut out = user_json(&user);
    out["token"] = token.into();
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/api/users/{id}", params(("id" = i64, Path)), tag = "users",
    responses((status = 200, description = "The user"), (status = 404, description = "No such user")))]
pub async fn get_user(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let user = state.db.user_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&user)))
}

#[utoipa::path(patch, path = "/api/users/{id}", params(("id" = i64, Path)), request_body = UserInput, tag = "users",
    responses((status = 200, description = "The user, updated"),
        (status = 400, description = "A wrong field, or the last admin would lose the role")))]
pub async fn patch_user(
    State(state): State<AppState>,
    _admin: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<UserInput>,
) -> ApiResult<Json<Value>> {
    let current = state.db.user_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if input.username.as_deref().is_some_and(|u| u != current.username) {
        return Err(ApiError::field("username", "A username cannot change."));
    }
    let role = parse_role(input.role.as_deref())?;
    if current.role() == Role::Admin && role.is_some_and(|r| r != Role::Admin) && state.db.count_admins().await? <= 1 {
        return Err(ApiError::field(
            "role",
            "This is the last admin; make another admin first.",
        ));
    }
    if let Some(p) = &input.password {
        check_password(p)?;
    }
    let fields = UserFields {
        email: input.email.unwrap_or(current.email),
        first_name: input.first_name.unwrap_or(current.first_name),
        last_name: input.last_name.unwrap_or(current.last_name),
        role,
    };
    let user = state.db.update_user(id, &fields).await?;
    if let Some(p) = &input.password {
        state.db.set_password(id, p).await?;
    }
    Ok(Json(user_json(&user)))
}

#[utoipa::path(delete, path = "/api/users/{id}", params(("id" = i64, Path)), tag = "users",
    responses((status = 204, description = "Deleted; their annotations stay"),
        (status = 400, description = "Yourself, or the last admin")))]
pub async fn delete_user(
    State(state): State<AppState>,
    AuthUser(admin): AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    if id == admin.id {
        return Err(ApiError::body("You cannot delete yourself."));
    }
    let user = state.db.user_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if user.role() == Role::Admin && state.db.count_admins().await? <= 1 {
        return Err(ApiError::body("This is the last admin."));
    }
    state.db.delete_user(id).await?;
    tracing::info!(user.id = id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/current-user/reset-token", tag = "users",
    responses((status = 201, description = "{token}: the caller's new API token; the old one stops working at once, and so do their browser sessions")))]
pub async fn reset_token(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let token = generate_token();
    state.db.set_user_token(&user.username, &token).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MemberInput {
    /// The user to add.
    #[schema(required = true, nullable = false)]
    pub user: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// The user to remove.
    #[param(required = true)]
    pub user: Option<i64>,
}

#[utoipa::path(get, path = "/api/projects/{id}/members", params(("id" = i64, Path), PageQuery), tag = "projects",
    responses((status = 200, description = "{count, results: [user]}: the project's members (admins see every project without being members)")))]
pub async fn list_members(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Value>> {
    let (page, size) = page_window(q.page, q.page_size, 100)?;
    let (rows, count) = state.db.list_members(id, (page - 1) * size, size).await?;
    Ok(Json(json!({
        "count": count,
        "results": rows.iter().map(user_json).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(post, path = "/api/projects/{id}/members", params(("id" = i64, Path)), request_body = MemberInput, tag = "projects",
    responses((status = 201, description = "{user}: a member now"), (status = 400, description = "No such user")))]
pub async fn add_member(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<MemberInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = input
        .user
        .ok_or_else(|| ApiError::field("user", "This field is required."))?;
    match state.db.add_member(id, user).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(json!({ "user": user })))),
        Err(DbError::NotFound) => Err(ApiError::field(
            "user",
            format!("Invalid pk \"{user}\" - object does not exist."),
        )),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(delete, path = "/api/projects/{id}/members", params(("id" = i64, Path), MemberQuery), tag = "projects",
    responses((status = 204, description = "Not a member any more"), (status = 404, description = "Was not a member")))]
pub async fn remove_member(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    QueryParams(q): QueryParams<MemberQuery>,
) -> ApiResult<StatusCode> {
    let user = q
        .user
        .ok_or_else(|| ApiError::field("user", "This query parameter is required."))?;
    state.db.remove_member(id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
