//! `/api/storages/…`: Google Cloud Storage import storages, as Label
//! Studio's API (list, create, get, patch, put, delete, validate, files,
//! sync), plus the type lists. Sync runs as a background job: the call
//! answers at once with the storage `queued`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use labelport_db::storages::{ImportStorageFields, ImportStorageRow};
use labelport_db::DbError;
use labelport_domain::ValidationErrors;
use labelport_storage::credentials::validate_service_account_json;
use labelport_storage::ObjectStore;
use labelport_sync::import::{compile_filter, normalize_prefix, DeletionPolicy};
use labelport_sync::job::{self, meta_time, IMPORT_SYNC};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId, QueryParams};
use crate::state::AppState;
use crate::views::stored_json;

/// Longest signed-URL lifetime Google allows: 7 days, in minutes.
const MAX_PRESIGN_TTL_MINUTES: i64 = 10080;
/// The connection check gives up after this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// The files preview stops after this long, as Label Studio (30 s).
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);
const GCS: &str = "gcs";

/// Storage type lists, in Label Studio's order (its UI relies on it).
fn storage_types() -> Value {
    json!([
        {"name": "s3", "title": "AWS S3"},
        {"name": "gcs", "title": "Google Cloud Storage"},
        {"name": "azure", "title": "Microsoft Azure"},
        {"name": "redis", "title": "Redis"},
        {"name": "localfiles", "title": "Local files"},
    ])
}

#[utoipa::path(get, path = "/api/storages/types", tag = "storages",
    responses((status = 200, description = "Import storage types")))]
pub async fn import_types(_user: AuthUser) -> Json<Value> {
    Json(storage_types())
}

#[utoipa::path(get, path = "/api/storages/export/types", tag = "storages",
    responses((status = 200, description = "Export storage types")))]
pub async fn export_types(_user: AuthUser) -> Json<Value> {
    Json(storage_types())
}

/// A GCS import storage as clients send it. Every field is optional so
/// PATCH can send only what changes; `google_application_credentials` is
/// write-only. (No `Debug`: it would print the key.)
#[derive(Default, Deserialize, ToSchema)]
pub struct GcsImportInput {
    /// For validate/files: an existing storage whose settings fill the gaps.
    pub id: Option<i64>,
    pub project: Option<i64>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub regex_filter: Option<String>,
    pub use_blob_urls: Option<bool>,
    pub presign: Option<bool>,
    pub presign_ttl: Option<i64>,
    pub recursive_scan: Option<bool>,
    /// Service-account key JSON; empty means Application Default Credentials.
    pub google_application_credentials: Option<String>,
    pub google_project_id: Option<String>,
    /// What happens to tasks whose object leaves the bucket: `keep` (default,
    /// as Label Studio), `flag`, or `delete` (tasks without annotations).
    pub deletion_policy: Option<String>,
    /// Accepted for compatibility; storages are always synchronizable.
    pub synchronizable: Option<bool>,
    /// For files: how many objects to preview (default 100).
    pub limit: Option<i64>,
}

fn default_fields() -> ImportStorageFields {
    ImportStorageFields {
        title: String::new(),
        description: String::new(),
        bucket: String::new(),
        prefix: String::new(),
        regex_filter: String::new(),
        use_blob_urls: false,
        presign: true,
        presign_ttl: 1,
        recursive_scan: false,
        google_project_id: String::new(),
        credentials: None,
        deletion_policy: "keep".into(),
    }
}

/// A bucket as users type it (`gs://name/`) reduced to its name.
pub(crate) fn normalize_bucket(v: &str) -> String {
    v.trim().trim_start_matches("gs://").trim_end_matches('/').to_owned()
}

/// Applies `input` over `base` and checks every field (no I/O).
fn merge_fields(mut f: ImportStorageFields, input: GcsImportInput) -> Result<ImportStorageFields, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if let Some(v) = input.title {
        f.title = v;
    }
    if let Some(v) = input.description {
        f.description = v;
    }
    if let Some(v) = input.bucket {
        f.bucket = normalize_bucket(&v);
    }
    if let Some(v) = input.prefix {
        f.prefix = v;
    }
    if let Some(v) = input.regex_filter {
        f.regex_filter = v;
    }
    if let Some(v) = input.use_blob_urls {
        f.use_blob_urls = v;
    }
    if let Some(v) = input.presign {
        f.presign = v;
    }
    if let Some(v) = input.presign_ttl {
        f.presign_ttl = v;
    }
    if let Some(v) = input.recursive_scan {
        f.recursive_scan = v;
    }
    if let Some(v) = input.google_project_id {
        f.google_project_id = v;
    }
    if let Some(v) = input.google_application_credentials {
        f.credentials = (!v.trim().is_empty()).then_some(v);
    }
    if let Some(v) = input.deletion_policy {
        f.deletion_policy = v;
    }
    if f.bucket.is_empty() {
        errors.add("bucket", "This field is required: the bucket name (without gs://).");
    } else if f.bucket.contains('/') {
        errors.add("bucket", "A bucket name has no '/'; put the folder in prefix.");
    }
    if !(1..=MAX_PRESIGN_TTL_MINUTES).contains(&f.presign_ttl) {
        errors.add(
            "presign_ttl",
            format!("Must be between 1 and {MAX_PRESIGN_TTL_MINUTES} minutes (7 days, Google's limit)."),
        );
    }
    if let Err(e) = compile_filter(&f.regex_filter) {
        errors.add("regex_filter", e);
    }
    if DeletionPolicy::parse(&f.deletion_policy).is_none() {
        errors.add(
            "deletion_policy",
            format!("Must be one of {}.", DeletionPolicy::NAMES.join(", ")),
        );
    }
    if let Some(creds) = &f.credentials {
        if let Err(e) = validate_service_account_json(creds) {
            errors.add("google_application_credentials", e);
        }
    }
    errors.into_result().map(|()| f)
}

