//! Local fakes of the endpoints of Workload Identity Federation, which have
//! no emulator: the EC2 metadata service (IMDSv2), Google STS and IAM
//! Credentials (`generateAccessToken`, `signBlob`), on one port.
//!
//! Each checks what it receives as the real service would and as Google's
//! documentation of the exchange says (AIP-4117, "Workload Identity
//! Federation with AWS"): the IMDSv2 session header; the form fields of the
//! token exchange; the AWS subject token's SigV4 signature, recomputed here
//! from the secret key (independently of the signing crate); the audience
//! bound into it by `x-goog-cloud-target-resource`; and that each bearer
//! token is one the previous step issued and has not expired. A request
//! that fails a check is answered with an error and recorded in
//! [`FakeWif::violations`], which tests assert empty.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::Engine;
use labelport_storage::signing::KeySigner;
use serde_json::{json, Value};

/// The fake AWS identity the metadata service hands out.
pub const AWS_ACCESS_KEY_ID: &str = "ASIAFAKELABELPORT";
pub const AWS_SECRET_ACCESS_KEY: &str = "fake/secret+key/for-sigv4-checks";
pub const AWS_SESSION_TOKEN: &str = "fake-session-token";
pub const AWS_REGION: &str = "eu-west-3";
pub const AWS_ROLE: &str = "labelport-app";

/// What the fakes expect and how they answer; change it with
/// [`FakeWif::configure`].
#[derive(Clone, Debug)]
pub struct WifExpectations {
    /// The pool provider's resource name the STS exchange must name.
    pub audience: String,
    /// The only account that may be impersonated.
    pub service_account_email: String,
    /// `subject_token_type` expected: AWS's, or an OIDC JWT.
    pub subject_token_type: String,
    /// For an OIDC subject: the exact token expected.
    pub oidc_token: Option<String>,
    /// The AWS secret key the subject token must be signed with.
    pub aws_secret_access_key: String,
    pub aws_access_key_id: String,
    pub aws_session_token: Option<String>,
    pub aws_region: String,
    /// Lifetime of the service account's tokens.
    pub token_lifetime: Duration,
    /// STS answers this (status, error, description) instead of a token.
    pub refuse_sts: Option<(u16, String, String)>,
    /// generateAccessToken answers this (status, message).
    pub refuse_impersonation: Option<(u16, String)>,
    /// signBlob answers this (status, message).
    pub refuse_sign_blob: Option<(u16, String)>,
    /// Whether the IAM API's testIamPermissions reports signBlob held;
    /// None: held unless signBlob is refused with a 403.
    pub sign_blob_held: Option<bool>,
    /// testIamPermissions answers this (status, message).
    pub refuse_permission_check: Option<(u16, String)>,
}

#[derive(Default)]
struct Issued {
    imds: Vec<String>,
    federated: Vec<String>,
    /// Service-account tokens and when they expire.
    service_account: Vec<(String, Instant)>,
}

struct Inner {
    expect: Mutex<WifExpectations>,
    key: KeySigner,
    issued: Mutex<Issued>,
    /// What was served, in order: `imds-token`, `imds-region`,
    /// `imds-role`, `imds-credentials`, `sts`, `generateAccessToken`,
    /// `signBlob`, `testIamPermissions`.
    seen: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    /// Slows the STS answer (to hold many callers on one refresh).
    sts_delay: Mutex<Duration>,
}

impl Inner {
    fn saw(&self, what: &str) {
        self.seen.lock().unwrap().push(what.to_owned());
    }

    fn violation(&self, what: String) -> String {
        self.violations.lock().unwrap().push(what.clone());
        what
    }
}

