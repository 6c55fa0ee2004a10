//! `GET /api/projects/{id}/export`: the project's tasks as one JSON array,
//! streamed page by page (keyset on task id) so memory does not grow with
//! the project.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use labelport_db::Db;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, PathId, QueryParams};
use crate::state::AppState;
use crate::tasks::{render_tasks, RenderCtx};
use crate::views::first_data_key;

const EXPORT_PAGE: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Only `JSON` is supported (any letter case).
    #[serde(rename = "exportType")]
    #[param(pattern = "^[Jj][Ss][Oo][Nn]$")]
    pub export_type_camel: Option<String>,
    /// The same as `exportType`.
    #[param(pattern = "^[Jj][Ss][Oo][Nn]$")]
    pub export_type: Option<String>,
    /// Include tasks without annotations (default false, as Label Studio):
    /// `true`, `false`, `1` or `0`.
    #[param(pattern = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0|)$")]
    pub download_all_tasks: Option<String>,
}

fn truthy(v: Option<&str>) -> Result<bool, ApiError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::field(
            "download_all_tasks",
            format!("Expected true or false, got \"{other}\"."),
        )),
    }
}

struct Cursor {
    db: Db,
    project_id: i64,
    after_id: i64,
    only_annotated: bool,
    first_key: Option<String>,
    wrote_any: bool,
    finished: bool,
}

async fn next_chunk(mut c: Cursor) -> Result<Option<(Bytes, Cursor)>, std::io::Error> {
    if c.finished {
        return Ok(None);
    }
    let rows =
        c.db.tasks_after(c.project_id, c.after_id, EXPORT_PAGE, c.only_annotated)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut buf = Vec::with_capacity(rows.len() * 256);
    if c.after_id == 0 && !c.wrote_any {
        buf.push(b'[');
    }
    if rows.is_empty() {
        buf.push(b']');
        c.finished = true;
        return Ok(Some((Bytes::from(buf), c)));
    }
    // Exports carry the stored URIs, not resolve URLs (as Label Studio).
    let ctx = RenderCtx {
        first_key: c.first_key.clone(),
        ..Default::default()
    };
    let rendered = render_tasks(&c.db, &rows, &ctx)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    for task in rendered {
        if c.wrote_any {
            buf.push(b',');
        }
        serde_json::to_writer(&mut buf, &task).map_err(std::io::Error::other)?;
        c.wrote_any = true;
    }
    c.after_id = rows.last().map(|r| r.id).unwrap_or(c.after_id);
    Ok(Some((Bytes::from(buf), c)))
}

#[utoipa::path(get, path = "/api/projects/{id}/export", params(("id" = i64, Path), ExportQuery), tag = "projects",
    responses((status = 200, description = "JSON array of tasks with annotations and predictions, streamed")))]
pub async fn export_project(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
    QueryParams(q): QueryParams<ExportQuery>,
) -> ApiResult<Response> {
    let format = q.export_type_camel.or(q.export_type).unwrap_or_else(|| "JSON".into());
    if !format.eq_ignore_ascii_case("JSON") {
        return Err(ApiError::field(
            "exportType",
            format!("Export type \"{format}\" is not supported; use JSON."),
        ));
    }
    let all = truthy(q.download_all_tasks.as_deref())?;
    let project = state.db.get_project(id).await?;
    let cursor = Cursor {
        db: state.db.clone(),
        project_id: id,
        after_id: 0,
        only_annotated: !all,
        first_key: first_data_key(&project.label_config),
        wrote_any: false,
        finished: false,
    };
    let stream = futures::stream::try_unfold(cursor, next_chunk);
    let filename = format!("project-{id}-at-{}.json", chrono::Utc::now().format("%Y-%m-%d-%H-%M"));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        )
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
