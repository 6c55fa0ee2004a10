//! Extractors that turn bad input into Label Studio-shaped 400s and check
//! the API token.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use labelport_db::UserRow;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON object body; a body that is not JSON, not an object, or not of
/// the expected shape is a 400 naming the problem (never axum's plain-text
/// 415/422). Every `JsonBody` type is an object with named fields, which
/// serde would otherwise also read from a list of the fields' values.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::body(format!("Could not read the request body: {e}")))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if matches!(first, Some(b'[')) {
            return Err(ApiError::body("Expected a JSON object, got a list."));
        }
        parse_json_body(&bytes).map(JsonBody)
    }
}

pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::body("The request body is empty; a JSON body is required."));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::body(format!("JSON parse error - {e}")))
}

/// Query parameters; unparsable values are a 400.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e: QueryRejection| ApiError::body(format!("Invalid query parameters: {}", e.body_text())))
    }
}

/// Name of the browser session cookie (see `auth.rs`).
pub const SESSION_COOKIE: &str = "labelport_session";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Header that carries a page's CSRF token ([`csrf_token`]) on writes made
/// with the session cookie (Django's and so Label Studio's name).
pub const CSRF_HEADER: &str = "x-csrftoken";

/// The CSRF token of a browser session: hex SHA-256 of a fixed label and
/// the session token. Pages embed it; `fetch` sends it back in
/// [`CSRF_HEADER`]. Another site can neither read it nor (without a CORS
/// preflight, which this server never grants) send a custom header, so a
/// cookie alone never authorises a write (OWASP CSRF cheat sheet,
/// "synchronizer token" with a token bound to the session).
pub fn csrf_token(session: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("labelport-csrf\0{session}").as_bytes()))
}

/// Whether a request's CSRF header matches its session (compared as
/// digests, so the time taken says nothing about the expected value).
fn csrf_matches(headers: &axum::http::HeaderMap, session: &str) -> bool {
    use sha2::Digest;
    let Some(sent) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    sha2::Sha256::digest(sent.as_bytes()) == sha2::Sha256::digest(csrf_token(session).as_bytes())
}

/// The caller, authenticated by `Authorization: Token <key>`, or by the
/// browser session cookie: for GET/HEAD as it is (media `<img>`/`<video>`
/// requests, pages), for writes only with the session's CSRF token in
/// [`CSRF_HEADER`] (else 403), so a cookie can never authorise a
/// cross-site write. The
/// access middleware (`access.rs`) has already authenticated and
/// authorised the caller of every route; this hands its user over.
#[derive(Clone)]
pub struct AuthUser(pub UserRow);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        authenticate(parts, state).await.map(AuthUser)
    }
}

/// Authenticates a request (see [`AuthUser`]); 401 without valid
/// credentials.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<UserRow, ApiError> {
    {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            let safe = matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
            if let Some(cookie) = session_cookie(&parts.headers) {
                if let Some(user) = state.db.user_by_session(&cookie).await? {
                    if safe || csrf_matches(&parts.headers, &cookie) {
                        return Ok(user);
                    }
                    // A live session without its token: say which (Django's
                    // and so Label Studio's answer).
                    return Err(ApiError::Forbidden(
                        "CSRF Failed: CSRF token missing or incorrect.".into(),
                    ));
                }
            }
            return Err(ApiError::Unauthorized(
                "Authentication credentials were not provided.".into(),
            ));
        };
        let header = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("Invalid token header.".into()))?;
        let (scheme, key) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("token") {
            return Err(ApiError::Unauthorized(
                "Authentication credentials were not provided.".into(),
            ));
        }
        let key = key.trim();
        if key.is_empty() || key.contains(' ') {
            return Err(ApiError::Unauthorized("Invalid token header.".into()));
        }
        match state.db.user_by_token(key).await? {
            Some(user) => Ok(user),
            None => Err(ApiError::Unauthorized("Invalid token.".into())),
        }
    }
}

/// A numeric path id; anything else is a 404 like an unknown object.
pub struct PathId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        raw.parse::<i64>().map(PathId).map_err(|_| ApiError::not_found())
    }
}

/// The client's IP address as the connection shows it (None in servers
/// built without connect info, e.g. some tests). Behind a proxy it is the
/// proxy's.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}