/// The running fakes.
pub struct FakeWif {
    /// `http://127.0.0.1:<port>`: the STS, IAM Credentials and EC2
    /// metadata endpoint.
    pub url: String,
    /// `{url}/iam-api`: the IAM API endpoint (`LABELPORT_IAM_API_ENDPOINT`).
    pub iam_api_url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeWif {
    /// Starts the fakes. `key_json` is the service-account key `signBlob`
    /// signs with (its account is the one that may be impersonated);
    /// `audience` the pool provider the exchange must name.
    pub async fn start(key_json: &str, audience: &str) -> anyhow::Result<FakeWif> {
        let key: Value = serde_json::from_str(key_json)?;
        let email = key["client_email"].as_str().unwrap_or_default().to_owned();
        let inner = Arc::new(Inner {
            expect: Mutex::new(WifExpectations {
                audience: audience.to_owned(),
                service_account_email: email,
                subject_token_type: labelport_storage::wif::AWS_TOKEN_TYPE.to_owned(),
                oidc_token: None,
                aws_secret_access_key: AWS_SECRET_ACCESS_KEY.to_owned(),
                aws_access_key_id: AWS_ACCESS_KEY_ID.to_owned(),
                aws_session_token: Some(AWS_SESSION_TOKEN.to_owned()),
                aws_region: AWS_REGION.to_owned(),
                token_lifetime: Duration::from_secs(3600),
                refuse_sts: None,
                refuse_impersonation: None,
                refuse_sign_blob: None,
                sign_blob_held: None,
                refuse_permission_check: None,
            }),
            key: KeySigner::from_service_account_json(key_json)?,
            issued: Mutex::default(),
            seen: Mutex::default(),
            violations: Mutex::default(),
            sts_delay: Mutex::new(Duration::ZERO),
        });
        let router = Router::new()
            .route("/v1/token", post(sts_token))
            .route("/v1/projects/-/serviceAccounts/{name}", post(iam))
            .route("/iam-api/v1/projects/-/serviceAccounts/{name}", post(iam_api))
            .route("/latest/{*path}", any(imds))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeWif {
            iam_api_url: format!("{url}/iam-api"),
            url,
            inner,
            task,
        })
    }

    /// Changes what the fakes expect or answer.
    pub fn configure(&self, change: impl FnOnce(&mut WifExpectations)) {
        change(&mut self.inner.expect.lock().unwrap());
    }

    /// Holds each STS answer back this long.
    pub fn delay_sts(&self, delay: Duration) {
        *self.inner.sts_delay.lock().unwrap() = delay;
    }

    /// What was served, in order.
    pub fn seen(&self) -> Vec<String> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// How many times `what` was served.
    pub fn count(&self, what: &str) -> usize {
        self.seen().iter().filter(|s| *s == what).count()
    }

    /// Requests that failed a check (empty when everything was as Google
    /// and AWS require).
    pub fn violations(&self) -> Vec<String> {
        self.inner.violations.lock().unwrap().clone()
    }

    /// Whether `token` is a service-account token the fake issued and that
    /// has not expired: what a GCS request must carry.
    pub fn is_live_service_account_token(&self, token: &str) -> bool {
        is_live(&self.inner, token)
    }

    /// A check for [`crate::FaultProxy::require_bearer`].
    pub fn bearer_check(&self) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        let inner = self.inner.clone();
        Arc::new(move |token: &str| is_live(&inner, token))
    }
}

