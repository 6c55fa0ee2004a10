//! Who may call which route: one table ([`rule`]) that names, for every
//! route of the API, the role and the project membership it needs, and the
//! middleware ([`authorize`]) that enforces it before any handler runs.
//! A route missing from the table is refused (and a test fails), so a new
//! route cannot be forgotten.
//!
//! Roles (`labelport_domain::access::Role`): admins may do everything on
//! every project; managers and annotators act only in projects they are
//! members of, managers on everything there, annotators only to read and
//! label. Answers: no credentials 401; a project (or anything in it) the
//! caller is not a member of is 404, as if it did not exist; a member, or a
//! signed-in user, whose role is too weak gets 403.
//!
//! Where the project comes from ([`Via`]): the path (a project, task,
//! annotation, prediction or storage id), the `project` or `task` query
//! parameter, or the JSON body (`project`, `task`, or the `id` of a storage
//! to validate). Bodies of those few routes are small; the middleware reads
//! them and hands them on unchanged.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use labelport_db::{DbError, UserRow};
use labelport_domain::access::Role;
use labelport_domain::storage::Direction;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{authenticate, AuthUser};
use crate::state::AppState;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, signed in or not (health, login, logout).
    Public,
    /// A signed-in user with at least this role, on no particular project.
    Role(Role),
    /// A member of the project the request names (admins always), with at
    /// least this role.
    Project(Via, Role),
    /// No Labelport user: a Pub/Sub push request, authorised by the handler
    /// with its OIDC token (Google-signed, for this endpoint, of the
    /// storage's `pubsub_push_service_account`); see `notifications`.
    PubSubPush,
}

/// Where a project-scoped request names its project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `{id}` is a project.
    PathProject,
    /// `{id}` is a task.
    PathTask,
    /// `{id}` is an annotation; an annotator may change only their own.
    PathAnnotation,
    /// `{id}` is a prediction.
    PathPrediction,
    /// `{id}` is a storage of this direction.
    PathStorage(Direction),
    /// `?project=`; without it, only admins (a list across projects).
    QueryProject,
    /// `?task=` or `?project=`; without either, only admins.
    QueryTaskOrProject,
    /// The body's `project`.
    BodyProject,
    /// The body's `task`.
    BodyTask,
    /// The body's `id` (a storage of this direction to check again), else
    /// its `project`.
    BodyStorageOrProject(Direction),
}

use Role::{Admin, Annotator, Manager};
use Via::*;

