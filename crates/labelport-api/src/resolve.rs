//! `GET /tasks/{id}/resolve/?fileuri=…` and `/projects/{id}/resolve/`
//! (with `/presign/` aliases): media of a project's storages for the
//! browser. Only objects of one of the project's import storages are ever
//! fetched (no open proxy): anything else is a 404 and nothing is fetched.
//! With `presign` the answer is a 303 to a V4 signed URL; without, the
//! object is streamed through with single byte ranges, ETag/304 and
//! constant memory.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use labelport_db::StorageRow;
use labelport_domain::resolve::{decode_fileuri, split_gs_uri, uri_occurs};
use labelport_domain::storage::Direction;
use labelport_storage::gcs::GcsStore;
use labelport_storage::{ObjectMeta, ObjectStore, StorageError};
use std::time::SystemTime;

use headers::{ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince, LastModified};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::{PathId, QueryParams};
use crate::state::AppState;

/// `max-age` of proxied media, as Label Studio (1 hour).
const PROXY_MAX_AGE: u32 = 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResolveQuery {
    /// URL-safe base64 of the `gs://bucket/key` URI (percent-encoded URIs are accepted too).
    #[param(required = true, min_length = 1)]
    pub fileuri: Option<String>,
}

/// A single byte range resolved against the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Full,
    /// Inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses `Range` (RFC 9110): one `bytes=a-b`, `a-` or `-n` range. Several
/// ranges or a malformed header are ignored (the whole object is sent).
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match parse(b) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part(size - n.min(size), size - 1),
            None => ByteRange::Full,
        },
        (false, _) => {
            let Some(start) = parse(a) else { return ByteRange::Full };
            let end = if b.is_empty() { Some(u64::MAX) } else { parse(b) };
            match end {
                None => ByteRange::Full,
                Some(end) if end < start => ByteRange::Full,
                Some(_) if start >= size => ByteRange::Unsatisfiable,
                Some(end) => ByteRange::Part(start, end.min(size - 1)),
            }
        }
        (true, true) => ByteRange::Full,
    }
}

fn quoted_etag(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

/// What the conditional headers of a GET/HEAD decide (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (a range of it when `Range` applies).
    Proceed,
    /// 304: the client's copy is current (`If-None-Match`,
    /// `If-Modified-Since`).
    NotModified,
    /// 412: `If-Match` or `If-Unmodified-Since` failed.
    Failed,
}

