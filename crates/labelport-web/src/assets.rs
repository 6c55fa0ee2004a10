//! Static files: the pages' own style sheet and scripts, and Label
//! Studio's editor (embedded by `build.rs`, served gzip-compressed to
//! browsers that accept it).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The editor's npm version; its files are served under
/// `/static/lsf/<version>/`, so a new version is a new URL and each can be
/// cached for a year.
pub const EDITOR_VERSION: &str = "1.4.0";

macro_rules! editor_file {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/editor/", $name))
    };
}

/// (name, bytes, gzip bytes or empty, content type)
const EDITOR_FILES: &[(&str, &[u8], &[u8], &str)] = &[
    (
        "main.js",
        editor_file!("main.js"),
        editor_file!("main.js.gz"),
        "text/javascript; charset=utf-8",
    ),
    (
        "main.css",
        editor_file!("main.css"),
        editor_file!("main.css.gz"),
        "text/css; charset=utf-8",
    ),
    ("LICENSE", editor_file!("LICENSE"), b"", "text/plain; charset=utf-8"),
    (
        "main.js.LICENSE.txt",
        editor_file!("main.js.LICENSE.txt"),
        b"",
        "text/plain; charset=utf-8",
    ),
];

/// The app's own files, small enough to send as they are.
const APP_FILES: &[(&str, &str, &str)] = &[
    ("app.css", include_str!("../static/app.css"), "text/css; charset=utf-8"),
    (
        "app.js",
        include_str!("../static/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "label.js",
        include_str!("../static/label.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "storage.js",
        include_str!("../static/storage.js"),
        "text/javascript; charset=utf-8",
    ),
];

/// `GET /static/{file}` (public).
pub async fn app_file(Path(file): Path<String>) -> Response {
    match APP_FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, body, content_type)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                // Short: the app's files change with each release under
                // the same name.
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /static/lsf/{version}/{file}` (public): the editor's script, style
/// sheet and license notices.
pub async fn editor_file(Path((version, file)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some((_, body, gzip, content_type)) = EDITOR_FILES.iter().find(|(name, ..)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if version != EDITOR_VERSION {
        return StatusCode::NOT_FOUND.into_response();
    }
    let accepts_gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            parts.next().is_some_and(|c| c.trim().eq_ignore_ascii_case("gzip"))
                && parts.all(|p| p.trim().replace(' ', "") != "q=0")
        });
    let mut response = if accepts_gzip && !gzip.is_empty() {
        let mut r = (*gzip).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        (*body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
