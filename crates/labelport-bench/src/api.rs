//! `labelport-bench api`: imports N tasks through the HTTP API into a fresh
//! database and times task-list pages. Prints figures; asserts nothing.

use std::time::Instant;

use anyhow::Context;
use labelport_api::AppState;
use serde_json::{json, Value};

use crate::setup;
use crate::stats::pct;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Tasks to import.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Page size of the timed task-list requests.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// A PostgreSQL database to measure instead of a temporary SQLite file
    /// (its tables get a new project; nothing is dropped).
    #[arg(long)]
    database_url: Option<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = setup::open_db(args.database_url.as_deref(), tmp.path()).await?;
    let token = setup::bench_user(&db).await?;
    let server = setup::Server::start(AppState::new(db.clone())).await?;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let auth = format!("Token {token}");

    let project: Value = http
        .post(format!("{base}/api/projects/"))
        .header("Authorization", &auth)
        .json(&json!({"title": "bench", "label_config": "<View><Image name=\"image\" value=\"$image\"/><Choices name=\"c\" toName=\"image\"><Choice value=\"a\"/></Choices></View>"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let project_id = project["id"].as_i64().context("project id")?;

    let tasks: Vec<Value> = (0..args.tasks)
        .map(|i| json!({"image": format!("gs://bench/images/img_{i:07}.jpg"), "n": i}))
        .collect();
    let body = serde_json::to_vec(&tasks)?;
    println!("backend: {}", db.backend_name());
    println!("import body: {} tasks, {:.1} MB", args.tasks, body.len() as f64 / 1e6);
    let started = Instant::now();
    let answer: Value = http
        .post(format!("{base}/api/projects/{project_id}/import"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        answer["task_count"].as_u64() == Some(args.tasks as u64),
        "import answered {answer}"
    );
    println!(
        "import: {} tasks in {:.3} s = {:.0} tasks/s (HTTP round trip, JSON parse and insert)",
        args.tasks,
        took.as_secs_f64(),
        args.tasks as f64 / took.as_secs_f64()
    );

    let last_page = args.tasks.div_ceil(args.page_size).max(1);
    let mut pages = vec![1, 1000.min(last_page), last_page.div_ceil(2), last_page];
    pages.dedup();
    pages.sort();
    pages.dedup();
    // Pages with no task ever deleted, then after 1,000 deletions scattered
    // through the project (1,000 gap ranges to seek past; issue 18, item 3).
    for path in ["no task deleted", "1,000 tasks deleted, scattered"] {
        if path.starts_with("1,000") {
            let first: Value = http
                .get(format!("{base}/api/tasks?project={project_id}&page=1&page_size=1"))
                .header("Authorization", &auth)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id = first["tasks"][0]["id"].as_i64().context("a task id")?;
            let step = (args.tasks as i64 / 1000).max(2);
            for k in 0..1000.min(args.tasks as i64 / step) {
                http.delete(format!("{base}/api/tasks/{}", id + k * step + step / 2))
                    .header("Authorization", &auth)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
        let mut first_p50 = None;
        // After the deletions the last page is nearer.
        let remaining = if path.starts_with("1,000") {
            args.tasks.saturating_sub(1000.min(args.tasks / 2))
        } else {
            args.tasks
        };
        let last = remaining.div_ceil(args.page_size).max(1);
        let pages: Vec<usize> = pages.iter().map(|p| (*p).min(last)).collect();
        for &page in &pages {
            let mut times = Vec::with_capacity(args.repeats);
            for _ in 0..args.repeats + 3 {
                let started = Instant::now();
                let answer: Value = http
                    .get(format!(
                        "{base}/api/tasks?project={project_id}&page={page}&page_size={}",
                        args.page_size
                    ))
                    .header("Authorization", &auth)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                times.push(started.elapsed());
                anyhow::ensure!(
                    answer["tasks"].as_array().is_some_and(|t| !t.is_empty()),
                    "empty page {page}"
                );
            }
            let mut times = times.split_off(3); // first requests warm caches
            times.sort();
            let p50 = pct(&times, 0.5);
            let first = *first_p50.get_or_insert(p50);
            println!(
                "task list page {page} (page_size {}, {path}): p50 {p50:.2} ms ({:.2} × page 1), p90 {:.2} ms, \
                 max {:.2} ms over {} requests",
                args.page_size,
                p50 / first,
                pct(&times, 0.9),
                pct(&times, 1.0),
                times.len()
            );
        }
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}
