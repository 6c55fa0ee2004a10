//! `/api/storages/export/gcs…`: Google Cloud Storage export ("target")
//! storages, as Label Studio's API (list, create, get, patch, put, delete,
//! validate, sync). Create checks that the bucket can be written, then
//! queues an export of the project's annotations; every later annotation
//! save is exported by a background job (see `labelport_sync::export_job`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use labelport_db::export_storages::{export_dedup_key, ExportStorageFields, ExportStorageRow};
use labelport_domain::ValidationErrors;
use labelport_storage::credentials::validate_service_account_json;
use labelport_storage::{ObjectStore, StorageError};
use labelport_sync::export::ExportFormat;
use labelport_sync::job::meta_time;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId, QueryParams};
use crate::state::AppState;
use crate::storages::{normalize_bucket, require_project, run_connection_check, ProjectQuery};
use crate::views::stored_json;

const GCS: &str = "gcs";

/// A GCS export storage as clients send it; every field optional so PATCH
/// can send only what changes. `google_application_credentials` is
/// write-only. (No `Debug`: it would print the key.)
#[derive(Default, Deserialize, ToSchema)]
pub struct GcsExportInput {
    /// For validate: an existing storage whose settings fill the gaps.
    pub id: Option<i64>,
    pub project: Option<i64>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// Stored for compatibility; not used by exports (as Label Studio).
    pub regex_filter: Option<String>,
    /// Stored for compatibility; not used by exports (as Label Studio).
    pub use_blob_urls: Option<bool>,
    /// Service-account key JSON; empty means Application Default Credentials.
    pub google_application_credentials: Option<String>,
    pub google_project_id: Option<String>,
    /// Delete an annotation's object when the annotation (or its task or
    /// project) is deleted. Default false.
    pub can_delete_objects: Option<bool>,
    /// `annotation` (default, as Label Studio): `<prefix>/<annotation id>`
    /// holding the annotation with its task; `task`: `<prefix>/<task id>.json`
    /// holding the task with all its annotations.
    pub export_format: Option<String>,
    /// Accepted for compatibility; storages are always synchronizable.
    pub synchronizable: Option<bool>,
}

fn default_fields() -> ExportStorageFields {
    ExportStorageFields {
        title: String::new(),
        description: String::new(),
        bucket: String::new(),
        prefix: String::new(),
        regex_filter: String::new(),
        use_blob_urls: false,
        google_project_id: String::new(),
        credentials: None,
        can_delete_objects: false,
        export_format: "annotation".into(),
    }
}

/// Applies `input` over `f` and checks every field (no I/O).
fn merge_fields(mut f: ExportStorageFields, input: GcsExportInput) -> Result<ExportStorageFields, ValidationErrors> {
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
    if let Some(v) = input.google_project_id {
        f.google_project_id = v;
    }
    if let Some(v) = input.google_application_credentials {
        f.credentials = (!v.trim().is_empty()).then_some(v);
    }
    if let Some(v) = input.can_delete_objects {
        f.can_delete_objects = v;
    }
    if let Some(v) = input.export_format {
        f.export_format = v;
    }
    if f.bucket.is_empty() {
        errors.add("bucket", "This field is required: the bucket name (without gs://).");
    } else if f.bucket.contains('/') {
        errors.add("bucket", "A bucket name has no '/'; put the folder in prefix.");
    }
    if ExportFormat::parse(&f.export_format).is_none() {
        errors.add(
            "export_format",
            format!("Must be one of {}.", ExportFormat::NAMES.join(", ")),
        );
    }
    if let Some(creds) = &f.credentials {
        if let Err(e) = validate_service_account_json(creds) {
            errors.add("google_application_credentials", e);
        }
    }
    errors.into_result().map(|()| f)
}

