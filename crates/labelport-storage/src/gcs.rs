//! Google Cloud Storage through `gcloud-storage` (JSON API), with
//! `STORAGE_EMULATOR_HOST` honoured as Google's client libraries do
//! (anonymous credentials, that endpoint).

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use gcloud_storage::client::google_cloud_auth::credentials::CredentialsFile;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::Error as GcsError;

use std::sync::Arc;

use crate::credentials::validate_service_account_json;
use crate::wif::{WifError, WifTokenProvider, WifTokens};
use crate::{with_retries, ByteStream, ListPage, ObjectMeta, ObjectStore, StorageError, StorageResult};

/// How a client proves who it is to Cloud Storage.
#[derive(Clone, Default)]
pub enum GcsAuth {
    /// No credentials (an emulator).
    Anonymous,
    /// A service-account key (JSON).
    ServiceAccountKey(String),
    /// Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
    /// gcloud's user file, the metadata server).
    #[default]
    Adc,
    /// Short-lived tokens of Workload Identity Federation.
    Federated(Arc<WifTokens>),
}

/// How to reach a bucket.
#[derive(Clone, Default)]
pub struct GcsConfig {
    pub bucket: String,
    pub auth: GcsAuth,
    /// A JSON API base URL (`http://host:port`) used with `auth`; None:
    /// Google's, or the emulator of `STORAGE_EMULATOR_HOST` without
    /// credentials (as Google's libraries).
    pub endpoint: Option<String>,
    /// Added to permission errors: which role the identity needs.
    pub permission_hint: Option<String>,
    /// How long one request may go without an answer (headers, or the next
    /// bytes of a download) before it is abandoned as transient and tried
    /// again; None: [`DEFAULT_REQUEST_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// The default of [`GcsConfig::timeout`] (`LABELPORT_STORAGE_TIMEOUT_SECS`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl GcsConfig {
    /// `bucket` on the emulator at `endpoint`, without credentials.
    pub fn emulator(bucket: impl Into<String>, endpoint: impl Into<String>) -> GcsConfig {
        GcsConfig {
            bucket: bucket.into(),
            auth: GcsAuth::Anonymous,
            endpoint: Some(endpoint.into()),
            permission_hint: None,
            timeout: None,
        }
    }
}

impl std::fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        let auth = match &self.auth {
            GcsAuth::Anonymous => "anonymous",
            GcsAuth::ServiceAccountKey(_) => "service-account key <redacted>",
            GcsAuth::Adc => "application default credentials",
            GcsAuth::Federated(_) => "workload identity federation",
        };
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("auth", &auth)
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `STORAGE_EMULATOR_HOST` as an URL (`host:port` gets `http://`).
pub fn emulator_from_env() -> Option<String> {
    let host = std::env::var("STORAGE_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())?;
    let host = host.trim().trim_end_matches('/');
    Some(if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    })
}

#[derive(Clone)]
pub struct GcsStore {
    client: Client,
    bucket: String,
    permission_hint: Option<Arc<str>>,
    timeout: Duration,
    /// For the bucket-metadata requests made without the client library
    /// (see [`GcsStore::cors_rules`]): the JSON API's base URL, the same
    /// tokens as the client's (None: anonymous), an HTTP client.
    endpoint: String,
    tokens: Option<Arc<dyn token_source::TokenSource>>,
    http: reqwest::Client,
}

/// `read_timeout` bounds the wait for each read, so a download that stalls
/// half-way fails (and is retried) instead of hanging its sync.
fn http_client(timeout: Duration) -> StorageResult<reqwest_middleware::ClientWithMiddleware> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .read_timeout(timeout)
        .build()
        .map_err(|e| StorageError::Other(format!("building the HTTP client: {e}")))?;
    Ok(reqwest_middleware::ClientBuilder::new(client).build())
}