/// The need of every route, by method and path template (as the router and
/// the OpenAPI document write them). None: not a route of ours.
pub fn rule(method: &Method, path: &str) -> Option<Need> {
    let m = method.as_str();
    let need = match (m, path) {
        ("GET", "/health") | ("POST", "/api/auth/login") | ("POST", "/api/auth/logout") => Need::Public,
        // Prometheus scrapes with an admin's token (`authorization: {type: Token}`).
        ("GET", "/metrics") => Need::Role(Admin),
        // The caller and their own token.
        ("GET", "/api/current-user/whoami") => Need::Role(Annotator),
        ("POST", "/api/current-user/reset-token") => Need::Role(Annotator),
        // Users: managers look them up to add members; admins manage them.
        ("GET", "/api/users") | ("GET", "/api/users/{id}") => Need::Role(Manager),
        ("POST", "/api/users") | ("PATCH", "/api/users/{id}") | ("DELETE", "/api/users/{id}") => Need::Role(Admin),
        // Projects: the list shows each caller the projects they may see.
        ("GET", "/api/projects") => Need::Role(Annotator),
        ("POST", "/api/projects") => Need::Role(Manager),
        ("GET", "/api/projects/{id}") => Need::Project(PathProject, Annotator),
        ("PATCH", "/api/projects/{id}") | ("DELETE", "/api/projects/{id}") => Need::Project(PathProject, Manager),
        ("GET", "/api/projects/{id}/members") => Need::Project(PathProject, Manager),
        ("POST", "/api/projects/{id}/members") | ("DELETE", "/api/projects/{id}/members") => {
            Need::Project(PathProject, Manager)
        }
        ("POST", "/api/projects/{id}/import") | ("GET", "/api/projects/{id}/export") => {
            Need::Project(PathProject, Manager)
        }
        ("GET", "/api/projects/{id}/next") | ("GET", "/api/projects/{id}/tasks") => {
            Need::Project(PathProject, Annotator)
        }
        ("DELETE", "/api/projects/{id}/tasks") => Need::Project(PathProject, Manager),
        // Tasks: annotators read them; managers change them.
        ("GET", "/api/tasks") => Need::Project(QueryProject, Annotator),
        ("POST", "/api/tasks") => Need::Project(BodyProject, Manager),
        ("GET", "/api/tasks/{id}") => Need::Project(PathTask, Annotator),
        ("PATCH", "/api/tasks/{id}") | ("DELETE", "/api/tasks/{id}") => Need::Project(PathTask, Manager),
        // Annotations: annotators label; they change only their own.
        ("GET", "/api/tasks/{id}/annotations") | ("POST", "/api/tasks/{id}/annotations") => {
            Need::Project(PathTask, Annotator)
        }
        ("GET", "/api/annotations/{id}") | ("PATCH", "/api/annotations/{id}") | ("DELETE", "/api/annotations/{id}") => {
            Need::Project(PathAnnotation, Annotator)
        }
        // Predictions: annotators see them; managers (or their scripts) write them.
        ("GET", "/api/predictions") => Need::Project(QueryTaskOrProject, Annotator),
        ("POST", "/api/predictions") => Need::Project(BodyTask, Manager),
        ("GET", "/api/predictions/{id}") => Need::Project(PathPrediction, Annotator),
        ("PATCH", "/api/predictions/{id}") | ("DELETE", "/api/predictions/{id}") => {
            Need::Project(PathPrediction, Manager)
        }
        // Storages: managers of the project.
        ("GET", "/api/storages/types") | ("GET", "/api/storages/export/types") => Need::Role(Manager),
        ("GET", "/api/storages") => Need::Project(QueryProject, Manager),
        ("GET", "/api/storages/{kind}") | ("GET", "/api/storages/export/{kind}") => {
            Need::Project(QueryProject, Manager)
        }
        ("POST", "/api/storages/{kind}") | ("POST", "/api/storages/export/{kind}") => {
            Need::Project(BodyProject, Manager)
        }
        ("POST", "/api/storages/{kind}/validate")
        | ("POST", "/api/storages/{kind}/files")
        | ("POST", "/api/storages/{kind}/cors") => Need::Project(BodyStorageOrProject(Direction::Import), Manager),
        ("POST", "/api/storages/export/{kind}/validate") => {
            Need::Project(BodyStorageOrProject(Direction::Export), Manager)
        }
        (_, "/api/storages/{kind}/{id}")
        | ("POST", "/api/storages/{kind}/{id}/sync")
        | ("POST", "/api/storages/{kind}/{id}/cors") => Need::Project(PathStorage(Direction::Import), Manager),
        (_, "/api/storages/export/{kind}/{id}") | ("POST", "/api/storages/export/{kind}/{id}/sync") => {
            Need::Project(PathStorage(Direction::Export), Manager)
        }
        // Media: whoever may see the task or project.
        ("GET", "/tasks/{id}/resolve") | ("GET", "/tasks/{id}/presign") => Need::Project(PathTask, Annotator),
        // The bucket-level rule (any object of the project's buckets): for
        // those who manage the project; annotators reach media through
        // their tasks only.
        ("GET", "/projects/{id}/resolve") | ("GET", "/projects/{id}/presign") => Need::Project(PathProject, Manager),
        ("GET", "/api/openapi.json") => Need::Public,
        // Bucket notifications: the push subscription's own token.
        ("POST", "/api/storages/{kind}/{id}/notifications") => Need::PubSubPush,
        _ => return None,
    };
    Some(need)
}

