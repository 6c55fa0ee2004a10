//! `labelport-bench load`: one database under concurrent load. A sync of N
//! (100,000) objects runs through the real import engine (a generated
//! bucket, as `sync --scenario million`) while C (4) clients keep writing
//! through the HTTP API of the server in the same process, sharing its
//! database pool: half import small batches of tasks, half save
//! annotations. Prints the sync's time and the clients' p50/p99 latency,
//! each beside the same work alone, the 5xx answers and "database is
//! locked" errors seen, and checks afterwards that every write answered
//! 201 is there and that no write was refused (no 5xx, no "database is
//! locked", no other refusal) while the sync ran.
//!
//! Each figure alone has its ceiling measured in the same run: the sync
//! beside the raw insert ceiling of as many files-mode task and link rows
//! (a fresh database, plain multi-row INSERTs), the clients beside the same
//! client loop against a plain relay that answers each request with the
//! 201 Labelport gave it (same body size), same clients, same duration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labelport_api::AppState;
use serde_json::{json, Value};

use crate::relay::{Fixed, Relay};
use crate::setup;
use crate::stats::pct;
use crate::sync::{files_mode_row, fresh_raw_insert_rate, run_engine, setup as sync_setup, GeneratedBucket};

#[derive(clap::Args)]
pub struct BenchLoadArgs {
    /// Objects in the synced bucket.
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// Writing clients (half import tasks, half save annotations).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Tasks per import request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// A PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
}

const CONFIG: &str =
    r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#;

/// What the clients did.
#[derive(Default)]
struct Writes {
    import_ms: Vec<Duration>,
    save_ms: Vec<Duration>,
    tasks_imported: u64,
    annotations_saved: u64,
    server_errors: u64,
    locked: u64,
    other_refusals: Vec<String>,
}

impl Writes {
    fn merge(&mut self, other: Writes) {
        self.import_ms.extend(other.import_ms);
        self.save_ms.extend(other.save_ms);
        self.tasks_imported += other.tasks_imported;
        self.annotations_saved += other.annotations_saved;
        self.server_errors += other.server_errors;
        self.locked += other.locked;
        self.other_refusals.extend(other.other_refusals);
    }

    fn print(&mut self, what: &str) {
        self.import_ms.sort();
        self.save_ms.sort();
        let show = |v: &[Duration]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "{} requests, p50 {:.1} ms, p99 {:.1} ms",
                    v.len(),
                    pct(v, 0.5),
                    pct(v, 0.99)
                )
            }
        };
        println!("{what}: task imports: {}", show(&self.import_ms));
        println!("{what}: annotation saves: {}", show(&self.save_ms));
        println!(
            "{what}: 5xx answers: {}, \"database is locked\": {}, other refusals: {}",
            self.server_errors,
            self.locked,
            self.other_refusals.len()
        );
        for r in self.other_refusals.iter().take(5) {
            println!("  refused: {r}");
        }
    }
}

struct Target {
    http: reqwest::Client,
    base: String,
    auth: String,
    project: i64,
    tasks: Vec<i64>,
}

/// Request `n` of client `i`: path and JSON body. Even clients import
/// `batch` tasks, odd ones save an annotation.
fn request(target: &Target, i: usize, n: usize, batch: usize) -> (String, Value) {
    if i.is_multiple_of(2) {
        let tasks: Vec<Value> = (0..batch).map(|k| json!({"text": format!("c{i} r{n} k{k}")})).collect();
        (format!("/api/projects/{}/import", target.project), json!(tasks))
    } else {
        let task = target.tasks[(n * 7 + i) % target.tasks.len()];
        (
            format!("/api/tasks/{task}/annotations/"),
            json!({"result": [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]}),
        )
    }
}

/// The plain relay for the clients: every path they write to answered
/// with the 201 and body Labelport gave one request of that kind (one
/// import, one annotation save, made here), from memory.
async fn relay_for(target: &Target, batch: usize) -> anyhow::Result<Relay> {
    let mut answers = HashMap::new();
    for i in 0..2 {
        let (path, body) = request(target, i, 0, batch);
        let response = target
            .http
            .post(format!("{}{path}", target.base))
            .header("Authorization", &target.auth)
            .json(&body)
            .send()
            .await?;
        let fixed = Fixed::from_response(response.error_for_status()?).await?;
        if i == 0 {
            answers.insert(path, fixed);
        } else {
            for task in &target.tasks {
                answers.insert(format!("/api/tasks/{task}/annotations/"), fixed.clone());
            }
        }
    }
    Relay::start(answers).await
}

/// One client's loop until `stop`: client `i` imports when even, saves
/// annotations when odd.
async fn client(target: Arc<Target>, i: usize, batch: usize, stop: Arc<AtomicBool>) -> Writes {
    let mut w = Writes::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (path, body) = request(&target, i, n, batch);
        let url = format!("{}{path}", target.base);
        let started = Instant::now();
        let answer = target
            .http
            .post(&url)
            .header("Authorization", &target.auth)
            .json(&body)
            .send()
            .await;
        let took = started.elapsed();
        match answer {
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if text.contains("database is locked") {
                    w.locked += 1;
                }
                if status.is_server_error() {
                    w.server_errors += 1;
                } else if status.as_u16() != 201 {
                    w.other_refusals.push(format!("{status} {text}"));
                } else if i.is_multiple_of(2) {
                    w.import_ms.push(took);
                    w.tasks_imported += batch as u64;
                } else {
                    w.save_ms.push(took);
                    w.annotations_saved += 1;
                }
            }
            Err(e) => w.other_refusals.push(e.to_string()),
        }
        n += 1;
    }
    w
}

