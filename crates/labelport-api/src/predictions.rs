//! `/api/predictions`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use labelport_db::predictions::PredictionFilter;
use labelport_domain::import::{parse_prediction, NewPrediction};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, PathId, QueryParams};
use crate::state::AppState;
use crate::views::{prediction_json, stored_json};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictionQuery {
    pub task: Option<i64>,
    pub project: Option<i64>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Predictions per page (default 1000, at most 10000); the answer stays
    /// a plain list, as Label Studio's.
    #[param(minimum = 1, maximum = 10000)]
    pub page_size: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PredictionInput {
    /// The task (required to create).
    pub task: Option<i64>,
    /// A list of result objects; null or absent keeps the stored one.
    #[schema(value_type = Option<Vec<Object>>)]
    pub result: Option<Value>,
    pub score: Option<f64>,
    pub model_version: Option<String>,
}

fn to_new(result: Value, score: Option<f64>, model_version: Option<String>) -> ApiResult<NewPrediction> {
    let raw = json!({"result": result, "score": score, "model_version": model_version});
    parse_prediction(&raw).map_err(|e| ApiError::field("result", e))
}

#[utoipa::path(get, path = "/api/predictions", params(PredictionQuery), tag = "predictions",
    responses((status = 200, description = "Predictions, filtered by task or project")))]
pub async fn list_predictions(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<PredictionQuery>,
) -> ApiResult<Json<Value>> {
    let filter = match (q.task, q.project) {
        (Some(t), _) => PredictionFilter::Task(t),
        (None, Some(p)) => PredictionFilter::Project(p),
        (None, None) => PredictionFilter::All,
    };
    let (page, size) = crate::projects::page_window(q.page, q.page_size, 1000)?;
    let rows = state.db.list_predictions(filter, (page - 1) * size, size).await?;
    Ok(Json(Value::Array(
        rows.iter().map(prediction_json).collect::<Result<_, _>>()?,
    )))
}

#[utoipa::path(post, path = "/api/predictions", request_body = PredictionInput, tag = "predictions",
    responses((status = 201, description = "The created prediction")))]
pub async fn create_prediction(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(input): JsonBody<PredictionInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let task = input
        .task
        .ok_or_else(|| ApiError::field("task", "This field is required."))?;
    let new = to_new(
        input.result.unwrap_or_else(|| json!([])),
        input.score,
        input.model_version,
    )?;
    let row = match state.db.create_prediction(task, &new).await {
        Err(labelport_db::DbError::NotFound) => {
            return Err(ApiError::field(
                "task",
                format!("Invalid pk \"{task}\" - object does not exist."),
            ))
        }
        other => other?,
    };
    Ok((StatusCode::CREATED, Json(prediction_json(&row)?)))
}

#[utoipa::path(get, path = "/api/predictions/{id}", params(("id" = i64, Path)), tag = "predictions",
    responses((status = 200, description = "The prediction")))]
pub async fn get_prediction(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(prediction_json(&state.db.get_prediction(id).await?)?))
}

#[utoipa::path(patch, path = "/api/predictions/{id}", params(("id" = i64, Path)), request_body = PredictionInput, tag = "predictions",
    responses((status = 200, description = "The updated prediction")))]
pub async fn patch_prediction(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    JsonBody(input): JsonBody<PredictionInput>,
) -> ApiResult<Json<Value>> {
    let current = state.db.get_prediction(id).await?;
    let result = match input.result {
        Some(r) => r,
        None => stored_json(&current.result)?,
    };
    let new = to_new(
        result,
        input.score.or(current.score),
        input.model_version.or(Some(current.model_version)),
    )?;
    Ok(Json(prediction_json(&state.db.update_prediction(id, &new).await?)?))
}

#[utoipa::path(delete, path = "/api/predictions/{id}", params(("id" = i64, Path)), tag = "predictions",
    responses((status = 204, description = "Deleted")))]
pub async fn delete_prediction(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.db.delete_prediction(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
