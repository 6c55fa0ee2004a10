//! `/api/tasks/{id}/annotations` and `/api/annotations/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use labelport_db::annotations::AnnotationFields;
use labelport_domain::import::validate_result;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId};
use crate::state::AppState;
use crate::views::annotation_json;

/// An annotation as sent by clients; omitted fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AnnotationInput {
    /// A list of result objects (regions, choices, …); null or absent
    /// keeps the stored one (an empty list on create).
    #[schema(value_type = Option<Vec<Object>>)]
    pub result: Option<Value>,
    pub was_cancelled: Option<bool>,
    pub ground_truth: Option<bool>,
    pub lead_time: Option<f64>,
}

fn checked_result(result: Option<Value>) -> ApiResult<Option<String>> {
    match result {
        None => Ok(None),
        Some(r) => {
            validate_result(&r).map_err(|e| ApiError::field("result", e))?;
            Ok(Some(r.to_string()))
        }
    }
}

#[utoipa::path(get, path = "/api/tasks/{id}/annotations", params(("id" = i64, Path)), tag = "annotations",
    responses((status = 200, description = "The task's annotations")))]
pub async fn list_annotations(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(task_id): PathId,
) -> ApiResult<Json<Value>> {
    state.db.get_task(task_id).await?;
    let rows = state.db.annotations_of_task(task_id).await?;
    let items = rows
        .iter()
        .map(|r| annotation_json(r, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Value::Array(items)))
}

#[utoipa::path(post, path = "/api/tasks/{id}/annotations", params(("id" = i64, Path)), request_body = AnnotationInput, tag = "annotations",
    responses((status = 201, description = "The created annotation"), (status = 400, description = "result is not a list of objects")))]
pub async fn create_annotation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    PathId(task_id): PathId,
    JsonBody(input): JsonBody<AnnotationInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let result = checked_result(input.result)?.unwrap_or_else(|| "[]".into());
    let fields = AnnotationFields {
        result,
        was_cancelled: input.was_cancelled.unwrap_or(false),
        ground_truth: input.ground_truth.unwrap_or(false),
        lead_time: input.lead_time,
    };
    let row = state.db.create_annotation(task_id, &fields, user.id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    tracing::info!(annotation.id = row.id, task.id = task_id, "created annotation");
    Ok((StatusCode::CREATED, Json(annotation_json(&row, Some(&user.username))?)))
}

#[utoipa::path(get, path = "/api/annotations/{id}", params(("id" = i64, Path)), tag = "annotations",
    responses((status = 200, description = "The annotation"), (status = 404, description = "No such annotation")))]
pub async fn get_annotation(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(annotation_json(&state.db.get_annotation(id).await?, None)?))
}

#[utoipa::path(patch, path = "/api/annotations/{id}", params(("id" = i64, Path)), request_body = AnnotationInput, tag = "annotations",
    responses((status = 200, description = "The updated annotation")))]
pub async fn patch_annotation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<AnnotationInput>,
) -> ApiResult<Json<Value>> {
    let current = state.db.get_annotation(id).await?;
    let fields = AnnotationFields {
        result: checked_result(input.result)?.unwrap_or(current.result),
        was_cancelled: input.was_cancelled.unwrap_or(current.was_cancelled),
        ground_truth: input.ground_truth.unwrap_or(current.ground_truth),
        lead_time: input.lead_time.or(current.lead_time),
    };
    let row = state.db.update_annotation(id, &fields, user.id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    Ok(Json(annotation_json(&row, None)?))
}

#[utoipa::path(delete, path = "/api/annotations/{id}", params(("id" = i64, Path)), tag = "annotations",
    responses((status = 204, description = "Deleted")))]
pub async fn delete_annotation(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.db.delete_annotation(id).await?;
    // Wake the workers: the write may have queued export jobs.
    state.jobs_notify.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}
