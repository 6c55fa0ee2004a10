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

use labelport_db::{Db, StorageRow};
use labelport_domain::storage::Direction;
use labelport_jobs::{JobContext, JobOutcome};
use labelport_storage::ObjectStore;
use serde_json::{Map, Value};
use tokio::sync::watch;

pub use labelport_db::export_storages::EXPORT_SYNC;

use crate::export::{ExportEngine, ExportError, ExportReport};
use crate::job::StorageEnv;
use crate::run::{error_list, retry, storage_of_job, SyncRun};

fn error_text(report: &ExportReport) -> String {
    error_list(&report.errors, report.failed as usize)
}

/// Runs an export job: a full sync when one was asked for, else a
/// background run.
pub async fn run_export_sync(ctx: JobContext, env: StorageEnv) -> JobOutcome {
    let row = match storage_of_job(&ctx, Direction::Export).await {
        Ok(row) => row,
        Err(outcome) => return outcome,
    };
    let store = env.connect(row.kind, &row.settings).await;
    let full = (row.sync_requested || row.state.is_active()) && row.project_id.is_some();
    match store {
        Ok(store) if full => full_sync(&ctx, &row, &store).await,
        Ok(store) => background(&ctx, &row, &store).await,
        Err(e) if full => SyncRun::new(&ctx, &row).fail(&e.to_string(), None).await,
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
async fn give_up_on_orphan(ctx: &JobContext, row: &StorageRow, error: &str) -> Option<JobOutcome> {
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
                bucket = %row.settings.bucket,
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
pub async fn background<S: ObjectStore>(ctx: &JobContext, row: &StorageRow, store: &S) -> JobOutcome {
    let started = Instant::now();
    let (tx, _rx) = watch::channel(ExportReport::default());
    let result = metered(ExportEngine::new(&ctx.db, store, row, tx, ctx.stop.clone()).run().await);
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
        Err((ExportError::Stopped, _)) => return JobOutcome::Interrupted,
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

/// Counts an export's objects in `/metrics`, however it ended.
fn metered<E>(result: Result<ExportReport, (E, ExportReport)>) -> Result<ExportReport, (E, ExportReport)> {
    let report = match &result {
        Ok(r) | Err((_, r)) => r,
    };
    metrics::counter!(crate::import::SYNC_OBJECTS, "direction" => "export", "op" => "written")
        .increment(report.written);
    metrics::counter!(crate::import::SYNC_OBJECTS, "direction" => "export", "op" => "deleted")
        .increment(report.deleted);
    result
}

fn progress(report: &ExportReport) -> (i64, Map<String, Value>) {
    (report.written as i64, Map::new())
}

/// A full sync with Label Studio's status machine and progress.
pub async fn full_sync<S: ObjectStore>(ctx: &JobContext, row: &StorageRow, store: &S) -> JobOutcome {
    let db = &ctx.db;
    let mut run = SyncRun::new(ctx, row);
    if let Err(e) = run.start(ctx.job.attempts, ctx.job.interruptions).await {
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
    run.meta.insert("total_annotations".into(), total.into());

    let (tx, rx) = watch::channel(ExportReport::default());
    let writer = run.spawn_progress(rx, progress);
    let result = metered(ExportEngine::new(db, store, row, tx, ctx.stop.clone()).run().await);
    writer.abort();
    let _ = writer.await;

    let report = match result {
        Ok(report) => report,
        Err((ExportError::Stopped, _)) => return JobOutcome::Interrupted,
        Err((ExportError::Fatal(e), report)) => {
            let mut message = format!("{e}. Written before it stopped: {}.", report.written);
            if !report.errors.is_empty() {
                message.push('\n');
                message.push_str(&error_text(&report));
            }
            return run.fail(&message, Some(report.written as i64)).await;
        }
        Err((e, _)) => return retry(e, ctx.job.attempts),
    };
    run.meta.insert("objects_deleted".into(), report.deleted.into());
    if report.failed > 0 {
        run.meta.insert("annotations_failed".into(), report.failed.into());
    } else {
        run.meta.remove("annotations_failed");
    }
    let errors = (report.failed > 0).then(|| {
        format!(
            "{} objects were not written (they are retried on the next sync):\n{}",
            report.failed,
            error_text(&report)
        )
    });
    let summary = format!(
        "{} objects written, {} deleted, {} failed",
        report.written, report.deleted, report.failed
    );
    run.complete(report.written as i64, errors, &summary).await
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
