//! `labelport-bench export`: export-storage speed against the real GCS
//! emulator (filesystem backend). Prints figures; asserts only that the
//! work was done (every object is in the bucket).
//! 1. N annotations exist; an export storage is created: time from the
//!    create call until the storage reports `completed`, annotations/s;
//!    then the same number of direct uploads (the emulator's own pace) and
//!    the engine alone writing to an in-memory bucket.
//! 2. Annotation saves through the HTTP API, alternating between a project
//!    without and one with an export storage: p50/p99 of each, and the
//!    time until the last save's object is in the bucket.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use labelport_api::AppState;
use labelport_domain::storage::{Direction, StorageKind, StorageSettings};
use labelport_storage::ObjectStore;
use labelport_testkit::FakeGcs;
use serde_json::{json, Value};

use crate::setup::{self, Client};
use crate::stats::pct;

#[derive(clap::Args)]
pub struct BenchExportArgs {
    /// Annotations present when the storage is created.
    #[arg(long, default_value_t = 10_000)]
    annotations: usize,
    /// Timed saves per project.
    #[arg(long, default_value_t = 300)]
    saves: usize,
    /// Where the emulator keeps its files (default: /dev/shm when present,
    /// so the figures are the server's, not the disk's).
    #[arg(long)]
    emulator_dir: Option<std::path::PathBuf>,
    /// A PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
}

const CONFIG: &str = r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>"#;

fn result() -> Value {
    json!([{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}])
}

