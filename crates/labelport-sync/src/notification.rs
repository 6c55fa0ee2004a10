//! Event-driven sync (issue 17, item 5): a bucket notification (a Pub/Sub
//! message from GCS) names one object; the API queues an
//! [`OBJECT_NOTIFICATION`] job for it, and the job brings that object's
//! tasks up to date through the import engine
//! ([`ImportEngine::reconcile_object`]) — the rules of a full sync, for one
//! key, within seconds of the upload.
//!
//! The job is keyed by storage and object (`notification:{storage}:{key}`)
//! and coalesced: a burst of events for one object runs once, and an event
//! that arrives while its object is being applied runs it once more. The
//! job reads the object's current state from the bucket, so order and
//! replays do not matter. It does not touch the storage's sync status
//! (`status`, `last_sync`): that stays the last full sync's.
//!
//! A full sync of the same storage that is queued (not started) takes the
//! event over: it will list the object anyway. Beside a running sync the
//! event is applied, which the sync's rules allow: links are unique (a
//! task both make is kept once), a file replaced since the sync listed it
//! is skipped by the sync's generation-pinned read, and the sync leaves
//! alone links made after it started (an object it did not list but a
//! notification linked is not judged missing). One case is left: an
//! object that is gone and was never linked may have been listed by the
//! sync before it went, so the sync is asked to run once more (a flag on
//! its job: one more run at most, whatever the number of such events).

use std::sync::Arc;

use labelport_db::{Db, DbResult};
use labelport_domain::storage::Direction;
use labelport_jobs::{JobContext, JobOutcome};
use labelport_storage::StorageEnv;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::import::{ImportEngine, SyncError, SyncReport};
use crate::job::settings_of;
use crate::run::{retry, storage_of_job};

/// Job kind: apply one bucket notification's object to a source storage.
pub const OBJECT_NOTIFICATION: &str = "object_notification";

/// Prometheus counter: bucket notifications applied, by `outcome`
/// (`created`, `updated`, `deleted`, `unchanged`, `left_to_queued_sync`,
/// `failed`).
pub const NOTIFICATIONS_APPLIED: &str = "labelport_notifications_applied_total";

/// The job's payload (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationJob {
    pub storage_id: i64,
    /// The object's full name in the bucket.
    pub key: String,
    /// GCS's `eventType` (`OBJECT_FINALIZE`, `OBJECT_DELETE`,
    /// `OBJECT_METADATA_UPDATE`), for the log.
    pub event_type: String,
    /// The object generation the event is about, for the log.
    pub generation: Option<i64>,
}

/// Queues (or coalesces into a queued or running job) the application of
/// one object's notification to storage `storage_id`. The job is in the
/// database when this returns, so the push can be acknowledged.
///
/// Errors: the database's.
pub async fn queue_notification(db: &Db, job: &NotificationJob) -> DbResult<()> {
    let dedup = format!("notification:{}:{}", job.storage_id, job.key);
    let payload = serde_json::to_string(job).expect("a payload serializes");
    db.enqueue_coalesced_job(OBJECT_NOTIFICATION, &dedup, &payload).await
}