/// Evaluates the preconditions in RFC 9110's order: `If-Match` (strong
/// comparison), else `If-Unmodified-Since`; then `If-None-Match` (weak
/// comparison), else `If-Modified-Since`. `modified` is the object's
/// Last-Modified at one-second precision (what the client was sent).
/// The comparisons are the `headers` crate's.
pub fn preconditions(headers: &HeaderMap, etag: &ETag, modified: Option<SystemTime>) -> Precondition {
    if let Some(if_match) = headers.typed_get::<IfMatch>() {
        if !if_match.precondition_passes(etag) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (headers.typed_get::<IfUnmodifiedSince>(), modified) {
        if !since.precondition_passes(modified) {
            return Precondition::Failed;
        }
    }
    if let Some(none_match) = headers.typed_get::<IfNoneMatch>() {
        if !none_match.precondition_passes(etag) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(modified)) = (headers.typed_get::<IfModifiedSince>(), modified) {
        if !since.is_modified(modified) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether a `Range` may be honoured: without `If-Range`, yes; with it,
/// only if it names this very representation (a strong ETag match, or the
/// exact Last-Modified date). Otherwise the whole object is sent, so a
/// resumed download never splices two versions.
pub fn range_applies(headers: &HeaderMap, etag: &ETag, modified: Option<SystemTime>) -> bool {
    match headers.typed_get::<IfRange>() {
        None => true,
        Some(if_range) => {
            let last_modified = modified.map(LastModified::from);
            !if_range.is_modified(Some(etag), last_modified.as_ref())
        }
    }
}

fn content_type(meta: &ObjectMeta) -> String {
    match meta.content_type.as_deref() {
        Some(ct) if !ct.is_empty() && !ct.contains("octet-stream") => ct.to_owned(),
        _ => mime_guess::from_path(&meta.key)
            .first()
            .map(|m| m.essence_str().to_owned())
            .unwrap_or_else(|| "application/octet-stream".into()),
    }
}

/// The policy of proxied media: a document opened from here is sandboxed
/// and loads nothing; images, audio and video still display.
pub const MEDIA_CSP: &str =
    "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'";

/// `Sec-Fetch-Dest` values of requests that would run or apply an object
/// as code: refused by the proxy.
const NOT_MEDIA_DESTINATIONS: &[&str] = &[
    "script",
    "worker",
    "sharedworker",
    "serviceworker",
    "audioworklet",
    "paintworklet",
    "style",
    "xslt",
];

/// JavaScript MIME types (WHATWG MIME Sniffing, "JavaScript MIME type").
fn is_javascript(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "application/x-javascript"
            | "application/x-ecmascript"
            | "text/jscript"
            | "text/livescript"
            | "text/x-javascript"
            | "text/x-ecmascript"
            | "text/javascript1.0"
            | "text/javascript1.5"
    )
}

/// Types a browser runs script in when it renders them as a document.
pub fn runs_script(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "application/x-javascript"
            | "text/xsl"
    ) || essence.ends_with("+xml")
}

/// The object's update time at one-second precision (HTTP dates have no
/// fractions, so comparisons with a client's date are made at that grain).
fn modified_time(meta: &ObjectMeta) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(meta.updated.as_deref()?).ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The project's storage that owns `uri`, or None.
async fn owning_storage(state: &AppState, project_id: i64, uri: &str) -> ApiResult<Option<(StorageRow, String)>> {
    let Some((bucket, key)) = split_gs_uri(uri) else {
        return Ok(None);
    };
    let storages = state
        .db
        .list_storages(Direction::Import, None, Some(project_id))
        .await?;
    Ok(storages
        .into_iter()
        .find(|s| s.kind.scheme() == "gs" && s.settings.bucket == bucket)
        .map(|s| (s, key.to_owned())))
}

fn upstream(e: StorageError) -> ApiError {
    ApiError::Upstream(e.to_string())
}

async fn resolve_in_project(
    state: &AppState,
    project_id: i64,
    q: ResolveQuery,
    headers: &HeaderMap,
    method: &Method,
) -> ApiResult<Response> {
    let raw = q
        .fileuri
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::field("fileuri", "This query parameter is required."))?;
    let uri = decode_fileuri(&raw);
    let Some((storage, key)) = owning_storage(state, project_id, &uri).await? else {
        tracing::info!(
            project.id = project_id,
            "refused to resolve a URI outside the project's storages"
        );
        return Err(ApiError::NotFound(
            "This URI does not name an object of this project's storages.".into(),
        ));
    };
    let store = state.stores.get(&state.storage_env, &storage).await.map_err(upstream)?;
    if let Some(ttl_minutes) = storage.settings.import().filter(|o| o.presign).map(|o| o.presign_ttl) {
        if !crate::signing::proxied_instead(state, storage.kind, &storage.settings).await {
            return presign(state, &storage, ttl_minutes, &key).await;
        }
    }
    proxy(&store, &key, headers, method == Method::HEAD, state.media_inline_active).await
}

async fn presign(state: &AppState, storage: &StorageRow, ttl_minutes: i64, key: &str) -> ApiResult<Response> {
    let ttl_minutes = ttl_minutes.clamp(1, 10080) as u64;
    match crate::signing::signed_url(state, storage.kind, &storage.settings, key, ttl_minutes * 60).await {
        Ok(url) => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, url)
            .header(header::CACHE_CONTROL, format!("no-store, max-age={}", ttl_minutes * 60))
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string())),
        Err(reason) => {
            tracing::warn!(storage.id = storage.id, "could not sign a URL: {reason}");
            Err(ApiError::NotFound(
                "Could not sign a URL for this object; see the server log.".into(),
            ))
        }
    }
}