/// One CORS rule of GCS's JSON, each field optional.
fn cors_rule(v: &serde_json::Value) -> labelport_domain::cors::CorsRule {
    let list = |k: &str| {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    labelport_domain::cors::CorsRule {
        origin: list("origin"),
        method: list("method"),
        response_header: list("responseHeader"),
        max_age_seconds: v["maxAgeSeconds"].as_i64(),
    }
}

/// At most this much of an error text from a token endpoint reaches a
/// user: its first line, cut, so a token endpoint's answer is summarised,
/// never relayed whole.
const SUMMARY_CHARS: usize = 160;

/// The first line of `text`, cut to [`SUMMARY_CHARS`].
pub fn summarise(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= SUMMARY_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(SUMMARY_CHARS).collect();
    format!("{cut}…")
}

/// A token source's failure: our own WIF chain's errors are written for
/// users whole (the step that failed and the way to fix it; transient ones
/// retried); anything else is summarised.
fn token_error(what: &str, e: &(dyn std::error::Error + Send + Sync + 'static)) -> StorageError {
    match e.downcast_ref::<WifError>() {
        Some(wif) if wif.is_transient() => StorageError::Transient(format!("{what}: {wif}")),
        Some(wif) => StorageError::Federation {
            what: what.to_owned(),
            cause: wif.clone(),
        },
        None => StorageError::Auth(format!(
            "{what}: could not get a Google access token: {}",
            summarise(&e.to_string())
        )),
    }
}

/// Sorts a Google error into what a caller can act on; a refusal of the
/// credentials (401, 403) gets `hint` (which role to grant).
fn classify(err: GcsError, what: &str, hint: Option<&str>) -> StorageError {
    let hint = hint.map(|h| format!(". {h}")).unwrap_or_default();
    match err {
        GcsError::Response(r) => {
            let message = summarise(&r.message);
            match r.code {
                404 => StorageError::NotFound(format!("{what}: {message}")),
                401 => StorageError::Auth(format!("{what}: {message}{hint}")),
                403 => StorageError::PermissionDenied(format!("{what}: {message}{hint}")),
                408 | 429 | 500..=599 => StorageError::Transient(format!("{what}: HTTP {} {message}", r.code)),
                code => StorageError::Other(format!("{what}: HTTP {code} {message}")),
            }
        }
        // A body cut short (connection reset mid-download) is worth another try.
        GcsError::HttpClient(e)
            if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode() =>
        {
            StorageError::Transient(format!("{what}: {e}"))
        }
        GcsError::HttpClient(e) => match e.status().map(|s| s.as_u16()) {
            Some(404) => StorageError::NotFound(format!("{what}: {e}")),
            Some(401) => StorageError::Auth(format!("{what}: {e}{hint}")),
            Some(403) => StorageError::PermissionDenied(format!("{what}: {e}{hint}")),
            Some(408 | 429 | 500..=599) => StorageError::Transient(format!("{what}: {e}")),
            _ => StorageError::Other(format!("{what}: {e}")),
        },
        GcsError::TokenSource(e) => token_error(what, e.as_ref()),
        other => StorageError::Other(format!("{what}: {other}")),
    }
}

fn meta(o: Object) -> ObjectMeta {
    ObjectMeta {
        key: o.name,
        size: o.size.max(0) as u64,
        generation: o.generation,
        etag: o.etag,
        updated: o
            .updated
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        content_type: o.content_type,
    }
}

impl GcsStore {
    /// Builds a client: `config.endpoint` with `config.auth`; without an
    /// endpoint, the emulator of `STORAGE_EMULATOR_HOST` anonymously, else
    /// Google's with `config.auth`. No request is made yet.
    pub async fn connect(config: GcsConfig) -> StorageResult<GcsStore> {
        if config.bucket.trim().is_empty() {
            return Err(StorageError::Invalid("the bucket name is empty".into()));
        }
        let (endpoint, auth) = match (config.endpoint, emulator_from_env()) {
            (Some(endpoint), _) => (Some(endpoint), config.auth),
            (None, Some(emulator)) => (Some(emulator), GcsAuth::Anonymous),
            (None, None) => (None, config.auth),
        };
        let timeout = config.timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let mut client_config = ClientConfig {
            http: Some(http_client(timeout)?),
            ..Default::default()
        };
        if let Some(endpoint) = endpoint {
            client_config.storage_endpoint = endpoint;
        }
        client_config = match auth {
            GcsAuth::Anonymous => client_config.anonymous(),
            GcsAuth::ServiceAccountKey(json) => {
                validate_service_account_json(&json).map_err(StorageError::Invalid)?;
                let file = CredentialsFile::new_from_str(&json)
                    .await
                    .map_err(|e| StorageError::Auth(format!("reading the service-account key: {e}")))?;
                client_config
                    .with_credentials(file)
                    .await
                    .map_err(|e| StorageError::Auth(format!("using the service-account key: {e}")))?
            }
            GcsAuth::Adc => client_config.with_auth().await.map_err(|e| {
                StorageError::Auth(format!(
                    "no credentials given and Application Default Credentials are not available: {e}"
                ))
            })?,
            GcsAuth::Federated(tokens) => ClientConfig {
                token_source_provider: Some(Box::new(WifTokenProvider(tokens))),
                ..client_config
            },
        };
        let tokens = client_config.token_source_provider.as_ref().map(|p| p.token_source());
        let endpoint = client_config.storage_endpoint.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StorageError::Other(format!("building the HTTP client: {e}")))?;
        Ok(GcsStore {
            client: Client::new(client_config),
            bucket: config.bucket,
            permission_hint: config.permission_hint.map(Arc::from),
            timeout,
            endpoint,
            tokens,
            http,
        })
    }

    fn classify(&self, e: GcsError, what: &str) -> StorageError {
        classify(e, what, self.permission_hint.as_deref())
    }

    /// One attempt of a request: its answer, or a transient error when none
    /// came within the timeout (a request that never gets an answer would
    /// otherwise hold its sync for ever).
    async fn attempt<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, GcsError>>,
    ) -> StorageResult<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(answer) => answer.map_err(|e| self.classify(e, what)),
            Err(_) => Err(StorageError::Transient(format!(
                "{what}: no answer within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    fn get_request(&self, key: &str, generation: Option<i64>) -> GetObjectRequest {
        GetObjectRequest {
            bucket: self.bucket.clone(),
            object: key.to_owned(),
            generation,
            ..Default::default()
        }
    }

    /// Which of `wanted` (IAM permissions such as `storage.objects.get`)
    /// the storage's identity holds on the bucket as a whole, from GCS's
    /// `buckets.testIamPermissions`
    /// (<https://cloud.google.com/storage/docs/json_api/v1/buckets/testIamPermissions>).
    /// Grants on managed folders, IAM conditions on a prefix and object
    /// ACLs are not seen here: callers ask only after a request was
    /// refused, to name what is missing, never to refuse by themselves.
    /// None when the service cannot say (an emulator without the method,
    /// any failure): the caller keeps the refusal it had.
    pub async fn granted_permissions(&self, wanted: &[&str]) -> Option<Vec<String>> {
        let query: Vec<(&str, String)> = wanted.iter().map(|p| ("permissions", (*p).to_owned())).collect();
        let answer = self
            .bucket_request(
                "testing permissions on the bucket",
                reqwest::Method::GET,
                &["iam", "testPermissions"],
                &query,
                None,
            )
            .await
            .ok()?;
        // GCS leaves `permissions` out when none is held.
        Some(
            answer["permissions"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        )
    }

    /// One JSON API request on the bucket resource itself
    /// (`/storage/v1/b/{bucket}`), with the storage's token.
    ///
    /// Written here rather than through gcloud-storage 1.3 because its
    /// bucket types do not fit a partial read or write: `Cors` requires
    /// every field (GCS leaves `responseHeader` and `maxAgeSeconds` out
    /// when unset, so a real policy can fail to decode) and
    /// `BucketPatchConfig` sends every unset field as `null`, which a PATCH
    /// takes as "clear it" (labels, lifecycle, retention…).
    async fn bucket_request(
        &self,
        what: &str,
        method: reqwest::Method,
        sub_path: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> StorageResult<serde_json::Value> {
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| StorageError::Invalid(format!("the storage endpoint {:?}: {e}", self.endpoint)))?;
        url.path_segments_mut()
            .map_err(|()| {
                StorageError::Invalid(format!("the storage endpoint {:?} cannot take a path", self.endpoint))
            })?
            .pop_if_empty()
            .extend(["storage", "v1", "b", self.bucket.as_str()])
            .extend(sub_path);
        let mut request = self.http.request(method, url).query(query);
        if let Some(tokens) = &self.tokens {
            let token = tokens.token().await.map_err(|e| token_error(what, e.as_ref()))?;
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
                StorageError::Transient(format!("{what}: {e}"))
            } else {
                StorageError::Other(format!("{what}: {e}"))
            }
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| StorageError::Transient(format!("{what}: {e}")))?;
        let message = || {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(summarise))
                .unwrap_or_else(|| summarise(&text))
        };
        let hint = self
            .permission_hint
            .as_deref()
            .map(|h| format!(". {h}"))
            .unwrap_or_default();
        match status {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| StorageError::Other(format!("{what}: an answer that is not JSON: {e}"))),
            404 => Err(StorageError::BucketNotFound(self.bucket.clone())),
            401 => Err(StorageError::Auth(format!("{what}: {}{hint}", message()))),
            403 => Err(StorageError::PermissionDenied(format!("{what}: {}{hint}", message()))),
            408 | 412 | 429 | 500..=599 => Err(StorageError::Transient(format!("{what}: HTTP {status} {}", message()))),
            _ => Err(StorageError::Other(format!("{what}: HTTP {status} {}", message()))),
        }
    }

    /// The bucket's CORS policy as stored (each rule's JSON, kept whole so
    /// a rewrite loses nothing) and its metageneration.
    async fn cors_policy(&self) -> StorageResult<(Vec<serde_json::Value>, Option<String>)> {
        let bucket = self
            .bucket_request(
                "reading the bucket's CORS policy",
                reqwest::Method::GET,
                &[],
                &[("fields", "cors,metageneration".to_owned())],
                None,
            )
            .await?;
        let rules = bucket["cors"].as_array().cloned().unwrap_or_default();
        // GCS writes int64 fields as strings.
        let metageneration = match &bucket["metageneration"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Ok((rules, metageneration))
    }

    /// The bucket's CORS policy (`buckets.get`, which needs
    /// `storage.buckets.get`), every rule; empty when it has none
    /// (<https://cloud.google.com/storage/docs/json_api/v1/buckets#cors>).
    ///
    /// Errors: as any request (a refusal is `PermissionDenied`).
    pub async fn cors_rules(&self) -> StorageResult<Vec<labelport_domain::cors::CorsRule>> {
        Ok(self.cors_policy().await?.0.iter().map(cors_rule).collect())
    }

    /// Adds `rule` to the bucket's CORS policy, keeping every rule it has,
    /// with `buckets.patch` (`storage.buckets.update`) guarded by the
    /// metageneration read, so a policy changed meanwhile is read again
    /// rather than overwritten. Returns the policy as written.
    ///
    /// Errors: as any request; a policy that keeps changing is `Transient`.
    pub async fn add_cors_rule(
        &self,
        rule: &labelport_domain::cors::CorsRule,
    ) -> StorageResult<Vec<labelport_domain::cors::CorsRule>> {
        let new = serde_json::to_value(rule).map_err(|e| StorageError::Other(e.to_string()))?;
        let mut last = None;
        for _ in 0..3 {
            let (mut rules, metageneration) = self.cors_policy().await?;
            // Someone (a second click) may have added it meanwhile.
            if rules.iter().map(cors_rule).any(|r| r == *rule) {
                return Ok(rules.iter().map(cors_rule).collect());
            }
            rules.push(new.clone());
            let mut query = vec![("fields", "cors,metageneration".to_owned())];
            if let Some(m) = metageneration {
                query.push(("ifMetagenerationMatch", m));
            }
            let body = serde_json::json!({ "cors": rules });
            match self
                .bucket_request(
                    "writing the bucket's CORS policy",
                    reqwest::Method::PATCH,
                    &[],
                    &query,
                    Some(&body),
                )
                .await
            {
                Ok(written) => {
                    return Ok(written["cors"]
                        .as_array()
                        .map(|r| r.iter().map(cors_rule).collect())
                        .unwrap_or_default())
                }
                Err(e @ StorageError::Transient(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StorageError::Transient("the CORS policy kept changing".into())))
    }

    fn bucket_error(&self, e: StorageError) -> StorageError {
        match e {
            StorageError::NotFound(_) => StorageError::BucketNotFound(self.bucket.clone()),
            other => other,
        }
    }
}

impl ObjectStore for GcsStore {
    fn describe(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    async fn check(&self) -> StorageResult<()> {
        self.list_page("", true, None, 1).await.map(|_| ())
    }

    async fn list_page(
        &self,
        prefix: &str,
        recursive: bool,
        page_token: Option<String>,
        page_size: u32,
    ) -> StorageResult<ListPage> {
        let req = ListObjectsRequest {
            bucket: self.bucket.clone(),
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            delimiter: (!recursive).then(|| "/".to_owned()),
            page_token,
            max_results: Some(page_size.min(i32::MAX as u32) as i32),
            ..Default::default()
        };
        let what = format!("listing gs://{}/{prefix}", self.bucket);
        let resp = with_retries(&what, || self.attempt(&what, self.client.list_objects(&req)))
            .await
            .map_err(|e| self.bucket_error(e))?;
        Ok(ListPage {
            objects: resp.items.unwrap_or_default().into_iter().map(meta).collect(),
            prefixes: resp.prefixes.unwrap_or_default(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn stat(&self, key: &str) -> StorageResult<ObjectMeta> {
        let req = self.get_request(key, None);
        let what = format!("reading metadata of gs://{}/{key}", self.bucket);
        with_retries(&what, || self.attempt(&what, self.client.get_object(&req)))
            .await
            .map(meta)
    }

    async fn read_stream(
        &self,
        key: &str,
        generation: Option<i64>,
        start: u64,
        end: Option<u64>,
    ) -> StorageResult<ByteStream> {
        let req = self.get_request(key, generation);
        let range = if start == 0 && end.is_none() {
            Range::default()
        } else {
            Range(Some(start), end)
        };
        let what = format!("reading gs://{}/{key}", self.bucket);
        let stream = with_retries(&what, || {
            self.attempt(&what, self.client.download_streamed_object(&req, &range))
        })
        .await?;
        let what2 = what.clone();
        let hint = self.permission_hint.clone();
        Ok(Box::pin(stream.map_err(move |e| {
            // A body cut short or stalled is a failed request too.
            let e = classify(e, &what2, hint.as_deref());
            metrics::counter!(crate::STORAGE_ERRORS, "family" => e.family()).increment(1);
            e
        })))
    }

    async fn write(&self, key: &str, body: Bytes, content_type: &str) -> StorageResult<ObjectMeta> {
        let req = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..Default::default()
        };
        let mut media = Media::new(key.to_owned());
        media.content_type = content_type.to_owned().into();
        media.content_length = Some(body.len() as u64);
        let upload = UploadType::Simple(media);
        let what = format!("writing gs://{}/{key}", self.bucket);
        with_retries(&what, || async {
            self.attempt(&what, self.client.upload_object(&req, body.clone(), &upload))
                .await
                .map(meta)
                // An upload's 404 can only mean the bucket is gone.
                .map_err(|e| self.bucket_error(e))
        })
        .await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let req = DeleteObjectRequest {
            bucket: self.bucket.clone(),
            object: key.to_owned(),
            ..Default::default()
        };
        let what = format!("deleting gs://{}/{key}", self.bucket);
        with_retries(&what, || self.attempt(&what, self.client.delete_object(&req))).await
    }
}
