//! `/api/tasks`, `/api/projects/{id}/tasks` and `/api/projects/{id}/import`.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use labelport_db::{Db, TaskRow};
use labelport_domain::import::{kind, parse_task_element, NewTask};
use labelport_domain::resolve::{rewrite_uris, rewrite_uris_with};
use labelport_domain::storage::Direction;
use labelport_domain::{LabelConfig, ValidationErrors};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json_body, AuthUser, JsonBody, PathId, QueryParams};
use crate::projects::page_window;
use crate::state::AppState;
use crate::views::{first_data_key, task_json};

/// At most this many element errors are listed in one 400.
const MAX_LISTED_ERRORS: usize = 20;

/// How tasks of one project are shown.
#[derive(Debug, Clone, Default)]
pub struct RenderCtx {
    /// Where `$undefined$` is shown.
    pub first_key: Option<String>,
    /// Buckets of the project's import storages; their `gs://` URIs are
    /// rewritten to resolve URLs (empty: nothing is rewritten).
    pub buckets: Vec<String>,
    /// Public URL prefix of resolve URLs ("" for relative).
    pub base: String,
    /// When set, resolve URLs point at this media origin and are signed.
    pub media: Option<crate::media_origin::MediaOrigin>,
}

impl RenderCtx {
    /// For API reads: `$undefined$` placed and media URIs rewritten.
    pub async fn for_reads(state: &AppState, project_id: i64) -> ApiResult<RenderCtx> {
        let project = state.db.get_project(project_id).await?;
        let mut buckets: Vec<String> = state
            .db
            .list_storages(Direction::Import, None, Some(project_id))
            .await?
            .into_iter()
            .filter(|s| s.kind.scheme() == "gs")
            .map(|s| s.settings.bucket)
            .collect();
        buckets.dedup();
        Ok(RenderCtx {
            first_key: first_data_key(&project.label_config),
            buckets,
            base: match &state.media {
                Some(m) => m.base.clone(),
                None => state.public_url.clone(),
            },
            media: state.media.clone(),
        })
    }
}

/// Renders tasks with their annotations and predictions (two queries),
/// with the storage URIs rewritten for the browser when `ctx` says so.
pub async fn render_tasks(db: &Db, rows: &[TaskRow], ctx: &RenderCtx) -> ApiResult<Vec<Value>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let annotations = db.annotations_of_tasks(&ids).await?;
    let predictions = db.predictions_of_tasks(&ids).await?;
    let mut tasks = labelport_views::tasks_with_children(rows, &annotations, &predictions, ctx.first_key.as_deref())?;
    for (task, r) in tasks.iter_mut().zip(rows) {
        match &ctx.media {
            Some(media) => {
                let now = std::time::SystemTime::now();
                let suffix = |uri: &str| media.suffix(r.id, uri, now);
                rewrite_uris_with(&mut task["data"], &ctx.buckets, &ctx.base, r.id, &suffix);
            }
            None => rewrite_uris(&mut task["data"], &ctx.buckets, &ctx.base, r.id),
        }
    }
    Ok(tasks)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// Project whose tasks to list (required).
    #[param(required = true)]
    pub project: Option<i64>,
    /// 1-based page number.
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Tasks per page (1–10000).
    #[param(minimum = 1, maximum = 10000)]
    pub page_size: Option<i64>,
}

#[utoipa::path(get, path = "/api/tasks", params(TaskListQuery), tag = "tasks",
    responses((status = 200, description = "{tasks, total, total_annotations, total_predictions}; a page past the end has no tasks")))]
pub async fn list_tasks(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<TaskListQuery>,
) -> ApiResult<Json<Value>> {
    let project_id = q
        .project
        .ok_or_else(|| ApiError::field("project", "This query parameter is required."))?;
    let (page, size) = page_window(q.page, q.page_size, 100)?;
    let ctx = RenderCtx::for_reads(&state, project_id).await?;
    let rows = state.db.task_page(project_id, (page - 1) * size, size).await?;
    let tasks = render_tasks(&state.db, &rows, &ctx).await?;
    let counts = state.db.project_counts(project_id).await?;
    Ok(Json(json!({
        "tasks": tasks,
        "total": counts.task_number,
        "total_annotations": counts.total_annotations_number,
        "total_predictions": counts.total_predictions_number,
    })))
}

