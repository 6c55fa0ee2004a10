//! `labelport-bench live`: storages that keep themselves in sync (issue 17,
//! item 6). Prints figures; asserts nothing. Scenarios:
//! - `notification`: seconds from an object's upload to its task being
//!   visible in the API, when a Pub/Sub push of its `OBJECT_FINALIZE`
//!   arrives right after the upload (a local JWK set signs the push
//!   tokens; Google's own delivery time, GCS → Pub/Sub → push, is not in
//!   the figure: Pub/Sub documents it as typically under a second).
//! - `interval`: the same with `sync_interval` = 1 minute and the
//!   process's own interval scheduler, uploads at arbitrary moments of the
//!   interval.
//! - `idle`: what one interval tick costs on a storage of N (100,000)
//!   objects that did not change: wall time from queueing to `completed`,
//!   CPU time of the server and of the emulator, listing requests, rows
//!   written; beside the time to merely list the bucket.
//!
//! Everything runs in this process against the real GCS emulator and a
//! fresh database (SQLite, or PostgreSQL with `--database-url`).

use std::time::{Duration, Instant};

use anyhow::Context;
use labelport_api::AppState;
use labelport_storage::gcs::{GcsConfig, GcsStore};
use labelport_testkit::{storage_push_body, test_service_account_key, FakeGcs, FakePubSubKeys};
use serde_json::{json, Value};

use crate::setup::{self, Client};
use crate::stats::pct;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Scenario {
    Notification,
    Interval,
    Idle,
}

#[derive(clap::Args)]
pub struct BenchLiveArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Samples (notification: 50; interval: 3) or objects (idle: 100,000).
    #[arg(long)]
    count: Option<usize>,
    /// A PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
}

const PUSH_ACCOUNT: &str = "labelport-push@bench-project.iam.gserviceaccount.com";

impl Client {
    async fn task_count(&self, project: i64) -> anyhow::Result<i64> {
        let p = self
            .call(reqwest::Method::GET, &format!("/api/projects/{project}"), None)
            .await?;
        p["task_number"].as_i64().context("task_number")
    }

