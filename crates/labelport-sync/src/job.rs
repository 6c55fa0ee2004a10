//! The `import_sync` job: runs the import engine for one storage and keeps
//! the storage's status, progress and errors up to date (Label Studio's
//! status machine: queued → in_progress → completed | completed_with_errors
//! | failed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use labelport_db::storages::{ImportStorageRow, StorageStatus};
use labelport_db::{Db, DbError};
use labelport_jobs::{JobContext, JobOutcome};
use labelport_storage::gcs::{GcsConfig, GcsStore};
use labelport_storage::{ObjectStore, StorageError};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::import::{
    compile_filter, normalize_prefix, DeletionPolicy, ImportEngine, ImportSettings, SyncError, SyncReport,
};

pub const IMPORT_SYNC: &str = "import_sync";

/// How often progress is written while a sync runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub fn dedup_key(storage_id: i64) -> String {
    format!("{IMPORT_SYNC}:{storage_id}")
}

pub fn payload(storage_id: i64) -> String {
    json!({ "storage_id": storage_id }).to_string()
}

/// Label Studio's `meta` time format: `2026-11-29 04:09:48.863800+00:00`.
pub fn meta_time() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

/// Where connectors connect (tests point GCS at the emulator).
#[derive(Clone, Debug, Default)]
pub struct StorageEnv {
    pub gcs_endpoint: Option<String>,
}

impl StorageEnv {
    pub async fn gcs(&self, row: &ImportStorageRow) -> Result<GcsStore, StorageError> {
        self.gcs_bucket(&row.bucket, row.credentials.as_deref()).await
    }

    pub async fn gcs_bucket(&self, bucket: &str, credentials: Option<&str>) -> Result<GcsStore, StorageError> {
        GcsStore::connect(GcsConfig {
            bucket: bucket.to_owned(),
            service_account_json: credentials.map(str::to_owned),
            endpoint: self.gcs_endpoint.clone(),
        })
        .await
    }
}

/// While a sync runs: every [`PROGRESS_EVERY`], hands the engine's newest
/// report to `write` (which records it on the storage), until the engine
/// drops its sender or the task is aborted.
pub fn spawn_progress_writer<R, F, Fut>(mut rx: watch::Receiver<R>, mut write: F) -> tokio::task::JoinHandle<()>
where
    R: Clone + Send + Sync + 'static,
    F: FnMut(R) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            if rx.has_changed().is_err() {
                return;
            }
            let report = rx.borrow_and_update().clone();
            write(report).await;
        }
    })
}

/// A storage's stored `meta` as a map (empty when unreadable).
pub fn meta_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Listed errors, one a line, with a count of those not listed.
pub fn error_list(listed: &[String], total: usize) -> String {
    let mut text = listed.join("\n");
    if total > listed.len() {
        text.push_str(&format!("\n… and {} more errors", total - listed.len()));
    }
    text
}

fn status(row: &ImportStorageRow, status: &str, meta: &Map<String, Value>) -> StorageStatus {
    StorageStatus {
        status: status.to_owned(),
        last_sync: row.last_sync.clone(),
        last_sync_count: row.last_sync_count,
        last_sync_job: row.last_sync_job.clone(),
        traceback: row.traceback.clone(),
        meta: Value::Object(meta.clone()).to_string(),
    }
}

/// Builds the engine settings from a stored storage.
pub fn settings_of(row: &ImportStorageRow, maximum_annotations: i64, user_id: i64) -> Result<ImportSettings, String> {
    Ok(ImportSettings {
        storage_id: row.id,
        project_id: row.project_id,
        maximum_annotations,
        bucket: row.bucket.clone(),
        prefix: normalize_prefix(&row.prefix),
        regex: compile_filter(&row.regex_filter)?,
        recursive: row.recursive_scan,
        use_blob_urls: row.use_blob_urls,
        policy: DeletionPolicy::parse(&row.deletion_policy).unwrap_or(DeletionPolicy::Keep),
        user_id,
    })
}

async fn fail(
    db: &Db,
    row: &ImportStorageRow,
    mut meta: Map<String, Value>,
    started: Instant,
    message: &str,
) -> JobOutcome {
    meta.insert("time_failure".into(), meta_time().into());
    meta.insert("duration".into(), started.elapsed().as_secs_f64().into());
    let mut s = status(row, "failed", &meta);
    s.traceback = Some(message.to_owned());
    if let Err(e) = db.set_storage_status(row.id, &s).await {
        tracing::error!(storage.id = row.id, "could not record the failure: {e}");
    }
    tracing::warn!(storage.id = row.id, "import sync failed: {message}");
    JobOutcome::Failed(message.to_owned())
}