#[utoipa::path(get, path = "/api/projects/{id}/tasks", params(("id" = i64, Path), crate::projects::PageQuery), tag = "tasks",
    responses((status = 200, description = "A plain list of the project's tasks, paged")))]
pub async fn list_project_tasks(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    QueryParams(q): QueryParams<crate::projects::PageQuery>,
) -> ApiResult<Json<Value>> {
    let (page, size) = page_window(q.page, q.page_size, 100)?;
    let ctx = RenderCtx::for_reads(&state, id).await?;
    let rows = state.db.task_page(id, (page - 1) * size, size).await?;
    Ok(Json(Value::Array(render_tasks(&state.db, &rows, &ctx).await?)))
}

#[utoipa::path(delete, path = "/api/projects/{id}/tasks", params(("id" = i64, Path)), tag = "tasks",
    responses((status = 204, description = "All tasks of the project deleted")))]
pub async fn delete_project_tasks(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.db.get_project(id).await?;
    let n = state.db.delete_project_tasks(id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    tracing::info!(project.id = id, tasks = n, "deleted all tasks of project");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TaskCreate {
    pub project: i64,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub meta: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TaskPatch {
    /// The task's new data (an object); null or absent keeps it.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// The task's new meta (an object); null or absent keeps it.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
}

fn require_object(field: &str, v: &Value) -> ApiResult<()> {
    if v.is_object() {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("Must be a JSON object, got {}.", kind(v)),
        ))
    }
}

#[utoipa::path(post, path = "/api/tasks", request_body = TaskCreate, tag = "tasks",
    responses((status = 201, description = "The created task")))]
pub async fn create_task(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(input): JsonBody<TaskCreate>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_object("data", &input.data)?;
    let meta = input.meta.unwrap_or_else(|| json!({}));
    require_object("meta", &meta)?;
    let project = match state.db.get_project(input.project).await {
        Err(labelport_db::DbError::NotFound) => {
            return Err(ApiError::field(
                "project",
                format!("Invalid pk \"{}\" - object does not exist.", input.project),
            ))
        }
        other => other?,
    };
    let task = NewTask {
        data: input.data,
        meta,
        allow_skip: true,
        annotations: vec![],
        predictions: vec![],
    };
    let outcome = state
        .db
        .import_tasks(project.id, project.maximum_annotations, &[task], user.id)
        .await?;
    let row = state.db.get_task(outcome.task_ids[0]).await?;
    let first_key = first_data_key(&project.label_config);
    let body = task_json(&row, first_key.as_deref(), Some(vec![]), Some(vec![]))?;
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/tasks/{id}", params(("id" = i64, Path)), tag = "tasks",
    responses((status = 200, description = "The task with annotations and predictions"), (status = 404, description = "No such task")))]
pub async fn get_task(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let row = state.db.get_task(id).await?;
    let ctx = RenderCtx::for_reads(&state, row.project_id).await?;
    let mut rendered = render_tasks(&state.db, std::slice::from_ref(&row), &ctx).await?;
    Ok(Json(rendered.remove(0)))
}

#[utoipa::path(patch, path = "/api/tasks/{id}", params(("id" = i64, Path)), request_body = TaskPatch, tag = "tasks",
    responses((status = 200, description = "The updated task")))]
pub async fn patch_task(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<TaskPatch>,
) -> ApiResult<Json<Value>> {
    let row = state.db.get_task(id).await?;
    let data = match input.data {
        Some(d) => {
            require_object("data", &d)?;
            d.to_string()
        }
        None => row.data,
    };
    let meta = match input.meta {
        Some(m) => {
            require_object("meta", &m)?;
            m.to_string()
        }
        None => row.meta,
    };
    let row = state.db.update_task(id, &data, &meta, user.id).await?;
    let ctx = RenderCtx::for_reads(&state, row.project_id).await?;
    let mut rendered = render_tasks(&state.db, std::slice::from_ref(&row), &ctx).await?;
    Ok(Json(rendered.remove(0)))
}

#[utoipa::path(delete, path = "/api/tasks/{id}", params(("id" = i64, Path)), tag = "tasks",
    responses((status = 204, description = "Deleted with its annotations and predictions")))]
