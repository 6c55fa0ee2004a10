//! Kill -9 the server in the middle of a sync, start it again: the sync is
//! taken over when its lease expires and ends with exactly the right tasks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labelport_testkit::FakeGcs;
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
const LINES: usize = 300_000;

/// How the server is stopped mid-sync.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Interrupt {
    /// kill -9: the job's lease must run out before another worker takes it.
    Kill,
    /// SIGTERM: the job is handed back at once, long before its lease ends.
    Term,
}

impl Interrupt {
    /// The job lease the server runs with.
    fn lease_secs(self) -> &'static str {
        match self {
            Interrupt::Kill => "2",
            Interrupt::Term => "300",
        }
    }
}

fn start(data_dir: &std::path::Path, port: u16, gcs: &FakeGcs, how: Interrupt) -> Child {
    Command::new(env!("CARGO_BIN_EXE_labelport"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--username",
            "admin@example.com",
            "--password",
            "pw",
        ])
        .args(["--user-token", TOKEN, "--workers", "1", "--data-dir"])
        .arg(data_dir)
        .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
        .env("LABELPORT_JOB_LEASE_SECS", how.lease_secs())
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts")
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http
        .get(url)
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    let started = Instant::now();
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn killed_mid_sync_resumes_without_duplicates_or_losses() {
    interrupted_mid_sync(Interrupt::Kill).await;
}

/// SIGTERM: the running sync saves its progress and its job is handed back
/// at once (an interruption, not an attempt): the next process resumes it
/// without waiting out the 300 s lease.
#[tokio::test]
async fn terminated_mid_sync_hands_the_job_back_at_once() {
    interrupted_mid_sync(Interrupt::Term).await;
}

async fn interrupted_mid_sync(how: Interrupt) {
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("kill").await.unwrap();
    let mut big = String::with_capacity(LINES * 30);
    for i in 0..LINES {
        big.push_str(&format!("{{\"text\": \"t{i}\", \"n\": {i}}}\n"));
    }
    gcs.upload("kill", "t/big.jsonl", big.into_bytes(), "application/jsonl")
        .await
        .unwrap();
    for i in 0..20 {
        gcs.upload(
            "kill",
            &format!("t/small_{i:02}.json"),
            format!("[{{\"text\": \"s{i}\", \"n\": {}}}]", LINES + i).into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start(dir.path(), port, &gcs, how);
    wait_up(&http, &base).await;
    let auth = format!("Token {TOKEN}");
    let project: Value = http.post(format!("{base}/api/projects"))
        .header("Authorization", &auth)
        .json(&json!({"title": "k", "label_config": "<View><Text name=\"text\" value=\"$text\"/><Choices name=\"c\" toName=\"text\"><Choice value=\"a\"/></Choices></View>"}))
        .send().await.unwrap().json().await.unwrap();
    let pid = project["id"].as_i64().unwrap();
    let storage: Value = http
        .post(format!("{base}/api/storages/gcs"))
        .header("Authorization", &auth)
        .json(&json!({"project": pid, "bucket": "kill", "prefix": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = storage["id"].as_i64().unwrap();
    let r = http
        .post(format!("{base}/api/storages/gcs/{sid}/sync"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Kill -9 once some tasks exist and the sync is still running.
    let started = Instant::now();
    loop {
        let st = get(&http, &format!("{base}/api/storages/gcs/{sid}")).await.unwrap();
        let done = st["last_sync_count"].as_i64().unwrap_or(0);
        assert_ne!(
            st["status"], "completed",
            "the sync finished before it could be killed; make the file bigger"
        );
        if st["status"] == "in_progress" && done > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match how {
        Interrupt::Kill => {
            server.kill().unwrap();
            server.wait().unwrap();
        }
        Interrupt::Term => {
            let sent = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            let stopping = Instant::now();
            while server.try_wait().unwrap().is_none() {
                assert!(
                    stopping.elapsed() < Duration::from_secs(40),
                    "SIGTERM did not stop the server"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Start again on the same database: a worker takes the job over (kill:
    // once its lease ran out; SIGTERM: at once).
    let mut server = start(dir.path(), port, &gcs, how);
    wait_up(&http, &base).await;
    let before: Value = get(&http, &format!("{base}/api/projects/{pid}")).await.unwrap();
    let partial = before["task_number"].as_i64().unwrap();
    assert!(
        partial > 0 && partial < (LINES + 20) as i64,
        "killed mid-way: {partial} tasks"
    );
    let started = Instant::now();
    let st = loop {
        let st = get(&http, &format!("{base}/api/storages/gcs/{sid}")).await.unwrap();
        if st["status"] == "completed" {
            break st;
        }
        assert_ne!(st["status"], "failed", "{st}");
        assert!(started.elapsed() < Duration::from_secs(180), "not resumed: {st}");
        if how == Interrupt::Term {
            assert!(
                st["status"] != "queued" || started.elapsed() < Duration::from_secs(60),
                "the job waited for its lease: {st}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Taken over after the kill, which cost the job no attempt.
    assert!(st["meta"]["interruptions"].as_i64().unwrap() >= 1, "taken over: {st}");
    assert_eq!(st["meta"]["attempts"], 1, "{st}");
    // The storage counts the tasks of both runs of the job, each once.
    assert_eq!(st["last_sync_count"], (LINES + 20) as i64, "{st}");
    let earlier = st["meta"]["tasks_created_earlier_attempts"].as_i64().unwrap();
    assert!(earlier > 0, "the interrupted run's tasks are counted: {st}");
    assert_eq!(
        earlier + st["meta"]["tasks_created"].as_i64().unwrap(),
        (LINES + 20) as i64,
        "{st}"
    );
    let project: Value = get(&http, &format!("{base}/api/projects/{pid}")).await.unwrap();
    assert_eq!(project["task_number"], (LINES + 20) as i64);
    // Every row exactly once.
    let export = http
        .get(format!(
            "{base}/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true"
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let tasks: Vec<Value> = serde_json::from_slice(&export).unwrap();
    let mut seen = vec![false; LINES + 20];
    for t in &tasks {
        let n = t["data"]["n"].as_u64().unwrap() as usize;
        assert!(!seen[n], "row {n} imported twice");
        seen[n] = true;
    }
    assert!(seen.iter().all(|s| *s), "every row imported");
    server.kill().unwrap();
    server.wait().unwrap();
}
