//! Workload Identity Federation: short-lived Google credentials for a
//! server that holds no Google key, as Google's client libraries build them
//! from an `external_account` configuration
//! (<https://google.aip.dev/auth/4117>, "Workload Identity Federation"):
//!
//! 1. a **subject token** that proves who the server is where it runs: a
//!    SigV4-signed AWS `GetCallerIdentity` request ([`aws`]), or an OIDC or
//!    SAML token read from a file or URL ([`SubjectSource`]);
//! 2. Google **STS** exchanges it for a federated access token
//!    (`POST {sts}/v1/token`, RFC 8693 token exchange) for the pool
//!    provider's `audience`;
//! 3. IAM Credentials **`generateAccessToken`** turns that into an access
//!    token of the service account (scope `cloud-platform`), when one is
//!    to be impersonated.
//!
//! Why this chain is ours: the maintained Google auth crates either refuse
//! metadata endpoints other than `169.254.169.254` and read AWS credentials
//! once (`gcloud-auth`), or fix IAM's endpoint and cannot sign through it
//! (`google-cloud-auth`), and none says which step failed (see
//! `shared/reference/gcp-auth-and-signing.md` §3). The AWS side is the AWS
//! SDK's own (`aws-config` credential and region chains, `aws-sigv4`).
//!
//! Tokens are cached per [`Exchange`] (one per storage configuration) and
//! refreshed before they expire; concurrent callers share one refresh.
//! Tokens are never logged, and errors never contain them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::signing::iam::google_error_message;

pub mod aws;
mod external_account;
#[cfg(test)]
mod tests;

pub use external_account::{is_external_account, ExternalAccount};

/// Google's Security Token Service.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com";
/// Google's IAM Credentials API (generateAccessToken, signBlob).
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// Google's IAM API (a service account's `testIamPermissions`).
pub const DEFAULT_IAM_API_ENDPOINT: &str = "https://iam.googleapis.com";
/// The scope of the service account's token: all of Google Cloud, which
/// covers Cloud Storage and IAM `signBlob` (Google's libraries' default).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// `subject_token_type` of an AWS `GetCallerIdentity` request.
pub const AWS_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// `subject_token_type` of an OIDC ID token (Kubernetes, Azure, GitHub).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// How long a service-account token is asked for (Google's maximum
/// without an organisation policy).
const TOKEN_LIFETIME: &str = "3600s";
/// A token is refreshed this long before it expires, or a quarter of its
/// lifetime when that is shorter (tokens of a few seconds in tests).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Token caches kept before unused ones are dropped.
pub const MAX_CACHED_EXCHANGES: usize = 256;
/// A token closer than this to its expiry is not handed out.
const MIN_REMAINING: Duration = Duration::from_secs(30);
/// Each request of the chain gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the server's subject token comes from. Google's
/// `credential_source` shapes: `{"environment_id": "aws1", …}` (AWS),
/// `{"file": path, "format": …}` or `{"url": …, "headers": {…}, "format":
/// …}`, with `format` `{"type": "text"}` (default) or `{"type": "json",
/// "subject_token_field_name": …}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SubjectSource {
    /// The AWS identity of the server (environment variables, profile, web
    /// identity, ECS, or the EC2 metadata service with IMDSv2), proved by a
    /// signed `GetCallerIdentity` request.
    Aws,
    /// A token file, read again at every refresh (a Kubernetes projected
    /// service-account token rotates).
    File { path: PathBuf, format: TokenFormat },
    /// A token from an HTTP GET (Azure managed identity, GitHub Actions).
    Url {
        url: String,
        headers: BTreeMap<String, String>,
        format: TokenFormat,
    },
}

impl std::fmt::Debug for SubjectSource {
    /// Header values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectSource::Aws => f.write_str("Aws"),
            SubjectSource::File { path, format } => f
                .debug_struct("File")
                .field("path", path)
                .field("format", format)
                .finish(),
            SubjectSource::Url { url, headers, format } => f
                .debug_struct("Url")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("format", format)
                .finish(),
        }
    }
}