pub async fn delete_task(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<StatusCode> {
    state.db.delete_task(id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Parses an import body: a JSON list of elements or one element. Every
/// element is checked before anything is written.
pub fn parse_import_body(bytes: &[u8], config: &LabelConfig) -> ApiResult<Vec<NewTask>> {
    let body: Value = parse_json_body(bytes)?;
    let elements = match body {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return Err(ApiError::body(format!(
                "Expected a list of tasks or one task, got {}.",
                kind(&other)
            )))
        }
    };
    check_elements(
        elements.into_iter().enumerate().map(|(i, e)| (format!("task #{i}"), e)),
        config,
    )
}

/// Turns import elements into tasks; each failing one is listed by its
/// label (`task #3`, `tasks.csv:line 4`), up to [`MAX_LISTED_ERRORS`], and
/// then nothing is imported.
fn check_elements(elements: impl Iterator<Item = (String, Value)>, config: &LabelConfig) -> ApiResult<Vec<NewTask>> {
    let mut errors = ValidationErrors::default();
    let mut listed = 0;
    let mut tasks = Vec::new();
    let mut failed = 0usize;
    for (label, element) in elements {
        match parse_task_element(element).and_then(|t| config.check_task_data(&t.data).map(|()| t)) {
            Ok(t) => tasks.push(t),
            Err(e) => {
                failed += 1;
                if listed < MAX_LISTED_ERRORS {
                    errors.add("tasks", format!("{label}: {e}"));
                    listed += 1;
                }
            }
        }
    }
    if failed > listed {
        errors.add("tasks", format!("… and {} more invalid tasks", failed - listed));
    }
    errors.into_result()?;
    Ok(tasks)
}

/// One uploaded file of a `multipart/form-data` import.
pub struct UploadedFile {
    /// The file name the browser sent (its extension picks the format).
    pub name: String,
    pub bytes: Bytes,
}

/// Reads the files of a `multipart/form-data` import body (Label Studio's
/// upload form and the SDK's `import_tasks` with files send one part per
/// file). Parts without a file name are ignored.
pub async fn read_upload(content_type: &str, body: Bytes) -> ApiResult<Vec<UploadedFile>> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::body(format!("Invalid multipart/form-data body: {e}")))?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut files = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::body(format!("Invalid multipart/form-data body: {e}")))?
    {
        let Some(name) = field.file_name().map(str::to_owned) else {
            continue;
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::body(format!("Could not read the uploaded file {name:?}: {e}")))?;
        files.push(UploadedFile { name, bytes });
    }
    if files.is_empty() {
        return Err(ApiError::body("The upload holds no file; send at least one task file."));
    }
    Ok(files)
}

/// Parses uploaded task files, by extension: `.json` (a list of tasks or
/// one task), `.jsonl` / `.ndjson` (a task per line), `.csv` / `.tsv` (a
/// header row, then a task per row whose data maps each column to its
/// text). Every task of every file is checked before anything is written;
/// errors name the file and line.
pub fn parse_upload(files: &[UploadedFile], config: &LabelConfig) -> ApiResult<Vec<NewTask>> {
    let mut elements: Vec<(String, Value)> = Vec::new();
    for file in files {
        let name = &file.name;
        // A UTF-8 byte order mark (Excel and Windows editors write one) is
        // not part of the content, as for the storage readers.
        let bytes = file.bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&file.bytes);
        let extension = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "json" => {
                let body: Value = serde_json::from_slice(bytes)
                    .map_err(|e| ApiError::field("tasks", format!("{name}: JSON parse error - {e}")))?;
                let items = match body {
                    Value::Array(items) => items,
                    obj @ Value::Object(_) => vec![obj],
                    other => {
                        return Err(ApiError::field(
                            "tasks",
                            format!("{name}: expected a list of tasks or one task, got {}.", kind(&other)),
                        ))
                    }
                };
                elements.extend(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, e)| (format!("{name}: task #{i}"), e)),
                );
            }
            "jsonl" | "ndjson" => {
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: Value = serde_json::from_slice(line).map_err(|e| {
                        ApiError::field("tasks", format!("{name}:line {}: JSON parse error - {e}", i + 1))
                    })?;
                    elements.push((format!("{name}:line {}", i + 1), value));
                }
            }
            "csv" | "tsv" => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(if extension == "tsv" { b'\t' } else { b',' })
                    .from_reader(bytes);
                let headers = reader
                    .headers()
                    .map_err(|e| ApiError::field("tasks", format!("{name}: {e}")))?
                    .clone();
                for record in reader.records() {
                    let record = record.map_err(|e| ApiError::field("tasks", format!("{name}: {e}")))?;
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    let data: Map<String, Value> = headers
                        .iter()
                        .zip(record.iter())
                        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                        .collect();
                    elements.push((format!("{name}:line {line}"), json!({ "data": data })));
                }
            }
            _ => {
                return Err(ApiError::field(
                    "tasks",
                    format!("{name}: unsupported file type; upload .json, .jsonl, .csv or .tsv task files."),
                ))
            }
        }
    }
    if elements.is_empty() {
        return Err(ApiError::field("tasks", "The uploaded files hold no tasks."));
    }
    check_elements(elements.into_iter(), config)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Accepted for compatibility; imports always commit.
    pub commit_to_project: Option<bool>,
}