/// `head`: a HEAD request gets the same headers and no body, and nothing
/// is downloaded.
async fn proxy(
    store: &GcsStore,
    key: &str,
    headers: &HeaderMap,
    head: bool,
    inline_active: bool,
) -> ApiResult<Response> {
    // Bucket objects are media: never a script or style sheet of the app's
    // pages (their CSP allows scripts from this origin), whatever the
    // object's type (Fetch Metadata, W3C; browsers without it meet the
    // plain-text type below).
    if let Some(dest) = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) {
        if NOT_MEDIA_DESTINATIONS.contains(&dest) {
            return Err(ApiError::Forbidden(format!(
                "Storage objects are served as media, not as a {dest}."
            )));
        }
    }
    let meta = store.stat(key).await.map_err(upstream)?;
    let etag = quoted_etag(&meta.etag);
    let content_type = content_type(&meta);
    // Script is sent as text: with `nosniff` no browser runs it.
    let content_type = if is_javascript(&content_type) {
        "text/plain; charset=utf-8".to_owned()
    } else {
        content_type
    };
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        // Bucket objects are served on the app's origin, where the session
        // cookie works: the browser must not guess a type, and a document
        // opened from here runs sandboxed (no script, an opaque origin).
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, MEDIA_CSP)
        .header(header::ETAG, &etag)
        .header(
            header::CACHE_CONTROL,
            format!("private, max-age={PROXY_MAX_AGE}, must-revalidate"),
        );
    let modified = modified_time(&meta);
    if let Some(t) = modified {
        builder = builder.header(header::LAST_MODIFIED, httpdate::fmt_http_date(t));
    }
    if runs_script(&content_type) && !inline_active {
        // Opened directly it is downloaded, not rendered; as a subresource
        // (`<img src>` of an SVG) it still displays.
        builder = builder.header(header::CONTENT_DISPOSITION, "attachment");
    }
    // An ETag the `headers` crate cannot read (not expected from GCS)
    // leaves the request unconditional.
    let typed_etag = etag.parse::<ETag>().ok();
    if let Some(typed) = &typed_etag {
        let status = match preconditions(headers, typed, modified) {
            Precondition::Proceed => None,
            // The client has it: no body, nothing downloaded.
            Precondition::NotModified => Some(StatusCode::NOT_MODIFIED),
            Precondition::Failed => Some(StatusCode::PRECONDITION_FAILED),
        };
        if let Some(status) = status {
            return builder
                .status(status)
                .body(Body::empty())
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
    }
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| typed_etag.as_ref().is_none_or(|t| range_applies(headers, t, modified)));
    let range = parse_range(range_header, meta.size);
    let (status, start, end) = match range {
        ByteRange::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", meta.size))
                .body(Body::empty())
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
        ByteRange::Full => (StatusCode::OK, 0, meta.size.saturating_sub(1)),
        ByteRange::Part(a, b) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", meta.size));
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
    };
    let length = if meta.size == 0 { 0 } else { end - start + 1 };
    let body = if length == 0 || head {
        Body::empty()
    } else {
        // Pinned to the generation whose ETag we announced. The stream is
        // dropped (and the upstream request closed) if the client goes away.
        let stream = store
            .read_stream(
                key,
                Some(meta.generation),
                start,
                (status == StatusCode::PARTIAL_CONTENT).then_some(end),
            )
            .await
            .map_err(upstream)?;
        let sent = metrics::counter!(crate::metrics::PROXY_BYTES);
        Body::from_stream(futures::StreamExt::inspect(rechunk(stream), move |chunk| {
            if let Ok(chunk) = chunk {
                sent.increment(chunk.len() as u64);
            }
        }))
    };
    builder
        .status(status)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Bytes read ahead from upstream before handing them to the HTTP layer.