/// Runs an import sync job against GCS.
pub async fn run_import_sync(ctx: JobContext, env: StorageEnv) -> JobOutcome {
    let storage_id = serde_json::from_str::<Value>(&ctx.job.payload)
        .ok()
        .and_then(|v| v["storage_id"].as_i64())
        .unwrap_or_default();
    let db = &ctx.db;
    let row = match db.get_import_storage(storage_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return JobOutcome::Done, // deleted meanwhile
        Err(e) => {
            return JobOutcome::Retry {
                error: e.to_string(),
                after: Duration::from_secs(2),
            }
        }
    };
    let started = Instant::now();
    let mut meta = meta_map(&row.meta);
    meta.insert("attempts".into(), ctx.job.attempts.into());
    meta.insert("time_in_progress".into(), meta_time().into());
    meta.insert("time_last_ping".into(), meta_time().into());
    let mut s = status(&row, "in_progress", &meta);
    s.traceback = None;
    s.last_sync_job = Some(ctx.job.id.to_string());
    if let Err(e) = db.set_storage_status(row.id, &s).await {
        return JobOutcome::Retry {
            error: e.to_string(),
            after: Duration::from_secs(2),
        };
    }
    let project = match db.get_project(row.project_id).await {
        Ok(p) => p,
        Err(e) => return fail(db, &row, meta, started, &format!("project {}: {e}", row.project_id)).await,
    };
    let settings = match settings_of(&row, project.maximum_annotations, project.created_by.unwrap_or(0)) {
        Ok(s) => s,
        Err(message) => return fail(db, &row, meta, started, &message).await,
    };
    let store = match env.gcs(&row).await {
        Ok(s) => s,
        Err(e) => return fail(db, &row, meta, started, &e.to_string()).await,
    };
    run_with_store(&ctx, &row, meta, &store, &settings, started).await
}

/// Runs the engine with progress reporting; also used with other stores.
pub async fn run_with_store<S: ObjectStore>(
    ctx: &JobContext,
    row: &ImportStorageRow,
    mut meta: Map<String, Value>,
    store: &S,
    settings: &ImportSettings,
    started: Instant,
) -> JobOutcome {
    let db = &ctx.db;
    let (tx, rx) = watch::channel(SyncReport::default());
    let writer = {
        let (db, row, meta) = (db.clone(), row.clone(), meta.clone());
        let job_id = ctx.job.id.to_string();
        spawn_progress_writer(rx, move |report: SyncReport| {
            let mut m = meta.clone();
            m.extend(report.meta().as_object().cloned().unwrap_or_default());
            m.insert("time_last_ping".into(), meta_time().into());
            m.insert("duration".into(), started.elapsed().as_secs_f64().into());
            let mut s = status(&row, "in_progress", &m);
            s.traceback = None;
            s.last_sync_job = Some(job_id.clone());
            s.last_sync_count = Some(report.tasks_created as i64);
            let (db, id) = (db.clone(), row.id);
            async move {
                if let Err(e) = db.set_storage_status(id, &s).await {
                    tracing::warn!(storage.id = id, "progress write failed: {e}");
                }
            }
        })
    };
    let result = ImportEngine::new(db, store, settings, tx, Arc::clone(&ctx.stop))
        .run()
        .await;
    writer.abort();
    let _ = writer.await;
    match result {
        Ok(report) => {
            meta.extend(report.meta().as_object().cloned().unwrap_or_default());
            meta.insert("time_completed".into(), meta_time().into());
            meta.insert("time_last_ping".into(), meta_time().into());
            meta.insert("duration".into(), started.elapsed().as_secs_f64().into());
            let with_errors = report.rows_failed > 0;
            let mut s = status(
                row,
                if with_errors {
                    "completed_with_errors"
                } else {
                    "completed"
                },
                &meta,
            );
            s.last_sync = Some(labelport_db::now());
            s.last_sync_count = Some(report.tasks_created as i64);
            s.last_sync_job = Some(ctx.job.id.to_string());
            s.traceback = with_errors.then(|| error_list(&report.errors, report.rows_failed as usize));
            if let Err(e) = db.set_storage_status(row.id, &s).await {
                return JobOutcome::Retry {
                    error: e.to_string(),
                    after: Duration::from_secs(2),
                };
            }
            tracing::info!(
                storage.id = row.id,
                created = report.tasks_created,
                listed = report.objects_listed,
                errors = report.rows_failed,
                "import sync finished in {:.3} s",
                started.elapsed().as_secs_f64()
            );
            JobOutcome::Done
        }
        Err(SyncError::Stopped) => JobOutcome::Retry {
            error: "stopped; resumes on another run".into(),
            after: Duration::from_millis(100),
        },
        Err(SyncError::Storage(e)) if e.is_transient() => JobOutcome::Retry {
            error: e.to_string(),
            after: Duration::from_secs(2u64.pow(ctx.job.attempts.clamp(1, 6) as u32)),
        },
        Err(SyncError::Storage(e)) => fail(db, row, meta, started, &e.to_string()).await,
        Err(SyncError::Db(e)) => JobOutcome::Retry {
            error: e.to_string(),
            after: Duration::from_secs(2),
        },
    }
}

#[cfg(test)]
mod progress_tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn progress_writer_hands_over_the_newest_report_until_the_sync_ends() {
        let (tx, rx) = watch::channel(0u32);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let writer = spawn_progress_writer(rx, move |report| {
            let recorded = Arc::clone(&recorded);
            async move { recorded.lock().unwrap().push(report) }
        });
        tx.send_replace(1);
        tx.send_replace(2);
        tokio::time::sleep(PROGRESS_EVERY + Duration::from_millis(400)).await;
        assert_eq!(*seen.lock().unwrap(), vec![2], "one write, of the newest report");
        drop(tx);
        tokio::time::timeout(PROGRESS_EVERY * 3, writer)
            .await
            .expect("the writer ends once the engine drops its sender")
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![2]);
    }
}