#[utoipa::path(post, path = "/api/projects/{id}/import", params(("id" = i64, Path), ImportQuery), tag = "tasks",
    request_body(content = Vec<Object>, description = "A JSON list of tasks: bare data objects or {data, annotations, predictions, meta}; or `multipart/form-data` with task files (.json, .jsonl, .csv, .tsv), as the upload form sends"),
    responses((status = 201, description = "task_count, annotation_count, prediction_count, duration"),
        (status = 400, description = "Body is not JSON, a file is of an unknown type, or an element is invalid (named by file and line); nothing was imported")))]
pub async fn import_tasks(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    QueryParams(_q): QueryParams<ImportQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let started = Instant::now();
    let project = state.db.get_project(id).await?;
    // Every key the config reads must be there (`LabelConfig::check_task_data`).
    let config = LabelConfig::parse(&project.label_config).unwrap_or_default();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let upload = if content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        Some(read_upload(content_type, body.clone()).await?)
    } else {
        None
    };
    let tasks = tokio::task::spawn_blocking(move || match upload {
        Some(files) => parse_upload(&files, &config),
        None => parse_import_body(&body, &config),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("import parser panicked: {e}")))??;
    let outcome = state
        .db
        .import_tasks(project.id, project.maximum_annotations, &tasks, user.id)
        .await?;
    state.jobs_notify.notify_waiters();
    let data_columns: Vec<String> = {
        let mut keys: Vec<String> = Vec::new();
        for t in tasks.iter().take(100) {
            if let Value::Object(m) = &t.data {
                for k in m.keys() {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
            }
        }
        keys
    };
    tracing::info!(project.id = id, tasks = outcome.task_ids.len(), "imported tasks");
    let mut body = Map::new();
    body.insert("task_count".into(), outcome.task_ids.len().into());
    body.insert("annotation_count".into(), outcome.annotation_count.into());
    body.insert("prediction_count".into(), outcome.prediction_count.into());
    body.insert("predictions_count".into(), outcome.prediction_count.into());
    body.insert("duration".into(), started.elapsed().as_secs_f64().into());
    body.insert("file_upload_ids".into(), json!([]));
    body.insert("could_be_tasks_list".into(), false.into());
    body.insert("found_formats".into(), json!([]));
    body.insert("data_columns".into(), json!(data_columns));
    Ok((StatusCode::CREATED, Json(Value::Object(body))))
}

#[utoipa::path(get, path = "/api/projects/{id}/next", params(("id" = i64, Path)), tag = "tasks",
    responses((status = 200, description = "The next task to label (media URIs resolved)"),
        (status = 404, description = "No task left to label, or no such project")))]
pub async fn next_task(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let ctx = RenderCtx::for_reads(&state, id).await?;
    let row = state
        .db
        .next_task_for(id, user.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("No more tasks to label in this project.".into()))?;
    let mut rendered = render_tasks(&state.db, std::slice::from_ref(&row), &ctx).await?;
    Ok(Json(rendered.remove(0)))
}
