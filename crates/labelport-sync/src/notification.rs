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
//! A full sync of the same storage that is queued or running takes the
//! event over instead: a queued one will list the object anyway, and a
//! running one is asked to run once more when it ends (its listing may
//! have passed the object already). Applying the event beside it could
//! race its listing (an object it did not list but finds linked would be
//! judged missing). The sync itself leaves links made after it started
//! alone for the same reason.

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
/// (`created`, `updated`, `deleted`, `unchanged`, `deferred_to_sync`,
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
    match defer_to_sync(&ctx.db, &job).await {
        Ok(true) => return JobOutcome::Done,
        Ok(false) => {}
        Err(e) => return retry(e, ctx.job.attempts),
    }
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
    outcome(&ctx, &job, engine.reconcile_object(&job.key).await)
}

/// Whether a full sync of the job's storage is queued or running and so
/// takes the event over (a running one is asked to run once more).
async fn defer_to_sync(db: &Db, job: &NotificationJob) -> DbResult<bool> {
    let dedup = Direction::Import.dedup_key(job.storage_id);
    let Some(sync) = db.active_job(&dedup).await? else {
        return Ok(false);
    };
    if sync.status == "running" {
        db.enqueue_coalesced_job(
            Direction::Import.job_kind(),
            &dedup,
            &Direction::payload(job.storage_id),
        )
        .await?;
    }
    metrics::counter!(NOTIFICATIONS_APPLIED, "outcome" => "deferred_to_sync").increment(1);
    tracing::info!(
        storage.id = job.storage_id,
        key = %job.key,
        "bucket notification left to the storage's {} sync",
        sync.status
    );
    Ok(true)
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
