//! `/api/storages/…`: storages of both directions and every kind, as Label
//! Studio's API: source storages at `/api/storages/<type>` (list, create,
//! get, patch, put, delete, validate, files, sync) and target storages at
//! `/api/storages/export/<type>` (the same, without files), plus the type
//! lists and the list of all source storages of a project.
//!
//! One set of operations serves every (direction, kind): the handlers below
//! only name their route, and a kind is a row of
//! `labelport_domain::storage::StorageKind`. Syncs run as background jobs:
//! the call answers at once with the storage `queued`. Create of a target
//! storage checks that the bucket can be written, then queues an export of
//! the project's annotations; every later annotation save is exported by
//! the background job (`labelport_sync::export_job`).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use labelport_db::{DbError, StorageRow, UserRow};
use labelport_domain::access::Role;
use labelport_domain::storage::{
    compile_filter, listed_types, normalize_prefix, Direction, StorageInput, StorageKind, StorageSettings,
};
use labelport_storage::{ObjectStore, StorageError};
use labelport_sync::run::meta_time;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::connection_check::{advice, check_connection};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, QueryParams};
use crate::state::AppState;
use crate::views::stored_json;

/// The files preview stops after this long, as Label Studio (30 s).
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Path parameters

/// `{kind}` of a storage route: a served kind, else 404 as for an unknown
/// route.
pub struct KindPath(pub StorageKind);

/// `{kind}` and `{id}` of a storage route; an unknown kind or an id that is
/// not a number is a 404 like an unknown object.
pub struct KindIdPath(pub StorageKind, pub i64);

async fn path_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> ApiResult<HashMap<String, String>> {
    axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|p| p.0)
        .map_err(|_| ApiError::not_found())
}

fn kind_of(params: &HashMap<String, String>) -> ApiResult<StorageKind> {
    params
        .get("kind")
        .and_then(|k| StorageKind::parse(k))
        .ok_or_else(ApiError::not_found)
}

impl<S: Send + Sync> FromRequestParts<S> for KindPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(KindPath(kind_of(&path_params(parts, state).await?)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KindIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        let id = params
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or_else(ApiError::not_found)?;
        Ok(KindIdPath(kind_of(&params)?, id))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    /// The project (admins may leave it out: every project).
    pub project: Option<i64>,
}

/// `?project=`, which a storage list of one type needs (Label Studio's
/// rule; a missing one is a 400 naming it).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequiredProjectQuery {
    /// The project whose storages to list.
    #[param(required = true)]
    pub project: Option<i64>,
}

// ---------------------------------------------------------------------------
// The operations, for any direction and kind