/// Upstream chunks are small (~16 KiB); handing each over as it arrives
/// costs a write syscall per chunk, which halved throughput on 2 cores.
/// Read-ahead chunks are handed over back to back without copying, so the
/// HTTP layer queues them and writes many with one vectored write. Memory
/// stays bounded by this size.
const PROXY_CHUNK: usize = 512 * 1024;

fn rechunk(
    stream: labelport_storage::ByteStream,
) -> impl futures::Stream<Item = Result<bytes::Bytes, StorageError>> + Send {
    use futures::StreamExt;
    use std::collections::VecDeque;
    futures::stream::unfold(
        (stream, VecDeque::<bytes::Bytes>::new(), false),
        |(mut upstream, mut ready, mut done)| async move {
            if ready.is_empty() && !done {
                let mut buffered = 0;
                while buffered < PROXY_CHUNK {
                    match upstream.next().await {
                        Some(Ok(chunk)) => {
                            buffered += chunk.len();
                            ready.push_back(chunk);
                        }
                        Some(Err(e)) => {
                            // What was read goes first; the error ends the body.
                            if ready.is_empty() {
                                return Some((Err(e), (upstream, ready, true)));
                            }
                            done = true;
                            break;
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
            }
            let chunk = ready.pop_front()?;
            Some((Ok(chunk), (upstream, ready, done)))
        },
    )
}

#[utoipa::path(get, path = "/tasks/{id}/resolve", params(("id" = i64, Path), ResolveQuery), tag = "media",
    responses((status = 200, description = "The object (proxy)"), (status = 206, description = "A byte range"),
        (status = 303, description = "Redirect to a V4 signed URL (presign)"), (status = 304, description = "Not modified"),
        (status = 400, description = "No fileuri"), (status = 404, description = "Unknown task, or not an object of this project's storages"),
        (status = 416, description = "Range not satisfiable"), (status = 424, description = "Storage failed")))]
pub async fn resolve_task(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<ResolveQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let task = state.db.get_task(id).await?;
    // Task-level check: only URIs that occur in this task's data (the seed:
    // "task-level access checks on every request"). A member of the
    // project cannot read other objects of the bucket through a task.
    if let Some(raw) = q.fileuri.as_deref().filter(|f| !f.is_empty()) {
        let data: serde_json::Value = serde_json::from_str(&task.data).unwrap_or_default();
        if !uri_occurs(&data, &decode_fileuri(raw)) {
            tracing::info!(task.id = id, "refused to resolve a URI that is not in the task's data");
            return Err(ApiError::NotFound(
                "This URI does not occur in this task's data.".into(),
            ));
        }
    }
    resolve_in_project(&state, task.project_id, q, &headers, &method).await
}

#[utoipa::path(get, path = "/tasks/{id}/presign", params(("id" = i64, Path), ResolveQuery), tag = "media",
    responses((status = 200, description = "Same as /tasks/{id}/resolve")))]
pub async fn presign_task(
    state: State<AppState>,
    id: PathId,
    q: QueryParams<ResolveQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    resolve_task(state, id, q, method, headers).await
}

#[utoipa::path(get, path = "/projects/{id}/resolve", params(("id" = i64, Path), ResolveQuery), tag = "media",
    responses((status = 200, description = "Same as /tasks/{id}/resolve, for a project")))]
pub async fn resolve_project(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<ResolveQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.db.get_project(id).await?;
    resolve_in_project(&state, id, q, &headers, &method).await
}

#[utoipa::path(get, path = "/projects/{id}/presign", params(("id" = i64, Path), ResolveQuery), tag = "media",
    responses((status = 200, description = "Same as /projects/{id}/resolve")))]
