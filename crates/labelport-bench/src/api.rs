//! `labelport-bench api`: imports N tasks through the HTTP API into a fresh
//! database and times task-list pages, each beside its ceiling measured in
//! the same run: the import beside the raw insert ceiling of the same N
//! task rows (a fresh database, plain multi-row INSERTs), every page beside
//! a plain relay answering that page's bytes from memory. Prints figures;
//! asserts nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use labelport_api::AppState;
use serde_json::{json, Value};

use crate::relay::{Fixed, Relay};
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

/// Times `repeats` GETs of `url` (after 3 warm-up requests), each read and
/// parsed as JSON as an SDK would; returns the sorted times and the last
/// answer. Errors on an empty task page.
async fn time_page(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    repeats: usize,
) -> anyhow::Result<(Vec<Duration>, Fixed)> {
    let mut times = Vec::with_capacity(repeats + 3);
    let mut last = None;
    for _ in 0..repeats + 3 {
        let started = Instant::now();
        let response = http.get(url).header("Authorization", auth).send().await?;
        let fixed = Fixed::from_response(response.error_for_status()?).await?;
        let answer: Value = serde_json::from_slice(&fixed.body)?;
        times.push(started.elapsed());
        anyhow::ensure!(
            answer["tasks"].as_array().is_some_and(|t| !t.is_empty()),
            "empty page: {url}"
        );
        last = Some(fixed);
    }
    let mut times = times.split_off(3); // first requests warm caches
    times.sort();
    Ok((times, last.context("no request")?))
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
    // The ceiling of the import: the same task rows (the data as the
    // import stores it), no link rows, written by plain INSERTs into a
    // fresh database; no HTTP, no parsing, no counters.
    let shape = |i: usize| (tasks[i].to_string(), String::new(), 0);
    let ceiling =
        crate::sync::fresh_raw_insert_rate(args.database_url.as_deref(), "api_ceiling", args.tasks, &shape, false)
            .await?;
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
    let rate = args.tasks as f64 / took.as_secs_f64();
    println!(
        "import: {} tasks in {:.3} s = {rate:.0} tasks/s (HTTP round trip, JSON parse and insert) = {:.2} × the raw insert ceiling",
        args.tasks,
        took.as_secs_f64(),
        rate / ceiling
    );

    let last_page = args.tasks.div_ceil(args.page_size).max(1);
    let mut pages = vec![1, 1000.min(last_page), last_page.div_ceil(2), last_page];
    pages.dedup();
    pages.sort();
    pages.dedup();
    // Pages with no task ever deleted, then after 1,000 deletions scattered
    // through the project (1,000 gap ranges to seek past; issue 18, item 3).
    for path_kind in ["no task deleted", "1,000 tasks deleted, scattered"] {
        if path_kind.starts_with("1,000") {
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
        let remaining = if path_kind.starts_with("1,000") {
            args.tasks.saturating_sub(1000.min(args.tasks / 2))
        } else {
            args.tasks
        };
        let last = remaining.div_ceil(args.page_size).max(1);
        let pages: Vec<usize> = pages.iter().map(|p| (*p).min(last)).collect();
        for &page in &pages {
            let path = format!(
                "/api/tasks?project={project_id}&page={page}&page_size={}",
                args.page_size
            );
            let (times, answer) = time_page(&http, &format!("{base}{path}"), &auth, args.repeats).await?;
            let p50 = pct(&times, 0.5);
            let first = *first_p50.get_or_insert(p50);
            println!(
                "task list page {page} (page_size {}, {path_kind}): p50 {p50:.2} ms ({:.2} × page 1), p90 {:.2} ms, \
                 max {:.2} ms over {} requests",
                args.page_size,
                p50 / first,
                pct(&times, 0.9),
                pct(&times, 1.0),
                times.len()
            );
            // Its ceiling: the same bytes from a plain relay, same client,
            // same requests; the difference is Labelport's own work
            // (access check, database, rendering).
            let size = answer.body.len();
            let relay = Relay::start(HashMap::from([(path.clone(), answer)])).await?;
            let (relay_times, _) = time_page(&http, &format!("{}{path}", relay.base), &auth, args.repeats).await?;
            relay.stop().await?;
            let relay_p50 = pct(&relay_times, 0.5);
            println!(
                "  plain relay of the same {size} bytes: p50 {relay_p50:.2} ms, p90 {:.2} ms, max {:.2} ms; \
                 Labelport's own work p50 {:.2} ms",
                pct(&relay_times, 0.9),
                pct(&relay_times, 1.0),
                p50 - relay_p50
            );
        }
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}