/// A stored storage of this direction and kind, listed (its project not
/// deleted); anything else is a 404.
async fn stored(state: &AppState, direction: Direction, kind: StorageKind, id: i64) -> ApiResult<StorageRow> {
    let row = state.db.get_storage(direction, id).await?;
    if row.kind != kind || row.project_id.is_none() {
        return Err(ApiError::not_found());
    }
    Ok(row)
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

/// Ambient credentials are the server's, not the users': a storage without
/// a service-account key acts as the server's own identity (Application
/// Default Credentials, the metadata server, or — for `gcswif` storages and
/// pasted `external_account` configurations — the server's AWS or OIDC
/// identity traded through Workload Identity Federation), so only an admin
/// may create, change or test one, unless an admin allowed its bucket
/// (`LABELPORT_AMBIENT_CREDENTIALS_BUCKETS`: names, or `*`).
fn check_ambient(state: &AppState, user: &UserRow, kind: StorageKind, settings: &StorageSettings) -> ApiResult<()> {
    let own_key = kind == StorageKind::Gcs
        && settings
            .credentials
            .as_ref()
            .is_some_and(|c| !labelport_storage::wif::is_external_account(c.expose()));
    let allowed = own_key
        || user.role() == Role::Admin
        || state.ambient_buckets.iter().any(|b| b == "*" || *b == settings.bucket);
    if allowed {
        return Ok(());
    }
    let what = match kind {
        StorageKind::GcsWif => "A gcswif storage acts as the server's own identity (traded through the workload identity pool)",
        StorageKind::Gcs if settings.credentials.is_some() => {
            "An external_account configuration acts as the server's own identity (traded through the workload identity pool)"
        }
        StorageKind::Gcs => "Without google_application_credentials this storage would use the server's own Google identity",
    };
    Err(ApiError::Forbidden(format!(
        "{what}, which only an admin may use (or an admin may allow the bucket {} by name in \
         LABELPORT_AMBIENT_CREDENTIALS_BUCKETS). Paste a service-account key into a gcs storage instead.",
        settings.bucket
    )))
}

/// `input` over `base`, checked by the domain's rules and the kind's
/// connector (no I/O).
fn checked_settings(
    state: &AppState,
    kind: StorageKind,
    base: StorageSettings,
    input: &StorageInput,
) -> ApiResult<StorageSettings> {
    let (settings, mut errors) = base.apply_collecting(input);
    settings.check_kind(kind, &mut errors);
    labelport_storage::check_settings(&state.storage_env, kind, &settings, &mut errors);
    errors.into_result()?;
    Ok(settings)
}

/// Whether the job of the sync a storage waits on ended without recording
/// a result: an import job that ended at all, an export job that failed (an
/// export job that ended `done` may have been a background run, while the
/// full sync asked for waits in the next one).
fn ended_without_result(direction: Direction, job_status: &str) -> bool {
    match direction {
        Direction::Import => matches!(job_status, "failed" | "done"),
        Direction::Export => job_status == "failed",
    }
}

/// The storage as Label Studio shows it. A sync whose job ended without
/// recording a result (it gave up after retries, or its handler was lost)
/// is shown as failed, with the reason.
async fn storage_view(state: &AppState, row: &StorageRow) -> ApiResult<Value> {
    let direction = row.direction();
    let mut row = row.clone();
    if let Some(job_id) = row
        .state
        .is_active()
        .then(|| row.state.last_sync_job.as_deref().and_then(|j| j.parse::<i64>().ok()))
        .flatten()
    {
        if let Ok(job) = state.db.get_job(job_id).await {
            if ended_without_result(direction, &job.status)
                && state.db.active_job(&direction.dedup_key(row.id)).await?.is_none()
            {
                // The job may have recorded its result after `row` was
                // read: show that result whole, not a mix. (Deleted
                // meanwhile: show what was read.)
                match state.db.get_storage(direction, row.id).await {
                    Ok(fresh) => row = fresh,
                    Err(DbError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                // Still waiting on that same job (not a newer sync).
                if row.state.is_active() && row.state.last_sync_job.as_deref() == Some(job_id.to_string().as_str()) {
                    row.state.status = "failed".into();
                    row.state.traceback = Some(match job.last_error {
                        Some(error) if job.status == "failed" => error,
                        _ if job.status == "failed" => "The sync job failed.".into(),
                        _ => "The sync job ended without reporting a result; see the server log.".into(),
                    });
                }
            }
        }
    }
    Ok(labelport_views::storage_json(&row, &row.state)?)
}

async fn views(state: &AppState, rows: &[StorageRow]) -> ApiResult<Json<Value>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(storage_view(state, row).await?);
    }
    Ok(Json(Value::Array(out)))
}

async fn list(
    state: &AppState,
    direction: Direction,
    kind: StorageKind,
    project: Option<i64>,
) -> ApiResult<Json<Value>> {
    let project = project.ok_or_else(|| ApiError::field("project", "query parameter \"project\" is required"))?;
    state.db.get_project(project).await?;
    let rows = state.db.list_storages(direction, Some(kind), Some(project)).await?;
    views(state, &rows).await
}

async fn create(
    state: &AppState,
    user: &UserRow,
    direction: Direction,
    kind: StorageKind,
    input: StorageInput,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let project = require_project(state, input.project).await?;
    let settings = checked_settings(state, kind, StorageSettings::defaults(direction), &input)?;
    check_ambient(state, user, kind, &settings)?;
    check_connection(state, kind, &settings).await?;
    let mut row = state.db.create_storage(project, kind, &settings).await?;
    tracing::info!(
        storage.id = row.id,
        project.id = project,
        direction = direction.as_str(),
        "created {} storage for gs://{}",
        kind.name(),
        row.settings.bucket
    );
    if direction == Direction::Export {
        // A new target storage exports the project's annotations at once.
        request_sync(state, &row).await?;
        row = state.db.get_storage(direction, row.id).await?;
    }
    Ok((StatusCode::CREATED, Json(storage_view(state, &row).await?)))
}

async fn get(state: &AppState, direction: Direction, kind: StorageKind, id: i64) -> ApiResult<Json<Value>> {
    let row = stored(state, direction, kind, id).await?;
    Ok(Json(storage_view(state, &row).await?))
}

/// PATCH (`full = false`: the body's fields over the stored ones) or PUT
/// (`full`: the body's fields over the defaults, the stored key kept).
async fn update(
    state: &AppState,
    user: &UserRow,
    direction: Direction,
    kind: StorageKind,
    id: i64,
    input: StorageInput,
    full: bool,
) -> ApiResult<Json<Value>> {
    let row = stored(state, direction, kind, id).await?;
    if input.project.is_some_and(|p| Some(p) != row.project_id) {
        return Err(ApiError::field("project", "A storage cannot move to another project."));
    }
    let base = if full {
        row.settings.replaced()
    } else {
        row.settings.clone()
    };
    let settings = checked_settings(state, kind, base, &input)?;
    check_ambient(state, user, kind, &settings)?;
    if settings.needs_check_over(&row.settings) {
        check_connection(state, kind, &settings).await?;
    }
    let row = state.db.update_storage(id, &settings).await?;
    Ok(Json(storage_view(state, &row).await?))
}

async fn delete(state: &AppState, direction: Direction, kind: StorageKind, id: i64) -> ApiResult<StatusCode> {
    stored(state, direction, kind, id).await?;
    state.db.delete_storage(direction, id).await?;
    tracing::info!(
        storage.id = id,
        direction = direction.as_str(),
        "deleted {} storage",
        kind.name()
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The settings a validate/files call means: an existing storage's (when
/// `id` is given) with the body's fields over them.
async fn settings_for_check(
    state: &AppState,
    user: &UserRow,
    direction: Direction,
    kind: StorageKind,
    input: &StorageInput,
) -> ApiResult<StorageSettings> {
    let base = match input.id {
        Some(id) => stored(state, direction, kind, id).await?.settings,
        None => {
            require_project(state, input.project).await?;
            StorageSettings::defaults(direction)
        }
    };
    let settings = checked_settings(state, kind, base, input)?;
    check_ambient(state, user, kind, &settings)?;
    Ok(settings)
}

async fn validate(
    state: &AppState,
    user: &UserRow,
    direction: Direction,
    kind: StorageKind,
    input: StorageInput,
    headers: &HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let settings = settings_for_check(state, user, direction, kind, &input).await?;
    check_connection(state, kind, &settings).await?;
    // With presign on, browsers read objects from GCS itself: say whether
    // the bucket's CORS policy lets the labeling page do so (a Labelport
    // addition; Label Studio answers an empty 200).
    if settings.import().is_some_and(|o| o.presign) {
        let origin = page_origin(state, headers);
        if crate::signing::proxied_instead(state, kind, &settings).await {
            // Browsers never reach the emulator: its CORS policy is moot.
            let note = labelport_domain::cors::CorsReport {
                origin,
                allowed: true,
                advice: "With the GCS emulator and no key there is no account to sign URLs as: media of this \
                         storage go through Labelport's proxy even with pre-signed URLs on."
                    .to_owned(),
            };
            return Ok((StatusCode::OK, Json(json!({ "cors": note, "proxied": true }))).into_response());
        }
        let (report, missing) = cors_report(state, kind, &settings, &origin).await;
        let mut body = json!({ "cors": report });
        if let Some(missing) = missing {
            body["permissions"] = serde_json::to_value(missing).unwrap_or_default();
        }
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    Ok(StatusCode::OK.into_response())
}

/// The origin browsers load the labeling page from: the public URL's
/// (`LABELPORT_PUBLIC_URL`), else the request's `Origin`, else its `Host`.
fn page_origin(state: &AppState, headers: &HeaderMap) -> String {
    use labelport_domain::cors::origin_of;
    let header = |name: axum::http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    origin_of(&state.public_url)
        .or_else(|| header(axum::http::header::ORIGIN).and_then(origin_of))
        .or_else(|| header(axum::http::header::HOST).map(|h| format!("http://{h}")))
        .unwrap_or_else(|| "http://localhost".to_owned())
}

/// The origin Fix CORS may write into a bucket's policy: the public URL's,
/// else the browser's own page (its `Origin` names the host it called),
/// never an origin a script merely claims.
///
/// Errors: 400 when neither is known (set `LABELPORT_PUBLIC_URL`).
fn fix_origin(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    use labelport_domain::cors::origin_of;
    if let Some(origin) = origin_of(&state.public_url) {
        return Ok(origin);
    }
    let header = |name: axum::http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header(axum::http::header::ORIGIN).and_then(origin_of);
    let host = header(axum::http::header::HOST).map(str::to_ascii_lowercase);
    match (origin, host) {
        (Some(origin), Some(host)) if origin.split_once("://").is_some_and(|(_, h)| h == host) => Ok(origin),
        _ => Err(ApiError::body(
            "Which origin to allow is not known: call this from the web UI (Fix CORS on the storage's card), \
             or start the server with LABELPORT_PUBLIC_URL set to the address annotators open.",
        )),
    }
}

/// The CORS check of a storage's bucket for `origin`; a policy that cannot
/// be read is reported (not allowed) with the reason and what to do, and,
/// when GCS says the account lacks `storage.buckets.get`, with that
/// permission and the role that grants it.
async fn cors_report(
    state: &AppState,
    kind: StorageKind,
    settings: &StorageSettings,
    origin: &str,
) -> (
    labelport_domain::cors::CorsReport,
    Option<crate::connection_check::PermissionReport>,
) {
    use labelport_domain::cors::CorsReport;
    let checked = async {
        let store = state.storage_env.connect(kind, settings).await?;
        match store.cors_rules().await {
            Ok(rules) => Ok(Ok(rules)),
            Err(e @ StorageError::PermissionDenied(_)) => {
                let missing = crate::connection_check::bucket_read_missing(&store, kind, settings).await;
                Ok(Err((e, missing)))
            }
            Err(e) => Err(e),
        }
    };
    let unreadable = |e: &dyn std::fmt::Display, next: String| CorsReport {
        origin: origin.to_owned(),
        allowed: false,
        advice: format!(
            "The bucket's CORS policy could not be read ({e}), so whether browsers may load pre-signed URLs \
             is unknown. Next step: {next}; or turn pre-signed URLs off to use the proxy."
        ),
    };
    let general = || {
        format!(
            "reading it needs {} ({} or Storage Admin)",
            crate::connection_check::BUCKETS_GET,
            crate::connection_check::BUCKET_READ_ROLE.named()
        )
    };
    match tokio::time::timeout(PREVIEW_READ_TIMEOUT, checked).await {
        Ok(Ok(Ok(rules))) => (labelport_domain::cors::check(&settings.bucket, origin, &rules), None),
        Ok(Ok(Err((e, Some(missing))))) => {
            let next = format!(
                "{} lacks {} on gs://{}: {}",
                missing.account,
                crate::connection_check::BUCKETS_GET,
                settings.bucket,
                missing.next_step()
            );
            (unreadable(&e, next), Some(missing))
        }
        Ok(Ok(Err((e, None)))) => (unreadable(&e, general()), None),
        Ok(Err(e)) => (unreadable(&e, general()), None),
        Err(_) => (
            CorsReport {
                origin: origin.to_owned(),
                allowed: false,
                advice: "Reading the bucket's CORS policy took too long; try again.".to_owned(),
            },
            None,
        ),
    }
}

/// Fix CORS: adds a rule for the labeling page's origin (GET and HEAD,
/// with the headers the editor reads) to the bucket's CORS policy of
/// `settings`, keeping the rules it has; nothing is written when a rule
/// already allows it. Answers the check afterwards. `id` names a stored
/// storage, for the log.
async fn fix_cors(
    state: &AppState,
    kind: StorageKind,
    settings: &StorageSettings,
    id: Option<i64>,
    headers: &HeaderMap,
) -> ApiResult<Json<Value>> {
    if !settings.import().is_some_and(|o| o.presign) {
        return Err(ApiError::field(
            "presign",
            "Pre-signed URLs are off: browsers load media through Labelport's proxy, which needs no CORS rule on \
             the bucket. Turn pre-signed URLs on first if browsers should read the bucket themselves.",
        ));
    }
    let origin = fix_origin(state, headers)?;
    let (before, _) = cors_report(state, kind, settings, &origin).await;
    if before.allowed {
        return Ok(Json(json!({ "cors": before, "changed": false })));
    }
    let rule = labelport_domain::cors::CorsRule {
        origin: vec![origin.clone()],
        method: vec!["GET".into(), "HEAD".into()],
        response_header: [
            "Content-Type",
            "Content-Length",
            "Content-Range",
            "Accept-Ranges",
            "ETag",
        ]
        .map(String::from)
        .to_vec(),
        max_age_seconds: Some(3600),
    };
    let written = async {
        state
            .storage_env
            .connect(kind, settings)
            .await?
            .add_cors_rule(&rule)
            .await
    };
    let rules = match tokio::time::timeout(PREVIEW_READ_TIMEOUT, written).await {
        Ok(Ok(rules)) => rules,
        Ok(Err(StorageError::PermissionDenied(m))) => {
            return Err(ApiError::body(format!(
                "The bucket's CORS policy could not be changed ({m}). Next step: grant the storage's account \
                 storage.buckets.update (Storage Admin) on gs://{}, or add the rule yourself: origin {origin}, \
                 methods GET and HEAD (gcloud storage buckets update gs://{} --cors-file=cors.json).",
                settings.bucket, settings.bucket
            )))
        }
        Ok(Err(e)) => return Err(ApiError::body(format!("Changing the bucket's CORS policy failed: {e}"))),
        Err(_) => {
            return Err(ApiError::body(
                "Changing the bucket's CORS policy took too long; try again.",
            ))
        }
    };
    tracing::info!(storage.id = ?id, origin = %origin, "added a CORS rule to gs://{}", settings.bucket);
    let mut after = labelport_domain::cors::check(&settings.bucket, &origin, &rules);
    if !after.allowed {
        // GCS answers a PATCH with the policy it keeps; one without our
        // rule means it was not kept (the emulator keeps no CORS policy).
        after.advice = format!(
            "The rule was sent, but the bucket's policy that came back does not hold it (an emulator may keep no \
             CORS policy). {}",
            after.advice
        );
    }
    Ok(Json(json!({ "cors": after, "changed": true })))
}

#[utoipa::path(post, path = "/api/storages/{kind}/{id}/cors", tag = "storages",
    params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
    responses((status = 200, description = "{cors: {origin, allowed, advice}, changed}: the bucket's CORS policy now lets \
        the labeling page's origin GET its objects (a rule added, the others kept; a Labelport addition)"),
        (status = 400, description = "The policy could not be read or changed: why, and what to do")))]
pub async fn cors_import(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    KindIdPath(kind, id): KindIdPath,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let row = stored(&state, Direction::Import, kind, id).await?;
    // Changing the bucket acts as the storage's identity, as a sync does.
    check_ambient(&state, &user, kind, &row.settings)?;
    fix_cors(&state, kind, &row.settings, Some(id), &headers).await
}

/// Fix CORS for the settings of a body, as validate takes them: a storage
/// being added in the wizard (`project` and its fields), or one being
/// edited (`id`, with the body's fields over the stored ones). The
/// connection is tested first, as validate does.
#[utoipa::path(post, path = "/api/storages/{kind}/cors", tag = "storages", request_body = StorageInput,
    params(("kind" = String, Path, description = "Storage type: gcs or gcswif")),
    responses((status = 200, description = "{cors: {origin, allowed, advice}, changed}: as POST /api/storages/{kind}/{id}/cors, \
        for settings not saved yet (the wizard's Fix CORS; a Labelport addition)"),
        (status = 400, description = "The settings are invalid, or the policy could not be read or changed: why, and what to do")))]