/// Runs an [`OBJECT_NOTIFICATION`] job: reconciles the object with the
/// storage's tasks. A storage deleted meanwhile, or one whose settings no
/// longer cover the object, is done at once; transient storage or database
/// trouble is retried with the job queue's backoff.
pub async fn run_object_notification(ctx: JobContext, env: StorageEnv) -> JobOutcome {
    let job: NotificationJob = match serde_json::from_str(&ctx.job.payload) {
        Ok(job) => job,
        Err(e) => return JobOutcome::Failed(format!("unreadable notification job: {e}")),
    };
    let row = match storage_of_job(&ctx, Direction::Import).await {
        Ok(row) => row,
        Err(outcome) => return outcome,
    };
    let sync = match ctx.db.active_job(&Direction::Import.dedup_key(job.storage_id)).await {
        Ok(sync) => sync,
        Err(e) => return retry(e, ctx.job.attempts),
    };
    if sync.as_ref().is_some_and(|s| s.status == "queued") {
        // A sync that has not started will list the object anyway.
        metrics::counter!(NOTIFICATIONS_APPLIED, "outcome" => "left_to_queued_sync").increment(1);
        tracing::info!(storage.id = job.storage_id, key = %job.key, "bucket notification left to the queued sync");
        return JobOutcome::Done;
    }
    let sync_running = sync.is_some();
    let project_id = row.project_id.unwrap_or_default();
    let project = match ctx.db.get_project(project_id).await {
        Ok(p) => p,
        Err(labelport_db::DbError::NotFound) => return JobOutcome::Done,
        Err(e) => return retry(e, ctx.job.attempts),
    };
    let settings = match settings_of(
        &row,
        project.maximum_annotations,
        project.created_by.unwrap_or(0),
        &project.label_config,
    ) {
        Ok(s) => s,
        Err(message) => return JobOutcome::Failed(message),
    };
    let store = match env.connect(row.kind, &row.settings).await {
        Ok(s) => s,
        Err(e) if e.is_transient() => return retry(e, ctx.job.attempts),
        Err(e) => return JobOutcome::Failed(e.to_string()),
    };
    let (tx, _rx) = watch::channel(SyncReport::default());
    let engine = ImportEngine::new(&ctx.db, &store, &settings, tx, Arc::clone(&ctx.stop));
    let result = engine.reconcile_object(&job.key).await;
    // The one race with a running sync that its own rules do not settle:
    // the object is gone and has no link yet, but the sync may have listed
    // it before it went and will make its task after this. Ask the sync to
    // run once more (a flag: at most one more run, however many such events).
    if sync_running {
        if let Ok(report) = &result {
            if report.objects_listed == 0 && report.objects_missing == 0 {
                let dedup = Direction::Import.dedup_key(job.storage_id);
                let payload = Direction::payload(job.storage_id);
                if let Err(e) = ctx
                    .db
                    .enqueue_coalesced_job(Direction::Import.job_kind(), &dedup, &payload)
                    .await
                {
                    return retry(e, ctx.job.attempts);
                }
                tracing::info!(
                    storage.id = job.storage_id,
                    key = %job.key,
                    "object gone while a sync runs: the sync will run once more"
                );
            }
        }
    }
    outcome(&ctx, &job, result)
}

fn outcome(ctx: &JobContext, job: &NotificationJob, result: Result<SyncReport, SyncError>) -> JobOutcome {
    match result {
        Ok(report) => {
            let applied = if report.tasks_created > 0 {
                "created"
            } else if report.tasks_updated > 0 {
                "updated"
            } else if report.tasks_deleted > 0 || report.objects_missing > 0 {
                "deleted"
            } else {
                "unchanged"
            };
            metrics::counter!(NOTIFICATIONS_APPLIED, "outcome" => applied).increment(1);
            tracing::info!(
                storage.id = job.storage_id,
                key = %job.key,
                event = %job.event_type,
                generation = job.generation,
                tasks_created = report.tasks_created,
                tasks_updated = report.tasks_updated,
                tasks_deleted = report.tasks_deleted,
                rows_failed = report.rows_failed,
                "applied bucket notification"
            );
            if report.rows_failed > 0 {
                tracing::warn!(
                    storage.id = job.storage_id,
                    key = %job.key,
                    "notification: rows refused: {}",
                    report.errors.join("; ")
                );
            }
            JobOutcome::Done
        }
        Err(SyncError::Stopped) => JobOutcome::Interrupted,
        Err(SyncError::Storage(e)) if e.is_transient() => retry(e, ctx.job.attempts),
        Err(SyncError::Storage(e)) => {
            metrics::counter!(NOTIFICATIONS_APPLIED, "outcome" => "failed").increment(1);
            tracing::warn!(storage.id = job.storage_id, key = %job.key, "bucket notification failed: {e}");
            JobOutcome::Failed(e.to_string())
        }
        Err(SyncError::Db(e)) => retry(e, ctx.job.attempts),
    }
}
