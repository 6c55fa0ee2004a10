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
        // Still running: no duplicate can be queued.
        assert_eq!(db.enqueue_job("k", Some("k:1"), "{}").await.unwrap(), None);
        let b1 = db.claim_job("B", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(b1.id, other.unwrap(), "B takes the other job, not A's leased one");
        assert!(db.claim_job("C", Duration::from_secs(30)).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        // A's lease expired: C takes the job over, and A can no longer heartbeat it.
        let c = db.claim_job("C", Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!((c.id, c.attempts), (a.id, 2));
        assert!(!db.heartbeat_job(a.id, "A", Duration::from_secs(30)).await.unwrap());
        assert!(db.heartbeat_job(a.id, "C", Duration::from_secs(30)).await.unwrap());
        // A late finish by A changes nothing.
        db.finish_job(a.id, "A", None).await.unwrap();
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
            (c.id, 3, Some("503 from storage"))
        );
        db.finish_job(d.id, "D", None).await.unwrap();
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