pub async fn cors_import_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    KindPath(kind): KindPath,
    headers: HeaderMap,
    JsonBody(input): JsonBody<StorageInput>,
) -> ApiResult<Json<Value>> {
    let settings = settings_for_check(&state, &user, Direction::Import, kind, &input).await?;
    // Settings not saved may never have been tested: no bucket is changed
    // before the connection works as typed (a 400 at the field otherwise).
    check_connection(&state, kind, &settings).await?;
    fix_cors(&state, kind, &settings, input.id, &headers).await
}

/// Queues a sync (a full one for a target storage) and wakes the workers.
async fn request_sync(state: &AppState, row: &StorageRow) -> ApiResult<()> {
    let direction = row.direction();
    let mut meta = match stored_json(&row.state.meta)? {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    meta.insert("time_queued".into(), meta_time().into());
    meta.insert("trigger".into(), "manual".into());
    let queued = state
        .db
        .request_sync(direction, row.id, &Value::Object(meta).to_string())
        .await?;
    match (direction, queued) {
        (Direction::Import, None) => {
            tracing::info!(storage.id = row.id, "import sync already queued or running");
            return Ok(());
        }
        (_, job) => tracing::info!(
            storage.id = row.id,
            job.id = job,
            direction = direction.as_str(),
            "queued sync"
        ),
    }
    state.jobs_notify.notify_waiters();
    Ok(())
}

async fn sync(
    state: &AppState,
    user: &UserRow,
    direction: Direction,
    kind: StorageKind,
    id: i64,
) -> ApiResult<Json<Value>> {
    let row = stored(state, direction, kind, id).await?;
    // A sync acts as the storage's identity, as a test does.
    check_ambient(state, user, kind, &row.settings)?;
    request_sync(state, &row).await?;
    let row = state.db.get_storage(direction, id).await?;
    Ok(Json(storage_view(state, &row).await?))
}

// ---------------------------------------------------------------------------
// Routes

/// The handlers of one direction's routes, each naming its path for the
/// router and the OpenAPI document and calling the shared operation above.
macro_rules! storage_routes {
    (
        direction: $direction:expr,
        what: $what:literal,
        collection: $collection:literal,
        item: $item:literal,
        validate: $validate_path:literal,
        sync: $sync_path:literal,
        handlers: ($list:ident, $create:ident, $get:ident, $patch:ident, $put:ident, $delete:ident, $validate:ident, $sync:ident)
    ) => {
        #[utoipa::path(get, path = $collection, tag = "storages",
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), RequiredProjectQuery),
            responses((status = 200, description = concat!("The ", $what, " storages of this type of a project"))))]
        pub async fn $list(
            State(state): State<AppState>,
            _user: AuthUser,
            KindPath(kind): KindPath,
            QueryParams(q): QueryParams<RequiredProjectQuery>,
        ) -> ApiResult<Json<Value>> {
            list(&state, $direction, kind, q.project).await
        }

        #[utoipa::path(post, path = $collection, tag = "storages", request_body = StorageInput,
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif")),
            responses((status = 201, description = concat!("Created after a connection check (", $what,
                " storage). A target storage's check writes and deletes a probe object, and its creation queues an export of the project's annotations; a source storage is not synced until asked")),
                (status = 400, description = "Invalid field or failed connection check")))]
        pub async fn $create(
            State(state): State<AppState>,
            AuthUser(user): AuthUser,
            KindPath(kind): KindPath,
            JsonBody(input): JsonBody<StorageInput>,
        ) -> ApiResult<(StatusCode, Json<Value>)> {
            create(&state, &user, $direction, kind, input).await
        }

        #[utoipa::path(get, path = $item, tag = "storages",
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
            responses((status = 200, description = concat!("The ", $what, " storage")),
                (status = 404, description = "No such storage")))]
        pub async fn $get(
            State(state): State<AppState>,
            _user: AuthUser,
            KindIdPath(kind, id): KindIdPath,
        ) -> ApiResult<Json<Value>> {
            get(&state, $direction, kind, id).await
        }

        #[utoipa::path(patch, path = $item, tag = "storages", request_body = StorageInput,
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
            responses((status = 200, description = "Updated: the body's fields over the stored ones, checked (a source storage's connection always, a target's when its place or key changes)")))]
        pub async fn $patch(
            State(state): State<AppState>,
            AuthUser(user): AuthUser,
            KindIdPath(kind, id): KindIdPath,
            JsonBody(input): JsonBody<StorageInput>,
        ) -> ApiResult<Json<Value>> {
            update(&state, &user, $direction, kind, id, input, false).await
        }

        #[utoipa::path(put, path = $item, tag = "storages", request_body = StorageInput,
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
            responses((status = 200, description = "Replaced: the body's fields over the defaults; a stored key that is not resent is kept")))]
        pub async fn $put(
            State(state): State<AppState>,
            AuthUser(user): AuthUser,
            KindIdPath(kind, id): KindIdPath,
            JsonBody(input): JsonBody<StorageInput>,
        ) -> ApiResult<Json<Value>> {
            update(&state, &user, $direction, kind, id, input, true).await
        }

        #[utoipa::path(delete, path = $item, tag = "storages",
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
            responses((status = 204, description = "Deleted; a source storage's tasks and a target storage's objects stay")))]
        pub async fn $delete(
            State(state): State<AppState>,
            _user: AuthUser,
            KindIdPath(kind, id): KindIdPath,
        ) -> ApiResult<StatusCode> {
            delete(&state, $direction, kind, id).await
        }

        #[utoipa::path(post, path = $validate_path, tag = "storages", request_body = StorageInput,
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif")),
            responses((status = 200, description = "The connection works: an empty body, or for a source storage with presign \
                {cors: {origin, allowed, advice}}, whether browsers on the labeling page's origin may read objects by signed URL; \
                with `permissions` ({account, missing: [{permission, resource, used_for, role, role_title, grant_command}]}) when \
                the CORS policy could not be read for want of storage.buckets.get, and `proxied: true` when media go through \
                the proxy anyway (the emulator without a key)"),
                (status = 400, description = "What is wrong, at the field to change, with the next step; missing IAM permissions \
                also as `permissions`")))]
        pub async fn $validate(
            State(state): State<AppState>,
            AuthUser(user): AuthUser,
            KindPath(kind): KindPath,
            headers: HeaderMap,
            JsonBody(input): JsonBody<StorageInput>,
        ) -> ApiResult<axum::response::Response> {
            validate(&state, &user, $direction, kind, input, &headers).await
        }

        #[utoipa::path(post, path = $sync_path, tag = "storages",
            params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
            responses((status = 200, description = "The storage, queued: at most one sync per storage runs; a target storage's sync writes what is new or changed")))]
        pub async fn $sync(
            State(state): State<AppState>,
            AuthUser(user): AuthUser,
            KindIdPath(kind, id): KindIdPath,
        ) -> ApiResult<Json<Value>> {
            sync(&state, &user, $direction, kind, id).await
        }
    };
}