/// Tries the connection as the storage is configured: lists one object (of
/// the prefix, when there is one). A failure is a 400 a user can act on.
async fn check_connection(state: &AppState, f: &ImportStorageFields) -> ApiResult<()> {
    let row = fields_row(f);
    let check = async {
        let store = state.storage_env.gcs(&row).await?;
        store.check().await?;
        if !f.prefix.is_empty() {
            let page = store.list_page(&f.prefix, true, None, 1).await?;
            if page.objects.is_empty() {
                return Ok(Some(format!(
                    "No objects found in gs://{}/{} or the prefix does not exist",
                    f.bucket, f.prefix
                )));
            }
        }
        Ok::<_, labelport_storage::StorageError>(None)
    };
    run_connection_check(&f.bucket, check).await
}

/// Runs a connection check with a time limit. The check answers the
/// storage's error, or a message of its own; either becomes a 400.
pub(crate) async fn run_connection_check(
    bucket: &str,
    check: impl std::future::Future<Output = Result<Option<String>, labelport_storage::StorageError>>,
) -> ApiResult<()> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Err(_) => Err(ApiError::body(format!(
            "Connecting to gs://{bucket} timed out after {CHECK_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(ApiError::body(e.to_string())),
        Ok(Ok(Some(message))) => Err(ApiError::body(message)),
        Ok(Ok(None)) => Ok(()),
    }
}

/// A transient row for connecting with unsaved settings.
fn fields_row(f: &ImportStorageFields) -> ImportStorageRow {
    ImportStorageRow {
        id: 0,
        project_id: 0,
        storage_type: GCS.into(),
        title: f.title.clone(),
        description: f.description.clone(),
        bucket: f.bucket.clone(),
        prefix: f.prefix.clone(),
        regex_filter: f.regex_filter.clone(),
        use_blob_urls: f.use_blob_urls,
        presign: f.presign,
        presign_ttl: f.presign_ttl,
        recursive_scan: f.recursive_scan,
        google_project_id: f.google_project_id.clone(),
        credentials: f.credentials.clone(),
        deletion_policy: f.deletion_policy.clone(),
        status: "initialized".into(),
        last_sync: None,
        last_sync_count: None,
        last_sync_job: None,
        traceback: None,
        meta: "{}".into(),
        created_at: String::new(),
    }
}

/// The storage as Label Studio shows it; the credentials never appear.
async fn storage_json(state: &AppState, row: &ImportStorageRow) -> ApiResult<Value> {
    let mut row = row.clone();
    // A sync whose job ended without recording a result (it gave up after
    // retries, or its handler was lost) is shown as failed, with the reason.
    if matches!(row.status.as_str(), "queued" | "in_progress") {
        if let Some(job_id) = row.last_sync_job.as_deref().and_then(|j| j.parse::<i64>().ok()) {
            match state.db.get_job(job_id).await {
                Ok(job) if matches!(job.status.as_str(), "failed" | "done") => {
                    // The job may have recorded its result after `row` was
                    // read: show that result whole, not a mix. (Deleted
                    // meanwhile: show what was read.)
                    match state.db.get_import_storage(row.id).await {
                        Ok(fresh) => row = fresh,
                        Err(labelport_db::DbError::NotFound) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // Still waiting on that same job (not a newer sync).
                    if matches!(row.status.as_str(), "queued" | "in_progress")
                        && row.last_sync_job.as_deref() == Some(job_id.to_string().as_str())
                    {
                        row.status = "failed".into();
                        row.traceback = Some(match job.last_error {
                            Some(error) if job.status == "failed" => error,
                            _ if job.status == "failed" => "The sync job failed.".into(),
                            _ => "The sync job ended without reporting a result; see the server log.".into(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    let (row, status, traceback) = (&row, row.status.clone(), row.traceback.clone());
    Ok(json!({
        "id": row.id,
        "type": row.storage_type,
        "synchronizable": true,
        "presign": row.presign,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "regex_filter": row.regex_filter,
        "use_blob_urls": row.use_blob_urls,
        "google_project_id": row.google_project_id,
        "last_sync": row.last_sync,
        "last_sync_count": row.last_sync_count,
        "last_sync_job": row.last_sync_job,
        "status": status,
        "traceback": traceback,
        "meta": stored_json(&row.meta)?,
        "title": row.title,
        "description": row.description,
        "created_at": row.created_at,
        "presign_ttl": row.presign_ttl,
        "recursive_scan": row.recursive_scan,
        "deletion_policy": row.deletion_policy,
        "project": row.project_id,
    }))
}

pub(crate) async fn require_project(state: &AppState, project: Option<i64>) -> ApiResult<i64> {
    let id = project.ok_or_else(|| ApiError::field("project", "This field is required."))?;
    match state.db.get_project(id).await {
        Ok(_) => Ok(id),
        Err(DbError::NotFound) => Err(ApiError::field(
            "project",
            format!("Invalid pk \"{id}\" - object does not exist."),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn gcs_storage(state: &AppState, id: i64) -> ApiResult<ImportStorageRow> {
    let row = state.db.get_import_storage(id).await?;
    if row.storage_type != GCS {
        return Err(ApiError::not_found());
    }
    Ok(row)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ProjectQuery {
    pub project: Option<i64>,
}

#[utoipa::path(get, path = "/api/storages", params(ProjectQuery), tag = "storages",
    responses((status = 200, description = "All import storages of a project, of every type")))]
pub async fn list_all_import(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<ProjectQuery>,
) -> ApiResult<Json<Value>> {
    let rows = state.db.list_import_storages(None, q.project).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(storage_json(&state, row).await?);
    }
    Ok(Json(Value::Array(out)))
}

#[utoipa::path(get, path = "/api/storages/gcs", params(ProjectQuery), tag = "storages",
    responses((status = 200, description = "GCS import storages of a project")))]
pub async fn list_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<ProjectQuery>,
) -> ApiResult<Json<Value>> {
    let project = q
        .project
        .ok_or_else(|| ApiError::field("project", "query parameter \"project\" is required"))?;
    state.db.get_project(project).await?;
    let rows = state.db.list_import_storages(Some(GCS), Some(project)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(storage_json(&state, row).await?);
    }
    Ok(Json(Value::Array(out)))
}

#[utoipa::path(post, path = "/api/storages/gcs", request_body = GcsImportInput, tag = "storages",
    responses((status = 201, description = "Created (after a connection check); no sync is started"),
        (status = 400, description = "Invalid field or failed connection check")))]
pub async fn create_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<GcsImportInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let project = require_project(&state, input.project).await?;
    let fields = merge_fields(default_fields(), input)?;
    check_connection(&state, &fields).await?;
    let row = state.db.create_import_storage(project, GCS, &fields).await?;
    tracing::info!(
        storage.id = row.id,
        project.id = project,
        "created GCS import storage for gs://{}",
        row.bucket
    );
    Ok((StatusCode::CREATED, Json(storage_json(&state, &row).await?)))
}

#[utoipa::path(get, path = "/api/storages/gcs/{id}", params(("id" = i64, Path)), tag = "storages",
    responses((status = 200, description = "The storage"), (status = 404, description = "No such storage")))]
pub async fn get_gcs(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let row = gcs_storage(&state, id).await?;
    Ok(Json(storage_json(&state, &row).await?))
}

async fn update(state: &AppState, id: i64, input: GcsImportInput, full: bool) -> ApiResult<Json<Value>> {
    let row = gcs_storage(state, id).await?;
    let base = if full {
        // PUT replaces the settings, but a key that is not resent is kept
        // (it is write-only: clients cannot send it back).
        ImportStorageFields {
            credentials: row.credentials.clone(),
            ..default_fields()
        }
    } else {
        ImportStorageFields::from(&row)
    };
    if input.project.is_some_and(|p| p != row.project_id) {
        return Err(ApiError::field("project", "A storage cannot move to another project."));
    }
    let fields = merge_fields(base, input)?;
    check_connection(state, &fields).await?;
    let row = state.db.update_import_storage(id, &fields).await?;
    Ok(Json(storage_json(state, &row).await?))
}

#[utoipa::path(patch, path = "/api/storages/gcs/{id}", params(("id" = i64, Path)), request_body = GcsImportInput, tag = "storages",
    responses((status = 200, description = "Updated (after a connection check)")))]
pub async fn patch_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<GcsImportInput>,
) -> ApiResult<Json<Value>> {
    update(&state, id, input, false).await
}

#[utoipa::path(put, path = "/api/storages/gcs/{id}", params(("id" = i64, Path)), request_body = GcsImportInput, tag = "storages",
    responses((status = 200, description = "Replaced (after a connection check)")))]
