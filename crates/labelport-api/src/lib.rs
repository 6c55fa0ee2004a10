//! The HTTP API: axum routers per resource, Label Studio-compatible paths
//! and shapes, one error type mapped once to HTTP, and the OpenAPI document
//! generated from the handlers' annotations.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router, ServiceExt};
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod access;
pub mod annotations;
pub mod auth;
mod connection_check;
pub mod error;
pub mod export;
pub mod extract;
pub mod media_origin;
pub mod metrics;
pub mod misc;
pub mod notifications;
pub mod predictions;
pub mod projects;
pub mod resolve;
pub mod signing;
pub mod state;
pub mod storages;
pub mod tasks;
pub mod users;
pub mod views;

pub use state::AppState;

/// Largest request body of a bulk task import (`POST
/// /api/projects/{id}/import`): a few hundred thousand tasks.
pub const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;
/// Largest request body of every other route (an annotation with large
/// polygons, a pasted key, a project's config).
pub const SMALL_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest body of a login (the only route that reads a body unauthenticated).
pub const LOGIN_BODY_BYTES: usize = 16 * 1024;
/// How long a request may take to be answered (the body of a media
/// response then streams as long as it needs). Storage checks give up
/// sooner (20–30 s).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a bulk task import may take.
pub const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

#[derive(OpenApi)]
#[openapi(
    info(title = "Labelport API", description = "Label Studio-compatible labeling API with cloud storage at its core."),
    modifiers(&TokenAuth),
    security(("token" = []))
)]
struct ApiDoc;

/// Documents, on every operation, the answers the access middleware and the
/// extractors give before a handler runs, from the same table that decides
/// them ([`access::rule`]): public routes need no token (`security: []`);
/// others may answer 401 (no or bad credentials) and 403 (role too weak);
/// routes with a path id or a project named in the query may answer 404 (no
/// such object, or one the caller may not see); routes that read a body or
/// query parameters may answer 400 (Label Studio's validation error).
struct StandardAnswers;

impl utoipa::Modify for StandardAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use axum::http::Method;
        use utoipa::PartialSchema;
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .insert("ApiErrorBody".to_owned(), error::ApiErrorBody::schema());
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{RefOr, Response};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::PATCH, &mut item.patch),
                (Method::DELETE, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let need = access::rule(&method, path);
                // Each answer carries the error body's schema (an answer the
                // handler already documents gets it too).
                let mut answer = |code: &str, description: &str| {
                    let entry = operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| RefOr::T(Response::new(description)));
                    if let RefOr::T(response) = entry {
                        if response.content.is_empty() {
                            response.content.insert(
                                "application/json".to_owned(),
                                utoipa::openapi::ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiErrorBody")))
                                    .build(),
                            );
                        }
                    }
                };
                let takes_input = operation.request_body.is_some()
                    || operation
                        .parameters
                        .as_ref()
                        .is_some_and(|p| p.iter().any(|p| p.parameter_in == ParameterIn::Query));
                if takes_input {
                    answer(
                        "400",
                        "Validation error: `validation_errors` names each field and its problem",
                    );
                }
                let may_be_missing = match need {
                    Some(access::Need::Public) => {
                        operation.security = Some(Vec::new());
                        continue;
                    }
                    // Pub/Sub's OIDC token, not a user's: the handler
                    // documents its own 401/403/404.
                    Some(access::Need::PubSubPush) => {
                        operation.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                            "pubsub_oidc",
                            Vec::<String>::new(),
                        )]);
                        continue;
                    }
                    Some(access::Need::Project(via, _)) => {
                        path.contains('{') || matches!(via, access::Via::QueryProject | access::Via::QueryTaskOrProject)
                    }
                    // A role-only route, or one not in the table (the
                    // middleware refuses it for everyone): documented as
                    // needing a token.
                    Some(access::Need::Role(_)) | None => path.contains('{'),
                };
                if may_be_missing {
                    answer(
                        "404",
                        "No such object, or one in a project the caller is not a member of",
                    );
                }
                answer("401", "No credentials, or an unknown token or session");
                answer("403", "The caller's role does not allow this");
            }
        }
    }
}

struct TokenAuth;