storage_routes! {
    direction: Direction::Import,
    what: "source",
    collection: "/api/storages/{kind}",
    item: "/api/storages/{kind}/{id}",
    validate: "/api/storages/{kind}/validate",
    sync: "/api/storages/{kind}/{id}/sync",
    handlers: (list_import, create_import, get_import, patch_import, put_import, delete_import, validate_import, sync_import)
}

storage_routes! {
    direction: Direction::Export,
    what: "target",
    collection: "/api/storages/export/{kind}",
    item: "/api/storages/export/{kind}/{id}",
    validate: "/api/storages/export/{kind}/validate",
    sync: "/api/storages/export/{kind}/{id}/sync",
    handlers: (list_export, create_export, get_export, patch_export, put_export, delete_export, validate_export, sync_export)
}

fn types_json() -> Json<Value> {
    Json(Value::Array(
        listed_types()
            .into_iter()
            .map(|(name, title)| json!({"name": name, "title": title}))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/storages/types", tag = "storages",
    responses((status = 200, description = "Import storage types")))]
pub async fn import_types(_user: AuthUser) -> Json<Value> {
    types_json()
}

#[utoipa::path(get, path = "/api/storages/export/types", tag = "storages",
    responses((status = 200, description = "Export storage types")))]
pub async fn export_types(_user: AuthUser) -> Json<Value> {
    types_json()
}