/// Checks that the bucket exists and can be written: writes a small probe
/// object under the prefix and deletes it. With `can_delete_objects` a
/// probe that cannot be deleted is an error too.
async fn check_connection(state: &AppState, f: &ExportStorageFields) -> ApiResult<()> {
    let prefix = f.prefix.trim_end_matches('/');
    let probe = format!(
        "{}{}.labelport-write-check-{}",
        prefix,
        if prefix.is_empty() { "" } else { "/" },
        uuid::Uuid::new_v4()
    );
    let check = async {
        let store = state
            .storage_env
            .gcs_bucket(&f.bucket, f.credentials.as_deref())
            .await?;
        store.check().await?;
        store
            .write(&probe, Bytes::from_static(b"{}"), "application/json")
            .await
            .map_err(|e| match e {
                StorageError::PermissionDenied(m) => {
                    StorageError::PermissionDenied(format!("cannot write to gs://{}: {m}", f.bucket))
                }
                other => other,
            })?;
        match store.delete(&probe).await {
            Ok(()) => Ok::<_, StorageError>(None),
            Err(e) if f.can_delete_objects => Ok(Some(format!(
                "can_delete_objects is on but objects in gs://{} cannot be deleted: {e}",
                f.bucket
            ))),
            Err(e) => {
                tracing::warn!(
                    "export check: the probe gs://{}/{probe} could not be deleted: {e}",
                    f.bucket
                );
                Ok(None)
            }
        }
    };
    run_connection_check(&f.bucket, check).await
}

/// The storage as Label Studio shows it; the credentials never appear.
async fn storage_json(state: &AppState, row: &ExportStorageRow) -> ApiResult<Value> {
    let mut row = row.clone();
    // A sync whose job gave up without recording a result shows as failed.
    if matches!(row.status.as_str(), "queued" | "in_progress") {
        if let Some(job_id) = row.last_sync_job.as_deref().and_then(|j| j.parse::<i64>().ok()) {
            if let Ok(job) = state.db.get_job(job_id).await {
                if job.status == "failed" && state.db.active_job(&export_dedup_key(row.id)).await?.is_none() {
                    // The job may have recorded its result after `row` was
                    // read: show that result whole, not a mix.
                    match state.db.get_export_storage(row.id).await {
                        Ok(fresh) => row = fresh,
                        Err(labelport_db::DbError::NotFound) => {}
                        Err(e) => return Err(e.into()),
                    }
                    if matches!(row.status.as_str(), "queued" | "in_progress")
                        && row.last_sync_job.as_deref() == Some(job_id.to_string().as_str())
                    {
                        row.status = "failed".into();
                        row.traceback = Some(job.last_error.unwrap_or_else(|| "The sync job failed.".into()));
                    }
                }
            }
        }
    }
    Ok(json!({
        "id": row.id,
        "type": row.storage_type,
        "synchronizable": true,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "regex_filter": row.regex_filter,
        "use_blob_urls": row.use_blob_urls,
        "google_project_id": row.google_project_id,
        "last_sync": row.last_sync,
        "last_sync_count": row.last_sync_count,
        "last_sync_job": row.last_sync_job,
        "status": row.status,
        "traceback": row.traceback,
        "meta": stored_json(&row.meta)?,
        "title": row.title,
        "description": row.description,
        "created_at": row.created_at,
        "can_delete_objects": row.can_delete_objects,
        "export_format": row.export_format,
        "project": row.project_id,
    }))
}

async fn gcs_storage(state: &AppState, id: i64) -> ApiResult<ExportStorageRow> {
    let row = state.db.get_export_storage(id).await?;
    if row.storage_type != GCS || row.project_id.is_none() {
        return Err(ApiError::not_found());
    }
    Ok(row)
}

/// Queues a full export sync and wakes the workers.
async fn queue_sync(state: &AppState, row: &ExportStorageRow) -> ApiResult<()> {
    let mut meta: Map<String, Value> = match stored_json(&row.meta)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    meta.insert("time_queued".into(), meta_time().into());
    state
        .db
        .request_export_sync(row.id, &Value::Object(meta).to_string())
        .await?;
    state.jobs_notify.notify_waiters();
    Ok(())
}

#[utoipa::path(get, path = "/api/storages/export/gcs", params(ProjectQuery), tag = "storages",
    responses((status = 200, description = "GCS export storages of a project")))]
pub async fn list_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<ProjectQuery>,
) -> ApiResult<Json<Value>> {
    let project = q
        .project
        .ok_or_else(|| ApiError::field("project", "query parameter \"project\" is required"))?;
    state.db.get_project(project).await?;
    let rows = state.db.list_export_storages(GCS, project).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(storage_json(&state, row).await?);
    }
    Ok(Json(Value::Array(out)))
}

#[utoipa::path(post, path = "/api/storages/export/gcs", request_body = GcsExportInput, tag = "storages",
    responses((status = 201, description = "Created after a write check; an export of the project's annotations is queued"),
        (status = 400, description = "Invalid field, missing bucket or no write access")))]
