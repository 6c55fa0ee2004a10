//! Workers for the database job queue (`labelport_db::jobs`): claim a job,
//! run its handler while a heartbeat extends the lease, then finish or
//! retry it. Handlers must be idempotent: a job whose worker died is run
//! again by another worker once its lease expires.
//!
//! A handler runs in a task of its own: if it panics, its attempt ends (the
//! heartbeat stops with it) and the job is retried with backoff, and the
//! worker goes on. Retry delays get ±50 % jitter, so jobs that failed
//! together do not come back together. On shutdown a worker takes no new
//! job, tells the running one to stop, gives it [`WorkerConfig::grace`] to
//! save its progress, then hands the job back at once (an interruption,
//! not an attempt), so another process continues without waiting for the
//! lease to run out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use labelport_db::jobs::JobRow;
use labelport_db::Db;
use tokio::sync::Notify;

/// What a handler tells the worker.
#[derive(Debug)]
pub enum JobOutcome {
    Done,
    /// Run again after a delay (transient trouble).
    Retry {
        error: String,
        after: Duration,
    },
    /// Give up: the handler has recorded what the user needs to know.
    Failed(String),
    /// The handler stopped because it was told to (shutdown, lost lease),
    /// having saved its progress: the job is handed back, due now, and the
    /// attempt does not count.
    Interrupted,
}

/// Given to a running handler.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub job: JobRow,
    /// Set when the lease is lost or the process shuts down: stop soon.
    pub stop: Arc<AtomicBool>,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send>>;
pub type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;

#[derive(Clone)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub heartbeat: Duration,
    pub poll: Duration,
    pub max_attempts: i64,
    /// A job interrupted this many times (its process died or shut down
    /// under it) fails, so a job that kills its process cannot loop.
    pub max_interruptions: i64,
    /// How long a running job may take to stop at shutdown.
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            max_attempts: 5,
            max_interruptions: 20,
            grace: Duration::from_secs(10),
        }
    }
}

/// Prometheus counter: attempts begun, by job `kind`.
pub const JOBS_STARTED: &str = "labelport_jobs_started_total";
/// Prometheus counter: attempts ended, by `kind` and `outcome` (`done`,
/// `retried`, `failed`, `interrupted`; `lost`: it ended after its lease
/// was lost, and its new holder's outcome counts).
pub const JOBS_ENDED: &str = "labelport_jobs_ended_total";
/// Prometheus counter: jobs taken over from a worker whose lease ran out.
pub const JOB_TAKEOVERS: &str = "labelport_job_takeovers_total";