fn forbidden() -> ApiError {
    ApiError::Forbidden("You do not have permission to perform this action.".into())
}

/// The middleware: finds the route's [`Need`], authenticates the caller
/// (the user goes into the request for [`AuthUser`]) and checks role and
/// membership. Runs after routing (`route_layer`), so unknown routes and
/// methods keep their 404/405.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, request, rule).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Authenticates and authorises `request` by the [`Need`] that `rules`
/// gives its route (the API's [`rule`], or the web pages' own table), and
/// hands it on with the caller as [`AuthUser`]. Errors are the API's: 401
/// without credentials, 404 for a project the caller may not see, 403 for
/// a role too weak.
pub async fn check(
    state: &AppState,
    request: Request,
    rules: fn(&Method, &str) -> Option<Need>,
) -> Result<Request, ApiError> {
    let (mut parts, body) = request.into_parts();
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // HEAD is served by the GET route.
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    let Some(need) = rules(&method, &template) else {
        tracing::error!(route = %template, %method, "route has no access rule; refused");
        return Err(forbidden());
    };
    // The media origin serves signed task media and nothing else.
    if let Some(media) = &state.media {
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            // HTTP/2 names the host in `:authority`, not `Host`.
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if media.is_media_host(host) {
            return if signed_media(state, &parts, &template) {
                Ok(Request::from_parts(parts, body))
            } else {
                Err(ApiError::not_found())
            };
        }
    }
    if matches!(need, Need::Public | Need::PubSubPush) {
        return Ok(Request::from_parts(parts, body));
    }
    let user = authenticate(&mut parts, state).await?;
    let role = user.role();
    let body = match need {
        Need::Public | Need::PubSubPush => body,
        Need::Role(min) => {
            if role < min {
                return Err(forbidden());
            }
            body
        }
        Need::Project(via, min) => {
            let (project, body) = project_of(state, &mut parts, body, via, &user).await?;
            match project {
                Some(project) => {
                    if role != Admin && !state.db.is_member(project, user.id).await? {
                        return Err(hidden(via));
                    }
                    if role < min {
                        return Err(forbidden());
                    }
                }
                // Lists across projects: admins only.
                None if matches!(via, QueryProject | QueryTaskOrProject) && role != Admin => {
                    return Err(match via {
                        QueryProject => ApiError::field("project", "This query parameter is required."),
                        _ => ApiError::field("task", "Give task or project."),
                    });
                }
                // Nothing named (a body without the field): the handler
                // answers its 400; a role check still applies.
                None if role < min => return Err(forbidden()),
                None => {}
            }
            body
        }
    };
    parts.extensions.insert(AuthUser(user));
    Ok(Request::from_parts(parts, body))
}

/// How a project the caller may not see is answered: as if it did not
/// exist (404 for a path, the body field's own "does not exist" 400).
fn hidden(via: Via) -> ApiError {
    match via {
        BodyProject | BodyStorageOrProject(_) => ApiError::field("project", "Invalid pk - object does not exist."),
        BodyTask => ApiError::field("task", "Invalid pk - object does not exist."),
        _ => ApiError::not_found(),
    }
}

/// Whether a request on the media origin is a task resolve URL with a
/// valid, unexpired signature for that task and URI (`media_origin.rs`).
fn signed_media(state: &AppState, parts: &axum::http::request::Parts, template: &str) -> bool {
    let Some(media) = &state.media else { return false };
    if !matches!(template, "/tasks/{id}/resolve" | "/tasks/{id}/presign") {
        return false;
    }
    let Some(task) = path_id(parts) else { return false };
    let Ok(axum::extract::Query(pairs)) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
    else {
        return false;
    };
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (Some(fileuri), Some(exp), Some(sig)) = (get("fileuri"), get("exp"), get("sig")) else {
        return false;
    };
    let Ok(exp) = exp.parse::<u64>() else { return false };
    let uri = labelport_domain::resolve::decode_fileuri(fileuri);
    media.verify(task, &uri, exp, sig, std::time::SystemTime::now())
}