/// How a file or URL holds its token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    /// The whole body, trimmed.
    Text,
    /// One string field of a JSON object.
    Json { field: String },
}

/// A subject token source and the `subject_token_type` STS is told.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectConfig {
    pub source: SubjectSource,
    pub token_type: String,
}

impl Default for SubjectConfig {
    /// The seed's setup: the server runs on AWS.
    fn default() -> Self {
        SubjectConfig {
            source: SubjectSource::Aws,
            token_type: AWS_TOKEN_TYPE.to_owned(),
        }
    }
}

impl SubjectConfig {
    /// Reads Google's `credential_source` JSON shape, or an object holding
    /// it with its `subject_token_type` (a whole `external_account` file as
    /// `gcloud iam workload-identity-pools create-cred-config` writes it).
    /// The type defaults to AWS's for an AWS source, else to an OIDC JWT.
    ///
    /// Errors name the field that is wrong.
    pub fn from_json(value: &Value) -> Result<SubjectConfig, String> {
        let (source, token_type) = match value.get("credential_source") {
            Some(source) => (source, value.get("subject_token_type")),
            None => (value, None),
        };
        let source = parse_source(source)?;
        let token_type = match token_type {
            Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_owned(),
            Some(Value::String(_)) | None => match source {
                SubjectSource::Aws => AWS_TOKEN_TYPE.to_owned(),
                _ => JWT_TOKEN_TYPE.to_owned(),
            },
            Some(_) => return Err("subject_token_type must be a string".into()),
        };
        Ok(SubjectConfig { source, token_type })
    }

    /// `LABELPORT_WIF_CREDENTIAL_SOURCE`: a JSON object, or the path of a
    /// file holding one.
    pub fn from_setting(setting: &str) -> Result<SubjectConfig, String> {
        let setting = setting.trim();
        let text = if setting.starts_with('{') {
            setting.to_owned()
        } else {
            std::fs::read_to_string(setting).map_err(|e| format!("reading {setting}: {e}"))?
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("not a JSON object: {e}"))?;
        Self::from_json(&value)
    }

    /// For messages: where the token comes from.
    pub fn describe(&self) -> String {
        match &self.source {
            SubjectSource::Aws => "the server's AWS identity".to_owned(),
            SubjectSource::File { path, .. } => format!("the file {}", path.display()),
            SubjectSource::Url { url, .. } => format!("the URL {url}"),
        }
    }
}

fn parse_format(source: &Value) -> Result<TokenFormat, String> {
    let Some(format) = source.get("format") else {
        return Ok(TokenFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(TokenFormat::Text),
        Some("json") => match format.get("subject_token_field_name").and_then(Value::as_str) {
            Some(field) if !field.is_empty() => Ok(TokenFormat::Json {
                field: field.to_owned(),
            }),
            _ => Err("credential_source.format of type json needs subject_token_field_name".into()),
        },
        Some(other) => Err(format!(
            "credential_source.format.type {other:?} is not one of text, json"
        )),
    }
}

fn parse_source(source: &Value) -> Result<SubjectSource, String> {
    let obj = source.as_object().ok_or("credential_source must be a JSON object")?;
    if let Some(env) = obj.get("environment_id") {
        let env = env.as_str().unwrap_or_default();
        if env != "aws1" {
            return Err(format!(
                "credential_source.environment_id {env:?} is not supported (only aws1)"
            ));
        }
        return Ok(SubjectSource::Aws);
    }
    if obj.contains_key("executable") {
        return Err("credential_source.executable is not supported: use a file or url source".into());
    }
    if let Some(path) = obj.get("file") {
        let path = path
            .as_str()
            .filter(|p| !p.is_empty())
            .ok_or("credential_source.file must be a path")?;
        return Ok(SubjectSource::File {
            path: PathBuf::from(path),
            format: parse_format(source)?,
        });
    }
    if let Some(url) = obj.get("url") {
        let url = url.as_str().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("credential_source.url {url:?} is not an http(s) URL"));
        }
        let mut headers = BTreeMap::new();
        if let Some(h) = obj.get("headers") {
            for (k, v) in h.as_object().ok_or("credential_source.headers must be an object")? {
                let v = v.as_str().ok_or("credential_source.headers values must be strings")?;
                headers.insert(k.clone(), v.to_owned());
            }
        }
        return Ok(SubjectSource::Url {
            url: url.to_owned(),
            headers,
            format: parse_format(source)?,
        });
    }
    Err("credential_source needs environment_id (AWS), file or url".into())
}