pub async fn presign_project(
    state: State<AppState>,
    id: PathId,
    q: QueryParams<ResolveQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    resolve_project(state, id, q, method, headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// RFC 9110 §13: every conditional header, strong and weak tags, dates
    /// before, at and after the object's time, and their order.
    #[test]
    fn conditional_request_matrix() {
        use Precondition::*;
        let etag: ETag = "\"v2\"".parse().unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let date = |offset: i64| {
            httpdate::fmt_http_date(
                at + std::time::Duration::from_secs(10) - std::time::Duration::from_secs((10 - offset) as u64),
            )
        };
        let (before, same, after) = (date(-5), date(0), date(5));
        let cases: Vec<(Vec<(&str, &str)>, Precondition)> = vec![
            (vec![], Proceed),
            (vec![("if-match", "\"v2\"")], Proceed),
            (vec![("if-match", "*")], Proceed),
            (vec![("if-match", "\"v1\"")], Failed),
            (vec![("if-match", "W/\"v2\"")], Failed), // If-Match compares strongly
            (vec![("if-match", "\"v1\", \"v2\"")], Proceed),
            (vec![("if-unmodified-since", &same)], Proceed),
            (vec![("if-unmodified-since", &after)], Proceed),
            (vec![("if-unmodified-since", &before)], Failed),
            // If-Match present: If-Unmodified-Since is not evaluated.
            (vec![("if-match", "\"v2\""), ("if-unmodified-since", &before)], Proceed),
            (vec![("if-none-match", "\"v2\"")], NotModified),
            (vec![("if-none-match", "W/\"v2\"")], NotModified), // weak comparison
            (vec![("if-none-match", "*")], NotModified),
            (vec![("if-none-match", "\"v1\"")], Proceed),
            (vec![("if-modified-since", &same)], NotModified),
            (vec![("if-modified-since", &after)], NotModified),
            (vec![("if-modified-since", &before)], Proceed),
            // If-None-Match present: If-Modified-Since is not evaluated.
            (vec![("if-none-match", "\"v1\""), ("if-modified-since", &same)], Proceed),
            // 412 before 304.
            (vec![("if-match", "\"v1\""), ("if-none-match", "\"v2\"")], Failed),
        ];
        for (headers, expected) in cases {
            assert_eq!(preconditions(&with(&headers), &etag, Some(at)), expected, "{headers:?}");
        }
        // If-Range: only this very representation keeps the Range.
        assert!(range_applies(&with(&[]), &etag, Some(at)));
        assert!(range_applies(&with(&[("if-range", "\"v2\"")]), &etag, Some(at)));
        assert!(
            !range_applies(&with(&[("if-range", "\"v1\"")]), &etag, Some(at)),
            "a stale ETag"
        );
        assert!(
            !range_applies(&with(&[("if-range", "W/\"v2\"")]), &etag, Some(at)),
            "weak never matches"
        );
        assert!(range_applies(&with(&[("if-range", &same)]), &etag, Some(at)));
        assert!(
            !range_applies(&with(&[("if-range", &before)]), &etag, Some(at)),
            "an older date"
        );
        // Several ranges: the whole body (RFC 9110 lets a server ignore Range).
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 10), ByteRange::Full);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), ByteRange::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), ByteRange::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), ByteRange::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), ByteRange::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), ByteRange::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), ByteRange::Full);
    }

    #[test]
    fn etags() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\", W/\"def\""));
        let tag = |t: &str| t.parse::<ETag>().unwrap();
        assert_eq!(preconditions(&h, &tag("\"def\""), None), Precondition::NotModified);
        assert_eq!(preconditions(&h, &tag("\"abc\""), None), Precondition::NotModified);
        assert_eq!(preconditions(&h, &tag("\"x\""), None), Precondition::Proceed);
        assert_eq!(quoted_etag("CJ8"), "\"CJ8\"");
    }
}
