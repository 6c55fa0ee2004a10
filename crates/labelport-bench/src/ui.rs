//! `labelport-bench ui`: the data manager page at a million tasks. Imports
//! the tasks (every tenth one with an annotation, so the filters have work),
//! then times the page two ways: the HTML as a client fetches it (server
//! render and transfer), and whole page loads in headless Chromium
//! (Navigation Timing, through `browser/navigation_timing.py` and Playwright
//! with the system's chromium). Prints figures; asserts nothing.
//!
//! Each way has its ceiling measured in the same run: a plain relay serves
//! every page's HTML and the style sheet and script it loads, the bytes
//! Labelport gave, from memory. The same reqwest client fetches the HTML
//! from it, and the same browser script loads the pages from it (no
//! sign-in: nothing there checks), so the browser does the same work with
//! no server work behind it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use labelport_api::AppState;
use serde_json::{json, Value};

use crate::relay::{Fixed, Relay};
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

    // The plain relay: each page's HTML as this client gets it, and the
    // files under /static/ the pages name (style sheet, script), public.
    let mut answers = HashMap::new();
    let mut assets = Vec::new();
    for (_, path) in &pages {
        let response = http
            .get(format!("{base}{path}"))
            .header("Authorization", &auth)
            .send()
            .await?;
        let html = Fixed::from_response(response.error_for_status()?).await?;
        let text = String::from_utf8_lossy(&html.body);
        for (at, _) in text.match_indices("\"/static/") {
            let asset = text[at + 1..].split('"').next().unwrap_or_default().to_owned();
            if !assets.contains(&asset) {
                assets.push(asset);
            }
        }
        answers.insert(path.clone(), html);
    }
    for asset in &assets {
        let response = http.get(format!("{base}{asset}")).send().await?;
        answers.insert(asset.clone(), Fixed::from_response(response.error_for_status()?).await?);
    }
    let relay = Relay::start(answers).await?;
    println!("plain relay: the 5 pages' HTML and {} from memory", assets.join(", "));

    println!("\nHTML of the data manager (50 tasks a page), fetched with reqwest (then from the plain relay):");
    for (name, path) in &pages {
        for (who, from) in [(*name, &base), ("  plain relay", &relay.base)] {
            let times = time_html(&http, &format!("{from}{path}"), &auth, args.repeats).await?;
            println!(
                "  {who:<20} p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} loads)",
                pct(&times, 0.5),
                pct(&times, 0.9),
                pct(&times, 1.0),
                times.len()
            );
        }
    }

    println!("\nWhole page loads in headless Chromium (Navigation Timing; loadEventEnd; then from the plain relay):");
    let paths: Vec<&String> = pages.iter().map(|(_, p)| p).collect();
    let served = browser_loads(&args, &base, ("bench", "bench-password"), &paths).await?;
    // "-": the relay has no sign-in page, and needs none.
    let relayed = browser_loads(&args, &relay.base, ("-", "-"), &paths).await?;
    relay.stop().await?;
    for (((name, _), served), relayed) in pages.iter().zip(&served).zip(&relayed) {
        print_loads(name, served)?;
        print_loads("  plain relay", relayed)?;
    }
    server.stop().await?;
    db.close().await;
    Ok(())
}

/// `repeats` GETs of the data manager's HTML at `url` (after 2 warm-up
/// loads), read whole; sorted times. Errors unless a page has 50 rows.
async fn time_html(http: &reqwest::Client, url: &str, auth: &str, repeats: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for i in 0..repeats + 2 {
        let started = Instant::now();
        let html = http
            .get(url)
            .header("Authorization", auth)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        if i >= 2 {
            times.push(started.elapsed());
        }
        anyhow::ensure!(html.matches("data-task=").count() == 50, "{url}: not a full page");
    }
    times.sort();
    Ok(times)
}

/// Runs `browser/navigation_timing.py` on `paths` of `base`, signing in
/// as `(username, password)` (`-`: no sign-in); one JSON object per path.
async fn browser_loads(
    args: &BenchUiArgs,
    base: &str,
    (username, password): (&str, &str),
    paths: &[&String],
) -> anyhow::Result<Vec<Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/navigation_timing.py");
    let output = tokio::process::Command::new(&args.python)
        .arg(script)
        .args([base, username, password, &args.repeats.to_string(), &args.chromium])
        .args(paths)
        .output()
        .await
        .with_context(|| format!("running {} {script}", args.python))?;
    anyhow::ensure!(
        output.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    anyhow::ensure!(
        results.len() == paths.len(),
        "the browser run measured {} pages",
        results.len()
    );
    Ok(results)
}

/// One line of whole page loads: `loadEventEnd` and `responseEnd`.
fn print_loads(name: &str, result: &Value) -> anyhow::Result<()> {
    let loads = result["loads"].as_array().context("loads")?;
    let times = |key: &str| {
        let mut v: Vec<Duration> = loads
            .iter()
            .map(|l| Duration::from_secs_f64(l[key].as_f64().unwrap_or(0.0) / 1000.0))
            .collect();
        v.sort();
        v
    };
    let (load, html) = (times("load"), times("response_end"));
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
    Ok(())
}