pub async fn put_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<GcsImportInput>,
) -> ApiResult<Json<Value>> {
    update(&state, id, input, true).await
}

#[utoipa::path(delete, path = "/api/storages/gcs/{id}", params(("id" = i64, Path)), tag = "storages",
    responses((status = 204, description = "Deleted; its tasks stay")))]
pub async fn delete_gcs(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<StatusCode> {
    gcs_storage(&state, id).await?;
    state.db.delete_import_storage(id).await?;
    tracing::info!(storage.id = id, "deleted GCS import storage");
    Ok(StatusCode::NO_CONTENT)
}

/// The settings a validate/files call means: an existing storage's (when
/// `id` is given) with the body's fields over them.
async fn settings_for_check(
    state: &AppState,
    mut input: GcsImportInput,
) -> ApiResult<(ImportStorageFields, Option<i64>)> {
    let limit = input.limit.take();
    let base = match input.id {
        Some(id) => ImportStorageFields::from(&gcs_storage(state, id).await?),
        None => {
            require_project(state, input.project).await?;
            default_fields()
        }
    };
    Ok((merge_fields(base, input)?, limit))
}

#[utoipa::path(post, path = "/api/storages/gcs/validate", request_body = GcsImportInput, tag = "storages",
    responses((status = 200, description = "The connection works (empty body)"), (status = 400, description = "What is wrong")))]