#[utoipa::path(get, path = "/api/storages", params(ProjectQuery), tag = "storages",
    responses((status = 200, description = "All source storages of a project (or of every project), of every type")))]
pub async fn list_all_import(
    State(state): State<AppState>,
    _user: AuthUser,
    QueryParams(q): QueryParams<ProjectQuery>,
) -> ApiResult<Json<Value>> {
    let rows = state.db.list_storages(Direction::Import, None, q.project).await?;
    views(&state, &rows).await
}

#[utoipa::path(post, path = "/api/storages/{kind}/files", request_body = StorageInput, tag = "storages",
    params(("kind" = String, Path, description = "Storage type: gcs or gcswif")),
    responses((status = 200, description = "{files: [{key, last_modified, size}]}; a null key marks a cut list. \
        With use_blob_urls false (task files), also tasks: the first tasks the first matching files give, \
        [{key, position, data (or data_truncated)} or {key, position, error}] (a Labelport addition)")))]
pub async fn files_import(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    KindPath(kind): KindPath,
    JsonBody(input): JsonBody<StorageInput>,
) -> ApiResult<Json<Value>> {
    let settings = settings_for_check(&state, &user, Direction::Import, kind, &input).await?;
    let limit = input.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "Must be between 1 and 10000."));
    }
    let options = settings.import().cloned().unwrap_or_default();
    let store = state
        .storage_env
        .connect(kind, &settings)
        .await
        .map_err(|e| advice(kind, &settings, e))?;
    let prefix = normalize_prefix(&settings.prefix);
    let regex = compile_filter(&settings.regex_filter).map_err(|e| ApiError::field("regex_filter", e))?;
    let started = std::time::Instant::now();
    let mut files: Vec<Value> = Vec::new();
    let mut keys: Vec<(String, i64, u64)> = Vec::new();
    let mut token = None;
    'pages: loop {
        let page = tokio::time::timeout(
            PREVIEW_TIMEOUT,
            store.list_page(&prefix, options.recursive_scan, token, 1000),
        )
        .await
        .map_err(|_| ApiError::body("Listing the bucket timed out"))?
        .map_err(|e| advice(kind, &settings, e))?;
        for o in page.objects {
            if o.key.ends_with('/') || regex.as_ref().is_some_and(|r| !r.matches(&o.key)) {
                continue;
            }
            if files.len() as i64 == limit {
                files.push(json!({"key": null, "last_modified": null, "size": null}));
                break 'pages;
            }
            files.push(json!({"key": o.key, "last_modified": o.updated, "size": o.size}));
            keys.push((o.key, o.generation, o.size));
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
    let mut answer = json!({ "files": files });
    if !settings.use_blob_urls {
        // Within the preview's time, and at most PREVIEW_READ_TIMEOUT more.
        let deadline = tokio::time::Instant::now()
            + PREVIEW_TIMEOUT
                .saturating_sub(started.elapsed())
                .min(PREVIEW_READ_TIMEOUT);
        // Rows are checked against the project's config, as a sync does.
        let project = match input.id {
            Some(id) => state.db.get_storage(Direction::Import, id).await?.project_id,
            None => input.project,
        };
        let config = match project {
            Some(p) => {
                labelport_domain::label_config::LabelConfig::parse(&state.db.get_project(p).await?.label_config).ok()
            }
            None => None,
        };
        answer["tasks"] = Value::Array(preview_tasks(&store, &keys, config.as_ref(), deadline).await);
    }
    Ok(Json(answer))
}

