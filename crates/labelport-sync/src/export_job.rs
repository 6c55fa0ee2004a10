//! The `export_sync` job of one export storage. Two kinds of run share it
//! (one job per storage, coalesced, so writes to a bucket never race):
//!
//! * a **full sync**, asked for by create or the sync endpoint (storage
//!   `queued`): links annotations not linked yet, writes everything dirty,
//!   and keeps Label Studio's status machine (queued → in_progress →
//!   completed | completed_with_errors | failed) with `last_sync_count` =
//!   objects written;
//! * a **background run**, queued by annotation saves and deletions:
//!   writes what is dirty and deletes what is queued, without touching the
//!   storage's status (as Label Studio's save hook). Failures leave links
//!   dirty and the job retries with backoff.

use std::time::{Duration, Instant};

use labelport_db::export_storages::ExportStorageRow;
use labelport_db::storages::StorageStatus;
use labelport_db::{Db, DbError};
use labelport_jobs::{JobContext, JobOutcome};
use labelport_storage::ObjectStore;
use serde_json::{Map, Value};
use tokio::sync::watch;

pub use labelport_db::export_storages::EXPORT_SYNC;

use crate::export::{ExportEngine, ExportError, ExportReport};
use crate::job::{error_list, meta_map, meta_time, spawn_progress_writer, StorageEnv};

fn status(row: &ExportStorageRow, status: &str, meta: &Map<String, Value>) -> StorageStatus {
    StorageStatus {
        status: status.to_owned(),
        last_sync: row.last_sync.clone(),
        last_sync_count: row.last_sync_count,
        last_sync_job: row.last_sync_job.clone(),
        traceback: row.traceback.clone(),
        meta: Value::Object(meta.clone()).to_string(),
    }
}

fn retry(e: impl std::fmt::Display, attempts: i64) -> JobOutcome {
    JobOutcome::Retry {
        error: e.to_string(),
        after: Duration::from_secs(2u64.pow(attempts.clamp(1, 6) as u32)),
    }
}

fn error_text(report: &ExportReport) -> String {
    error_list(&report.errors, report.failed as usize)
}

/// Runs an export job against GCS.
pub async fn run_export_sync(ctx: JobContext, env: StorageEnv) -> JobOutcome {
    let storage_id = serde_json::from_str::<Value>(&ctx.job.payload)
        .ok()
        .and_then(|v| v["storage_id"].as_i64())
        .unwrap_or_default();
    let row = match ctx.db.get_export_storage(storage_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return JobOutcome::Done, // deleted meanwhile
        Err(e) => return retry(e, ctx.job.attempts),
    };
    let store = env.gcs_bucket(&row.bucket, row.credentials.as_deref()).await;
    let full =
        (row.sync_requested || matches!(row.status.as_str(), "queued" | "in_progress")) && row.project_id.is_some();
    match store {
        Ok(store) if full => full_sync(&ctx, &row, &store).await,
        Ok(store) => background(&ctx, &row, &store).await,
        Err(e) if full => {
            let started = Instant::now();
            fail(&ctx.db, &row, meta_map(&row.meta), started, &e.to_string(), None).await
        }
        Err(e) => match give_up_on_orphan(&ctx, &row, &e.to_string()).await {
            Some(outcome) => outcome,
            None => retry(e, ctx.job.attempts),
        },
    }
}

/// How long the deletions of a deleted project's storage are retried
/// before the storage is given up (its objects stay in the bucket).
pub const ORPHAN_GIVE_UP: Duration = Duration::from_secs(7 * 24 * 3600);

