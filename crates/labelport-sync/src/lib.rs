//! The engines that move data between buckets and the database, over the
//! storage connector trait: import (objects → tasks, with the readers that
//! turn task files into rows) and export (annotations → objects), and the
//! background jobs that run them.

pub mod export;
pub mod export_job;
pub mod import;
pub mod interval;
pub mod job;
pub mod notification;
pub mod readers;
pub mod run;

/// The job workers of a process, with every job kind of this crate, woken
/// by `notify` when a job is queued (the API holds the same `Notify`).
/// Used by `labelport serve`/`worker`, the test kit and the benchmarks.
pub fn workers(
    db: labelport_db::Db,
    env: job::StorageEnv,
    notify: std::sync::Arc<tokio::sync::Notify>,
    config: labelport_jobs::WorkerConfig,
) -> labelport_jobs::Workers {
    let mut w = register_jobs(labelport_jobs::Workers::new(db, config), env);
    w.notify = notify;
    w
}

/// Registers every job kind of this crate on `workers`.
pub fn register_jobs(workers: labelport_jobs::Workers, env: job::StorageEnv) -> labelport_jobs::Workers {
    let import_env = env.clone();
    let notification_env = env.clone();
    workers
        .handle(job::IMPORT_SYNC, move |ctx| {
            job::run_import_sync(ctx, import_env.clone())
        })
        .handle(notification::OBJECT_NOTIFICATION, move |ctx| {
            notification::run_object_notification(ctx, notification_env.clone())
        })
        .handle(export_job::EXPORT_SYNC, move |ctx| {
            export_job::run_export_sync(ctx, env.clone())
        })
}
