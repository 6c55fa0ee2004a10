//! `labelport-bench sync`: import-sync speed and memory. Prints figures;
//! asserts nothing. Scenarios:
//! - `emulator`: N objects in the real GCS emulator (filesystem backend),
//!   files mode; compared with the time to merely list them.
//! - `million`: N (1,000,000) objects through the same engine from a
//!   generated listing (no emulator holds that many), with peak RSS.
//! - `jsonl`, `parquet`: one task file of N rows.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use labelport_db::projects::ProjectFields;
use labelport_db::Db;
use labelport_domain::storage::{Direction, DirectionOptions, ImportOptions, StorageKind, StorageSettings};
use labelport_storage::gcs::{GcsConfig, GcsStore};
use labelport_storage::memory::MemoryStore;
use labelport_storage::{ByteStream, ListPage, ObjectMeta, ObjectStore, StorageError, StorageResult};
use labelport_sync::import::{DeletionPolicy, ImportEngine, ImportSettings, SyncReport};
use labelport_testkit::FakeGcs;

use crate::stats::peak_rss_mb;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Scenario {
    Emulator,
    Million,
    Jsonl,
    Parquet,
}

#[derive(clap::Args)]
pub struct BenchSyncArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Objects or rows (defaults: emulator 10,000; others 1,000,000).
    #[arg(long)]
    count: Option<usize>,
    /// A PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
}

/// A bucket whose listing is computed, not stored: `img/0000000.jpg` …,
/// so the engine's memory is measured alone.
pub(crate) struct GeneratedBucket {
    pub(crate) count: usize,
}

impl ObjectStore for GeneratedBucket {
    fn describe(&self) -> String {
        "generated://bench".into()
    }
    async fn check(&self) -> StorageResult<()> {
        Ok(())
    }
    async fn list_page(
        &self,
        _prefix: &str,
        _recursive: bool,
        token: Option<String>,
        size: u32,
    ) -> StorageResult<ListPage> {
        let start: usize = token.as_deref().map(|t| t.parse().unwrap_or(0)).unwrap_or(0);
        let end = (start + size as usize).min(self.count);
        let objects = (start..end)
            .map(|i| ObjectMeta {
                key: format!("img/{i:07}.jpg"),
                size: 1024,
                generation: 1,
                etag: "e".into(),
                updated: None,
                content_type: Some("image/jpeg".into()),
            })
            .collect();
        Ok(ListPage {
            objects,
            prefixes: vec![],
            next_page_token: (end < self.count).then(|| end.to_string()),
        })
    }
    async fn stat(&self, key: &str) -> StorageResult<ObjectMeta> {
        Err(StorageError::NotFound(key.into()))
    }
    async fn read_stream(&self, key: &str, _g: Option<i64>, _s: u64, _e: Option<u64>) -> StorageResult<ByteStream> {
        Err(StorageError::NotFound(key.into()))
    }
    async fn write(&self, _key: &str, _body: Bytes, _ct: &str) -> StorageResult<ObjectMeta> {
        Err(StorageError::Invalid("read-only".into()))
    }
    async fn delete(&self, _key: &str) -> StorageResult<()> {
        Err(StorageError::Invalid("read-only".into()))
    }
}