/// One token exchange: what is traded, for what. Two storages with the same
/// exchange share their tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Exchange {
    /// The pool provider's resource name (STS `audience`).
    pub audience: String,
    pub subject: SubjectConfig,
    /// The account to impersonate; None: the federated token is used as is.
    pub service_account_email: Option<String>,
}

/// Why Google credentials could not be had, by the step that failed, with
/// the other side's reason. Never contains a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WifError {
    #[error("Workload Identity Federation could not get a subject token from {origin}: {message}")]
    SubjectToken { origin: String, message: String },
    #[error(
        "Google STS refused the token exchange for {audience} with HTTP {status}: {reason}. \
         Check the pool's project number, pool id and provider id (google_project_number, \
         google_wif_pool_id and google_wif_provider_id of a gcswif storage; the audience of an \
         external_account configuration), and that the provider's attribute condition admits this \
         server's identity"
    )]
    StsRefused {
        audience: String,
        status: u16,
        reason: String,
    },
    #[error(
        "IAM refused generateAccessToken for {email} with HTTP {status}: {reason}. The pool's principal \
         needs the Workload Identity User role (roles/iam.workloadIdentityUser) on {email}"
    )]
    ImpersonationRefused { email: String, status: u16, reason: String },
    /// A step's endpoint could not be reached or answered 429/5xx.
    #[error("Workload Identity Federation: {step} failed: {message}")]
    Unavailable { step: &'static str, message: String },
    #[error("Workload Identity Federation: {step} gave an unusable answer: {message}")]
    InvalidResponse { step: &'static str, message: String },
}

impl WifError {
    /// Worth retrying: an endpoint unreachable, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(self, WifError::Unavailable { .. })
    }
}

/// The server's settings of the chain; the same for every storage.
#[derive(Clone, Debug)]
pub struct WifEnv {
    /// STS base URL (`LABELPORT_GCP_STS_ENDPOINT`), without `/v1/token`.
    pub sts_endpoint: String,
    /// IAM Credentials base URL (`LABELPORT_IAM_ENDPOINT`).
    pub iam_endpoint: String,
    /// IAM API base URL (`LABELPORT_IAM_API_ENDPOINT`), where Test
    /// connection asks which permissions are held on a service account.
    pub iam_api_endpoint: String,
    /// Where `gcswif` storages get their subject token
    /// (`LABELPORT_WIF_CREDENTIAL_SOURCE`; default AWS).
    pub subject: SubjectConfig,
    /// The EC2 metadata service (`AWS_EC2_METADATA_SERVICE_ENDPOINT`);
    /// None: the AWS SDK's default, `http://169.254.169.254`.
    pub imds_endpoint: Option<String>,
    cache: Arc<Mutex<HashMap<Exchange, Arc<WifTokens>>>>,
    aws: Arc<tokio::sync::OnceCell<aws::AwsIdentity>>,
    http: reqwest::Client,
}

impl Default for WifEnv {
    fn default() -> Self {
        WifEnv {
            sts_endpoint: DEFAULT_STS_ENDPOINT.to_owned(),
            iam_endpoint: DEFAULT_IAM_ENDPOINT.to_owned(),
            iam_api_endpoint: DEFAULT_IAM_API_ENDPOINT.to_owned(),
            subject: SubjectConfig::default(),
            imds_endpoint: None,
            cache: Default::default(),
            aws: Default::default(),
            http: http(),
        }
    }
}

