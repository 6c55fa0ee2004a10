//! The background job queue, in the same database as everything else.
//!
//! A job is claimed with a lease (`locked_until`) that its worker extends by
//! heartbeats; a job whose lease ran out (its worker died) is claimed again
//! by another worker. On PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`
//! so many processes can poll at once; SQLite has one writer anyway.
//! A partial unique index keeps at most one queued-or-running job per
//! `dedup_key`.
//!
//! Lease and due times are compared and computed with the **database's**
//! clock (`db_now`), so processes on machines whose clocks differ agree on
//! when a lease ran out. A takeover (the lease ran out) and a release (the
//! process shut down) count as an interruption, not as an attempt.

use chrono::{Duration, Utc};

use crate::{on_read, on_write, Db, DbResult, Pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub dedup_key: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub run_after: String,
    pub locked_by: Option<String>,
    pub locked_until: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Attempts that ended without the job's doing (takeover, shutdown).
    pub interruptions: i64,
    /// This attempt began by taking over an expired lease.
    pub taken_over: bool,
}

const JOB_COLUMNS: &str = "id, kind, dedup_key, payload, status, attempts, run_after, locked_by, locked_until, \
     last_error, created_at, updated_at, interruptions, taken_over";

/// Binds: kind, dedup_key, payload, now. Usable inside a transaction (an
/// annotation save queues its export in the same commit). A job waiting
/// out a retry delay keeps its delay: a burst of saves during an outage
/// must not use up its attempts at once.
pub(crate) const ENQUEUE_COALESCED: &str =
    "INSERT INTO jobs (kind, dedup_key, payload, status, run_after, created_at, updated_at)
    VALUES ($1, $2, $3, 'queued', $4, $4, $4)
    ON CONFLICT (dedup_key) WHERE status IN ('queued', 'running')
    DO UPDATE SET run_again = (jobs.run_again OR jobs.status = 'running')";

/// As [`ENQUEUE_COALESCED`], but a queued job is made due now (a user
/// asked for it explicitly).
pub(crate) const ENQUEUE_COALESCED_NOW: &str =
    "INSERT INTO jobs (kind, dedup_key, payload, status, run_after, created_at, updated_at)
    VALUES ($1, $2, $3, 'queued', $4, $4, $4)
    ON CONFLICT (dedup_key) WHERE status IN ('queued', 'running')
    DO UPDATE SET run_again = (jobs.run_again OR jobs.status = 'running'),
        run_after = CASE WHEN jobs.status = 'queued' THEN excluded.run_after ELSE jobs.run_after END";

