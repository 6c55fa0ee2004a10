//! `/api/projects`: list, create, get, patch, delete.

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use labelport_db::projects::ProjectFields;
use labelport_db::ProjectRow;
use labelport_domain::access::Role;
use labelport_domain::label_config::DEFAULT_LABEL_CONFIG;
use labelport_domain::{LabelConfig, ValidationErrors};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId, QueryParams};
use crate::state::AppState;
use crate::views::{default_project_settings, project_json};

/// Label Studio's limit on project titles.
const TITLE_MAX_CHARS: usize = 50;

/// Fields of a project a client may set. Other Label Studio settings
/// (`show_skip_button`, `color`, …) are accepted and stored as given.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ProjectInput {
    /// At most 50 characters (Label Studio's limit).
    #[schema(max_length = 50)]
    pub title: Option<String>,
    pub description: Option<String>,
    /// Label Studio's XML labeling configuration.
    pub label_config: Option<String>,
    /// Annotations a task needs to count as labeled (1 or more).
    #[schema(minimum = 1)]
    pub maximum_annotations: Option<i64>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number.
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Items per page (1–10000).
    #[param(minimum = 1, maximum = 10000)]
    pub page_size: Option<i64>,
}

/// Checks and applies `input` over `current` (all defaults on create).
fn apply_input(current: ProjectFields, input: ProjectInput, creating: bool) -> Result<ProjectFields, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let mut fields = current;
    if let Some(title) = input.title {
        if title.chars().count() > TITLE_MAX_CHARS {
            errors.add(
                "title",
                format!("Ensure this field has no more than {TITLE_MAX_CHARS} characters."),
            );
        }
        fields.title = title;
    }
    if let Some(description) = input.description {
        fields.description = description;
    }
    if let Some(config) = input.label_config {
        if let Err(e) = LabelConfig::validate(&config) {
            for msgs in e.0.into_values() {
                for m in msgs {
                    errors.add("label_config", m);
                }
            }
        }
        fields.label_config = config;
    } else if creating {
        fields.label_config = DEFAULT_LABEL_CONFIG.to_owned();
    }
    if let Some(max) = input.maximum_annotations {
        if max < 1 {
            errors.add(
                "maximum_annotations",
                "Ensure this value is greater than or equal to 1.",
            );
        }
        fields.maximum_annotations = max;
    }
    let defaults = default_project_settings();
    let mut settings: Map<String, Value> = serde_json::from_str(&fields.settings).unwrap_or_default();
    for (key, value) in input.settings {
        let Some(default) = defaults.get(&key) else {
            continue; // read-only or unknown fields (id, task_number, …) are ignored, as in Label Studio
        };
        let same_kind = matches!(
            (default, &value),
            (Value::Bool(_), Value::Bool(_))
                | (Value::Number(_), Value::Number(_))
                | (Value::String(_), Value::String(_))
                | (Value::Object(_), Value::Object(_))
                | (Value::Null, _)
                | (_, Value::Null)
        );
        if !same_kind {
            errors.add(&key, format!("Expected a value like {default}, got {value}."));
            continue;
        }
        settings.insert(key, value);
    }
    fields.settings = Value::Object(settings).to_string();
    errors.into_result().map(|()| fields)
}

async fn render(state: &AppState, row: &ProjectRow) -> ApiResult<Value> {
    let counts = state.db.project_counts(row.id).await?;
    let gt = state.db.ground_truth_number(row.id).await?;
    let creator = match row.created_by {
        Some(id) => state.db.user_by_id(id).await?,
        None => None,
    };
    Ok(project_json(row, &counts, gt, creator.as_ref())?)
}

/// Builds a `next`/`previous` link from the request URI with another page.
pub fn page_link(uri: &axum::http::Uri, page: i64) -> String {
    let mut pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.push(("page".into(), page.to_string()));
    let query: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

/// Normalises `page`/`page_size` (pages start at 1).
pub fn page_window(page: Option<i64>, page_size: Option<i64>, default_size: i64) -> ApiResult<(i64, i64)> {
    let page = page.unwrap_or(1);
    let size = page_size.unwrap_or(default_size);
    if page < 1 {
        return Err(ApiError::field("page", "Invalid page: must be 1 or more."));
    }
    if !(1..=10_000).contains(&size) {
        return Err(ApiError::field("page_size", "Must be between 1 and 10000."));
    }
    // Callers compute the offset `(page - 1) * size`: it must fit.
    if (page - 1).checked_mul(size).is_none() {
        return Err(ApiError::field("page", "Invalid page: too large."));
    }
    Ok((page, size))
}

#[utoipa::path(get, path = "/api/projects", params(PageQuery), tag = "projects",
    responses((status = 200, description = "Paginated projects: count, next, previous, results")))]
pub async fn list_projects(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    OriginalUri(uri): OriginalUri,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Value>> {
    let (page, size) = page_window(q.page, q.page_size, 30)?;
    // Admins see every project; others, those they are members of.
    let member = (user.role() != Role::Admin).then_some(user.id);
    let (rows, count) = state.db.list_projects(member, (page - 1) * size, size).await?;
    let mut results = Vec::with_capacity(rows.len());
    for row in &rows {
        results.push(render(&state, row).await?);
    }
    let next = (page * size < count).then(|| page_link(&uri, page + 1));
    let previous = (page > 1).then(|| page_link(&uri, page - 1));
    Ok(Json(
        json!({"count": count, "next": next, "previous": previous, "results": results}),
    ))
}

#[utoipa::path(post, path = "/api/projects", request_body = ProjectInput, tag = "projects",
    responses((status = 201, description = "The created project"), (status = 400, description = "Invalid fields")))]
pub async fn create_project(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(input): JsonBody<ProjectInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let blank = ProjectFields {
        title: String::new(),
        description: String::new(),
        label_config: String::new(),
        maximum_annotations: 1,
        settings: "{}".into(),
    };
    let fields = apply_input(blank, input, true)?;
    let row = state.db.create_project(&fields, user.id).await?;
    tracing::info!(project.id = row.id, "created project");
    Ok((StatusCode::CREATED, Json(render(&state, &row).await?)))
}

#[utoipa::path(get, path = "/api/projects/{id}", params(("id" = i64, Path)), tag = "projects",
    responses((status = 200, description = "The project with its counts"), (status = 404, description = "No such project")))]
pub async fn get_project(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let row = state.db.get_project(id).await?;
    Ok(Json(render(&state, &row).await?))
}

#[utoipa::path(patch, path = "/api/projects/{id}", params(("id" = i64, Path)), request_body = ProjectInput, tag = "projects",
    responses((status = 200, description = "The updated project"), (status = 400, description = "Invalid fields")))]
pub async fn patch_project(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<ProjectInput>,
) -> ApiResult<Json<Value>> {
    let row = state.db.get_project(id).await?;
    let current = ProjectFields {
        title: row.title,
        description: row.description,
        label_config: row.label_config,
        maximum_annotations: row.maximum_annotations,
        settings: row.settings,
    };
    let fields = apply_input(current, input, false)?;
    let row = state.db.update_project(id, &fields).await?;
    Ok(Json(render(&state, &row).await?))
}

#[utoipa::path(delete, path = "/api/projects/{id}", params(("id" = i64, Path)), tag = "projects",
    responses((status = 204, description = "Deleted with its tasks and annotations")))]
pub async fn delete_project(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.db.delete_project(id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    tracing::info!(project.id = id, "deleted project");
    Ok(StatusCode::NO_CONTENT)
}
