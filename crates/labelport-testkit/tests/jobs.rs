//! The database job queue on SQLite and PostgreSQL: dedup, leases,
//! takeover of a dead worker's job, retries.

use std::time::Duration;

use labelport_testkit::{backends, TestDb};

#[tokio::test]
async fn dedup_lease_takeover_and_retry() {
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = &t.db;
        let first = db.enqueue_job("k", Some("k:1"), "{}").await.unwrap();
        assert!(first.is_some());
        // Concurrent duplicates: exactly one queued job per key.
        let dups = futures::future::join_all((0..10).map(|_| db.enqueue_job("k", Some("k:1"), "{}"))).await;
        assert!(dups.iter().all(|r| matches!(r, Ok(None))), "{dups:?}");
        let other = db.enqueue_job("k", Some("k:2"), "{}").await.unwrap();
        assert!(other.is_some());

        // Worker A claims k:1 with a short lease, then "dies".
        let a = db.claim_job("A", Duration::from_millis(300)).await.unwrap().unwrap();
        assert_eq!((a.id, a.attempts, a.status.as_str()), (first.unwrap(), 1, "running"));
        assert!(!a.taken_over, "a queued job is claimed, not taken over");
        // Still running: no duplicate can be queued.
        assert_eq!(db.enqueue_job("k", Some("k:1"), "{}").await.unwrap(), None);
        let b1 = db.claim_job("B", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(b1.id, other.unwrap(), "B takes the other job, not A's leased one");
        assert!(db.claim_job("C", Duration::from_secs(30)).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        // A's lease expired: C takes the job over, and A can no longer
        // heartbeat it. The takeover is an interruption, not an attempt.
        let c = db.claim_job("C", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!((c.id, c.attempts, c.interruptions), (a.id, 1, 1));
        assert!(c.taken_over, "the claim after an expired lease is a takeover");
        assert!(!db.heartbeat_job(a.id, "A", Duration::from_secs(30)).await.unwrap());
        assert!(db.heartbeat_job(a.id, "C", Duration::from_secs(30)).await.unwrap());
        // A late finish by A changes nothing.
        assert!(!db.finish_job(a.id, "A", None).await.unwrap(), "not A's any more");
        assert_eq!(db.get_job(a.id).await.unwrap().status, "running");

        // Retry with a delay: not claimable before it is due.
        db.retry_job(c.id, "C", "503 from storage", Duration::from_millis(300))
            .await
            .unwrap();
        assert!(db.claim_job("D", Duration::from_secs(30)).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(350)).await;
        let d = db.claim_job("D", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(
            (d.id, d.attempts, d.last_error.as_deref()),
            (c.id, 2, Some("503 from storage"))
        );
        assert!(!d.taken_over, "a retry is claimed, not taken over");
        assert!(db.finish_job(d.id, "D", None).await.unwrap());
        assert_eq!(db.get_job(d.id).await.unwrap().status, "done");
        // Once done, the key is free again.
        assert!(db.enqueue_job("k", Some("k:1"), "{}").await.unwrap().is_some());
        t.drop_database().await;
    }
}

#[tokio::test]
async fn coalesced_jobs_run_again_when_asked_during_a_run() {
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = &t.db;
        // Many requests while queued: one job.
        for _ in 0..5 {
            db.enqueue_coalesced_job("x", "x:1", "{}").await.unwrap();
        }
        assert_eq!(db.count_active_jobs().await.unwrap(), 1);
        let job = db.claim_job("A", Duration::from_secs(30)).await.unwrap().unwrap();
        // Finished with no request in between: done.
        db.finish_job(job.id, "A", None).await.unwrap();
        assert_eq!(db.get_job(job.id).await.unwrap().status, "done");

        // A request that arrives while the job runs makes it run once more.
        db.enqueue_coalesced_job("x", "x:1", "{}").await.unwrap();
        let job = db.claim_job("A", Duration::from_secs(30)).await.unwrap().unwrap();
        db.enqueue_coalesced_job("x", "x:1", "{}").await.unwrap();
        db.enqueue_coalesced_job("x", "x:1", "{}").await.unwrap();
        db.finish_job(job.id, "A", None).await.unwrap();
        let again = db.get_job(job.id).await.unwrap();
        assert_eq!((again.status.as_str(), again.attempts), ("queued", 0));
        let rerun = db.claim_job("B", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(rerun.id, job.id);
        db.finish_job(rerun.id, "B", None).await.unwrap();
        assert_eq!(db.get_job(job.id).await.unwrap().status, "done", "only once more");

        // A request for a job waiting out a retry delay makes it due now.
        db.enqueue_coalesced_job("x", "x:2", "{}").await.unwrap();
        let job = db.claim_job("A", Duration::from_secs(30)).await.unwrap().unwrap();
        db.retry_job(job.id, "A", "503", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(db.claim_job("A", Duration::from_secs(30)).await.unwrap().is_none());
        db.enqueue_coalesced_job("x", "x:2", "{}").await.unwrap();
        let due = db.claim_job("A", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(due.id, job.id);
        t.drop_database().await;
    }
}

fn quick(lease_ms: u64) -> labelport_jobs::WorkerConfig {
    labelport_jobs::WorkerConfig {
        lease: Duration::from_millis(lease_ms),
        heartbeat: Duration::from_millis(50),
        poll: Duration::from_millis(20),
        max_attempts: 5,
        max_interruptions: 20,
        grace: Duration::from_millis(300),
    }
}

async fn wait_for_status(db: &labelport_db::Db, id: i64, status: &str) -> labelport_db::jobs::JobRow {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = db.get_job(id).await.unwrap();
        if job.status == status {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} stayed {:?}", job);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A handler that panics ends its attempt only: the heartbeat stops, the
/// job is retried after a backoff, and the worker runs the next job.
#[tokio::test]
async fn a_panicking_handler_ends_its_attempt_and_the_worker_goes_on() {
    use labelport_jobs::{JobOutcome, Workers};
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = t.db.clone();
        let workers = Workers::new(db.clone(), quick(1000))
            .handle("boom", |ctx| async move {
                if ctx.job.attempts == 1 {
                    panic!("bad row in attempt {}", ctx.job.attempts);
                }
                JobOutcome::Done
            })
            .handle("ok", |_| async { JobOutcome::Done });
        let boom = db.enqueue_job("boom", Some("boom"), "{}").await.unwrap().unwrap();
        let ok = db.enqueue_job("ok", Some("ok"), "{}").await.unwrap().unwrap();
        let handles = workers.spawn(1);
        wait_for_status(&db, ok, "done").await;
        let retried = db.get_job(boom).await.unwrap();
        assert_eq!(retried.status, "queued", "{retried:?}");
        assert!(retried
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("panicked: bad row in attempt 1"));
        assert_eq!(retried.locked_by, None);
        // No heartbeat keeps a lease after the panic.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(db.get_job(boom).await.unwrap().locked_until, None);
        // Retried after its backoff (2 s ± 50 %), then done.
        let done = wait_for_status(&db, boom, "done").await;
        assert_eq!(done.attempts, 2);
        workers.shutdown();
        for h in handles {
            h.await.unwrap();
        }
        t.drop_database().await;
    }
}

/// At shutdown a running job is told to stop, and handed back at once
/// (an interruption, not an attempt); one that does not stop within the
/// grace period is handed back too. Another process takes it at once.
#[tokio::test]
async fn shutdown_hands_running_jobs_back_at_once() {
    use labelport_jobs::{JobOutcome, Workers};
    use std::sync::atomic::Ordering;
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = t.db.clone();
        // A lease far longer than the test: only a release frees the job.
        let config = quick(60_000);
        let workers = Workers::new(db.clone(), config.clone())
            .handle("polite", |ctx| async move {
                while !ctx.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                JobOutcome::Interrupted
            })
            .handle("stubborn", |_| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                JobOutcome::Done
            });
        let polite = db.enqueue_job("polite", Some("p"), "{}").await.unwrap().unwrap();
        let stubborn = db.enqueue_job("stubborn", Some("s"), "{}").await.unwrap().unwrap();
        let handles = workers.spawn(2);
        wait_for_status(&db, polite, "running").await;
        wait_for_status(&db, stubborn, "running").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        workers.shutdown();
        for h in handles {
            h.await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        for id in [polite, stubborn] {
            let job = db.get_job(id).await.unwrap();
            assert_eq!(
                (
                    job.status.as_str(),
                    job.attempts,
                    job.interruptions,
                    job.locked_by.as_deref()
                ),
                ("queued", 0, 1, None),
                "{job:?}"
            );
        }
        // Another process continues at once, on a fresh attempt.
        let next = db
            .claim_job("other-process", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((next.id, next.attempts), (polite, 1));
        t.drop_database().await;
    }
}

/// A job interrupted again and again (its process dies under it each time)
/// ends failed instead of looping.
#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_ends() {
    use labelport_jobs::{JobOutcome, Workers};
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = t.db.clone();
        let id = db.enqueue_job("crash", Some("c"), "{}").await.unwrap().unwrap();
        // Three workers die holding it (their leases run out).
        for n in 0..3 {
            let job = db
                .claim_job(&format!("dead-{n}"), Duration::from_millis(50))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((job.attempts, job.interruptions), (1, n));
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        let mut config = quick(1000);
        config.max_interruptions = 2;
        let workers = Workers::new(db.clone(), config).handle("crash", |_| async { JobOutcome::Done });
        assert!(workers.run_one("survivor").await.unwrap());
        let job = db.get_job(id).await.unwrap();
        assert_eq!(job.status, "failed", "{job:?}");
        assert!(job.last_error.unwrap().contains("interrupted 3 times"));
        t.drop_database().await;
    }
}

#[tokio::test]
async fn ended_jobs_and_expired_sessions_are_pruned() {
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = &t.db;
        let done = db.enqueue_job("k", Some("done"), "{}").await.unwrap().unwrap();
        let job = db.claim_job("w", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(job.id, done);
        db.finish_job(done, "w", None).await.unwrap();
        let waiting = db.enqueue_job("k", Some("waiting"), "{}").await.unwrap().unwrap();
        // Kept while younger than the age given.
        assert_eq!(db.prune_jobs(Duration::from_secs(3600)).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(db.prune_jobs(Duration::from_millis(1)).await.unwrap(), 1);
        assert!(db.get_job(done).await.is_err());
        assert_eq!(db.get_job(waiting).await.unwrap().status, "queued");
        let user = db
            .ensure_user(
                "pruned@example.com",
                "a-password-1",
                "0123456789abcdef0123456789abcdef01234567",
                None,
            )
            .await
            .unwrap();
        let expired = db.create_session(user.id, chrono::Duration::seconds(-1)).await.unwrap();
        let live = db.create_session(user.id, chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(db.prune_sessions().await.unwrap(), 1);
        assert!(db.user_by_session(&expired).await.unwrap().is_none());
        assert!(db.user_by_session(&live).await.unwrap().is_some());
        t.drop_database().await;
    }
}

/// Log lines written while a test runs, as `tracing`'s JSON format writes them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Every log line of a job's start, retry, takeover, resumption and end
/// names the job (`job.id`), its kind (`job.kind`) and the worker running
/// it (`worker`), so one job can be followed across processes.
#[tokio::test(flavor = "current_thread")]
async fn every_job_log_line_names_the_job_its_kind_and_the_worker() {
    use labelport_jobs::{JobOutcome, Workers};
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // This runtime has one thread: the workers' spawned tasks log here too.
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    for backend in backends() {
        let t = TestDb::new(backend).await.unwrap();
        let db = t.db.clone();
        let workers = Workers::new(db.clone(), quick(60_000))
            .handle("flaky", |ctx| async move {
                if ctx.job.attempts == 1 {
                    JobOutcome::Retry {
                        error: "503 from storage".into(),
                        after: Duration::ZERO,
                    }
                } else {
                    JobOutcome::Done
                }
            })
            .handle("ok", |_| async { JobOutcome::Done })
            .handle("broken", |_| async { JobOutcome::Failed("bad settings".into()) })
            .handle("polite", |_| async { JobOutcome::Interrupted });

        // Started, retried, started again, done.
        db.enqueue_job("flaky", Some("f"), "{}").await.unwrap().unwrap();
        assert!(workers.run_one("w-retry").await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(workers.run_one("w-retry").await.unwrap());
        // Taken over from a worker whose lease ran out.
        db.enqueue_job("ok", Some("o"), "{}").await.unwrap().unwrap();
        db.claim_job("dead", Duration::from_millis(50)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(workers.run_one("w-takeover").await.unwrap());
        // Resumed after a worker handed it back.
        let resumed = db.enqueue_job("ok", Some("r"), "{}").await.unwrap().unwrap();
        db.claim_job("stopping", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(db.release_job(resumed, "stopping").await.unwrap());
        assert!(workers.run_one("w-resume").await.unwrap());
        // Failed, and handed back.
        db.enqueue_job("broken", Some("b"), "{}").await.unwrap().unwrap();
        assert!(workers.run_one("w-fail").await.unwrap());
        db.enqueue_job("polite", Some("p"), "{}").await.unwrap().unwrap();
        assert!(workers.run_one("w-back").await.unwrap());
        t.drop_database().await;
    }

    let lines = captured.lines();
    let job_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            let m = l["fields"]["message"].as_str().unwrap_or_default();
            m.starts_with("job ") && !m.starts_with("job queue")
        })
        .collect();
    for l in &job_lines {
        let f = &l["fields"];
        assert!(f["job.id"].is_i64(), "no job.id: {l}");
        assert!(f["job.kind"].is_string(), "no job.kind: {l}");
        assert!(
            f["worker"].as_str().is_some_and(|w| w.starts_with("w-")),
            "no worker: {l}"
        );
    }
    let expected = [
        ("job started", "w-retry"),
        ("job will be retried", "w-retry"),
        ("job done", "w-retry"),
        ("job taken over", "w-takeover"),
        ("job resumed after an interruption", "w-resume"),
        ("job failed", "w-fail"),
        ("job handed back", "w-back"),
    ];
    for (message, worker) in expected {
        let n = job_lines
            .iter()
            .filter(|l| {
                l["fields"]["message"].as_str().unwrap().starts_with(message) && l["fields"]["worker"] == worker
            })
            .count();
        assert_eq!(
            n,
            backends().len() * if message == "job started" { 2 } else { 1 },
            "{message} by {worker}"
        );
    }
}
