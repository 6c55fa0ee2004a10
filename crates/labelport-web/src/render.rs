//! Templates and the pages' error type.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use labelport_api::error::ApiError;
use minijinja::Environment;
use serde::Serialize;

/// The templates, compiled once. `.html` names are auto-escaped.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("login.html", include_str!("../templates/login.html")),
            ("projects.html", include_str!("../templates/projects.html")),
            ("project_form.html", include_str!("../templates/project_form.html")),
            ("data.html", include_str!("../templates/data.html")),
            ("label.html", include_str!("../templates/label.html")),
            ("storage.html", include_str!("../templates/storage.html")),
            ("error.html", include_str!("../templates/error.html")),
        ] {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not compile: {e}"));
        }
        env
    })
}

/// Renders a page with the pages' security headers.
pub fn page(name: &str, context: impl Serialize) -> Result<Response, PageError> {
    let template = environment()
        .get_template(name)
        .map_err(|e| PageError::internal(format!("template {name}: {e}")))?;
    let html = template
        .render(context)
        .map_err(|e| PageError::internal(format!("rendering {name}: {e:#}")))?;
    Ok(with_headers(Html(html).into_response()))
}

/// Content Security Policy of every page: scripts and styles from this
/// origin only (the editor's React sets inline styles, hence
/// `style-src 'unsafe-inline'`); media from anywhere over http(s), since
/// presigned URLs point at the bucket's host; no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; \
    connect-src 'self' http: https:; font-src 'self' data:; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'none'";

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages show per-user data: never cached by shared caches.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}

/// A page that cannot be shown: the API error it stands for, rendered as
/// an HTML page with the same status (the detail of an internal error goes
/// to the log only).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl PageError {
    pub fn internal(message: String) -> Self {
        PageError(ApiError::Internal(message))
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<labelport_db::DbError> for PageError {
    fn from(e: labelport_db::DbError) -> Self {
        PageError(e.into())
    }
}

#[derive(Serialize)]
struct ErrorContext {
    title: &'static str,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let (title, message) = match &self.0 {
            ApiError::NotFound(_) => ("Not found", "There is nothing here, or you may not see it.".to_owned()),
            ApiError::Forbidden(_) => ("Not allowed", "Your role does not allow this page.".to_owned()),
            ApiError::Internal(cause) => {
                tracing::error!("page failed: {cause}");
                (
                    "Something went wrong",
                    "The server could not show this page; see its log.".to_owned(),
                )
            }
            other => ("Cannot show this page", other.to_string()),
        };
        let context = ErrorContext {
            title,
            status: status.as_u16(),
            message,
        };
        match page("error.html", &context) {
            Ok(mut response) => {
                *response.status_mut() = status;
                response
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
        }
    }
}