impl WifEnv {
    /// The exchange of a `gcswif` storage: its pool provider, the server's
    /// subject token source, its service account.
    pub fn storage_exchange(&self, wif: &labelport_domain::storage::WifSettings) -> Exchange {
        Exchange {
            audience: wif.audience(),
            subject: self.subject.clone(),
            service_account_email: Some(wif.service_account_email.clone()),
        }
    }

    /// The shared token cache of `exchange` (made on first use). Past
    /// [`MAX_CACHED_EXCHANGES`] entries, those no client holds are dropped
    /// (settings tried once at Test connection and never saved).
    pub fn tokens(&self, exchange: Exchange) -> Arc<WifTokens> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_EXCHANGES && !cache.contains_key(&exchange) {
            cache.retain(|_, tokens| Arc::strong_count(tokens) > 1);
        }
        cache
            .entry(exchange.clone())
            .or_insert_with(|| {
                Arc::new(WifTokens {
                    exchange,
                    env: self.clone_without_cache(),
                    cached: tokio::sync::Mutex::default(),
                    refreshes: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn clone_without_cache(&self) -> WifEnv {
        WifEnv {
            cache: Default::default(),
            ..self.clone()
        }
    }
}

struct CachedToken {
    token: String,
    /// When to fetch a new one.
    refresh_at: Instant,
    /// When Google stops accepting it.
    expires_at: Instant,
}

#[derive(Default)]
struct Cached {
    token: Option<CachedToken>,
    /// The last fetch's error and when it ended.
    failure: Option<(WifError, Instant)>,
}

/// The access tokens of one [`Exchange`]: fetched on first use, reused
/// until [`REFRESH_MARGIN`] before they expire, then fetched again by one
/// caller while the others wait for its result.
pub struct WifTokens {
    exchange: Exchange,
    env: WifEnv,
    cached: tokio::sync::Mutex<Cached>,
    refreshes: AtomicU64,
}

impl std::fmt::Debug for WifTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WifTokens")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

/// Answer of STS `/v1/token` (RFC 8693 §2.2.1).
#[derive(serde::Deserialize)]
struct StsAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Answer of IAM Credentials `generateAccessToken`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenAnswer {
    access_token: String,
    expire_time: String,
}

/// The chain's HTTP client: short timeouts, and no redirects: a redirect
/// would re-send the subject token (or a token source's headers) to
/// wherever `Location` says.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The STS error's reason: RFC 6749 §5.2 `error: error_description`.
fn sts_reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(OAuthError {
            error,
            error_description: Some(d),
        }) => format!("{error}: {d}"),
        Ok(OAuthError { error, .. }) => error,
        Err(_) => google_error_message(body),
    }
}

/// 408, 429 and 5xx: worth trying again.
fn is_transient_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error()
}

fn unavailable(step: &'static str, e: impl std::fmt::Display) -> WifError {
    WifError::Unavailable {
        step,
        message: e.to_string(),
    }
}

/// A subject token source that may answer on a later try.
fn unavailable_subject(subject: &SubjectConfig, message: String) -> WifError {
    WifError::Unavailable {
        step: "getting the subject token",
        message: format!("from {}: {message}", subject.describe()),
    }
}

/// When a token that lives `lifetime` must be replaced.
fn refresh_at(lifetime: Duration) -> Instant {
    Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 4))
}

