//! Object-storage connectors. The sync engine and the media proxy are
//! generic over [`ObjectStore`]; [`gcs::GcsStore`] talks to Google Cloud
//! Storage (or its emulator) through the maintained `gcloud-storage` crate,
//! with a key, Application Default Credentials or Workload Identity
//! Federation ([`wif`]);
//! [`memory::MemoryStore`] holds objects in memory (benchmarks at a scale no
//! emulator holds, and tests of the engine alone).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use connect::{check_settings, StorageEnv};

pub mod connect;
pub mod credentials;
pub mod gcs;
pub mod memory;
pub mod signing;
pub mod wif;

/// What is known of one object from a listing or a stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Changes on every overwrite (GCS generation; a local file's mtime in ns).
    pub generation: i64,
    pub etag: String,
    /// RFC 3339.
    pub updated: Option<String>,
    pub content_type: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// "Directories" one level down (only with `recursive = false`).
    pub prefixes: Vec<String>,
    pub next_page_token: Option<String>,
}

/// Errors of a connector, sorted by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("bucket \"{0}\" does not exist")]
    BucketNotFound(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Workload Identity Federation refused a step (not retried): `what`
    /// was being done; `cause` names the step and the fix.
    #[error("{what}: {cause}")]
    Federation { what: String, cause: wif::WifError },
    /// Worth retrying (429, 5xx, connection trouble).
    #[error("storage temporarily unavailable: {0}")]
    Transient(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Other(String),
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }

    /// The error's family, as `/metrics` labels it: `missing` (object or
    /// bucket), `permission`, `auth`, `transient`, `invalid`, `other`.
    pub fn family(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) | StorageError::BucketNotFound(_) => "missing",
            StorageError::PermissionDenied(_) => "permission",
            StorageError::Auth(_) | StorageError::Federation { .. } => "auth",
            StorageError::Transient(_) => "transient",
            StorageError::Invalid(_) => "invalid",
            StorageError::Other(_) => "other",
        }
    }
}

/// Prometheus counter: failed storage requests (each try, retried or not),
/// by `family` ([`StorageError::family`]).
pub const STORAGE_ERRORS: &str = "labelport_storage_errors_total";

pub type StorageResult<T> = Result<T, StorageError>;

pub type ByteStream = Pin<Box<dyn Stream<Item = StorageResult<Bytes>> + Send>>;

/// The operations Labelport needs of a bucket.
pub trait ObjectStore: Send + Sync {
    /// A short description for messages: `gs://bucket`.
    fn describe(&self) -> String;

    /// Checks that the bucket exists and is readable.
    fn check(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// One page of objects under `prefix` (names are full keys), in key order.
    fn list_page(
        &self,
        prefix: &str,
        recursive: bool,
        page_token: Option<String>,
        page_size: u32,
    ) -> impl Future<Output = StorageResult<ListPage>> + Send;

    fn stat(&self, key: &str) -> impl Future<Output = StorageResult<ObjectMeta>> + Send;

    /// Bytes `start..=end` (to the end when `end` is None) of the object,
    /// pinned to `generation` when given.
    fn read_stream(
        &self,
        key: &str,
        generation: Option<i64>,
        start: u64,
        end: Option<u64>,
    ) -> impl Future<Output = StorageResult<ByteStream>> + Send;

    fn write(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = StorageResult<ObjectMeta>> + Send;

    fn delete(&self, key: &str) -> impl Future<Output = StorageResult<()>> + Send;

    /// The whole object in memory (small objects only).
    fn read_all(&self, key: &str, generation: Option<i64>) -> impl Future<Output = StorageResult<Bytes>> + Send {
        async move {
            use futures::TryStreamExt;
            let mut stream = self.read_stream(key, generation, 0, None).await?;
            let mut buf = Vec::new();
            while let Some(chunk) = stream.try_next().await? {
                buf.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(buf))
        }
    }
}

/// Retries `op` on transient errors with exponential backoff (4 tries:
/// about 0.2 s, 0.4 s, 0.8 s between them, each ±50 % at random so that
/// many clients throttled at once do not come back at once, as Google's
/// retry strategy for Cloud Storage asks).
pub async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> StorageResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StorageResult<T>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1.. {
        let answer = op().await;
        if let Err(e) = &answer {
            metrics::counter!(STORAGE_ERRORS, "family" => e.family()).increment(1);
        }
        match answer {
            Err(e) if e.is_transient() && attempt < 4 => {
                use rand::Rng;
                let wait = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
                tracing::warn!(attempt, "{what}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}
