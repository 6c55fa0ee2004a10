//! Shared state of the HTTP handlers.

use std::sync::Arc;

use labelport_db::Db;
use labelport_sync::job::StorageEnv;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Where storage connectors connect (the GCS emulator in tests).
    pub storage_env: StorageEnv,
    /// Wakes this process's job workers when a job is queued.
    pub jobs_notify: Arc<Notify>,
}

impl AppState {
    pub fn new(db: Db) -> Self {
        AppState {
            db,
            storage_env: StorageEnv::default(),
            jobs_notify: Arc::new(Notify::new()),
        }
    }
}