impl WifTokens {
    /// A valid access token (without `Bearer `).
    ///
    /// Errors: the step that failed ([`WifError`]). Callers that waited on
    /// a fetch that failed get its error without a new try (a queue of
    /// callers behind an unreachable endpoint would otherwise each wait out
    /// its timeout in turn); callers that come later try again.
    pub async fn token(&self) -> Result<String, WifError> {
        let arrived = Instant::now();
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.token.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        // A token past its refresh time but still accepted carries on
        // through a failed refresh (tried again by the next caller).
        let still_valid = |c: &Cached| {
            c.token
                .as_ref()
                .filter(|t| Instant::now() + MIN_REMAINING < t.expires_at)
                .map(|t| t.token.clone())
        };
        if let Some((error, _)) = cached.failure.as_ref().filter(|(_, at)| *at >= arrived) {
            return still_valid(&cached).ok_or_else(|| error.clone());
        }
        match self.fetch().await {
            Ok((token, lifetime)) => {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(audience = %self.exchange.audience, ?lifetime, "workload identity token refreshed");
                *cached = Cached {
                    token: Some(CachedToken {
                        token: token.clone(),
                        refresh_at: refresh_at(lifetime),
                        expires_at: Instant::now() + lifetime,
                    }),
                    failure: None,
                };
                Ok(token)
            }
            Err(error) => {
                tracing::warn!(audience = %self.exchange.audience, "{error}");
                cached.failure = Some((error.clone(), Instant::now()));
                still_valid(&cached).ok_or(error)
            }
        }
    }

    /// How many times tokens were fetched (for tests and metrics).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// The service account these tokens act as, if any.
    pub fn service_account_email(&self) -> Option<&str> {
        self.exchange.service_account_email.as_deref()
    }

    /// The whole chain once: subject token, STS, then impersonation.
    async fn fetch(&self) -> Result<(String, Duration), WifError> {
        let http = &self.env.http;
        let subject = self.subject_token(http).await?;
        let (federated, sts_lifetime) = self.sts_exchange(http, &subject).await?;
        match &self.exchange.service_account_email {
            None => Ok((federated, sts_lifetime)),
            Some(email) => self.generate_access_token(http, email, &federated).await,
        }
    }