pub async fn create_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<GcsExportInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let project = require_project(&state, input.project).await?;
    let fields = merge_fields(default_fields(), input)?;
    check_connection(&state, &fields).await?;
    let row = state.db.create_export_storage(project, GCS, &fields).await?;
    tracing::info!(
        storage.id = row.id,
        project.id = project,
        "created GCS export storage for gs://{}",
        row.bucket
    );
    queue_sync(&state, &row).await?;
    let row = state.db.get_export_storage(row.id).await?;
    Ok((StatusCode::CREATED, Json(storage_json(&state, &row).await?)))
}

#[utoipa::path(get, path = "/api/storages/export/gcs/{id}", params(("id" = i64, Path)), tag = "storages",
    responses((status = 200, description = "The storage"), (status = 404, description = "No such storage")))]
pub async fn get_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let row = gcs_storage(&state, id).await?;
    Ok(Json(storage_json(&state, &row).await?))
}

async fn update(state: &AppState, id: i64, input: GcsExportInput, full: bool) -> ApiResult<Json<Value>> {
    let row = gcs_storage(state, id).await?;
    if input.project.is_some_and(|p| Some(p) != row.project_id) {
        return Err(ApiError::field("project", "A storage cannot move to another project."));
    }
    let base = if full {
        // PUT replaces the settings, but a key that is not resent is kept
        // (it is write-only: clients cannot send it back).
        ExportStorageFields {
            credentials: row.credentials.clone(),
            ..default_fields()
        }
    } else {
        ExportStorageFields::from(&row)
    };
    let fields = merge_fields(base, input)?;
    // Label Studio does not re-check on update; a new bucket, prefix or key
    // is checked here so a typo is caught now, not at the next save.
    if fields.bucket != row.bucket
        || fields.prefix != row.prefix
        || fields.credentials != row.credentials
        || (fields.can_delete_objects && !row.can_delete_objects)
    {
        check_connection(state, &fields).await?;
    }
    let row = state.db.update_export_storage(id, &fields).await?;
    Ok(Json(storage_json(state, &row).await?))
}

#[utoipa::path(patch, path = "/api/storages/export/gcs/{id}", params(("id" = i64, Path)), request_body = GcsExportInput, tag = "storages",
    responses((status = 200, description = "Updated (a new bucket, prefix or key is checked first)")))]
pub async fn patch_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<GcsExportInput>,
) -> ApiResult<Json<Value>> {
    update(&state, id, input, false).await
}

#[utoipa::path(put, path = "/api/storages/export/gcs/{id}", params(("id" = i64, Path)), request_body = GcsExportInput, tag = "storages",
    responses((status = 200, description = "Replaced (a new bucket, prefix or key is checked first)")))]
pub async fn put_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<GcsExportInput>,
) -> ApiResult<Json<Value>> {
    update(&state, id, input, true).await
}

#[utoipa::path(delete, path = "/api/storages/export/gcs/{id}", params(("id" = i64, Path)), tag = "storages",
    responses((status = 204, description = "Deleted; the objects it wrote stay")))]
pub async fn delete_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    gcs_storage(&state, id).await?;
    state.db.delete_export_storage(id).await?;
    tracing::info!(storage.id = id, "deleted GCS export storage");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/storages/export/gcs/validate", request_body = GcsExportInput, tag = "storages",
    responses((status = 200, description = "The bucket exists and can be written (empty body)"),
        (status = 400, description = "What is wrong")))]
pub async fn validate_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<GcsExportInput>,
) -> ApiResult<StatusCode> {
    let base = match input.id {
        Some(id) => ExportStorageFields::from(&gcs_storage(&state, id).await?),
        None => {
            require_project(&state, input.project).await?;
            default_fields()
        }
    };
    let fields = merge_fields(base, input)?;
    check_connection(&state, &fields).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(post, path = "/api/storages/export/gcs/{id}/sync", params(("id" = i64, Path)), tag = "storages",
    responses((status = 200, description = "The storage, queued: the sync writes what is new or changed since the last export")))]
pub async fn sync_gcs_export(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let row = gcs_storage(&state, id).await?;
    queue_sync(&state, &row).await?;
    tracing::info!(storage.id = id, "queued export sync");
    let row = state.db.get_export_storage(id).await?;
    Ok(Json(storage_json(&state, &row).await?))
}
