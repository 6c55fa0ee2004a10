//! `labelport-bench ui`: the data manager page at a million tasks. Imports
//! the tasks (every tenth one with an annotation, so the filters have work),
//! then times the page two ways: the HTML as a client fetches it (server
//! render and transfer), and whole page loads in headless Chromium
//! (Navigation Timing, through `browser/navigation_timing.py` and Playwright
//! with the system's chromium). Prints figures; asserts nothing.

use std::time::Instant;

use anyhow::Context;
use labelport_api::AppState;
use serde_json::{json, Value};

use crate::setup;
use crate::stats::pct;

#[derive(clap::Args)]
pub struct BenchUiArgs {
    /// Tasks in the project.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Timed loads per page.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// The browser (Debian's chromium).
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: String,
    /// A Python with Playwright (scripts/test installs one in .venv).
    #[arg(long, default_value = ".venv/bin/python")]
    python: String,
    /// A PostgreSQL database to measure instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
}

/// Tasks per import request.
const CHUNK: usize = 100_000;

pub async fn run(args: BenchUiArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = setup::open_db(args.database_url.as_deref(), tmp.path()).await?;
    let token = setup::bench_user(&db).await?;
    let server = setup::Server::start(AppState::new(db.clone())).await?;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let auth = format!("Token {token}");
    let config = r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#;
    let project: Value = http
        .post(format!("{base}/api/projects"))
        .header("Authorization", &auth)
        .json(&json!({"title": "bench ui", "label_config": config}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pid = project["id"].as_i64().context("project id")?;
    println!("backend: {}", db.backend_name());
    let started = Instant::now();
    for chunk in (0..args.tasks).collect::<Vec<_>>().chunks(CHUNK) {
        let tasks: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let data = json!({"text": format!("Task text number {i}, long enough to look like a sentence.")});
                if i % 10 == 0 {
                    json!({"data": data, "annotations": [{"result": [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]}]})
                } else {
                    json!({"data": data})
                }
            })
            .collect();
        http.post(format!("{base}/api/projects/{pid}/import"))
            .header("Authorization", &auth)
            .json(&tasks)
            .send()
            .await?
            .error_for_status()?;
    }
    println!(
        "setup: {} tasks ({} labeled) imported in {:.1} s",
        args.tasks,
        args.tasks.div_ceil(10),
        started.elapsed().as_secs_f64()
    );
    let first: Value = http
        .get(format!("{base}/api/tasks?project={pid}&page=1&page_size=1"))
        .header("Authorization", &auth)
        .send()
        .await?
        .json()
        .await?;
    let first_id = first["tasks"][0]["id"].as_i64().context("a task")?;
    let deep = first_id + (args.tasks as i64) * 9 / 10;
    let pages = [
        ("first page", format!("/projects/{pid}/data")),
        (
            "page at 90 %",
            format!("/projects/{pid}/data?filter=all&order=asc&after={deep}"),
        ),
        ("newest first", format!("/projects/{pid}/data?filter=all&order=desc")),
        (
            "labeled, at 90 %",
            format!("/projects/{pid}/data?filter=labeled&order=asc&after={deep}"),
        ),
        (
            "unlabeled, at 90 %",
            format!("/projects/{pid}/data?filter=unlabeled&order=asc&after={deep}"),
        ),
    ];

    println!("\nHTML of the data manager (50 tasks a page), fetched with reqwest:");
    for (name, path) in &pages {
        let mut times = Vec::new();
        for i in 0..args.repeats + 2 {
            let started = Instant::now();
            let html = http
                .get(format!("{base}{path}"))
                .header("Authorization", &auth)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            if i >= 2 {
                times.push(started.elapsed());
            }
            anyhow::ensure!(html.matches("data-task=").count() == 50, "{name}: not a full page");
        }
        times.sort();
        println!(
            "  {name:<20} p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} loads)",
            pct(&times, 0.5),
            pct(&times, 0.9),
            pct(&times, 1.0),
            times.len()
        );
    }

    println!("\nWhole page loads in headless Chromium (Navigation Timing; loadEventEnd):");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/navigation_timing.py");
    let output = tokio::process::Command::new(&args.python)
        .arg(script)
        .args([
            &base,
            "bench",
            "bench-password",
            &args.repeats.to_string(),
            &args.chromium,
        ])
        .args(pages.iter().map(|(_, p)| p))
        .output()
        .await
        .with_context(|| format!("running {} {script}", args.python))?;
    anyhow::ensure!(
        output.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (line, (name, _)) in String::from_utf8(output.stdout)?.lines().zip(&pages) {
        let result: Value = serde_json::from_str(line)?;
        let loads = result["loads"].as_array().context("loads")?;
        let mut load: Vec<std::time::Duration> = loads
            .iter()
            .map(|l| std::time::Duration::from_secs_f64(l["load"].as_f64().unwrap_or(0.0) / 1000.0))
            .collect();
        let mut html: Vec<std::time::Duration> = loads
            .iter()
            .map(|l| std::time::Duration::from_secs_f64(l["response_end"].as_f64().unwrap_or(0.0) / 1000.0))
            .collect();
        load.sort();
        html.sort();
        let rows = loads.first().and_then(|l| l["rows"].as_i64()).unwrap_or(0);
        println!(
            "  {name:<20} load p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; HTML in p50 {:.1} ms ({} rows, {} loads)",
            pct(&load, 0.5),
            pct(&load, 0.9),
            pct(&load, 1.0),
            pct(&html, 0.5),
            rows,
            load.len()
        );
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}