/// For a storage whose project is gone and whose deletions still fail:
/// gives it up once they have been failing for [`ORPHAN_GIVE_UP`].
async fn give_up_on_orphan(ctx: &JobContext, row: &ExportStorageRow, error: &str) -> Option<JobOutcome> {
    if row.project_id.is_some() {
        return None;
    }
    let cutoff = (chrono::Utc::now() - chrono::Duration::from_std(ORPHAN_GIVE_UP).ok()?)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    match ctx.db.abandon_orphan_export_storage(row.id, &cutoff).await {
        Ok(Some(left)) => {
            tracing::warn!(
                storage.id = row.id,
                bucket = %row.bucket,
                objects_left = left,
                "export storage of a deleted project given up after {} days of failing deletions; \
                 its objects stay in the bucket. Last error: {error}",
                ORPHAN_GIVE_UP.as_secs() / 86_400
            );
            Some(JobOutcome::Done)
        }
        Ok(None) => None,
        Err(e) => Some(retry(e, ctx.job.attempts)),
    }
}

/// Writes what is dirty and deletes what is queued; a storage whose project
/// is gone is dropped once its deletions are done, or given up after
/// [`ORPHAN_GIVE_UP`] of failures.
pub async fn background<S: ObjectStore>(ctx: &JobContext, row: &ExportStorageRow, store: &S) -> JobOutcome {
    let started = Instant::now();
    let (tx, _rx) = watch::channel(ExportReport::default());
    let result = ExportEngine::new(&ctx.db, store, row, tx, ctx.stop.clone()).run().await;
    let report = match result {
        Ok(report) if report.failed == 0 => report,
        Ok(report) => {
            if let Some(outcome) = give_up_on_orphan(ctx, row, &error_text(&report)).await {
                return outcome;
            }
            tracing::warn!(
                storage.id = row.id,
                failed = report.failed,
                "export: some objects were not written; retrying later:\n{}",
                error_text(&report)
            );
            return retry(format!("{} objects not written", report.failed), ctx.job.attempts);
        }
        Err((ExportError::Stopped, _)) => return retry("stopped; resumes on another run", 0),
        Err((e, report)) => {
            if let Some(outcome) = give_up_on_orphan(ctx, row, &e.to_string()).await {
                return outcome;
            }
            tracing::warn!(storage.id = row.id, written = report.written, "export stopped: {e}");
            return retry(e, ctx.job.attempts);
        }
    };
    if row.project_id.is_none() {
        match ctx.db.drop_orphan_export_storage(row.id).await {
            Ok(true) => tracing::info!(storage.id = row.id, "export storage of a deleted project removed"),
            Ok(false) => {}
            Err(e) => return retry(e, ctx.job.attempts),
        }
    }
    if report.written + report.deleted > 0 {
        tracing::info!(
            storage.id = row.id,
            written = report.written,
            deleted = report.deleted,
            "export: changes written in {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }
    JobOutcome::Done
}

async fn fail(
    db: &Db,
    row: &ExportStorageRow,
    mut meta: Map<String, Value>,
    started: Instant,
    message: &str,
    written: Option<i64>,
) -> JobOutcome {
    meta.insert("time_failure".into(), meta_time().into());
    meta.insert("duration".into(), started.elapsed().as_secs_f64().into());
    let mut s = status(row, "failed", &meta);
    s.traceback = Some(message.to_owned());
    if written.is_some() {
        s.last_sync_count = written;
    }
    if let Err(e) = db.set_export_storage_status(row.id, &s).await {
        tracing::error!(storage.id = row.id, "could not record the failure: {e}");
    }
    tracing::warn!(storage.id = row.id, "export sync failed: {message}");
    JobOutcome::Failed(message.to_owned())
}

/// A full sync with Label Studio's status machine and progress.
pub async fn full_sync<S: ObjectStore>(ctx: &JobContext, row: &ExportStorageRow, store: &S) -> JobOutcome {
    let db = &ctx.db;
    let started = Instant::now();
    let mut meta = meta_map(&row.meta);
    meta.insert("attempts".into(), ctx.job.attempts.into());
    meta.insert("time_in_progress".into(), meta_time().into());
    meta.insert("time_last_ping".into(), meta_time().into());
    let mut s = status(row, "in_progress", &meta);
    s.traceback = None;
    s.last_sync_job = Some(ctx.job.id.to_string());
    if let Err(e) = db.set_export_storage_status(row.id, &s).await {
        return retry(e, ctx.job.attempts);
    }
    if let Err(e) = db.take_export_sync_request(row.id).await {
        return retry(e, ctx.job.attempts);
    }
    if let Err(e) = db.link_unexported_annotations(row.id).await {
        return retry(e, ctx.job.attempts);
    }
    let total = match db.count_export_links(row.id).await {
        Ok((total, _)) => total,
        Err(e) => return retry(e, ctx.job.attempts),
    };
    meta.insert("total_annotations".into(), total.into());

    let (tx, rx) = watch::channel(ExportReport::default());
    let writer = {
        let (db, row, meta) = (db.clone(), row.clone(), meta.clone());
        let job_id = ctx.job.id.to_string();
        spawn_progress_writer(rx, move |report: ExportReport| {
            let mut m = meta.clone();
            m.insert("time_last_ping".into(), meta_time().into());
            m.insert("duration".into(), started.elapsed().as_secs_f64().into());
            let mut s = status(&row, "in_progress", &m);
            s.traceback = None;
            s.last_sync_job = Some(job_id.clone());
            s.last_sync_count = Some(report.written as i64);
            let (db, id) = (db.clone(), row.id);
            async move {
                if let Err(e) = db.set_export_storage_status(id, &s).await {
                    tracing::warn!(storage.id = id, "progress write failed: {e}");
                }
            }
        })
    };
    let result = ExportEngine::new(db, store, row, tx, ctx.stop.clone()).run().await;
    writer.abort();
    let _ = writer.await;

    let report = match result {
        Ok(report) => report,
        Err((ExportError::Stopped, _)) => return retry("stopped; resumes on another run", 0),
        Err((ExportError::Fatal(e), report)) => {
            let mut message = format!("{e}. Written before it stopped: {}.", report.written);
            if !report.errors.is_empty() {
                message.push('\n');
                message.push_str(&error_text(&report));
            }
            return fail(db, row, meta, started, &message, Some(report.written as i64)).await;
        }
        Err((e, _)) => return retry(e, ctx.job.attempts),
    };
    meta.insert("time_completed".into(), meta_time().into());
    meta.insert("time_last_ping".into(), meta_time().into());
    meta.insert("duration".into(), started.elapsed().as_secs_f64().into());
    meta.insert("objects_deleted".into(), report.deleted.into());
    let with_errors = report.failed > 0;
    if with_errors {
        meta.insert("annotations_failed".into(), report.failed.into());
    } else {
        meta.remove("annotations_failed");
    }
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
    s.last_sync_count = Some(report.written as i64);
    s.last_sync_job = Some(ctx.job.id.to_string());
    s.traceback = with_errors.then(|| {
        format!(
            "{} objects were not written (they are retried on the next sync):\n{}",
            report.failed,
            error_text(&report)
        )
    });
    if let Err(e) = db.set_export_storage_status(row.id, &s).await {
        return retry(e, ctx.job.attempts);
    }
    tracing::info!(
        storage.id = row.id,
        written = report.written,
        deleted = report.deleted,
        failed = report.failed,
        "export sync finished in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    JobOutcome::Done
}

/// How often [`spawn_export_requeuer`] looks for export work left behind.
pub const REQUEUE_EVERY: Duration = Duration::from_secs(300);

/// Queues, at start and then every `every`, a job for each export storage
/// with work waiting and no job: links left dirty by a job that gave up
/// after its retries (a long bucket outage), deletions of a deleted
/// project, a request lost with a crash.
pub fn spawn_export_requeuer(
    db: Db,
    notify: std::sync::Arc<tokio::sync::Notify>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match db.requeue_pending_exports().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(storages = n, "queued export jobs for work left waiting");
                    notify.notify_waiters();
                }
                Err(e) => tracing::warn!("looking for export work left waiting: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