    async fn subject_token(&self, http: &reqwest::Client) -> Result<String, WifError> {
        let subject = &self.exchange.subject;
        let failed = |message: String| WifError::SubjectToken {
            origin: subject.describe(),
            message,
        };
        let (body, format) = match &subject.source {
            SubjectSource::Aws => {
                let identity = self
                    .env
                    .aws
                    .get_or_init(|| aws::AwsIdentity::load(self.env.imds_endpoint.clone()))
                    .await;
                return identity
                    .subject_token(&self.exchange.audience)
                    .await
                    .map_err(|e| match e {
                        aws::AwsError::Transient(m) => unavailable_subject(subject, m),
                        aws::AwsError::Missing(m) => failed(m),
                    });
            }
            SubjectSource::File { path, format } => {
                let body = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| failed(format!("cannot read it: {e}")))?;
                (body, format)
            }
            SubjectSource::Url { url, headers, format } => {
                let mut request = http.get(url);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| failed(format!("cannot reach it: {e}")))?;
                let status = response.status();
                let body = response.text().await.map_err(|e| failed(e.to_string()))?;
                if !status.is_success() {
                    return Err(failed(format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        crate::gcs::summarise(&body)
                    )));
                }
                (body, format)
            }
        };
        let token = match format {
            TokenFormat::Text => body.trim().to_owned(),
            TokenFormat::Json { field } => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get(field).and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| failed(format!("no string field {field:?} in its JSON")))?,
        };
        if token.is_empty() {
            return Err(failed("it is empty".into()));
        }
        Ok(token)
    }

    async fn sts_exchange(&self, http: &reqwest::Client, subject: &str) -> Result<(String, Duration), WifError> {
        const STEP: &str = "the Google STS token exchange";
        // Google's libraries ask for `cloud-platform` whether or not the
        // federated token is then used directly with Cloud Storage.
        let scope = CLOUD_PLATFORM_SCOPE;
        let url = format!("{}/v1/token", self.env.sts_endpoint.trim_end_matches('/'));
        let response = http
            .post(&url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("audience", self.exchange.audience.as_str()),
                ("scope", scope),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ("subject_token_type", self.exchange.subject.token_type.as_str()),
                ("subject_token", subject),
            ])
            .send()
            .await
            .map_err(|e| unavailable(STEP, format!("cannot reach {url}: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| unavailable(STEP, e))?;
        if is_transient_status(status) {
            return Err(unavailable(
                STEP,
                format!("HTTP {}: {}", status.as_u16(), sts_reason(&body)),
            ));
        }
        if !status.is_success() {
            return Err(WifError::StsRefused {
                audience: self.exchange.audience.clone(),
                status: status.as_u16(),
                reason: sts_reason(&body),
            });
        }
        let answer: StsAnswer = serde_json::from_slice(&body).map_err(|e| WifError::InvalidResponse {
            step: STEP,
            message: format!("not a token answer: {e}"),
        })?;
        Ok((
            answer.access_token,
            Duration::from_secs(answer.expires_in.unwrap_or(3600)),
        ))
    }

    async fn generate_access_token(
        &self,
        http: &reqwest::Client,
        email: &str,
        federated: &str,
    ) -> Result<(String, Duration), WifError> {
        const STEP: &str = "IAM generateAccessToken";
        let email_in_path = crate::signing::canonical::encode(email, false).replace("%40", "@");
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{email_in_path}:generateAccessToken",
            self.env.iam_endpoint.trim_end_matches('/')
        );
        let response = http
            .post(&url)
            .bearer_auth(federated)
            .json(&serde_json::json!({ "scope": [CLOUD_PLATFORM_SCOPE], "lifetime": TOKEN_LIFETIME }))
            .send()
            .await
            .map_err(|e| unavailable(STEP, format!("cannot reach {url}: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| unavailable(STEP, e))?;
        if is_transient_status(status) {
            return Err(unavailable(
                STEP,
                format!("HTTP {}: {}", status.as_u16(), google_error_message(&body)),
            ));
        }
        if !status.is_success() {
            return Err(WifError::ImpersonationRefused {
                email: email.to_owned(),
                status: status.as_u16(),
                reason: google_error_message(&body),
            });
        }
        let invalid = |message: String| WifError::InvalidResponse { step: STEP, message };
        let answer: GenerateAccessTokenAnswer =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not a token answer: {e}")))?;
        let expires = chrono::DateTime::parse_from_rfc3339(&answer.expire_time)
            .map_err(|e| invalid(format!("expireTime {:?}: {e}", answer.expire_time)))?;
        let lifetime = match (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std() {
            Ok(lifetime) if !lifetime.is_zero() => lifetime,
            // Already past by this server's clock: the clock is wrong, not
            // the token (Google just issued it for the lifetime asked).
            _ => {
                tracing::warn!(
                    expire_time = %answer.expire_time,
                    "generateAccessToken's expireTime is in the past by this server's clock; is the clock right?"
                );
                Duration::from_secs(3600)
            }
        };
        Ok((answer.access_token, lifetime))
    }
}

/// [`WifTokens`] as the token source of a `gcloud-storage` client.
#[derive(Debug, Clone)]
pub struct WifTokenProvider(pub Arc<WifTokens>);

#[async_trait::async_trait]
impl token_source::TokenSource for WifTokenProvider {
    async fn token(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        // gcloud-storage sends the value as the Authorization header.
        Ok(format!("Bearer {}", self.0.token().await?))
    }
}

impl token_source::TokenSourceProvider for WifTokenProvider {
    fn token_source(&self) -> Arc<dyn token_source::TokenSource> {
        Arc::new(self.clone())
    }
}

/// [`WifTokens`] as the token source of IAM `signBlob`.
impl crate::signing::AccessTokenSource for WifTokenProvider {
    async fn token(&self) -> Result<String, crate::signing::SignError> {
        self.0
            .token()
            .await
            .map_err(|e| crate::signing::SignError::Token(e.to_string()))
    }
}