impl Drop for FakeWif {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_live(inner: &Inner, token: &str) -> bool {
    inner
        .issued
        .lock()
        .unwrap()
        .service_account
        .iter()
        .any(|(t, expires)| t == token && Instant::now() < *expires)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------
// EC2 instance metadata service, IMDSv2

async fn imds(State(f): State<Arc<Inner>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/latest/api/token" {
        if method != Method::PUT || !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
            let v = f.violation(format!(
                "IMDSv2 token request without PUT and TTL header: {method} {path}"
            ));
            return (StatusCode::BAD_REQUEST, v).into_response();
        }
        let token = format!("imds-session-{}", uuid::Uuid::new_v4());
        f.issued.lock().unwrap().imds.push(token.clone());
        f.saw("imds-token");
        let ttl = headers["x-aws-ec2-metadata-token-ttl-seconds"].clone();
        return ([("x-aws-ec2-metadata-token-ttl-seconds", ttl)], token).into_response();
    }
    let session = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok());
    if !session.is_some_and(|s| f.issued.lock().unwrap().imds.iter().any(|t| t == s)) {
        // IMDSv1 (no session token) is what IMDSv2-only instances refuse.
        f.violation(format!("IMDS request without an IMDSv2 session token: {path}"));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let expect = f.expect.lock().unwrap().clone();
    match path {
        "/latest/meta-data/placement/region" => {
            f.saw("imds-region");
            expect.aws_region.into_response()
        }
        "/latest/meta-data/iam/security-credentials/" | "/latest/meta-data/iam/security-credentials" => {
            f.saw("imds-role");
            AWS_ROLE.into_response()
        }
        p if p == format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}") => {
            f.saw("imds-credentials");
            let now = chrono::Utc::now();
            Json(json!({
                "Code": "Success",
                "LastUpdated": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "Type": "AWS-HMAC",
                "AccessKeyId": expect.aws_access_key_id,
                "SecretAccessKey": expect.aws_secret_access_key,
                "Token": expect.aws_session_token,
                "Expiration": (now + chrono::Duration::hours(6)).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }))
            .into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

// ---------------------------------------------------------------------------
// Google STS

fn form(body: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{body}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn sts_token(State(f): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let delay = *f.sts_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let expect = f.expect.lock().unwrap().clone();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let fields = form(&body);
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let mut problems = Vec::new();
    if !is_form {
        problems.push("the body is not application/x-www-form-urlencoded".to_owned());
    }
    for (k, want) in [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token_type", expect.subject_token_type.as_str()),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
    ] {
        if field(k) != want {
            problems.push(format!("{k} is {:?}, not {want:?}", field(k)));
        }
    }
    if let Some((status, error, description)) = &expect.refuse_sts {
        f.saw("sts-refused");
        return oauth_error(*status, error, description);
    }
    // A wrong audience is Google's own refusal, not a client bug.
    if field("audience") != expect.audience {
        f.saw("sts-refused");
        return oauth_error(
            400,
            "invalid_target",
            &format!(
                "The target service indicated by the \"audience\" parameters is invalid. ({})",
                field("audience")
            ),
        );
    }
    if expect.subject_token_type == labelport_storage::wif::AWS_TOKEN_TYPE {
        if let Err(e) = check_aws_subject_token(field("subject_token"), &expect) {
            problems.push(format!("AWS subject token: {e}"));
        }
    } else if expect.oidc_token.as_deref() != Some(field("subject_token")) {
        problems.push("the OIDC subject token is not the one expected".to_owned());
    }
    if !problems.is_empty() {
        let v = f.violation(format!("STS: {}", problems.join("; ")));
        return oauth_error(400, "invalid_request", &v);
    }
    let token = format!("federated-{}", uuid::Uuid::new_v4());
    f.issued.lock().unwrap().federated.push(token.clone());
    f.saw("sts");
    Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
    .into_response()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Recomputes the SigV4 signature of the `GetCallerIdentity` request in
/// `token` (AWS "Signature Version 4 signing process") and checks what
/// Google requires of it.
fn check_aws_subject_token(token: &str, expect: &WifExpectations) -> Result<(), String> {
    let request: Value = serde_json::from_str(token).map_err(|e| format!("not JSON: {e}"))?;
    let url = request["url"].as_str().unwrap_or_default();
    let want_url = format!(
        "https://sts.{}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        expect.aws_region
    );
    if url != want_url && url != want_url.replace(".com?", ".com/?") {
        return Err(format!("url {url:?}, not {want_url:?}"));
    }
    if request["method"] != "POST" {
        return Err("method is not POST".into());
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for h in request["headers"].as_array().ok_or("no headers")? {
        let key = h["key"].as_str().ok_or("a header without key")?.to_ascii_lowercase();
        let value = h["value"].as_str().ok_or("a header without value")?.to_owned();
        headers.insert(key, value);
    }
    let header = |k: &str| headers.get(k).cloned().ok_or(format!("no {k} header"));
    if header("x-goog-cloud-target-resource")? != expect.audience {
        return Err("x-goog-cloud-target-resource is not the audience".into());
    }
    if header("host")? != format!("sts.{}.amazonaws.com", expect.aws_region) {
        return Err("host is not the regional STS".into());
    }
    if headers.get("x-amz-security-token") != expect.aws_session_token.as_ref() {
        return Err("x-amz-security-token is not the session token".into());
    }
    let authorization = header("authorization")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization is not AWS4-HMAC-SHA256")?;
    let mut parts: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').ok_or("a malformed Authorization part")?;
        parts.insert(k, v);
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != expect.aws_access_key_id {
        return Err(format!("Credential {credential:?} is not of the access key"));
    }
    if scope[2] != expect.aws_region || scope[3] != "sts" || scope[4] != "aws4_request" {
        return Err(format!(
            "Credential scope {credential:?} is not {}/sts/aws4_request",
            expect.aws_region
        ));
    }
    let signed: Vec<&str> = parts
        .get("SignedHeaders")
        .ok_or("no SignedHeaders")?
        .split(';')
        .collect();
    for needed in ["host", "x-amz-date", "x-goog-cloud-target-resource"] {
        if !signed.contains(&needed) {
            return Err(format!("{needed} is not signed"));
        }
    }
    let amz_date = header("x-amz-date")?;
    if !amz_date.starts_with(scope[1]) {
        return Err("x-amz-date is not the credential's date".into());
    }
    let canonical_headers: String = signed
        .iter()
        .map(|h| format!("{h}:{}\n", headers.get(*h).map(|v| v.trim()).unwrap_or_default()))
        .collect();
    let canonical_request = format!(
        "POST\n/\nAction=GetCallerIdentity&Version=2011-06-15\n{canonical_headers}\n{}\n{}",
        signed.join(";"),
        sha256_hex(b"")
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{}/sts/aws4_request\n{}",
        scope[1],
        scope[2],
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{}", expect.aws_secret_access_key).as_bytes(), scope[1]);
    for part in [scope[2], "sts", "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex::encode(hmac(&key, &string_to_sign));
    if parts.get("Signature") != Some(&signature.as_str()) {
        return Err("the SigV4 signature does not verify".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// IAM Credentials

fn google_error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let name = match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        _ => "INVALID_ARGUMENT",
    };
    (
        code,
        Json(json!({"error": {"code": status, "message": message, "status": name}})),
    )
        .into_response()
}

async fn iam(State(f): State<Arc<Inner>>, Path(name): Path<String>, headers: HeaderMap, body: String) -> Response {
    let expect = f.expect.lock().unwrap().clone();
    let Some((email, method)) = name.rsplit_once(':') else {
        return google_error(404, "no method");
    };
    if email != expect.service_account_email {
        f.saw("iam-refused");
        return google_error(
            403,
            &format!(
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist): {email}"
            ),
        );
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let token = bearer(&headers).unwrap_or_default();
    match method {
        "generateAccessToken" => {
            if !f.issued.lock().unwrap().federated.contains(&token) {
                let v = f.violation("generateAccessToken without the federated token STS issued".into());
                return google_error(401, &v);
            }
            if body["scope"] != json!(["https://www.googleapis.com/auth/cloud-platform"]) {
                let v = f.violation(format!("generateAccessToken scope {}", body["scope"]));
                return google_error(400, &v);
            }
            if let Some((status, message)) = &expect.refuse_impersonation {
                f.saw("generateAccessToken-refused");
                return google_error(*status, message);
            }
            let token = format!("sa-token-{}", uuid::Uuid::new_v4());
            let expires = chrono::Utc::now() + chrono::Duration::from_std(expect.token_lifetime).unwrap_or_default();
            f.issued
                .lock()
                .unwrap()
                .service_account
                .push((token.clone(), Instant::now() + expect.token_lifetime));
            f.saw("generateAccessToken");
            Json(json!({"accessToken": token, "expireTime": expires.to_rfc3339()})).into_response()
        }
        "signBlob" => {
            if !is_live(&f, &token) {
                let v = f.violation("signBlob without a live service-account token".into());
                return google_error(401, &v);
            }
            if let Some((status, message)) = &expect.refuse_sign_blob {
                f.saw("signBlob-refused");
                return google_error(*status, message);
            }
            let payload = base64::engine::general_purpose::STANDARD
                .decode(body["payload"].as_str().unwrap_or(""))
                .unwrap_or_default();
            if !payload.starts_with(b"GOOG4-RSA-SHA256\n") {
                let v = f.violation("signBlob payload is not a V4 string to sign".into());
                return google_error(400, &v);
            }
            let Ok(signature) = f.key.sign_now(&payload) else {
                return google_error(500, "signing failed");
            };
            f.saw("signBlob");
            let signed = base64::engine::general_purpose::STANDARD.encode(signature);
            Json(json!({"keyId": "fake-key", "signedBlob": signed})).into_response()
        }
        _ => google_error(404, "no such method"),
    }
}

/// The IAM API (`iam.googleapis.com`, a separate service from IAM
/// Credentials, served here under `/iam-api`): `testIamPermissions` on the
/// account. `iam.serviceAccounts.signBlob` is held unless signBlob is
/// refused with a 403, or `permission_check_fails` says otherwise.
async fn iam_api(State(f): State<Arc<Inner>>, Path(name): Path<String>, headers: HeaderMap, body: String) -> Response {
    let expect = f.expect.lock().unwrap().clone();
    let Some((email, "testIamPermissions")) = name.rsplit_once(':') else {
        f.violation(format!("IAM API asked {name}"));
        return google_error(404, "no such method");
    };
    if email != expect.service_account_email {
        return google_error(404, &format!("Unknown service account {email}"));
    }
    let token = bearer(&headers).unwrap_or_default();
    if !is_live(&f, &token) {
        let v = f.violation("testIamPermissions without a live service-account token".into());
        return google_error(401, &v);
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let Some(asked) = body["permissions"].as_array() else {
        let v = f.violation(format!("testIamPermissions body {body}"));
        return google_error(400, &v);
    };
    f.saw("testIamPermissions");
    if let Some((status, message)) = &expect.refuse_permission_check {
        return google_error(*status, message);
    }
    let signs = expect
        .sign_blob_held
        .unwrap_or(!matches!(expect.refuse_sign_blob, Some((403, _))));
    let held: Vec<&Value> = asked
        .iter()
        .filter(|p| signs && p.as_str() == Some("iam.serviceAccounts.signBlob"))
        .collect();
    // Google leaves `permissions` out when none is held.
    if held.is_empty() {
        Json(json!({})).into_response()
    } else {
        Json(json!({ "permissions": held })).into_response()
    }
}