async fn clients_for(
    target: &Arc<Target>,
    clients: usize,
    batch: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Writes>> {
    (0..clients)
        .map(|i| tokio::spawn(client(target.clone(), i, batch, stop.clone())))
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<Writes>>) -> anyhow::Result<Writes> {
    let mut all = Writes::default();
    for h in handles {
        all.merge(h.await?);
    }
    Ok(all)
}

async fn counts(target: &Target) -> anyhow::Result<(i64, i64)> {
    let p: Value = target
        .http
        .get(format!("{}/api/projects/{}", target.base, target.project))
        .header("Authorization", &target.auth)
        .send()
        .await?
        .json()
        .await?;
    Ok((
        p["task_number"].as_i64().unwrap_or(-1),
        p["total_annotations_number"].as_i64().unwrap_or(-1),
    ))
}

pub async fn run(args: BenchLoadArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = setup::open_db(args.database_url.as_deref(), dir.path()).await?;
    // Two projects with a storage each (the sync alone, then under load);
    // made first, as they (re)make the bench user and its token.
    let alone_settings = sync_setup(&db, "bench", true).await?;
    let load_settings = sync_setup(&db, "bench", true).await?;
    let token = setup::bench_user(&db).await?;
    let server = setup::Server::start(AppState::new(db.clone())).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let auth = format!("Token {token}");
    let project: Value = http
        .post(format!("{}/api/projects", server.base))
        .header("Authorization", &auth)
        .json(&json!({"title": "writes", "label_config": CONFIG}))
        .send()
        .await?
        .json()
        .await?;
    let pid = project["id"].as_i64().unwrap_or_default();
    let seed: Vec<Value> = (0..200).map(|i| json!({"text": format!("seed {i}")})).collect();
    http.post(format!("{}/api/projects/{pid}/import", server.base))
        .header("Authorization", &auth)
        .json(&seed)
        .send()
        .await?
        .error_for_status()?;
    let list: Value = http
        .get(format!("{}/api/tasks?project={pid}&page_size=200", server.base))
        .header("Authorization", &auth)
        .send()
        .await?
        .json()
        .await?;
    let tasks = list["tasks"]
        .as_array()
        .map(|ts| ts.iter().filter_map(|t| t["id"].as_i64()).collect())
        .unwrap_or_default();
    let target = Arc::new(Target {
        http,
        base: server.base.clone(),
        auth,
        project: pid,
        tasks,
    });
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "{backend}: a sync of {} objects and {} writing clients (imports of {} tasks, annotation saves)",
        args.objects, args.clients, args.batch
    );

    // The sync alone, after its ceiling: as many files-mode task and link
    // rows written by plain INSERTs into a fresh database.
    let ceiling = fresh_raw_insert_rate(
        args.database_url.as_deref(),
        "load_ceiling",
        args.objects,
        &files_mode_row,
        true,
    )
    .await?;
    let bucket = GeneratedBucket { count: args.objects };
    let (report, alone) = run_engine(&db, &bucket, &alone_settings).await?;
    println!(
        "sync alone: {} tasks in {alone:.2} s = {:.0} tasks/s = {:.2} × the raw insert ceiling",
        report.tasks_created,
        report.tasks_created as f64 / alone,
        report.tasks_created as f64 / alone / ceiling
    );

    // The clients alone, as long as the sync took (at least 3 s).
    let duration = Duration::from_secs_f64(alone.max(3.0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles = clients_for(&target, args.clients, args.batch, &stop).await;
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut by_themselves = collect(handles).await?;
    by_themselves.print("clients alone");

    // Their ceiling: the same clients for as long against a plain relay.
    let relay = relay_for(&target, args.batch).await?;
    let relayed = Arc::new(Target {
        http: target.http.clone(),
        base: relay.base.clone(),
        auth: target.auth.clone(),
        project: target.project,
        tasks: target.tasks.clone(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let handles = clients_for(&relayed, args.clients, args.batch, &stop).await;
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut relay_writes = collect(handles).await?;
    relay.stop().await?;
    println!("plain relay: the same clients for as long, each answered the 201 and body Labelport gave, from memory");
    relay_writes.print("plain relay");

    // Both at once.
    let before = counts(&target).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let handles = clients_for(&target, args.clients, args.batch, &stop).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (report, together) = run_engine(&db, &bucket, &load_settings).await?;
    stop.store(true, Ordering::Relaxed);
    let mut during = collect(handles).await?;
    println!(
        "sync under load: {} tasks in {together:.2} s = {:.0} tasks/s ({:.2} × the time alone)",
        report.tasks_created,
        report.tasks_created as f64 / together,
        together / alone
    );
    during.print("clients during the sync");
    let after = counts(&target).await?;
    let tasks_ok = after.0 - before.0 == during.tasks_imported as i64;
    let annotations_ok = after.1 - before.1 == during.annotations_saved as i64;
    println!(
        "every write present afterwards: tasks {} (+{} of {} answered 201), annotations {} (+{} of {}); sync {} of {}",
        if tasks_ok { "yes" } else { "NO" },
        after.0 - before.0,
        during.tasks_imported,
        if annotations_ok { "yes" } else { "NO" },
        after.1 - before.1,
        during.annotations_saved,
        report.tasks_created,
        args.objects
    );
    server.stop().await?;
    db.close().await;
    anyhow::ensure!(
        tasks_ok && annotations_ok && report.tasks_created as usize == args.objects,
        "writes were lost under load"
    );
    anyhow::ensure!(
        during.server_errors == 0 && during.locked == 0 && during.other_refusals.is_empty(),
        "writes were refused under load: {} 5xx answers, {} \"database is locked\", {} other refusals{}",
        during.server_errors,
        during.locked,
        during.other_refusals.len(),
        during
            .other_refusals
            .first()
            .map(|r| format!(" (first: {r})"))
            .unwrap_or_default()
    );
    Ok(())
}
