//! Google Cloud Storage **V4 signed URLs** (`GOOG4-RSA-SHA256`), written by hand.
//!
//! Why our own signer: no maintained crate we can use is exact to Google's
//! spec (see `shared/reference/gcs-crates.md`). `object_store` always signs
//! the `host` header as `storage.googleapis.com`, always uses
//! `UNSIGNED-PAYLOAD` and has no virtual-hosted or bucket-bound styles;
//! `gcloud-storage` encodes object names with `+ & = ( ) ; , * @ $ ' ! %`
//! wrongly; the official `google-cloud-storage` is exact but lets nobody
//! outside its own tests fix the clock, pulls in the whole gRPC stack and
//! cannot sign through a configurable IAM endpoint. What is here is as
//! small as the spec allows: a pure function from a [`SignedUrlRequest`]
//! (time included, so Google's conformance vectors run as plain unit tests)
//! to a canonical request and string to sign, plus a [`BlobSigner`] that
//! turns the string to sign into an RSA-SHA256 signature, either locally
//! from a service-account key ([`KeySigner`]) or remotely through IAM
//! Credentials `signBlob` ([`IamSigner`], for ADC and Workload Identity
//! Federation, where there is no private key).
//!
//! Spec: <https://cloud.google.com/storage/docs/authentication/signatures>.
//! Every `signingV4Tests` vector of `testdata/conformance/v4_signatures.json`
//! must produce its `expectedUrl` byte for byte (see the tests).

use std::future::Future;

use chrono::{DateTime, Utc};

pub(crate) mod canonical;
pub(crate) mod iam;
mod key;
#[cfg(test)]
mod tests;

pub use canonical::{canonical_request, string_to_sign};
pub use iam::{AccessTokenSource, IamSigner, StaticToken};
pub use key::KeySigner;

/// Google refuses signed URLs valid for longer than seven days.
pub const MAX_EXPIRATION_SECS: u64 = 604_800;

/// The XML API host used when [`SignedUrlRequest::host`] is `None`.
pub const DEFAULT_HOST: &str = "storage.googleapis.com";

/// Where the bucket goes in the URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UrlStyle {
    /// `https://storage.googleapis.com/bucket/object` (works with every
    /// bucket name and with emulators).
    #[default]
    PathStyle,
    /// `https://bucket.storage.googleapis.com/object`.
    VirtualHostedStyle,
    /// `https://cdn.example.com/object`: a CNAME or load balancer bound to
    /// the bucket, named by [`SignedUrlRequest::bucket_bound_hostname`].
    BucketBoundHostname,
}

/// Everything that goes into one signed URL. The time is a parameter so that
/// the result is a pure function of this value (and testable against fixed
/// vectors); callers pass `Utc::now()`.
#[derive(Debug, Clone)]
pub struct SignedUrlRequest {
    /// HTTP method the URL is good for (`GET`, `PUT`, `POST` for resumable
    /// uploads, ...). Upper-cased before signing.
    pub method: String,
    pub bucket: String,
    /// Object name as stored (not encoded); empty for a bucket URL (listing).
    pub object: String,
    /// Validity in seconds, 1 to [`MAX_EXPIRATION_SECS`].
    pub expiration_secs: u64,
    /// The moment the signature starts to be valid (`X-Goog-Date`).
    pub timestamp: DateTime<Utc>,
    /// Extra headers the client must send with exactly these values; they are
    /// signed. A `x-goog-content-sha256` header becomes the payload hash.
    /// `host` is derived from the URL and must not be given.
    pub headers: Vec<(String, String)>,
    /// Extra query parameters (not encoded), signed and put in the URL.
    pub query_parameters: Vec<(String, String)>,
    /// `https` or `http`.
    pub scheme: String,
    /// Host (and port) of the XML API; `None` means [`DEFAULT_HOST`]. A value
    /// with a scheme, such as `http://127.0.0.1:4443` (the usual form of
    /// `STORAGE_EMULATOR_HOST`), also sets the scheme, overriding
    /// [`Self::scheme`].
    pub host: Option<String>,
    pub url_style: UrlStyle,
    /// The host for [`UrlStyle::BucketBoundHostname`]; like `host`, it may
    /// carry a scheme.
    pub bucket_bound_hostname: Option<String>,
}

impl SignedUrlRequest {
    /// A path-style `https` request to the default host, with no extra
    /// headers or query parameters.
    pub fn new(
        method: impl Into<String>,
        bucket: impl Into<String>,
        object: impl Into<String>,
        expiration_secs: u64,
        timestamp: DateTime<Utc>,
    ) -> Self {
        SignedUrlRequest {
            method: method.into(),
            bucket: bucket.into(),
            object: object.into(),
            expiration_secs,
            timestamp,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            scheme: "https".to_owned(),
            host: None,
            url_style: UrlStyle::PathStyle,
            bucket_bound_hostname: None,
        }
    }
}

/// Why a URL could not be signed. Messages never contain private-key
/// material or access tokens.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request cannot be signed as asked (bad expiration, host, header...).
    #[error("invalid signed-URL request: {0}")]
    InvalidRequest(String),
    /// The service-account key could not be read.
    #[error("invalid service-account key: {0}")]
    InvalidKey(String),
    /// The local RSA operation failed.
    #[error("RSA signing failed: {0}")]
    Rsa(String),
    /// No access token for IAM `signBlob`.
    #[error("could not get an access token for IAM signBlob: {0}")]
    Token(String),
    /// IAM could not be reached or did not answer in time.
    #[error("IAM signBlob request for {email} failed: {message}")]
    Transport { email: String, message: String },
    /// IAM answered with an HTTP error; `message` is Google's own.
    #[error("IAM signBlob for {email} was refused with HTTP {status}: {message}")]
    Iam {
        email: String,
        status: u16,
        message: String,
    },
    /// IAM answered 2xx with something that is not a signature.
    #[error("IAM signBlob for {email} gave an unusable answer: {message}")]
    InvalidResponse { email: String, message: String },
}

impl SignError {
    /// Worth retrying: IAM unreachable, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            SignError::Transport { .. } => true,
            SignError::Iam { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Produces `RSASSA-PKCS1-v1_5` / SHA-256 signatures as the service account
/// named by [`BlobSigner::email`] (that email goes into `X-Goog-Credential`).
pub trait BlobSigner: Send + Sync {
    fn email(&self) -> &str;
    fn sign(&self, payload: &[u8]) -> impl Future<Output = Result<Vec<u8>, SignError>> + Send;
}

/// Signs `req` as `signer` and returns the complete URL.
pub async fn signed_url(req: &SignedUrlRequest, signer: &impl BlobSigner) -> Result<String, SignError> {
    let prepared = canonical::prepare(req, signer.email())?;
    let signature = signer.sign(prepared.string_to_sign().as_bytes()).await?;
    Ok(format!(
        "{}?{}&X-Goog-Signature={}",
        prepared.base_url,
        prepared.canonical_query,
        hex::encode(signature)
    ))
}
