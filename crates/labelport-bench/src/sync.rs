//! `labelport-bench sync`: import-sync speed and memory. Prints figures;
//! asserts nothing. Scenarios:
//! - `emulator`: N objects in the real GCS emulator (filesystem backend),
//!   files mode; compared with the time to merely list them.
//! - `million`: N (1,000,000) objects through the same engine from a
//!   generated listing (no emulator holds that many), with peak RSS.
//! - `jsonl`, `parquet`: one task file of N rows, beside the raw insert
//!   ceiling: the same task and link rows written by plain multi-row
//!   INSERTs into a fresh database of the same schema, in the engine's
//!   batch and transaction sizes, measured in the same run.

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

use crate::setup::FreshDb;
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
            let ceiling = raw_insert_ceiling(args.database_url.as_deref(), tmp.path(), count, "tasks.jsonl").await?;
            let store = MemoryStore::new("bench");
            store.put("tasks.jsonl", body, "application/jsonl");
            let settings = setup(&db, "bench", false).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("JSONL sync", &report, secs, report.tasks_created);
            println!(
                "JSONL sync / raw insert ceiling = {:.2}",
                report.tasks_created as f64 / secs / ceiling
            );
            println!(
                "peak RSS: {:.0} MB (includes the file held in memory by the bench store)",
                peak_rss_mb()
            );
        }
        Scenario::Parquet => {
            let count = args.count.unwrap_or(1_000_000);
            let body = parquet_file(count)?;
            println!("one Parquet file: {count} rows, {:.1} MB", body.len() as f64 / 1e6);
            let ceiling = raw_insert_ceiling(args.database_url.as_deref(), tmp.path(), count, "tasks.parquet").await?;
            let store = MemoryStore::new("bench");
            store.put("tasks.parquet", body, "application/vnd.apache.parquet");
            let settings = setup(&db, "bench", false).await?;
            let (report, secs) = run_engine(&db, &store, &settings).await?;
            print_sync("Parquet sync", &report, secs, report.tasks_created);
            println!(
                "Parquet sync / raw insert ceiling = {:.2}",
                report.tasks_created as f64 / secs / ceiling
            );
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

/// The task data, object key and row index of row `i` of a raw insert
/// ceiling (the rows a sync would write for that row or object).
pub(crate) type RowShape<'a> = &'a (dyn Fn(usize) -> (String, String, i64) + Sync);

/// The raw insert ceiling for `count` task rows of a task file `key`: the
/// task and link rows a sync writes (the same columns, data of the same
/// shape already serialized), into a fresh database of the same schema
/// (SQLite: its own file; PostgreSQL: the given database, another
/// project). See [`raw_insert_rate`]. Returns tasks per second and prints it.
async fn raw_insert_ceiling(
    database_url: Option<&str>,
    dir: &std::path::Path,
    count: usize,
    key: &str,
) -> anyhow::Result<f64> {
    let ceiling_dir = dir.join("ceiling");
    std::fs::create_dir_all(&ceiling_dir)?;
    let db = crate::setup::open_db(database_url, &ceiling_dir).await?;
    let settings = setup(&db, "bench", false).await?;
    let shape = |i: usize| {
        (
            format!("{{\"image\": \"gs://bench/images/img_{i:07}.jpg\", \"n\": {i}}}"),
            key.to_owned(),
            i as i64,
        )
    };
    let rate = raw_insert_rate(&db, &settings, count, &shape, true).await?;
    db.close().await;
    Ok(rate)
}

/// The task data, object key and row index of object `i` of a
/// [`GeneratedBucket`] synced in files mode: the rows of a raw insert
/// ceiling for a files-mode sync (`scale`, `load`).
pub(crate) fn files_mode_row(i: usize) -> (String, String, i64) {
    (
        format!("{{\"image\": \"gs://bench/img/{i:07}.jpg\"}}"),
        format!("img/{i:07}.jpg"),
        -1,
    )
}

/// [`raw_insert_rate`] in a database of its own ([`FreshDb`], dropped
/// afterwards): a new SQLite file, or a new database on the PostgreSQL
/// server of `postgres_url`. Nothing else is in that database, so the
/// figure is what the backend itself can write, the ceiling of any import
/// of the same rows on this machine. `what` names the database.
pub(crate) async fn fresh_raw_insert_rate(
    postgres_url: Option<&str>,
    what: &str,
    count: usize,
    shape: RowShape<'_>,
    with_links: bool,
) -> anyhow::Result<f64> {
    let fresh = FreshDb::open(postgres_url, what).await?;
    // The database is dropped whatever the measurement answered.
    let measured = async {
        let settings = setup(&fresh.db, "bench", true).await?;
        raw_insert_rate(&fresh.db, &settings, count, shape, with_links).await
    }
    .await;
    fresh.close().await?;
    measured
}

/// Writes `count` task rows shaped by `shape`, each with its storage link
/// when `with_links` (a sync writes both; an import through the API only
/// the tasks), into `settings`' project and storage through plain
/// multi-row INSERTs of 1,000 rows, 2,000 rows per transaction (the
/// engine's sizes). Nothing is parsed, checked or read back: on SQLite the
/// tasks' ids are the consecutive ids up to `last_insert_rowid()`; on
/// PostgreSQL they come by `RETURNING` (only when links need them).
/// Returns tasks per second and prints it.
pub(crate) async fn raw_insert_rate(
    db: &Db,
    settings: &ImportSettings,
    count: usize,
    shape: RowShape<'_>,
    with_links: bool,
) -> anyhow::Result<f64> {
    let now = labelport_db::now();
    let task_sql = |n: usize| {
        format!(
            "INSERT INTO tasks (project_id, data, meta, inner_id, overlap, is_labeled, allow_skip,
             total_annotations, cancelled_annotations, total_predictions, created_at, updated_at)
             VALUES {}",
            labelport_db::placeholders(&db.pool, n, 12)
        )
    };
    let link_sql = |n: usize| {
        format!(
            "INSERT INTO import_storage_links (storage_id, task_id, object_key, row_index, generation, etag, created_at)
             VALUES {}",
            labelport_db::placeholders(&db.pool, n, 7)
        )
    };
    // Binds one task row (its data made on the fly, as a reader would).
    macro_rules! bind_task {
        ($q:ident, $i:expr, $data:expr) => {
            $q.bind(settings.project_id)
                .bind($data)
                .bind("{}")
                .bind($i as i64 + 1)
                .bind(1i64)
                .bind(false)
                .bind(true)
                .bind(0i64)
                .bind(0i64)
                .bind(0i64)
                .bind(&now)
                .bind(&now)
        };
    }
    macro_rules! bind_link {
        ($q:ident, $id:expr, $key:expr, $row:expr) => {
            $q.bind(settings.storage_id)
                .bind($id)
                .bind($key)
                .bind($row)
                .bind(1i64)
                .bind("")
                .bind(&now)
        };
    }
    let started = Instant::now();
    let mut row = 0usize;
    while row < count {
        let tx_rows = (count - row).min(2000);
        let mut done = 0;
        match &db.pool {
            labelport_db::Pool::Sqlite { write, .. } => {
                let mut tx = write.begin().await?;
                while done < tx_rows {
                    let n = (tx_rows - done).min(1000);
                    let first_row = row + done;
                    let rows: Vec<_> = (first_row..first_row + n).map(shape).collect();
                    let sql = task_sql(n);
                    let mut q = sqlx::query(&sql);
                    for (j, (data, _, _)) in rows.iter().enumerate() {
                        q = bind_task!(q, first_row + j, data);
                    }
                    let last = q.execute(&mut *tx).await?.last_insert_rowid();
                    if with_links {
                        let sql = link_sql(n);
                        let mut q = sqlx::query(&sql);
                        for (j, (_, key, index)) in rows.iter().enumerate() {
                            q = bind_link!(q, last - n as i64 + 1 + j as i64, key, index);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    done += n;
                }
                tx.commit().await?;
            }
            labelport_db::Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                while done < tx_rows {
                    let n = (tx_rows - done).min(1000);
                    let first_row = row + done;
                    let rows: Vec<_> = (first_row..first_row + n).map(shape).collect();
                    let sql = if with_links {
                        format!("{} RETURNING id", task_sql(n))
                    } else {
                        task_sql(n)
                    };
                    let mut q = sqlx::query_scalar::<_, i64>(&sql);
                    for (j, (data, _, _)) in rows.iter().enumerate() {
                        q = bind_task!(q, first_row + j, data);
                    }
                    let ids = q.fetch_all(&mut *tx).await?;
                    if with_links {
                        let sql = link_sql(n);
                        let mut q = sqlx::query(&sql);
                        for (id, (_, key, index)) in ids.iter().zip(&rows) {
                            q = bind_link!(q, *id, key, index);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    done += n;
                }
                tx.commit().await?;
            }
        }
        row += tx_rows;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = count as f64 / secs;
    println!(
        "raw insert ceiling ({}): {count} tasks{} in {secs:.3} s = {rate:.0} tasks/s",
        db.backend_name(),
        if with_links {
            ", each with its link row,"
        } else {
            " (no link rows)"
        }
    );
    Ok(rate)
}
