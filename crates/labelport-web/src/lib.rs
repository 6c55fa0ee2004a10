//! Labelport's web pages, served by `labelport serve` next to the API:
//! sign-in, the projects list, project create/edit, the data manager and
//! the labeling page with Label Studio's own editor.
//!
//! Pages are rendered on the server from Jinja templates (`minijinja`,
//! auto-escaped) and use a little plain JavaScript that calls the same REST
//! API as the SDK, with the session cookie and the session's CSRF token
//! (`labelport_api::extract::csrf_token`). No Node.js runs at any time: the
//! editor's two files are fetched and checked by `build.rs` and embedded.
//!
//! Access: every page has a row in [`rule`], enforced by the API's own
//! middleware (`labelport_api::access::check`), so pages need exactly the
//! roles and project membership of the API calls they stand for. A page
//! that needs a signed-in user sends a browser without a session to
//! `/user/login?next=…`; other refusals are HTML error pages with the API's
//! status (404 for a project the user may not see, 403 for a role too weak).

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use labelport_api::access::{Need, Via};
use labelport_api::error::ApiError;
use labelport_api::AppState;
use labelport_domain::access::Role::{Annotator, Manager};

pub mod assets;
mod pages;
mod render;

pub use render::PageError;

/// Every page route (method GET), as the router writes it. The access test
/// walks this list: each must have a [`rule`].
pub const ROUTES: &[&str] = &[
    "/",
    "/user/login",
    "/projects",
    "/projects/new",
    "/projects/{id}",
    "/projects/{id}/data",
    "/projects/{id}/settings",
    "/projects/{id}/settings/storage",
    "/projects/{id}/label",
    "/static/{file}",
    "/static/lsf/{version}/{file}",
];

/// The need of every page, by method and route (see the API's
/// `labelport_api::access::rule` for the meaning). None: not a page.
pub fn rule(method: &Method, path: &str) -> Option<Need> {
    if method != Method::GET {
        return None;
    }
    let need = match path {
        // The sign-in page, the redirect to the projects and the static
        // files (the app's style and script, the editor) are for anyone.
        "/" | "/user/login" | "/static/{file}" | "/static/lsf/{version}/{file}" => Need::Public,
        // Each user sees the projects they are a member of (admins: all).
        "/projects" => Need::Role(Annotator),
        // As `POST /api/projects`.
        "/projects/new" => Need::Role(Manager),
        // As `GET /api/projects/{id}` and `/api/tasks?project=`.
        "/projects/{id}" | "/projects/{id}/data" => Need::Project(Via::PathProject, Annotator),
        // As `PATCH /api/projects/{id}`.
        "/projects/{id}/settings" => Need::Project(Via::PathProject, Manager),
        // As `GET /api/storages?project=` and the storage routes.
        "/projects/{id}/settings/storage" => Need::Project(Via::PathProject, Manager),
        // As `GET /api/projects/{id}/next` and `POST /api/tasks/{id}/annotations`.
        "/projects/{id}/label" => Need::Project(Via::PathProject, Annotator),
        _ => return None,
    };
    Some(need)
}

/// The pages' router; the application merges it beside the API's routes
/// (`labelport_api::app_with_pages`).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/projects") }))
        .route("/user/login", get(pages::login))
        .route("/projects", get(pages::projects))
        .route("/projects/new", get(pages::new_project))
        .route("/projects/{id}", get(pages::project_home))
        .route("/projects/{id}/data", get(pages::data_manager))
        .route("/projects/{id}/settings", get(pages::project_settings))
        .route("/projects/{id}/settings/storage", get(pages::storage_settings))
        .route("/projects/{id}/label", get(pages::label))
        .route("/static/{file}", get(assets::app_file))
        .route("/static/lsf/{version}/{file}", get(assets::editor_file))
        .route_layer(axum::middleware::from_fn_with_state(state, authorize_pages))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            labelport_api::REQUEST_TIMEOUT,
        ))
}

/// The pages' access middleware: the API's check with the pages' table;
/// a browser without a session goes to the sign-in page and comes back.
async fn authorize_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let back = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    match labelport_api::access::check(&state, request, rule).await {
        Ok(request) => next.run(request).await,
        Err(ApiError::Unauthorized(_)) => {
            Redirect::to(&format!("/user/login?next={}", pages::encode_component(&back))).into_response()
        }
        Err(e) => PageError::from(e).into_response(),
    }
}
