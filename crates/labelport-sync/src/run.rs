//! One sync run on one storage, either direction: Label Studio's status
//! machine (`queued` → `in_progress` → `completed` |
//! `completed_with_errors` | `failed`), its `meta` times, progress written
//! while the engine runs, and the job outcomes that follow. The import and
//! export jobs differ only in their engine and what they count.

use std::time::{Duration, Instant};

use chrono::Utc;
use labelport_db::{Db, DbError, StorageRow};
use labelport_domain::storage::{Direction, SyncState};
use labelport_jobs::{JobContext, JobOutcome};
use serde_json::{Map, Value};
use tokio::sync::watch;

/// How often progress is written while a sync runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Label Studio's `meta` time format: `2026-11-29 04:09:48.863800+00:00`.
pub fn meta_time() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
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

/// Retry after a backoff that grows with the job's attempts: 2, 4, … 64 s.
pub fn retry(error: impl std::fmt::Display, attempts: i64) -> JobOutcome {
    JobOutcome::Retry {
        error: error.to_string(),
        after: Duration::from_secs(2u64.pow(attempts.clamp(1, 6) as u32)),
    }
}

/// The storage a job's payload (`{"storage_id": N}`) names, or the outcome
/// to return: Done when it was deleted meanwhile, a retry when the database
/// could not be read.
pub async fn storage_of_job(ctx: &JobContext, direction: Direction) -> Result<StorageRow, JobOutcome> {
    let storage_id = serde_json::from_str::<Value>(&ctx.job.payload)
        .ok()
        .and_then(|v| v["storage_id"].as_i64())
        .unwrap_or_default();
    match ctx.db.get_storage(direction, storage_id).await {
        Ok(row) => Ok(row),
        Err(DbError::NotFound) => Err(JobOutcome::Done),
        Err(e) => Err(retry(e, ctx.job.attempts)),
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

/// The state a run writes on its storage, from the row read when the job
/// started; `meta` gathers the run's times and counters.
pub struct SyncRun {
    db: Db,
    direction: Direction,
    storage_id: i64,
    state: SyncState,
    job_id: String,
    started: Instant,
    pub meta: Map<String, Value>,
    /// Added to every count this run writes: what earlier attempts of the
    /// same job already did (see [`SyncRun::carry_created_tasks`]).
    carried: i64,
}

/// `meta` key: the import job whose created tasks are being counted.
pub const META_COUNTED_JOB: &str = "counted_job";
/// `meta` key: the link id mark taken when [`META_COUNTED_JOB`] started.
pub const META_LINKS_BEFORE: &str = "links_before";
/// `meta` key: tasks created by earlier attempts of the current job
/// (`last_sync_count` = this + `tasks_created` of the last attempt).
pub const META_TASKS_CREATED_EARLIER: &str = "tasks_created_earlier_attempts";

impl SyncRun {
    /// A run of `ctx`'s job on `row`; nothing is written yet.
    pub fn new(ctx: &JobContext, row: &StorageRow) -> SyncRun {
        SyncRun {
            db: ctx.db.clone(),
            direction: row.direction(),
            storage_id: row.id,
            state: row.state.clone(),
            job_id: ctx.job.id.to_string(),
            started: Instant::now(),
            meta: meta_map(&row.state.meta),
            carried: 0,
        }
    }

    /// Import runs, before [`SyncRun::start`]: makes `last_sync_count` count
    /// the tasks created by every attempt of this job, not only the last
    /// one (an attempt retried, or resumed after its process died or shut
    /// down, skips what earlier attempts linked). The first attempt marks
    /// the newest link id in `meta`; a later attempt of the same job counts
    /// the storage's links made since that mark (one per created task, all
    /// committed) and carries them over. Exact whatever the progress writes
    /// saw before an attempt ended.
    pub async fn carry_created_tasks(&mut self) -> Result<(), DbError> {
        let job = self.job_id.parse::<i64>().ok();
        let counted = self.meta.get(META_COUNTED_JOB).and_then(Value::as_i64);
        let same_job = counted.is_some() && counted == job;
        let mark = self.meta.get(META_LINKS_BEFORE).and_then(Value::as_i64);
        match mark.filter(|_| same_job) {
            Some(mark) => self.carried = self.db.count_links_after(self.storage_id, mark).await?,
            None => {
                let mark = self.db.last_link_id().await?;
                self.meta.insert(META_COUNTED_JOB.into(), job.into());
                self.meta.insert(META_LINKS_BEFORE.into(), mark.into());
                self.carried = 0;
            }
        }
        self.meta.insert(META_TASKS_CREATED_EARLIER.into(), self.carried.into());
        Ok(())
    }

    fn state_with(&self, status: &str, meta: &Map<String, Value>) -> SyncState {
        SyncState {
            status: status.to_owned(),
            meta: Value::Object(meta.clone()).to_string(),
            ..self.state.clone()
        }
    }

    async fn write(&self, state: &SyncState) -> Result<(), DbError> {
        self.db.set_storage_state(self.direction, self.storage_id, state).await
    }

    /// Marks the storage `in_progress` under this job (`attempts`,
    /// `interruptions` — runs whose process died or shut down, taken over —,
    /// `time_in_progress`; the last sync's errors cleared).
    pub async fn start(&mut self, attempts: i64, interruptions: i64) -> Result<(), DbError> {
        // A job's first attempt starts from a clean slate: the previous
        // job's counters and times would show as this run's progress until
        // its first write.
        if attempts <= 1 && interruptions == 0 {
            self.meta.retain(|k, _| {
                [
                    "time_queued",
                    "trigger",
                    META_COUNTED_JOB,
                    META_LINKS_BEFORE,
                    META_TASKS_CREATED_EARLIER,
                ]
                .contains(&k.as_str())
            });
        }
        self.meta.insert("attempts".into(), attempts.into());
        self.meta.insert("interruptions".into(), interruptions.into());
        self.meta.insert("time_in_progress".into(), meta_time().into());
        self.meta.insert("time_last_ping".into(), meta_time().into());
        self.state.status = "in_progress".into();
        self.state.traceback = None;
        self.state.last_sync_job = Some(self.job_id.clone());
        let state = self.state_with("in_progress", &self.meta);
        self.write(&state).await
    }

    /// Writes the engine's progress while it runs: every [`PROGRESS_EVERY`]
    /// the newest report's `(count, extra meta)` as `last_sync_count` and
    /// `meta`, with `time_last_ping` and `duration`. Abort the handle when
    /// the engine ends.
    pub fn spawn_progress<R>(
        &self,
        rx: watch::Receiver<R>,
        progress: fn(&R) -> (i64, Map<String, Value>),
    ) -> tokio::task::JoinHandle<()>
    where
        R: Clone + Send + Sync + 'static,
    {
        let (db, direction, id, started) = (self.db.clone(), self.direction, self.storage_id, self.started);
        let (base, meta, carried) = (self.state.clone(), self.meta.clone(), self.carried);
        spawn_progress_writer(rx, move |report: R| {
            let (count, extra) = progress(&report);
            let count = carried + count;
            let mut m = meta.clone();
            m.extend(extra);
            m.insert("time_last_ping".into(), meta_time().into());
            m.insert("duration".into(), started.elapsed().as_secs_f64().into());
            let state = SyncState {
                status: "in_progress".into(),
                last_sync_count: Some(count),
                meta: Value::Object(m).to_string(),
                ..base.clone()
            };
            let db = db.clone();
            async move {
                if let Err(e) = db.set_storage_state(direction, id, &state).await {
                    tracing::warn!(storage.id = id, "progress write failed: {e}");
                }
            }
        })
    }

    /// Ends the run `completed`, or `completed_with_errors` with `errors` as
    /// the traceback; `count` (plus what earlier attempts carried over)
    /// becomes `last_sync_count`, and `summary`
    /// (what the engine did, in words) goes to the log line. A database
    /// error is a retry (the work is done; the next run finds nothing to do).
    pub async fn complete(mut self, count: i64, errors: Option<String>, summary: &str) -> JobOutcome {
        self.meta.insert("time_completed".into(), meta_time().into());
        self.meta.insert("time_last_ping".into(), meta_time().into());
        self.meta
            .insert("duration".into(), self.started.elapsed().as_secs_f64().into());
        let status = if errors.is_some() {
            "completed_with_errors"
        } else {
            "completed"
        };
        let mut state = self.state_with(status, &self.meta);
        state.last_sync = Some(labelport_db::now());
        let count = self.carried + count;
        state.last_sync_count = Some(count);
        state.last_sync_job = Some(self.job_id.clone());
        let with_errors = errors.is_some();
        state.traceback = errors;
        match self.write(&state).await {
            Ok(()) => {
                tracing::info!(
                    storage.id = self.storage_id,
                    direction = self.direction.as_str(),
                    count,
                    with_errors,
                    "sync finished in {:.3} s: {summary}",
                    self.started.elapsed().as_secs_f64()
                );
                JobOutcome::Done
            }
            Err(e) => JobOutcome::Retry {
                error: e.to_string(),
                after: Duration::from_secs(2),
            },
        }
    }

    /// Ends the run `failed` with `message` as the traceback (and `count` as
    /// `last_sync_count` when given): nothing a retry can fix.
    pub async fn fail(mut self, message: &str, count: Option<i64>) -> JobOutcome {
        self.meta.insert("time_failure".into(), meta_time().into());
        self.meta
            .insert("duration".into(), self.started.elapsed().as_secs_f64().into());
        let mut state = self.state_with("failed", &self.meta);
        state.traceback = Some(message.to_owned());
        if let Some(count) = count {
            state.last_sync_count = Some(self.carried + count);
        }
        if let Err(e) = self.write(&state).await {
            tracing::error!(storage.id = self.storage_id, "could not record the failure: {e}");
        }
        tracing::warn!(
            storage.id = self.storage_id,
            direction = self.direction.as_str(),
            "sync failed: {message}"
        );
        JobOutcome::Failed(message.to_owned())
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
