//! Workers for the database job queue (`labelport_db::jobs`): claim a job,
//! run its handler while a heartbeat extends the lease, then finish or
//! retry it. Handlers must be idempotent: a job whose worker died is run
//! again by another worker once its lease expires.

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
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            max_attempts: 5,
        }
    }
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
}

impl Workers {
    pub fn new(db: Db, config: WorkerConfig) -> Self {
        Workers {
            db,
            handlers: Arc::new(HashMap::new()),
            config,
            notify: Arc::new(Notify::new()),
            shutdown: Arc::new(AtomicBool::new(false)),
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

    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    async fn run(self, index: usize) {
        let worker_id = format!("{}-{index}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        while !self.shutdown.load(Ordering::Relaxed) {
            match self.run_one(&worker_id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!("job queue: {e}"),
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
            tracing::error!(job.id = job.id, "no handler for job kind {}", job.kind);
            self.db
                .finish_job(job.id, worker_id, Some("no handler for this job kind"))
                .await?;
            return Ok(true);
        };
        tracing::info!(job.id = job.id, job.kind = %job.kind, attempt = job.attempts, "running job");
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = JobContext {
            db: self.db.clone(),
            job: job.clone(),
            stop: stop.clone(),
        };
        let beat = {
            let (db, id, worker, config, stop, shutdown) = (
                self.db.clone(),
                job.id,
                worker_id.to_owned(),
                self.config.clone(),
                stop.clone(),
                self.shutdown.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(config.heartbeat).await;
                    if shutdown.load(Ordering::Relaxed) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    match db.heartbeat_job(id, &worker, config.lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job.id = id, "lost the job's lease; stopping it");
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => tracing::warn!(job.id = id, "heartbeat failed: {e}"),
                    }
                }
            })
        };
        let outcome = handler(ctx).await;
        beat.abort();
        match outcome {
            JobOutcome::Done => self.db.finish_job(job.id, worker_id, None).await?,
            JobOutcome::Retry { error, .. } if job.attempts >= self.config.max_attempts => {
                self.db.finish_job(job.id, worker_id, Some(&error)).await?
            }
            JobOutcome::Retry { error, after } => self.db.retry_job(job.id, worker_id, &error, after).await?,
            JobOutcome::Failed(error) => self.db.finish_job(job.id, worker_id, Some(&error)).await?,
        }
        Ok(true)
    }
}