pub(crate) async fn setup(db: &Db, bucket: &str, use_blob_urls: bool) -> anyhow::Result<ImportSettings> {
    crate::setup::bench_user(db).await?;
    let user = db
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.username == "bench")
        .context("the bench user")?;
    let project = db
        .create_project(
            &ProjectFields {
                title: "bench".into(),
                description: String::new(),
                label_config: "<View><Image name=\"image\" value=\"$image\"/></View>".into(),
                maximum_annotations: 1,
                settings: "{}".into(),
            },
            user.id,
        )
        .await?;
    let settings = StorageSettings {
        title: "bench".into(),
        bucket: bucket.into(),
        use_blob_urls,
        options: DirectionOptions::Import(ImportOptions {
            recursive_scan: true,
            presign_ttl: 15,
            ..ImportOptions::default()
        }),
        ..StorageSettings::defaults(Direction::Import)
    };
    let storage = db.create_storage(project.id, StorageKind::Gcs, &settings).await?;
    Ok(ImportSettings {
        storage_id: storage.id,
        project_id: project.id,
        maximum_annotations: 1,
        bucket: bucket.into(),
        prefix: String::new(),
        regex: None,
        recursive: true,
        use_blob_urls,
        policy: DeletionPolicy::Keep,
        user_id: user.id,
        // As a sync job: rows are checked against the project's config.
        config: labelport_domain::label_config::LabelConfig::parse(&project.label_config)
            .ok()
            .map(std::sync::Arc::new),
    })
}

pub(crate) async fn run_engine<S: ObjectStore>(
    db: &Db,
    store: &S,
    settings: &ImportSettings,
) -> anyhow::Result<(SyncReport, f64)> {
    let (tx, _rx) = tokio::sync::watch::channel(SyncReport::default());
    let started = Instant::now();
    let report = ImportEngine::new(db, store, settings, tx, Arc::new(AtomicBool::new(false)))
        .run()
        .await?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// Lists everything under `prefix` in pages of 1,000, as a sync does, and
/// nothing else: (objects, list requests, seconds).
pub(crate) async fn list_all<S: ObjectStore>(
    store: &S,
    prefix: &str,
    recursive: bool,
) -> anyhow::Result<(usize, usize, f64)> {
    let started = Instant::now();
    let (mut n, mut pages, mut token) = (0, 0, None);
    loop {
        let page = store.list_page(prefix, recursive, token, 1000).await?;
        n += page.objects.len();
        pages += 1;
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok((n, pages, started.elapsed().as_secs_f64())),
        }
    }
}

fn print_sync(what: &str, report: &SyncReport, secs: f64, rows: u64) {
    println!(
        "{what}: {} tasks created in {secs:.3} s = {:.0} tasks/s ({} objects listed, {} errors)",
        report.tasks_created,
        rows as f64 / secs,
        report.objects_listed,
        report.rows_failed
    );
}

