//! Local fakes of Google's identity endpoints, which have no emulator:
//! the OAuth token endpoint (JWT-bearer grant from a key file), the GCE
//! metadata server (token and service-account email) and IAM Credentials
//! `signBlob`. Each checks what it receives the way Google does and
//! records what it served, so tests can assert the exact sequence.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use labelport_storage::signing::{signed_url, KeySigner, SignedUrlRequest};
use serde_json::{json, Value};

/// The access token every fake endpoint issues, and `signBlob` accepts.
pub const FAKE_ACCESS_TOKEN: &str = "fake-access-token-for-tests";

#[derive(Clone)]
struct Shared {
    key: Arc<KeySigner>,
    email: String,
    seen: Arc<Mutex<Vec<String>>>,
    /// The metadata server's email endpoint answers 503 this many times.
    email_failures: Arc<Mutex<u32>>,
}

impl Shared {
    fn saw(&self, what: &str) {
        self.seen.lock().unwrap().push(what.to_owned());
    }
}

/// A running fake of Google's identity endpoints, signing with one
/// service-account key.
pub struct FakeGoogle {
    /// `http://127.0.0.1:<port>`: token URI base and IAM endpoint.
    pub url: String,
    /// `127.0.0.1:<port>`: what `GCE_METADATA_HOST` should hold.
    pub host: String,
    /// The key's service account.
    pub email: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGoogle {
    /// Starts the fakes for the service-account key `key_json`.
    pub async fn start(key_json: &str) -> anyhow::Result<FakeGoogle> {
        let key: Value = serde_json::from_str(key_json)?;
        let email = key["client_email"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the key has no client_email"))?
            .to_owned();
        let shared = Shared {
            key: Arc::new(KeySigner::from_service_account_json(key_json)?),
            email: email.clone(),
            seen: Default::default(),
            email_failures: Default::default(),
        };
        let router = Router::new()
            .route("/token", post(oauth_token))
            .route("/v1/projects/-/serviceAccounts/{name}", post(sign_blob))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                get(metadata_email),
            )
            .route("/computeMetadata/v1/project/project-id", get(metadata_project))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeGoogle {
            url: format!("http://{host}"),
            host,
            email,
            shared,
            task,
        })
    }

    /// What was served so far, in order: `token`, `metadata-token`,
    /// `metadata-email` (`metadata-email-503` when made to fail),
    /// `metadata-project`, `signBlob`.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Makes the metadata server's email endpoint answer 503 the next
    /// `times` times (a metadata server still starting).
    pub fn fail_metadata_email(&self, times: u32) {
        *self.shared.email_failures.lock().unwrap() = times;
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.replace("%3A", ":").replace("%3a", ":").replace('+', " "),
            )
        })
        .collect()
}

fn token_answer() -> Json<Value> {
    Json(json!({"access_token": FAKE_ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}))
}

/// Google's OAuth token endpoint: a JWT-bearer grant whose claims name the
/// key's service account and the cloud-platform scope.
async fn oauth_token(State(f): State<Shared>, body: String) -> (StatusCode, Json<Value>) {
    let form = form_pairs(&body);
    let grant = form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str());
    let assertion = form
        .iter()
        .find(|(k, _)| k == "assertion")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") || assertion.split('.').count() != 3 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "got": body})),
        );
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(assertion.split('.').nth(1).unwrap_or(""))
        .ok()
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .unwrap_or(Value::Null);
    if claims["iss"] != f.email.as_str() || !claims["scope"].as_str().unwrap_or("").contains("cloud-platform") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unexpected claims", "claims": claims})),
        );
    }
    f.saw("token");
    (StatusCode::OK, token_answer())
}

/// The metadata server answers only requests that carry
/// `Metadata-Flavor: Google` (its guard against forwarded requests).
fn metadata_flavor_ok(headers: &HeaderMap) -> bool {
    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google")
}

async fn metadata_token(
    State(f): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> (StatusCode, Json<Value>) {
    if !metadata_flavor_ok(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({"error": "missing Metadata-Flavor"})));
    }
    let scopes = q.iter().find(|(k, _)| k == "scopes").map(|(_, v)| v.as_str());
    if !scopes
        .unwrap_or("")
        .contains("https://www.googleapis.com/auth/cloud-platform")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "no cloud-platform scope"})),
        );
    }
    f.saw("metadata-token");
    (StatusCode::OK, token_answer())
}

async fn metadata_email(State(f): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    if !metadata_flavor_ok(&headers) {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor".into());
    }
    {
        let mut failures = f.email_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            f.saw("metadata-email-503");
            return (StatusCode::SERVICE_UNAVAILABLE, "starting".into());
        }
    }
    f.saw("metadata-email");
    (StatusCode::OK, f.email.clone())
}

async fn metadata_project(State(f): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    if !metadata_flavor_ok(&headers) {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor".into());
    }
    f.saw("metadata-project");
    (StatusCode::OK, "labelport-test-project".into())
}

/// IAM Credentials `signBlob`: needs the issued token, the key's account
/// and a V4 string to sign; signs it with the key.
async fn sign_blob(
    State(f): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {FAKE_ACCESS_TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}})),
        );
    }
    if name != format!("{}:signBlob", f.email) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "message": format!("no account {name}"), "status": "NOT_FOUND"}})),
        );
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(body["payload"].as_str().unwrap_or(""))
        .unwrap_or_default();
    if !payload.starts_with(b"GOOG4-RSA-SHA256\n") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": "not a V4 string to sign", "status": "INVALID_ARGUMENT"}})),
        );
    }
    let Ok(signature) = f.key.sign_now(&payload) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "signing failed"})),
        );
    };
    f.saw("signBlob");
    let signed = base64::engine::general_purpose::STANDARD.encode(signature);
    (StatusCode::OK, Json(json!({"keyId": "test-key", "signedBlob": signed})))
}

/// Checks that `location`, a signed URL made through IAM, is exactly the
/// URL the key `key_json` signs locally for the same time (read from the
/// URL), then fetches it; returns the object's bytes.
pub async fn assert_signed_like_the_key(
    location: &str,
    key_json: &str,
    bucket: &str,
    object: &str,
    expires_secs: u64,
    host: &str,
) -> Vec<u8> {
    let date = location
        .split("X-Goog-Date=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("X-Goog-Date in the URL");
    let at = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .expect("a V4 date")
        .and_utc();
    let mut req = SignedUrlRequest::new("GET", bucket, object, expires_secs, at);
    req.host = Some(host.to_owned());
    let key = KeySigner::from_service_account_json(key_json).expect("the key");
    assert_eq!(location, signed_url(&req, &key).await.expect("signed locally"));
    let r = reqwest::get(location).await.expect("the signed URL fetched");
    assert!(r.status().is_success(), "the signed URL answered {}", r.status());
    r.bytes().await.expect("the object").to_vec()
}