fn path_id(parts: &axum::http::request::Parts) -> Option<i64> {
    let path = parts.uri.path().trim_end_matches('/');
    let template = parts.extensions.get::<MatchedPath>()?.as_str();
    // `{id}` is the segment at the template's `{id}` position.
    let position = template.split('/').position(|s| s == "{id}")?;
    path.split('/').nth(position)?.parse().ok()
}

fn query_i64(parts: &axum::http::request::Parts, name: &str) -> Option<i64> {
    let axum::extract::Query(pairs) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Largest body the middleware reads to find a project (storage, task and
/// prediction bodies are far smaller).
const PEEK_LIMIT: usize = crate::SMALL_BODY_BYTES;

/// The project a request names, per `via`; the body is read (and given
/// back) only for body-scoped routes. A path id that names nothing is 404.
async fn project_of(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    body: Body,
    via: Via,
    user: &UserRow,
) -> Result<(Option<i64>, Body), ApiError> {
    let db = &state.db;
    let not_found = |e: DbError| match e {
        DbError::NotFound => ApiError::not_found(),
        other => other.into(),
    };
    let path_or_404 = || path_id(parts).ok_or_else(ApiError::not_found);
    let project = match via {
        PathProject => {
            let id = path_or_404()?;
            db.get_project(id).await.map_err(not_found)?;
            Some(id)
        }
        PathTask => Some(db.get_task(path_or_404()?).await.map_err(not_found)?.project_id),
        PathAnnotation => {
            let a = db.get_annotation(path_or_404()?).await.map_err(not_found)?;
            let own = a.completed_by == Some(user.id);
            let changes = !matches!(parts.method, Method::GET | Method::HEAD);
            if changes && !own && user.role() == Annotator && db.is_member(a.project_id, user.id).await? {
                return Err(forbidden());
            }
            Some(a.project_id)
        }
        PathPrediction => Some(db.get_prediction(path_or_404()?).await.map_err(not_found)?.project_id),
        PathStorage(direction) => {
            let s = db.get_storage(direction, path_or_404()?).await.map_err(not_found)?;
            Some(s.project_id.ok_or_else(ApiError::not_found)?)
        }
        QueryProject => query_i64(parts, "project"),
        QueryTaskOrProject => match query_i64(parts, "task") {
            Some(task) => Some(db.get_task(task).await.map_err(not_found)?.project_id),
            None => query_i64(parts, "project"),
        },
        BodyProject | BodyTask | BodyStorageOrProject(_) => {
            let bytes = tokio::time::timeout(crate::REQUEST_TIMEOUT, axum::body::to_bytes(body, PEEK_LIMIT))
                .await
                .map_err(|_| ApiError::body("The request body did not arrive in time."))?
                .map_err(|e| ApiError::body(format!("Could not read the request body: {e}")))?;
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let project = match via {
                BodyTask => match json.get("task").and_then(Value::as_i64) {
                    Some(task) => match db.get_task(task).await {
                        Ok(t) => Some(t.project_id),
                        // Unknown: the handler says so.
                        Err(DbError::NotFound) => None,
                        Err(e) => return Err(e.into()),
                    },
                    None => None,
                },
                BodyStorageOrProject(direction) => match json.get("id").and_then(Value::as_i64) {
                    Some(id) => match db.get_storage(direction, id).await {
                        Ok(s) => s.project_id,
                        Err(DbError::NotFound) => None,
                        Err(e) => return Err(e.into()),
                    },
                    None => json.get("project").and_then(Value::as_i64),
                },
                _ => json.get("project").and_then(Value::as_i64),
            };
            // A project that does not exist is the handler's 400 to give.
            let project = match project {
                Some(p) => match db.get_project(p).await {
                    Ok(_) => Some(p),
                    Err(DbError::NotFound) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            return Ok((project, Body::from(bytes)));
        }
    };
    Ok((project, body))
}
