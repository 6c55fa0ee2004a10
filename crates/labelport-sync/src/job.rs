//! The `import_sync` job: runs the import engine for one storage and keeps
//! the storage's status, progress and errors up to date (Label Studio's
//! status machine: queued → in_progress → completed | completed_with_errors
//! | failed).

use std::sync::Arc;
use std::time::Duration;

use labelport_db::StorageRow;
use labelport_domain::storage::{compile_filter, normalize_prefix, Direction};
use labelport_jobs::{JobContext, JobOutcome};
use labelport_storage::ObjectStore;
pub use labelport_storage::StorageEnv;
use tokio::sync::watch;

use crate::import::{ImportEngine, ImportSettings, SyncError, SyncReport};
use crate::run::{error_list, retry, storage_of_job, SyncRun};

pub use labelport_domain::storage::IMPORT_SYNC;

/// Builds the engine settings from a stored import storage.
pub fn settings_of(
    row: &StorageRow,
    maximum_annotations: i64,
    user_id: i64,
    label_config: &str,
) -> Result<ImportSettings, String> {
    let s = &row.settings;
    let options = s.import().ok_or("not an import storage")?;
    Ok(ImportSettings {
        storage_id: row.id,
        project_id: row.project_id.ok_or("the storage has no project")?,
        maximum_annotations,
        bucket: s.bucket.clone(),
        prefix: normalize_prefix(&s.prefix),
        regex: compile_filter(&s.regex_filter)?,
        recursive: options.recursive_scan,
        use_blob_urls: s.use_blob_urls,
        policy: options.deletion_policy,
        user_id,
        // A config that no longer parses checks nothing (it was checked
        // when saved).
        config: labelport_domain::label_config::LabelConfig::parse(label_config)
            .ok()
            .map(std::sync::Arc::new),
    })
}

/// Runs an import sync job.
pub async fn run_import_sync(ctx: JobContext, env: StorageEnv) -> JobOutcome {
    let row = match storage_of_job(&ctx, Direction::Import).await {
        Ok(row) => row,
        Err(outcome) => return outcome,
    };
    let mut run = SyncRun::new(&ctx, &row);
    // `last_sync_count` counts what every attempt of this job created.
    if let Err(e) = run.carry_created_tasks().await {
        return retry(e, 1);
    }
    if let Err(e) = run.start(ctx.job.attempts, ctx.job.interruptions).await {
        return retry(e, 1);
    }
    let project_id = row.project_id.unwrap_or_default();
    let project = match ctx.db.get_project(project_id).await {
        Ok(p) => p,
        Err(e) => return run.fail(&format!("project {project_id}: {e}"), None).await,
    };
    let settings = match settings_of(
        &row,
        project.maximum_annotations,
        project.created_by.unwrap_or(0),
        &project.label_config,
    ) {
        Ok(s) => s,
        Err(message) => return run.fail(&message, None).await,
    };
    let store = match env.connect(row.kind, &row.settings).await {
        Ok(s) => s,
        Err(e) => return run.fail(&e.to_string(), None).await,
    };
    run_with_store(&ctx, run, &store, &settings).await
}

fn progress(report: &SyncReport) -> (i64, serde_json::Map<String, serde_json::Value>) {
    (
        report.tasks_created as i64,
        report.meta().as_object().cloned().unwrap_or_default(),
    )
}

/// Runs the engine with progress reporting on a started run; also used
/// with other stores (tests, benchmarks).
pub async fn run_with_store<S: ObjectStore>(
    ctx: &JobContext,
    mut run: SyncRun,
    store: &S,
    settings: &ImportSettings,
) -> JobOutcome {
    let (tx, rx) = watch::channel(SyncReport::default());
    let writer = run.spawn_progress(rx, progress);
    let result = ImportEngine::new(&ctx.db, store, settings, tx, Arc::clone(&ctx.stop))
        .run()
        .await;
    writer.abort();
    let _ = writer.await;
    match result {
        Ok(report) => {
            run.meta.extend(report.meta().as_object().cloned().unwrap_or_default());
            let errors = (report.rows_failed > 0).then(|| error_list(&report.errors, report.rows_failed as usize));
            let summary = format!(
                "{} objects listed, {} tasks created, {} rows failed",
                report.objects_listed, report.tasks_created, report.rows_failed
            );
            run.complete(report.tasks_created as i64, errors, &summary).await
        }
        // Progress is saved as it goes: the next run resumes from it.
        Err(SyncError::Stopped) => JobOutcome::Interrupted,
        Err(SyncError::Storage(e)) if e.is_transient() => retry(e, ctx.job.attempts),
        Err(SyncError::Storage(e)) => run.fail(&e.to_string(), None).await,
        Err(SyncError::Db(e)) => JobOutcome::Retry {
            error: e.to_string(),
            after: Duration::from_secs(2),
        },
    }
}
