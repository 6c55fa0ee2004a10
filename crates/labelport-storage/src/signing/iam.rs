//! Remote signing through IAM Credentials `signBlob`, for credentials that
//! have no private key (ADC on GCE/GKE/Cloud Run, user credentials that
//! impersonate, Workload Identity Federation).

use std::future::Future;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::canonical::encode;
use super::{BlobSigner, SignError};

/// Where an [`IamSigner`] gets its OAuth access token. Implement it over the
/// application's credential source (gcloud-auth, an STS exchange, ...); the
/// token needs the `iam` or `cloud-platform` scope, and the caller's identity
/// needs `iam.serviceAccounts.signBlob` on the service account.
pub trait AccessTokenSource: Send + Sync {
    fn token(&self) -> impl Future<Output = Result<String, SignError>> + Send;
}

/// A fixed access token (tests, or a caller that refreshes elsewhere).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl AccessTokenSource for StaticToken {
    fn token(&self) -> impl Future<Output = Result<String, SignError>> + Send {
        std::future::ready(Ok(self.0.clone()))
    }
}

/// Signs as `email` by asking IAM Credentials:
/// `POST {endpoint}/v1/projects/-/serviceAccounts/{email}:signBlob` with
/// `{"payload": base64}`, answered by `{"keyId", "signedBlob": base64}`.
/// The signature is made with one of Google's keys for the account, which
/// the XML API accepts exactly like one made with a downloaded key.
pub struct IamSigner<T> {
    email: String,
    endpoint: String,
    tokens: T,
    http: reqwest::Client,
}

impl<T> std::fmt::Debug for IamSigner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamSigner")
            .field("email", &self.email)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl<T: AccessTokenSource> IamSigner<T> {
    pub const DEFAULT_ENDPOINT: &'static str = "https://iamcredentials.googleapis.com";
    /// A signed URL is made while a user waits for a redirect: fail fast.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

    /// A signer for `email` against Google's endpoint, with its own HTTP
    /// client and timeouts.
    pub fn new(email: impl Into<String>, tokens: T) -> Result<Self, SignError> {
        let email = email.into();
        let http = reqwest::Client::builder()
            .connect_timeout(Self::CONNECT_TIMEOUT)
            .timeout(Self::REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SignError::Transport {
                email: email.clone(),
                message: format!("HTTP client: {e}"),
            })?;
        Ok(IamSigner {
            email,
            endpoint: Self::DEFAULT_ENDPOINT.to_owned(),
            tokens,
            http,
        })
    }

    /// Another IAM Credentials base URL (a local fake in tests, or another
    /// universe domain), without the `/v1/...` path.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_owned();
        self
    }

    /// Shares an existing client; its timeouts then apply.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// `{base}/v1/projects/-/serviceAccounts/{email}:{method}`.
    fn account_url(&self, base: &str, method: &str) -> String {
        // `@` is allowed in a path segment and is what Google's clients send.
        let email = encode(&self.email, false).replace("%40", "@");
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            base.trim_end_matches('/')
        )
    }

    /// POSTs `body` to `url` with the signer's token; the answer's bytes,
    /// or the refusal in Google's words.
    async fn call(&self, url: String, body: serde_json::Value) -> Result<bytes::Bytes, SignError> {
        let token = self.tokens.token().await?;
        let transport = |e: reqwest::Error| SignError::Transport {
            email: self.email.clone(),
            message: e.to_string(),
        };
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(SignError::Iam {
                email: self.email.clone(),
                status: status.as_u16(),
                message: google_error_message(&body),
            });
        }
        Ok(body)
    }

    async fn sign_blob(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let url = self.account_url(&self.endpoint, "signBlob");
        let body = self
            .call(url, serde_json::json!({ "payload": BASE64.encode(payload) }))
            .await?;
        let invalid = |message: String| SignError::InvalidResponse {
            email: self.email.clone(),
            message,
        };
        let answer: SignBlobResponse =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not a signBlob answer: {e}")))?;
        let signature = BASE64
            .decode(answer.signed_blob.as_bytes())
            .map_err(|e| invalid(format!("signedBlob is not base64: {e}")))?;
        if signature.is_empty() {
            return Err(invalid("signedBlob is empty".into()));
        }
        tracing::debug!(email = %self.email, key_id = ?answer.key_id, "signed through IAM signBlob");
        Ok(signature)
    }
}

impl<T: AccessTokenSource> IamSigner<T> {
    /// Which of `wanted` (such as `iam.serviceAccounts.signBlob`) the
    /// signer's identity holds on the account it signs as, from the IAM
    /// API's `projects.serviceAccounts.testIamPermissions`:
    /// `POST {iam_api}/v1/projects/-/serviceAccounts/{email}:testIamPermissions`
    /// with `{"permissions": [...]}` (`iam_api`: Google's IAM API base URL,
    /// `https://iam.googleapis.com`, not IAM Credentials, which signs), answered by the subset held (the key
    /// is left out when none is)
    /// (<https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/testIamPermissions>).
    ///
    /// Errors: [`SignError::Token`] without a token; [`SignError::Iam`] or
    /// [`SignError::Transport`] when the API refuses or cannot be reached.
    pub async fn granted_permissions(&self, iam_api: &str, wanted: &[&str]) -> Result<Vec<String>, SignError> {
        let url = self.account_url(iam_api, "testIamPermissions");
        let body = self.call(url, serde_json::json!({ "permissions": wanted })).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| SignError::InvalidResponse {
            email: self.email.clone(),
            message: format!("not a testIamPermissions answer: {e}"),
        })?;
        Ok(answer["permissions"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }
}

impl<T: AccessTokenSource> BlobSigner for IamSigner<T> {
    fn email(&self) -> &str {
        &self.email
    }

    fn sign(&self, payload: &[u8]) -> impl Future<Output = Result<Vec<u8>, SignError>> + Send {
        self.sign_blob(payload)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBlobResponse {
    key_id: Option<String>,
    signed_blob: String,
}

/// Google's `{"error": {"message": ...}}`, or the start of whatever else came.
pub(crate) fn google_error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        message: Option<String>,
        status: Option<String>,
    }
    if let Ok(Envelope { error }) = serde_json::from_slice::<Envelope>(body) {
        match (error.status, error.message) {
            (Some(status), Some(message)) => return format!("{status}: {message}"),
            (None, Some(message)) => return message,
            (Some(status), None) => return status,
            (None, None) => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty answer)".to_owned()
    } else {
        text.chars().take(300).collect()
    }
}