    /// Polls every 2 ms until the project has `n` tasks; returns when.
    async fn wait_for_tasks(&self, project: i64, n: i64, limit: Duration) -> anyhow::Result<Instant> {
        let started = Instant::now();
        loop {
            if self.task_count(project).await? >= n {
                return Ok(Instant::now());
            }
            anyhow::ensure!(started.elapsed() < limit, "no task {n} after {limit:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`
/// (`self` for this one); NaN where `/proc` is not there.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    match (ticks(11), ticks(12)) {
        // Linux reports in clock ticks of USER_HZ, 100 per second.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

pub async fn run(args: BenchLiveArgs) -> anyhow::Result<()> {
    let gcs = FakeGcs::start()
        .await
        .context("starting fake-gcs-server (set FAKE_GCS_SERVER_BIN or run ./scripts/test once)")?;
    gcs.create_bucket("live").await?;
    gcs.upload("live", "in/seed.txt", b"seed".to_vec(), "text/plain")
        .await?;
    let keys = FakePubSubKeys::start(&test_service_account_key()).await?;
    let tmp = tempfile::tempdir()?;
    let db = setup::open_db(args.database_url.as_deref(), tmp.path()).await?;
    let token = setup::bench_user(&db).await?;
    let mut state = AppState::new(db.clone());
    state.storage_env.emulator = Some(gcs.endpoint.clone());
    state.push_verifier = std::sync::Arc::new(labelport_api::notifications::PushVerifier::new(&keys.jwks_url));
    let workers = labelport_sync::workers(
        db.clone(),
        state.storage_env.clone(),
        state.jobs_notify.clone(),
        labelport_jobs::WorkerConfig::default(),
    );
    let worker_handles = workers.spawn(2);
    let scheduler = labelport_sync::interval::spawn_interval_scheduler(
        db.clone(),
        state.jobs_notify.clone(),
        labelport_sync::interval::CHECK_EVERY,
    );
    let server = setup::Server::start_public(state).await?;
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        auth: format!("Token {token}"),
    };
    println!(
        "backend: {}; emulator: fake-gcs-server; workers: 2 (poll {:?}, woken on queueing)",
        db.backend_name(),
        labelport_jobs::WorkerConfig::default().poll
    );
    let project = c
        .call(
            reqwest::Method::POST,
            "/api/projects",
            Some(json!({"title": "live", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"})),
        )
        .await?["id"]
        .as_i64()
        .context("project id")?;
    // Only images count: the seed object is outside the filter.
    let storage = |extra: Value| {
        let mut body = json!({"project": project, "bucket": "live", "prefix": "in", "use_blob_urls": true,
                              "regex_filter": r".*\.jpg$", "presign": false});
        body.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        body
    };

    match args.scenario {
        Scenario::Notification => {
            let samples = args.count.unwrap_or(50);
            let st = c
                .call(
                    reqwest::Method::POST,
                    "/api/storages/gcs",
                    Some(storage(json!({"pubsub_push_service_account": PUSH_ACCOUNT}))),
                )
                .await?;
            let id = st["id"].as_i64().context("storage id")?;
            let url = format!("{}/api/storages/gcs/{id}/notifications", server.base);
            let bearer = format!("Bearer {}", keys.sign(&FakePubSubKeys::claims(&url, PUSH_ACCOUNT)));
            let (mut to_visible, mut push_to_visible, mut acks) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..samples {
                let key = format!("in/obj_{i:05}.jpg");
                let uploaded = Instant::now();
                let object = gcs.upload("live", &key, vec![0u8; 282], "image/jpeg").await?;
                let generation: i64 = object["generation"].as_str().unwrap_or("1").parse()?;
                let pushed = Instant::now();
                let resp = c
                    .http
                    .post(&url)
                    .header("Authorization", &bearer)
                    .json(&storage_push_body("OBJECT_FINALIZE", "live", &key, generation))
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().as_u16() == 202, "push answered {}", resp.status());
                acks.push(pushed.elapsed());
                let visible = c.wait_for_tasks(project, i as i64 + 1, Duration::from_secs(30)).await?;
                to_visible.push(visible - uploaded);
                push_to_visible.push(visible - pushed);
            }
            for v in [&mut to_visible, &mut push_to_visible, &mut acks] {
                v.sort();
            }
            println!(
                "notification, {samples} uploads one after another: upload → task visible p50 {:.1} ms, \
                 p95 {:.1} ms, max {:.1} ms; push → visible p50 {:.1} ms, p95 {:.1} ms; push acknowledged \
                 (token checked, job queued) p50 {:.1} ms, p95 {:.1} ms",
                pct(&to_visible, 0.5),
                pct(&to_visible, 0.95),
                pct(&to_visible, 1.0),
                pct(&push_to_visible, 0.5),
                pct(&push_to_visible, 0.95),
                pct(&acks, 0.5),
                pct(&acks, 0.95),
            );
            println!("JWK set fetched {} time(s) for {samples} pushes", keys.fetches());
        }
        Scenario::Interval => {
            let samples = args.count.unwrap_or(3);
            c.call(
                reqwest::Method::POST,
                "/api/storages/gcs",
                Some(storage(json!({"sync_interval": 1}))),
            )
            .await?;
            let mut seconds = Vec::new();
            for i in 0..samples {
                // Not aligned with the schedule: each upload comes some
                // arbitrary time after the last sync.
                tokio::time::sleep(Duration::from_millis(7_919 * (i as u64 + 1) % 40_000)).await;
                let uploaded = Instant::now();
                gcs.upload("live", &format!("in/tick_{i:03}.jpg"), vec![0u8; 282], "image/jpeg")
                    .await?;
                let visible = c
                    .wait_for_tasks(project, i as i64 + 1, Duration::from_secs(120))
                    .await?;
                let s = (visible - uploaded).as_secs_f64();
                println!("interval sample {}: upload → task visible {s:.1} s", i + 1);
                seconds.push(s);
            }
            let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
            println!(
                "interval (1 min, scheduler checks every {:?}): mean {mean:.1} s over {samples} samples; \
                 worst case interval + check period = {:.0} s",
                labelport_sync::interval::CHECK_EVERY,
                60.0 + labelport_sync::interval::CHECK_EVERY.as_secs_f64()
            );
        }
        Scenario::Idle => {
            let count = args.count.unwrap_or(100_000);
            let started = Instant::now();
            let gcs_ref = &gcs;
            futures::future::try_join_all((0..16).map(|w| async move {
                for i in (w..count).step_by(16) {
                    gcs_ref
                        .upload("live", &format!("in/img_{i:07}.jpg"), vec![0u8; 282], "image/jpeg")
                        .await?;
                }
                anyhow::Ok(())
            }))
            .await?;
            println!("seeded {count} objects in {:.1} s", started.elapsed().as_secs_f64());
            let store = GcsStore::connect(GcsConfig::emulator("live", gcs.endpoint.clone())).await?;
            let (listed, pages, list_secs) = crate::sync::list_all(&store, "in/", false).await?;
            println!("list only: {listed} objects in {pages} requests, {list_secs:.2} s");
            let st = c
                .call(reqwest::Method::POST, "/api/storages/gcs", Some(storage(json!({}))))
                .await?;
            let id = st["id"].as_i64().context("storage id")?;
            let started = Instant::now();
            c.call(reqwest::Method::POST, &format!("/api/storages/gcs/{id}/sync"), None)
                .await?;
            let first = wait_completed(&c, id, &Value::Null).await?;
            println!(
                "first sync: {} tasks in {:.2} s",
                first["last_sync_count"],
                started.elapsed().as_secs_f64()
            );
            // The tick: the interval comes round, the scheduler queues the
            // sync, a worker runs it and finds nothing new.
            c.call(
                reqwest::Method::PATCH,
                &format!("/api/storages/gcs/{id}"),
                Some(json!({"sync_interval": 1})),
            )
            .await?;
            make_due(&db, id).await?;
            let (cpu_self, cpu_emulator) = (cpu_seconds("self"), cpu_seconds(&gcs.pid().to_string()));
            let started = Instant::now();
            let queued = labelport_sync::interval::queue_due_syncs(&db).await?;
            anyhow::ensure!(queued == [id], "the tick queued {queued:?}");
            let tick = wait_completed(&c, id, &first["last_sync"]).await?;
            let wall = started.elapsed().as_secs_f64();
            let (cpu_self, cpu_emulator) = (
                cpu_seconds("self") - cpu_self,
                cpu_seconds(&gcs.pid().to_string()) - cpu_emulator,
            );
            println!(
                "idle interval tick on {count} unchanged objects: {wall:.2} s from queueing to completed \
                 ({:.2} × listing alone); CPU: server {cpu_self:.2} s, emulator {cpu_emulator:.2} s; \
                 {pages} listing requests, no object read, {} tasks created, {} unchanged",
                wall / list_secs,
                tick["last_sync_count"],
                tick["meta"]["objects_unchanged"],
            );
        }
    }
    scheduler.abort();
    workers.shutdown();
    for h in worker_handles {
        let _ = h.await;
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}

/// Polls until a sync newer than the one that ended at `last_sync` has
/// completed.
async fn wait_completed(c: &Client, id: i64, last_sync: &Value) -> anyhow::Result<Value> {
    loop {
        let s = c
            .call(reqwest::Method::GET, &format!("/api/storages/gcs/{id}"), None)
            .await?;
        let newer = s["last_sync"] != *last_sync;
        match s["status"].as_str() {
            Some("completed") if newer => return Ok(s),
            Some("failed" | "completed_with_errors") if newer => anyhow::bail!("sync ended: {s}"),
            _ => {}
        }
        // Seldom: the polls go through this process's server and would
        // count in its CPU time.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Makes a storage's interval due now (as if a minute had passed).
async fn make_due(db: &labelport_db::Db, id: i64) -> anyhow::Result<()> {
    use labelport_db::sqlx_reexport as sqlx;
    let sql = "UPDATE import_storages SET next_sync_at = '2000-01-01T00:00:00.000000Z' WHERE id = $1";
    match &db.pool {
        labelport_db::Pool::Sqlite { write, .. } => {
            sqlx::query(sql).bind(id).execute(write).await?;
        }
        labelport_db::Pool::Postgres(p) => {
            sqlx::query(sql).bind(id).execute(p).await?;
        }
    }
    Ok(())
}