/// `delay` with ±50 % jitter (uniform).
pub fn jittered(delay: Duration) -> Duration {
    use rand::Rng;
    delay.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// The delay before retrying a job whose handler panicked on its
/// `attempts`-th attempt: 2, 4, … 64 s.
fn panic_backoff(attempts: i64) -> Duration {
    Duration::from_secs(2u64.pow(attempts.clamp(1, 6) as u32))
}

/// A pool of workers sharing handlers; `notify` wakes them when a job is
/// queued in this process (others find it by polling).
#[derive(Clone)]
pub struct Workers {
    db: Db,
    handlers: Arc<HashMap<String, Handler>>,
    config: WorkerConfig,
    pub notify: Arc<Notify>,
    shutdown: Arc<AtomicBool>,
    /// Wakes running jobs' watchers when shutdown begins.
    shutting_down: Arc<Notify>,
}

impl Workers {
    pub fn new(db: Db, config: WorkerConfig) -> Self {
        Workers {
            db,
            handlers: Arc::new(HashMap::new()),
            config,
            notify: Arc::new(Notify::new()),
            shutdown: Arc::new(AtomicBool::new(false)),
            shutting_down: Arc::new(Notify::new()),
        }
    }

    pub fn handle<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobOutcome> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(f(ctx)));
        Arc::get_mut(&mut self.handlers)
            .expect("handlers are registered before spawning")
            .insert(kind.to_owned(), handler);
        self
    }

    /// Starts `n` worker tasks.
    pub fn spawn(&self, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|i| {
                let me = self.clone();
                tokio::spawn(async move { me.run(i).await })
            })
            .collect()
    }

    /// Stops taking jobs and tells running ones to stop (each gets
    /// [`WorkerConfig::grace`], then is handed back); await the handles of
    /// [`Workers::spawn`] to wait for that.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
        self.shutting_down.notify_waiters();
    }

    async fn run(self, index: usize) {
        let worker_id = format!("{}-{index}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        while !self.shutdown.load(Ordering::Relaxed) {
            match self.run_one(&worker_id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(worker = %worker_id, "job queue: {e}"),
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Claims and runs one job; false when there was none.
    pub async fn run_one(&self, worker_id: &str) -> Result<bool, labelport_db::DbError> {
        let Some(job) = self.db.claim_job(worker_id, self.config.lease).await? else {
            return Ok(false);
        };
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            tracing::error!(
                job.id = job.id,
                job.kind = %job.kind,
                worker = worker_id,
                "job failed: no handler for its kind"
            );
            self.db
                .finish_job(job.id, worker_id, Some("no handler for this job kind"))
                .await?;
            return Ok(true);
        };
        if job.interruptions > self.config.max_interruptions {
            let error = format!(
                "interrupted {} times (its worker died or shut down each time); not tried again",
                job.interruptions
            );
            tracing::error!(job.id = job.id, job.kind = %job.kind, worker = worker_id, "job failed: {error}");
            self.db.finish_job(job.id, worker_id, Some(&error)).await?;
            metrics::counter!(JOBS_ENDED, "kind" => job.kind.clone(), "outcome" => "failed").increment(1);
            return Ok(true);
        }
        tracing::info!(
            job.id = job.id,
            job.kind = %job.kind,
            attempt = job.attempts,
            interruptions = job.interruptions,
            worker = worker_id,
            "job started"
        );
        metrics::counter!(JOBS_STARTED, "kind" => job.kind.clone()).increment(1);
        if job.taken_over {
            metrics::counter!(JOB_TAKEOVERS, "kind" => job.kind.clone()).increment(1);
            tracing::warn!(
                job.id = job.id,
                job.kind = %job.kind,
                worker = worker_id,
                "job taken over: its previous worker's lease ran out"
            );
        } else if job.interruptions > 0 {
            tracing::info!(
                job.id = job.id,
                job.kind = %job.kind,
                worker = worker_id,
                interruptions = job.interruptions,
                "job resumed after an interruption"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = JobContext {
            db: self.db.clone(),
            job: job.clone(),
            stop: stop.clone(),
        };
        let beat = {
            let (db, id, kind, worker, config, stop) = (
                self.db.clone(),
                job.id,
                job.kind.clone(),
                worker_id.to_owned(),
                self.config.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(config.heartbeat).await;
                    match db.heartbeat_job(id, &worker, config.lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                job.id = id,
                                job.kind = %kind,
                                worker = %worker,
                                "lost the job's lease; stopping it"
                            );
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(job.id = id, job.kind = %kind, worker = %worker, "heartbeat failed: {e}")
                        }
                    }
                }
            })
        };
        // The handler in a task of its own: a panic ends this attempt only.
        let mut running = tokio::spawn(handler(ctx));
        let shutting_down = self.shutting_down.notified();
        tokio::pin!(shutting_down);
        let result = if self.shutdown.load(Ordering::Relaxed) {
            None
        } else {
            tokio::select! {
                r = &mut running => Some(r),
                _ = &mut shutting_down => None,
            }
        };
        let result = match result {
            Some(r) => r,
            None => {
                // Shutdown: ask the handler to stop and save its progress.
                stop.store(true, Ordering::Relaxed);
                match tokio::time::timeout(self.config.grace, &mut running).await {
                    Ok(r) => r,
                    Err(_) => {
                        running.abort();
                        tracing::warn!(
                            job.id = job.id,
                            job.kind = %job.kind,
                            worker = worker_id,
                            "the job did not stop within {:?}; handed back",
                            self.config.grace
                        );
                        Ok(JobOutcome::Interrupted)
                    }
                }
            }
        };
        beat.abort();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                let why = if e.is_panic() {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "no message".into());
                    format!("the job's handler panicked: {message}")
                } else {
                    "the job's handler was cancelled".to_owned()
                };
                tracing::error!(job.id = job.id, job.kind = %job.kind, worker = worker_id, "{why}");
                JobOutcome::Retry {
                    error: why,
                    after: panic_backoff(job.attempts),
                }
            }
        };
        // An interruption by shutdown is handed back even if the handler
        // answered otherwise while stopping.
        let outcome = match outcome {
            JobOutcome::Retry { .. } if stop.load(Ordering::Relaxed) && self.shutdown.load(Ordering::Relaxed) => {
                JobOutcome::Interrupted
            }
            other => other,
        };
        // Retries used up: the job fails (logged and counted as such).
        let outcome = match outcome {
            JobOutcome::Retry { error, .. } if job.attempts >= self.config.max_attempts => JobOutcome::Failed(error),
            other => other,
        };
        // The job ends only if this worker still holds it: after a lost
        // lease its new holder's result is the one that counts.
        let held = match &outcome {
            JobOutcome::Done => self.db.finish_job(job.id, worker_id, None).await?,
            JobOutcome::Retry { error, after } => self.db.retry_job(job.id, worker_id, error, jittered(*after)).await?,
            JobOutcome::Failed(error) => self.db.finish_job(job.id, worker_id, Some(error)).await?,
            JobOutcome::Interrupted => self.db.release_job(job.id, worker_id).await?,
        };
        let label = match (&outcome, held) {
            (_, false) => "lost",
            (JobOutcome::Done, _) => "done",
            (JobOutcome::Retry { .. }, _) => "retried",
            (JobOutcome::Failed(_), _) => "failed",
            (JobOutcome::Interrupted, _) => "interrupted",
        };
        metrics::counter!(JOBS_ENDED, "kind" => job.kind.clone(), "outcome" => label).increment(1);
        let (id, kind) = (job.id, &job.kind);
        match &outcome {
            _ if !held => tracing::warn!(
                job.id = id,
                job.kind = %kind,
                worker = worker_id,
                "job ended after its lease was lost; its new holder's result counts"
            ),
            JobOutcome::Done => tracing::info!(job.id = id, job.kind = %kind, worker = worker_id, "job done"),
            JobOutcome::Retry { error, after } => {
                tracing::warn!(job.id = id, job.kind = %kind, worker = worker_id, ?after, "job will be retried: {error}")
            }
            JobOutcome::Failed(error) => {
                tracing::warn!(job.id = id, job.kind = %kind, worker = worker_id, "job failed: {error}")
            }
            JobOutcome::Interrupted => {
                tracing::info!(job.id = id, job.kind = %kind, worker = worker_id, "job handed back")
            }
        }
        Ok(true)
    }
}

/// Deletes, every `every`, expired sessions and jobs that ended more than
/// `keep` ago, in the background (any process may do it; it is idempotent).
pub fn spawn_pruner(db: Db, every: Duration, keep: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match (db.prune_jobs(keep).await, db.prune_sessions().await) {
                (Ok(jobs), Ok(sessions)) if jobs + sessions > 0 => {
                    tracing::info!(jobs, sessions, "pruned ended jobs and expired sessions")
                }
                (Ok(_), Ok(_)) => {}
                (Err(e), _) | (_, Err(e)) => tracing::warn!("pruning: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_spread() {
        let delays: Vec<Duration> = (0..200).map(|_| jittered(Duration::from_secs(10))).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(5) && *d < Duration::from_secs(15)));
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_secs(5), "{min:?}..{max:?}");
    }
}