pub(crate) fn ts(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The database's clock plus `secs` (a bound parameter `$n`, seconds as a
/// float), in the format of [`ts`] (microseconds, `Z`), so it compares as
/// text with stored times.
fn db_now_plus(pool: &Pool, n: usize) -> String {
    match pool {
        Pool::Postgres(_) => format!(
            "to_char((clock_timestamp() + make_interval(secs => ${n})) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ),
        // SQLite keeps milliseconds: padded to six digits.
        Pool::Sqlite { .. } => {
            format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', ${n} || ' seconds') || '000Z')")
        }
    }
}

impl Db {
    /// Queues a job; returns its id, or None when a job with the same
    /// `dedup_key` is already queued or running.
    pub async fn enqueue_job(&self, kind: &str, dedup_key: Option<&str>, payload: &str) -> DbResult<Option<i64>> {
        let at = ts(Utc::now());
        let sql = "INSERT INTO jobs (kind, dedup_key, payload, status, run_after, created_at, updated_at)
                   VALUES ($1, $2, $3, 'queued', $4, $4, $4) ON CONFLICT DO NOTHING RETURNING id";
        Ok(
            on_write!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(kind).bind(dedup_key).bind(payload).bind(&at)
            .fetch_optional(p).await)?,
        )
    }

    /// Queues a job, or — when one with the same `dedup_key` is already
    /// queued or running — coalesces with it: a running job is marked to run
    /// once more when it ends, so whatever asked for it now is seen; a
    /// queued one (perhaps waiting out a retry delay) is made due now.
    pub async fn enqueue_coalesced_job(&self, kind: &str, dedup_key: &str, payload: &str) -> DbResult<()> {
        on_write!(self, p => sqlx::query(ENQUEUE_COALESCED_NOW).bind(kind).bind(dedup_key).bind(payload)
            .bind(ts(Utc::now())).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Takes the oldest runnable job (queued and due, or running with an
    /// expired lease) for `worker`, leased for `lease` by the database's
    /// clock. Taking over an expired lease counts an interruption, not an
    /// attempt.
    pub async fn claim_job(&self, worker: &str, lease: std::time::Duration) -> DbResult<Option<JobRow>> {
        let (lock, latest) = match self.pool {
            Pool::Postgres(_) => ("FOR UPDATE SKIP LOCKED", "GREATEST"),
            Pool::Sqlite { .. } => ("", "max"),
        };
        let (now, until) = (db_now_plus(&self.pool, 3), db_now_plus(&self.pool, 2));
        // Due times are written by the clocks of the processes that queue
        // jobs: a job is due once either clock has passed its time. Leases
        // are the database's alone.
        let due = format!("{latest}({now}, $4)");
        let sql = format!(
            "UPDATE jobs SET locked_by = $1, locked_until = {until},
                 attempts = attempts + CASE WHEN status = 'running' THEN 0 ELSE 1 END,
                 interruptions = interruptions + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
                 taken_over = (status = 'running'),
                 status = 'running', updated_at = {now}
             WHERE id = (SELECT id FROM jobs
                         WHERE (status = 'queued' AND run_after <= {due}) OR (status = 'running' AND locked_until < {now})
                         ORDER BY id LIMIT 1 {lock})
             RETURNING {JOB_COLUMNS}"
        );
        let lease = lease.as_secs_f64();
        let app_now = ts(Utc::now());
        Ok(
            on_write!(self, p => sqlx::query_as::<_, JobRow>(&sql).bind(worker).bind(lease).bind(0.0f64).bind(&app_now)
                .fetch_optional(p).await)?,
        )
    }

    /// Extends the lease (database clock); false when the job is no longer
    /// this worker's.
    pub async fn heartbeat_job(&self, id: i64, worker: &str, lease: std::time::Duration) -> DbResult<bool> {
        let sql = format!(
            "UPDATE jobs SET locked_until = {} WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            db_now_plus(&self.pool, 1)
        );
        let lease = lease.as_secs_f64();
        let n = on_write!(self, p => sqlx::query(&sql).bind(lease).bind(id).bind(worker).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Gives a job back at once, due now, because this process is shutting
    /// down (or its handler was stopped): the attempt becomes an
    /// interruption, so restarts never use up a job's attempts.
    pub async fn release_job(&self, id: i64, worker: &str) -> DbResult<bool> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                 interruptions = interruptions + 1, run_after = {now}, run_again = FALSE,
                 locked_by = NULL, locked_until = NULL, updated_at = {now}
             WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            now = db_now_plus(&self.pool, 1)
        );
        let n = on_write!(self, p => sqlx::query(&sql).bind(0.0f64).bind(id).bind(worker).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Deletes jobs that ended (`done`, `failed`) more than `age` ago;
    /// returns how many.
    pub async fn prune_jobs(&self, age: std::time::Duration) -> DbResult<u64> {
        let cutoff = ts(Utc::now() - Duration::from_std(age).unwrap_or(Duration::days(7)));
        let sql = "DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < $1";
        Ok(on_write!(self, p => sqlx::query(sql).bind(&cutoff).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// Ends a job: `done`, or `failed` with the error — or queued again at
    /// once when it was asked for while it ran (`run_again`).
    /// Returns false when the job is no longer this worker's (nothing changed).
    pub async fn finish_job(&self, id: i64, worker: &str, error: Option<&str>) -> DbResult<bool> {
        let status = if error.is_some() { "failed" } else { "done" };
        let sql = "UPDATE jobs SET status = CASE WHEN run_again THEN 'queued' ELSE $1 END,
                   attempts = CASE WHEN run_again THEN 0 ELSE attempts END, run_after = $3, run_again = FALSE,
                   last_error = $2, locked_by = NULL, locked_until = NULL, updated_at = $3
                   WHERE id = $4 AND locked_by = $5";
        let at = ts(Utc::now());
        let n = on_write!(self, p => sqlx::query(sql).bind(status).bind(error).bind(&at).bind(id).bind(worker).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Puts a job back in the queue to run after `delay` (a retry); false
    /// when the job is no longer this worker's (nothing changed).
    pub async fn retry_job(&self, id: i64, worker: &str, error: &str, delay: std::time::Duration) -> DbResult<bool> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', last_error = $1, run_after = {after}, locked_by = NULL,
                   locked_until = NULL, run_again = FALSE, updated_at = {after} WHERE id = $3 AND locked_by = $4",
            after = db_now_plus(&self.pool, 2)
        );
        let delay = delay.as_secs_f64();
        let n = on_write!(self, p => sqlx::query(&sql).bind(error).bind(delay).bind(id).bind(worker).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    pub async fn get_job(&self, id: i64) -> DbResult<JobRow> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        crate::not_found_if_none(
            on_read!(self, p => sqlx::query_as::<_, JobRow>(&sql).bind(id).fetch_optional(p).await)?,
        )
    }

    /// The queued-or-running job of a dedup key, if any.
    pub async fn active_job(&self, dedup_key: &str) -> DbResult<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE dedup_key = $1 AND status IN ('queued', 'running')");
        Ok(on_read!(self, p => sqlx::query_as::<_, JobRow>(&sql).bind(dedup_key).fetch_optional(p).await)?)
    }

    /// Jobs by kind and status (`queued`, `running`, `done`, `failed`):
    /// the queue's depth for `/metrics`.
    pub async fn count_jobs_by_kind(&self) -> DbResult<Vec<(String, String, i64)>> {
        let sql = "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status ORDER BY kind, status";
        Ok(on_read!(self, p => sqlx::query_as::<_, (String, String, i64)>(sql).fetch_all(p).await)?)
    }

    /// Jobs waiting or running (queue depth).
    pub async fn count_active_jobs(&self) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)?)
    }
}