impl Client {
    /// A project with `n` tasks, each with one annotation when `annotated`.
    async fn project(&self, n: usize, annotated: bool) -> anyhow::Result<(i64, Vec<i64>)> {
        let p = self
            .call(
                reqwest::Method::POST,
                "/api/projects",
                Some(json!({"title": "bench", "label_config": CONFIG})),
            )
            .await?;
        let pid = p["id"].as_i64().context("project id")?;
        let tasks: Vec<Value> = (0..n)
            .map(|i| {
                let mut t = json!({"data": {"text": format!("text number {i}")}});
                if annotated {
                    t["annotations"] = json!([{"result": result(), "lead_time": 1.5}]);
                }
                t
            })
            .collect();
        self.call(
            reqwest::Method::POST,
            &format!("/api/projects/{pid}/import"),
            Some(json!(tasks)),
        )
        .await?;
        let mut ids = Vec::with_capacity(n);
        let mut page = 1;
        while ids.len() < n {
            let r = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/tasks?project={pid}&page={page}&page_size=1000"),
                    None,
                )
                .await?;
            let tasks = r["tasks"].as_array().context("tasks")?;
            anyhow::ensure!(!tasks.is_empty(), "task pages ended early");
            ids.extend(tasks.iter().filter_map(|t| t["id"].as_i64()));
            page += 1;
        }
        Ok((pid, ids))
    }

    async fn wait_completed(&self, id: i64) -> anyhow::Result<Value> {
        loop {
            let s = self
                .call(reqwest::Method::GET, &format!("/api/storages/export/gcs/{id}"), None)
                .await?;
            match s["status"].as_str() {
                Some("completed") => return Ok(s),
                Some("failed" | "completed_with_errors") => anyhow::bail!("export sync ended: {s}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

pub async fn run(args: BenchExportArgs) -> anyhow::Result<()> {
    let emulator_dir = args.emulator_dir.clone().or_else(|| {
        let shm = std::path::PathBuf::from("/dev/shm");
        shm.is_dir().then_some(shm)
    });
    let gcs = FakeGcs::start_in(emulator_dir.as_deref())
        .await
        .context("starting fake-gcs-server (set FAKE_GCS_SERVER_BIN or run ./scripts/test once)")?;
    gcs.create_bucket("export").await?;
    gcs.create_bucket("baseline").await?;
    let tmp = tempfile::tempdir()?;
    let db = setup::open_db(args.database_url.as_deref(), tmp.path()).await?;
    let token = setup::bench_user(&db).await?;
    let mut state = AppState::new(db.clone());
    state.storage_env.emulator = Some(gcs.endpoint.clone());
    let workers = labelport_sync::workers(
        db.clone(),
        state.storage_env.clone(),
        state.jobs_notify.clone(),
        labelport_jobs::WorkerConfig::default(),
    );
    let worker_handles = workers.spawn(2);
    let server = setup::Server::start(state).await?;
    let base = server.base.clone();

    let c = Client {
        http: reqwest::Client::new(),
        base,
        auth: format!("Token {token}"),
    };
    println!(
        "backend: {}; emulator: fake-gcs-server, filesystem backend in {}",
        db.backend_name(),
        emulator_dir
            .as_deref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "the temp dir".into())
    );

    // 1. Export of existing annotations on create.
    let (pid, _) = c.project(args.annotations, true).await?;
    let started = Instant::now();
    let st = c
        .call(
            reqwest::Method::POST,
            "/api/storages/export/gcs",
            Some(json!({"project": pid, "bucket": "export", "prefix": "bulk", "title": "bench"})),
        )
        .await?;
    let id = st["id"].as_i64().context("storage id")?;
    let done = c.wait_completed(id).await?;
    let took = started.elapsed().as_secs_f64();
    let written = done["last_sync_count"].as_u64().unwrap_or(0);
    let in_bucket = gcs.list("export", "bulk/").await?.len();
    anyhow::ensure!(
        written as usize == args.annotations && in_bucket == args.annotations,
        "wrote {written}, bucket holds {in_bucket}, expected {}",
        args.annotations
    );
    println!(
        "export on create: {written} annotations in {took:.2} s = {:.0} annotations/s \
         (create call to status completed; engine {:.2} s)",
        written as f64 / took,
        done["meta"]["duration"].as_f64().unwrap_or(f64::NAN)
    );
    // 1b. The emulator's own pace: the same number of uploads of a typical
    // exported object, straight through the connector, 32 at a time.
    let store = labelport_storage::gcs::GcsStore::connect(labelport_storage::gcs::GcsConfig::emulator(
        "baseline",
        gcs.endpoint.clone(),
    ))
    .await?;
    let sample = bytes::Bytes::from(vec![b'x'; 1200]);
    let started = Instant::now();
    let uploads = futures::stream::iter(0..args.annotations)
        .map(|i| {
            let (store, body) = (&store, sample.clone());
            async move { store.write(&format!("baseline/{i}"), body, "application/json").await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    anyhow::ensure!(uploads.iter().all(|r| r.is_ok()), "baseline uploads failed");
    let took = started.elapsed().as_secs_f64();
    println!(
        "baseline: {} direct uploads of 1.2 KB, 32 in flight: {took:.2} s = {:.0} objects/s",
        args.annotations,
        args.annotations as f64 / took
    );

    // 1c. The engine alone (render, bookkeeping, database), writing to an
    // in-memory bucket: what Labelport does per annotation without the
    // emulator's cost.
    // A GCS storage row whose writes go to the in-memory store below.
    let settings = StorageSettings {
        title: "memory".into(),
        bucket: "memory".into(),
        prefix: "engine".into(),
        ..StorageSettings::defaults(Direction::Export)
    };
    let row = db.create_storage(pid, StorageKind::Gcs, &settings).await?;
    let memory = labelport_storage::memory::MemoryStore::new("memory");
    let started = Instant::now();
    db.link_unexported_annotations(row.id).await?;
    let (tx, _rx) = tokio::sync::watch::channel(Default::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = labelport_sync::export::ExportEngine::new(&db, &memory, &row, tx, stop)
        .run()
        .await
        .map_err(|(e, _)| anyhow::anyhow!("engine: {e}"))?;
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.written as usize == args.annotations,
        "engine wrote {}",
        report.written
    );
    println!(
        "engine alone (in-memory bucket): {} annotations in {took:.2} s = {:.0} annotations/s",
        report.written,
        report.written as f64 / took
    );

    let started = Instant::now();
    c.call(
        reqwest::Method::POST,
        &format!("/api/storages/export/gcs/{id}/sync"),
        None,
    )
    .await?;
    let again = c.wait_completed(id).await?;
    println!(
        "re-sync with nothing new: {} written in {:.3} s",
        again["last_sync_count"],
        started.elapsed().as_secs_f64()
    );

    // 2. Save latency without and with a target storage.
    let (_, plain_tasks) = c.project(args.saves, false).await?;
    let (exported_pid, exported_tasks) = c.project(args.saves, false).await?;
    let st = c
        .call(
            reqwest::Method::POST,
            "/api/storages/export/gcs",
            Some(json!({"project": exported_pid, "bucket": "export", "prefix": "saves"})),
        )
        .await?;
    c.wait_completed(st["id"].as_i64().context("storage id")?).await?;
    let body = json!({"result": result(), "lead_time": 2.0, "was_cancelled": false, "ground_truth": false});
    let (mut plain, mut exported) = (Vec::new(), Vec::new());
    for i in 0..args.saves {
        for (tasks, times) in [(&plain_tasks, &mut plain), (&exported_tasks, &mut exported)] {
            let t = Instant::now();
            c.call(
                reqwest::Method::POST,
                &format!("/api/tasks/{}/annotations/", tasks[i]),
                Some(body.clone()),
            )
            .await?;
            times.push(t.elapsed());
        }
    }
    let last_save = Instant::now();
    loop {
        if gcs.list("export", "saves/").await?.len() == args.saves {
            break;
        }
        anyhow::ensure!(
            last_save.elapsed() < Duration::from_secs(120),
            "saves were not exported"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = last_save.elapsed();
    plain.sort();
    exported.sort();
    println!(
        "annotation save (HTTP POST), {} each, alternating: without target p50 {:.2} ms p99 {:.2} ms; \
         with target p50 {:.2} ms p99 {:.2} ms; difference of p50 {:+.2} ms",
        args.saves,
        pct(&plain, 0.5),
        pct(&plain, 0.99),
        pct(&exported, 0.5),
        pct(&exported, 0.99),
        pct(&exported, 0.5) - pct(&plain, 0.5)
    );
    println!(
        "all {} saved annotations were in the bucket {:.0} ms after the last save answered",
        args.saves,
        drained.as_secs_f64() * 1000.0
    );

    workers.shutdown();
    for h in worker_handles {
        let _ = h.await;
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}
