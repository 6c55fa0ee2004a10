//! The engines that move data between buckets and the database, over the
//! storage connector trait: import (objects → tasks, with the readers that
//! turn task files into rows) and export (annotations → objects), and the
//! background jobs that run them.

pub mod export;
pub mod export_job;
pub mod import;
pub mod job;
pub mod readers;

/// Registers every job kind of this crate on `workers`.
pub fn register_jobs(workers: labelport_jobs::Workers, env: job::StorageEnv) -> labelport_jobs::Workers {
    let import_env = env.clone();
    workers
        .handle(job::IMPORT_SYNC, move |ctx| {
            job::run_import_sync(ctx, import_env.clone())
        })
        .handle(export_job::EXPORT_SYNC, move |ctx| {
            export_job::run_export_sync(ctx, env.clone())
        })
}
