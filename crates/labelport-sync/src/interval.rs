//! Interval sync (issue 17, item 4): source storages with a
//! `sync_interval` are synced every that many minutes, by whichever process
//! claims the due storage first (`Db::claim_due_interval_syncs`), through
//! the same job queue as a sync asked for by a user — so one sync runs per
//! storage at a time, and a cluster of any size syncs each storage once
//! per interval.

use std::sync::Arc;
use std::time::Duration;

use labelport_db::Db;
use labelport_domain::storage::Direction;
use serde_json::Value;
use tokio::sync::Notify;

use crate::run::{meta_map, meta_time};

/// How often each process looks for due storages. An interval is counted
/// in minutes; a sync starts at most this late.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// Queues a sync of every source storage whose interval has come round,
/// and returns their ids. A storage whose sync is still queued or running
/// is skipped until its next time (the job queue keeps one per storage).
///
/// Errors: the database's.
pub async fn queue_due_syncs(db: &Db) -> labelport_db::DbResult<Vec<i64>> {
    let due = db.claim_due_interval_syncs().await?;
    let mut queued = Vec::with_capacity(due.len());
    for id in due {
        let row = match db.get_storage(Direction::Import, id).await {
            Ok(row) => row,
            // Deleted since: nothing to do.
            Err(labelport_db::DbError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let mut meta = meta_map(&row.state.meta);
        meta.insert("time_queued".into(), meta_time().into());
        meta.insert("trigger".into(), "interval".into());
        match db
            .request_sync(Direction::Import, id, &Value::Object(meta).to_string())
            .await?
        {
            Some(job) => {
                tracing::info!(storage.id = id, job.id = job, "queued interval sync");
                queued.push(id);
            }
            None => tracing::info!(
                storage.id = id,
                "interval sync skipped: a sync is already queued or running"
            ),
        }
    }
    Ok(queued)
}

/// Runs [`queue_due_syncs`] at start and then every `every`, waking the
/// workers when it queued something.
pub fn spawn_interval_scheduler(db: Db, notify: Arc<Notify>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match queue_due_syncs(&db).await {
                Ok(queued) if !queued.is_empty() => notify.notify_waiters(),
                Ok(_) => {}
                Err(e) => tracing::warn!("looking for interval syncs that are due: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