/// At most this many tasks in a preview of task files…
const PREVIEW_TASKS: usize = 10;
/// …read from at most this many files…
const PREVIEW_TASK_FILES: usize = 3;
/// …within this long after the listing (and the 30 s of the whole call).
const PREVIEW_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A Parquet file is read whole before its first row (its footer comes
/// last): a larger one is not previewed.
const PREVIEW_MAX_PARQUET_BYTES: u64 = 64 << 20;
/// A task's data longer than this, as JSON, is sent cut (`data_truncated`).
const PREVIEW_MAX_DATA_CHARS: usize = 4096;

/// The first tasks that the first task files among `keys` (key,
/// generation, size) give, read and parsed by the sync's own readers
/// (`labelport_sync::readers`, within preview bounds: 1 MiB a row) and
/// task rules (`parse_task_element`, then the project's `config`), until
/// `deadline`:
/// `{key, position, data}` for a task (`data_truncated`, its JSON cut to
/// 4,096 characters, for a large one), `{key, position, error}` for a row
/// a sync would report as bad, and `{key, error}` for a file it could not
/// read or that is too large to preview.
async fn preview_tasks<S: ObjectStore>(
    store: &S,
    keys: &[(String, i64, u64)],
    config: Option<&labelport_domain::label_config::LabelConfig>,
    deadline: tokio::time::Instant,
) -> Vec<Value> {
    use futures::StreamExt;
    use labelport_sync::readers::{read_rows_for_preview, FileFormat};
    let mut out = Vec::new();
    for (key, generation, size) in keys.iter().take(PREVIEW_TASK_FILES) {
        if out.len() >= PREVIEW_TASKS {
            break;
        }
        let format = match FileFormat::for_key(key) {
            None => {
                out.push(json!({"key": key, "error": "not a JSON, JSONL or Parquet file: a sync reports it as an error (use File Name Filter to skip it)"}));
                continue;
            }
            Some(FileFormat::Parquet) if *size > PREVIEW_MAX_PARQUET_BYTES => {
                out.push(json!({"key": key, "error": format!(
                    "a Parquet file of {} MiB is not previewed (a sync reads it)", size >> 20
                )}));
                continue;
            }
            Some(format) => format,
        };
        let read = async {
            let stream = store.read_stream(key, Some(*generation), 0, None).await?;
            let mut rows = read_rows_for_preview(format, key, stream);
            let mut got = Vec::new();
            while out.len() + got.len() < PREVIEW_TASKS {
                let Some(row) = rows.next().await else { break };
                match row {
                    Ok(row) => got.push(
                        match row
                            .value
                            .and_then(labelport_domain::import::parse_task_element)
                            .and_then(|t| match config {
                                Some(c) => c.check_task_data(&t.data).map(|()| t),
                                None => Ok(t),
                            }) {
                            Ok(task) => {
                                let text = task.data.to_string();
                                if text.len() > PREVIEW_MAX_DATA_CHARS {
                                    let cut: String = text.chars().take(PREVIEW_MAX_DATA_CHARS).collect();
                                    json!({"key": key, "position": row.position, "data_truncated": cut + "…"})
                                } else {
                                    json!({"key": key, "position": row.position, "data": task.data})
                                }
                            }
                            Err(e) => json!({"key": key, "position": row.position, "error": e}),
                        },
                    ),
                    Err(e) => {
                        got.push(json!({"key": key, "error": e.to_string()}));
                        break;
                    }
                }
            }
            Ok::<_, StorageError>(got)
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(got)) => out.extend(got),
            Ok(Err(e)) => out.push(json!({"key": key, "error": e.to_string()})),
            Err(_) => {
                out.push(
                    json!({"key": key, "error": "reading the file took too long for a preview (a sync reads it)"}),
                );
                break;
            }
        }
    }
    out
}