pub async fn validate_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<GcsImportInput>,
) -> ApiResult<StatusCode> {
    let (fields, _) = settings_for_check(&state, input).await?;
    check_connection(&state, &fields).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(post, path = "/api/storages/gcs/files", request_body = GcsImportInput, tag = "storages",
    responses((status = 200, description = "{files: [{key, last_modified, size}]}; a null key marks a cut list")))]
pub async fn files_gcs(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<GcsImportInput>,
) -> ApiResult<Json<Value>> {
    let (fields, limit) = settings_for_check(&state, input).await?;
    let limit = limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "Must be between 1 and 10000."));
    }
    let store = state
        .storage_env
        .gcs(&fields_row(&fields))
        .await
        .map_err(|e| ApiError::body(e.to_string()))?;
    let prefix = normalize_prefix(&fields.prefix);
    let regex = compile_filter(&fields.regex_filter).map_err(|e| ApiError::field("regex_filter", e))?;
    let started = std::time::Instant::now();
    let mut files: Vec<Value> = Vec::new();
    let mut token = None;
    'pages: loop {
        let page = tokio::time::timeout(
            PREVIEW_TIMEOUT,
            store.list_page(&prefix, fields.recursive_scan, token, 1000),
        )
        .await
        .map_err(|_| ApiError::body("Listing the bucket timed out"))?
        .map_err(|e| ApiError::body(e.to_string()))?;
        for o in page.objects {
            if o.key.ends_with('/') || regex.as_ref().is_some_and(|r| !r.is_match(&o.key)) {
                continue;
            }
            if files.len() as i64 == limit {
                files.push(json!({"key": null, "last_modified": null, "size": null}));
                break 'pages;
            }
            files.push(json!({"key": o.key, "last_modified": o.updated, "size": o.size}));
        }
        if started.elapsed() > PREVIEW_TIMEOUT {
            files.push(json!({"key": "... storage scan timeout reached ...", "last_modified": null, "size": null}));
            break;
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(Json(json!({ "files": files })))
}

#[utoipa::path(post, path = "/api/storages/gcs/{id}/sync", params(("id" = i64, Path)), tag = "storages",
    responses((status = 200, description = "The storage, queued (or already queued/running: at most one sync per storage)")))]
pub async fn sync_gcs(State(state): State<AppState>, _user: AuthUser, PathId(id): PathId) -> ApiResult<Json<Value>> {
    let row = gcs_storage(&state, id).await?;
    let mut meta: Map<String, Value> = match stored_json(&row.meta)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    meta.insert("time_queued".into(), meta_time().into());
    let queued = state
        .db
        .enqueue_storage_sync(
            id,
            IMPORT_SYNC,
            &job::dedup_key(id),
            &job::payload(id),
            &Value::Object(meta).to_string(),
        )
        .await?;
    match queued {
        Some(job_id) => {
            tracing::info!(storage.id = id, job.id = job_id, "queued import sync");
            state.jobs_notify.notify_waiters();
        }
        None => tracing::info!(storage.id = id, "import sync already queued or running"),
    }
    let row = state.db.get_import_storage(id).await?;
    Ok(Json(storage_json(&state, &row).await?))
}