impl utoipa::Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <api token>`",
            ))),
        );
        components.add_security_scheme(
            "pubsub_oidc",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A Pub/Sub push subscription's OIDC token (Google-signed; audience the endpoint's URL)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes and their OpenAPI document, built from the same list.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(misc::health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(misc::whoami))
        .merge(
            // Anonymous: a small body, so no one can make the server hold much.
            OpenApiRouter::new()
                .routes(routes!(auth::login))
                .layer(DefaultBodyLimit::max(LOGIN_BODY_BYTES)),
        )
        .routes(routes!(auth::logout))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::patch_user, users::delete_user))
        .routes(routes!(users::reset_token))
        .routes(routes!(users::list_members, users::add_member, users::remove_member))
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(
            projects::get_project,
            projects::patch_project,
            projects::delete_project
        ))
        .routes(routes!(export::export_project))
        .routes(routes!(tasks::next_task))
        .routes(routes!(tasks::list_project_tasks, tasks::delete_project_tasks))
        .routes(routes!(tasks::list_tasks, tasks::create_task))
        .routes(routes!(tasks::get_task, tasks::patch_task, tasks::delete_task))
        .routes(routes!(annotations::list_annotations, annotations::create_annotation))
        .routes(routes!(
            annotations::get_annotation,
            annotations::patch_annotation,
            annotations::delete_annotation
        ))
        .routes(routes!(predictions::list_predictions, predictions::create_prediction))
        .routes(routes!(
            predictions::get_prediction,
            predictions::patch_prediction,
            predictions::delete_prediction
        ))
        .routes(routes!(storages::import_types))
        .routes(routes!(storages::export_types))
        .routes(routes!(storages::list_all_import))
        .routes(routes!(storages::list_import, storages::create_import))
        .routes(routes!(storages::validate_import))
        .routes(routes!(storages::files_import))
        .routes(routes!(
            storages::get_import,
            storages::patch_import,
            storages::put_import,
            storages::delete_import
        ))
        .routes(routes!(storages::sync_import))
        .routes(routes!(storages::cors_import))
        .routes(routes!(storages::cors_import_settings))
        .routes(routes!(notifications::storage_notification))
        .routes(routes!(storages::list_export, storages::create_export))
        .routes(routes!(storages::validate_export))
        .routes(routes!(
            storages::get_export,
            storages::patch_export,
            storages::put_export,
            storages::delete_export
        ))
        .routes(routes!(storages::sync_export))
        .routes(routes!(resolve::resolve_task))
        .routes(routes!(resolve::presign_task))
        .routes(routes!(resolve::resolve_project))
        .routes(routes!(resolve::presign_project))
        // Layers apply to the routes above only.
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(
            // The one route with large bodies and long work.
            OpenApiRouter::new()
                .routes(routes!(tasks::import_tasks))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    IMPORT_TIMEOUT,
                )),
        )
        .split_for_parts();
    // After the routes are in: the answers are documented from their paths.
    utoipa::Modify::modify(&StandardAnswers, &mut openapi);
    (router, openapi)
}

/// The API alone. `/path` and `/path/` are the same route: the trailing
/// slash is trimmed before routing.
pub fn app(state: AppState) -> NormalizePath<Router> {
    app_with_pages(state, Router::new())
}

/// The API and the web pages (`labelport-web`), which bring their own
/// access layer: the API's [`access::authorize`] wraps the API's routes
/// only; metrics, tracing and the fallbacks wrap both.
pub fn app_with_pages(state: AppState, pages: Router<AppState>) -> NormalizePath<Router> {
    let (router, openapi) = routes();
    let openapi = Arc::new(openapi);
    let router = router
        .route(
            "/api/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::authorize))
        .merge(pages)
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(misc::not_found)
        .method_not_allowed_fallback(misc::method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_pages(listener, state, Router::new(), shutdown).await
}

/// Serves the API and `pages` ([`app_with_pages`]) until `shutdown` resolves.
pub async fn serve_with_pages(
    listener: TcpListener,
    state: AppState,
    pages: Router<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Counting starts now, not at the first scrape.
    metrics::handle();
    let app = app_with_pages(state, pages);
    // Small responses go out at once instead of waiting on delayed ACKs
    // (a 40 ms tail on media requests without it).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    // The client's address reaches handlers (login rate limits).
    axum::serve(
        listener,
        ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