pub async fn run(args: BenchSyncArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = crate::setup::open_db(args.database_url.as_deref(), tmp.path()).await?;
    println!("backend: {}", db.backend_name());
    match args.scenario {
        Scenario::Emulator => {
            let count = args.count.unwrap_or(10_000);
            let gcs = FakeGcs::start()
                .await
                .context("starting fake-gcs-server (set FAKE_GCS_SERVER_BIN or run ./scripts/test once)")?;
            gcs.create_bucket("bench").await?;
            let started = Instant::now();
            let gcs_ref = &gcs;
            futures::future::try_join_all((0..16).map(|w| async move {
                for i in (w..count).step_by(16) {
                    gcs_ref
                        .upload("bench", &format!("images/img_{i:06}.jpg"), vec![0u8; 282], "image/jpeg")
                        .await?;
                }
                anyhow::Ok(())
            }))
            .await?;
            println!(
                "seeded {count} objects of 282 bytes in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let store = GcsStore::connect(GcsConfig::emulator("bench", gcs.endpoint.clone())).await?;
            let (n, _, list_secs) = list_all(&store, "", true).await?;
            println!("list only: {n} objects in {list_secs:.3} s");
            let settings = setup(&db, "bench", true).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("files-mode sync", &report, secs, report.tasks_created);
            println!(
                "sync / list time = {:.2} (target ≤ 1.5); {:.0} objects/s = {:.0} × Label Studio's 58.6/s",
                secs / list_secs,
                count as f64 / secs,
                count as f64 / secs / 58.6
            );
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            println!(
                "re-sync (nothing changed): {secs:.3} s, {} existed, {} created",
                report.tasks_existed, report.tasks_created
            );
        }
        Scenario::Million => {
            let count = args.count.unwrap_or(1_000_000);
            let store = GeneratedBucket { count };
            let rss_before = peak_rss_mb();
            let (n, _, list_secs) = list_all(&store, "", true).await?;
            println!("list only: {n} objects in {list_secs:.3} s");
            let settings = setup(&db, "bench", true).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("files-mode sync", &report, secs, report.tasks_created);
            println!(
                "peak RSS: {:.0} MB (before the sync: {rss_before:.0} MB; target < 300 MB)",
                peak_rss_mb()
            );
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            println!(
                "re-sync (nothing changed): {secs:.3} s, {} existed, {} created",
                report.tasks_existed, report.tasks_created
            );
            println!("peak RSS after re-sync: {:.0} MB", peak_rss_mb());
            // The task list at this size: pages of 100 read from the
            // database (no HTTP), first, middle and last.
            let last = (count as i64 - 1) / 100;
            for page in [0, last / 2, last] {
                let mut times = Vec::new();
                for _ in 0..33 {
                    let started = Instant::now();
                    let rows = db.task_page(settings.project_id, page * 100, 100).await?;
                    times.push(started.elapsed());
                    anyhow::ensure!(!rows.is_empty(), "page {} is empty", page + 1);
                }
                let mut times = times.split_off(3);
                times.sort();
                println!(
                    "task page {} of 100 (database only): p50 {:.2} ms, max {:.2} ms",
                    page + 1,
                    crate::stats::pct(&times, 0.5),
                    crate::stats::pct(&times, 1.0)
                );
            }
        }
        Scenario::Jsonl => {
            let count = args.count.unwrap_or(1_000_000);
            let mut body = String::with_capacity(count * 60);
            for i in 0..count {
                body.push_str(&format!(
                    "{{\"image\": \"gs://bench/images/img_{i:07}.jpg\", \"n\": {i}}}\n"
                ));
            }
            println!("one JSONL file: {count} lines, {:.1} MB", body.len() as f64 / 1e6);
            let store = MemoryStore::new("bench");
            store.put("tasks.jsonl", body, "application/jsonl");
            let settings = setup(&db, "bench", false).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("JSONL sync", &report, secs, report.tasks_created);
            println!(
                "peak RSS: {:.0} MB (includes the file held in memory by the bench store)",
                peak_rss_mb()
            );
        }
        Scenario::Parquet => {
            let count = args.count.unwrap_or(1_000_000);
            let body = parquet_file(count)?;
            println!("one Parquet file: {count} rows, {:.1} MB", body.len() as f64 / 1e6);
            let store = MemoryStore::new("bench");
            store.put("tasks.parquet", body, "application/vnd.apache.parquet");
            let settings = setup(&db, "bench", false).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("Parquet sync", &report, secs, report.tasks_created);
            println!(
                "peak RSS: {:.0} MB (includes the file held in memory by the bench store)",
                peak_rss_mb()
            );
        }
    }
    db.close().await;
    Ok(())
}

/// `image` (string) and `n` (int) columns, row groups of 100,000 rows.
fn parquet_file(count: usize) -> anyhow::Result<Vec<u8>> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let batch_of = |start: usize, end: usize| {
        let image: ArrayRef = Arc::new(StringArray::from(
            (start..end)
                .map(|i| format!("gs://bench/images/img_{i:07}.jpg"))
                .collect::<Vec<_>>(),
        ));
        let n: ArrayRef = Arc::new(Int64Array::from((start..end).map(|i| i as i64).collect::<Vec<_>>()));
        RecordBatch::try_from_iter([("image", image), ("n", n)])
    };
    let schema = batch_of(0, 0)?.schema();
    let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None)?;
    for start in (0..count).step_by(100_000) {
        writer.write(&batch_of(start, (start + 100_000).min(count))?)?;
    }
    Ok(writer.into_inner()?)
}
