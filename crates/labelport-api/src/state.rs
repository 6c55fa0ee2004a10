//! Shared state of the HTTP handlers.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use labelport_db::{Db, StorageRow};
use labelport_storage::gcs::GcsStore;
use labelport_storage::{StorageEnv, StorageError};
use tokio::sync::{Mutex, Notify};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Where storage connectors connect (the GCS emulator in tests).
    pub storage_env: StorageEnv,
    /// Wakes this process's job workers when a job is queued.
    pub jobs_notify: Arc<Notify>,
    /// Public URL prefix for generated resolve URLs ("" = relative).
    pub public_url: String,
    /// Connected stores by storage, reused across media requests.
    pub stores: StoreCache,
    /// IAM Credentials endpoint for signing without a private key.
    pub iam_endpoint: String,
    /// Buckets that non-admins may reach with the server's own cloud
    /// identity (a storage without credentials): names, or `*` for any.
    /// Empty: admins only. (`LABELPORT_AMBIENT_CREDENTIALS_BUCKETS`.)
    pub ambient_buckets: Vec<String>,
    /// Serve objects of types that run script (HTML, SVG, XML, JavaScript)
    /// inline instead of as attachments (`LABELPORT_MEDIA_INLINE_ACTIVE`;
    /// off by default). They are sandboxed by CSP either way.
    pub media_inline_active: bool,
}

impl AppState {
    pub fn new(db: Db) -> Self {
        AppState {
            db,
            storage_env: StorageEnv::default(),
            jobs_notify: Arc::new(Notify::new()),
            public_url: String::new(),
            stores: StoreCache::default(),
            iam_endpoint: "https://iamcredentials.googleapis.com".into(),
            ambient_buckets: Vec::new(),
            media_inline_active: false,
        }
    }
}

/// Clients per storage: building one (and, with a key, fetching a token)
/// per media request would cost more than the request. An entry is rebuilt
/// when the storage's connection settings change.
#[derive(Clone, Default)]
pub struct StoreCache {
    gcs: Arc<Mutex<HashMap<i64, (u64, GcsStore)>>>,
}

impl StoreCache {
    pub async fn get(&self, env: &StorageEnv, row: &StorageRow) -> Result<GcsStore, StorageError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            row.kind,
            &row.settings.bucket,
            &row.settings.credentials,
            &env.gcs_endpoint,
        )
            .hash(&mut h);
        let fingerprint = h.finish();
        let mut map = self.gcs.lock().await;
        if let Some((f, store)) = map.get(&row.id) {
            if *f == fingerprint {
                return Ok(store.clone());
            }
        }
        let store = env.connect(row.kind, &row.settings).await?;
        map.insert(row.id, (fingerprint, store.clone()));
        Ok(store)
    }
}
