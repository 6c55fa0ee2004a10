//! Several processes on one PostgreSQL database (skipped, saying so, when
//! `LABELPORT_TEST_DATABASE_URL` is not set): two `labelport serve` and one
//! `labelport worker`. Sync calls for one storage sent to both servers at
//! once make one job; the process running a 20,000-object sync is killed
//! with SIGKILL half-way and another one finishes it with the exact task
//! count, which the storage's `last_sync_count` shows too (both attempts'
//! tasks, each once). Then every process is restarted in turn (SIGTERM,
//! start again; the one running the sync first) while a second sync runs,
//! an explicit export sync is asked for and annotations are saved and
//! exported: every save answered 201 is in the database and in the bucket
//! exactly once, and the sync, interrupted by a restart, ends with the
//! exact count.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use labelport_domain::storage::Direction;
use labelport_testkit::{Backend, FakeGcs, FaultProxy, RequestKind, TestDb};
use serde_json::{json, Value};

const TOKEN: &str = "c1a55e7c1a55e7c1a55e7c1a55e7c1a55e7c1a55";
/// 32 bytes, base64: every process of one database needs the same key.
const SECRET_KEY: &str = "Y2x1c3Rlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nISE=";
const OBJECTS: usize = 20_000;
const CONFIG: &str =
    r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Serve(u16),
    /// With its metrics port.
    Worker(u16),
}

/// One process of the cluster; its log goes to `<logs>/<name>-<n>.log`.
struct Node {
    name: &'static str,
    kind: Kind,
    child: Child,
    starts: usize,
}

struct Cluster {
    db_url: String,
    gcs: String,
    logs: tempfile::TempDir,
    nodes: Vec<Node>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn spawn(&self, name: &str, kind: Kind, starts: usize) -> Child {
        let log = std::fs::File::create(self.logs.path().join(format!("{name}-{starts}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelport"));
        match kind {
            Kind::Serve(port) => cmd.args(["serve", "--port", &port.to_string(), "--workers", "1"]),
            Kind::Worker(metrics) => cmd.args([
                "worker",
                "--workers",
                "1",
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
            ]),
        };
        cmd.env("DATABASE_URL", &self.db_url)
            .env("LABELPORT_SECRET_KEY", SECRET_KEY)
            .env("LABELPORT_DATA_DIR", self.logs.path().join(format!("data-{name}")))
            .env("STORAGE_EMULATOR_HOST", &self.gcs)
            .env("LABELPORT_JOB_LEASE_SECS", "3")
            .env("LABELPORT_JOB_GRACE_SECS", "5")
            .env("LABELPORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("labelport starts")
    }

    fn start(&mut self, name: &'static str, kind: Kind) {
        let child = self.spawn(name, kind, 0);
        self.nodes.push(Node {
            name,
            kind,
            child,
            starts: 1,
        });
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn restart(&mut self, name: &str) {
        let (kind, starts) = {
            let n = self.node(name);
            (n.kind, n.starts)
        };
        let child = self.spawn(name, kind, starts);
        let n = self.node(name);
        n.child = child;
        n.starts += 1;
    }

    /// The node whose process id is `pid`.
    fn by_pid(&self, pid: u32) -> Option<&'static str> {
        self.nodes.iter().find(|n| n.child.id() == pid).map(|n| n.name)
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!("--- {}\n", entry.path().display()));
                for l in &lines[lines.len().saturating_sub(15)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

fn base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

async fn wait_up(http: &reqwest::Client, port: u16) {
    let started = Instant::now();
    while !http
        .get(format!("{}/health", base(port)))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server on {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request to the first of `ports` that answers (a server that is down
/// or restarting is skipped, as a load balancer would).
async fn call(
    http: &reqwest::Client,
    ports: &[u16],
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let started = Instant::now();
    loop {
        for port in ports {
            let mut req = http
                .request(method.clone(), format!("{}{path}", base(*port)))
                .header("Authorization", format!("Token {TOKEN}"));
            if let Some(b) = &body {
                req = req.json(b);
            }
            if let Ok(r) = req.send().await {
                let status = r.status().as_u16();
                let value = r.json().await.unwrap_or(Value::Null);
                return (status, value);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no server answers {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The project's task count, from whichever server answers.
async fn task_number(http: &reqwest::Client, ports: &[u16], project: i64) -> i64 {
    let (_, p) = call(
        http,
        ports,
        reqwest::Method::GET,
        &format!("/api/projects/{project}"),
        None,
    )
    .await;
    p["task_number"].as_i64().unwrap()
}

async fn wait_completed(http: &reqwest::Client, ports: &[u16], storage: i64, limit: Duration) -> Value {
    wait_storage_completed(http, ports, &format!("/api/storages/gcs/{storage}"), limit).await
}

/// Polls a storage (`path`, either direction) until it is `completed`.
async fn wait_storage_completed(http: &reqwest::Client, ports: &[u16], path: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (_, st) = call(http, ports, reqwest::Method::GET, path, None).await;
        if st["status"] == "completed" {
            return st;
        }
        assert_ne!(st["status"], "failed", "{st}");
        assert!(started.elapsed() < limit, "sync not done: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop(node: &mut Node, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    while node.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{} did not stop on {signal}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn upload_objects(gcs: &FakeGcs, bucket: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let body = format!("object {i}").into_bytes();
            gcs.upload(bucket, &format!("o/{i:05}.txt"), body, "text/plain")
                .await
                .unwrap();
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn two_servers_and_a_worker_share_syncs_survive_kill_and_rolling_restart() {
    if std::env::var("LABELPORT_TEST_DATABASE_URL").map_or(true, |u| !u.starts_with("postgres")) {
        eprintln!("skipped: several processes share one database only on PostgreSQL (set LABELPORT_TEST_DATABASE_URL)");
        return;
    }
    let test_db = TestDb::new(Backend::Postgres).await.unwrap();
    test_db
        .db
        .ensure_user(
            "admin@example.com",
            "pw",
            TOKEN,
            Some(labelport_domain::access::Role::Admin),
        )
        .await
        .unwrap();
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("many").await.unwrap();
    gcs.create_bucket("many-out").await.unwrap();
    let uploading = Instant::now();
    upload_objects(&gcs, "many", OBJECTS).await;
    eprintln!(
        "{OBJECTS} objects uploaded in {:.1} s",
        uploading.elapsed().as_secs_f64()
    );
    // A slow bucket: each list page of 1,000 takes 0.4 s more, so the sync
    // lasts long enough to be killed half-way.
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    proxy.slow(RequestKind::List, Duration::from_millis(400));

    let (a, b) = (free_port(), free_port());
    let mut cluster = Cluster {
        db_url: test_db.url.clone(),
        gcs: proxy.endpoint.clone(),
        logs: tempfile::tempdir().unwrap(),
        nodes: Vec::new(),
    };
    cluster.start("serve-a", Kind::Serve(a));
    cluster.start("serve-b", Kind::Serve(b));
    let worker_metrics = free_port();
    cluster.start("worker", Kind::Worker(worker_metrics));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    wait_up(&http, a).await;
    wait_up(&http, b).await;
    let both = [a, b];

    let (s, p) = call(
        &http,
        &[a],
        reqwest::Method::POST,
        "/api/projects",
        Some(json!({"title": "c", "label_config": CONFIG})),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_i64().unwrap();
    let storage_body = json!({"project": pid, "bucket": "many", "prefix": "o", "use_blob_urls": true});
    let (s, st) = call(
        &http,
        &[b],
        reqwest::Method::POST,
        "/api/storages/gcs",
        Some(storage_body),
    )
    .await;
    assert_eq!(s, 201, "{st}");
    let sid = st["id"].as_i64().unwrap();

    // Sync asked of both servers at once (the worker has no HTTP side): one job.
    let sync_path = format!("/api/storages/gcs/{sid}/sync");
    let targets = [[a], [b], [a], [b]];
    let answers = futures::future::join_all(
        targets
            .iter()
            .map(|port| call(&http, port, reqwest::Method::POST, &sync_path, None)),
    )
    .await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let jobs = test_db.db.count_jobs_by_kind().await.unwrap();
    let import_jobs: i64 = jobs
        .iter()
        .filter(|(k, _, _)| k == "import_sync")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(import_jobs, 1, "one job for four sync calls: {jobs:?}");
    let job_id = test_db
        .db
        .active_job(&Direction::Import.dedup_key(sid))
        .await
        .unwrap()
        .expect("the sync's job")
        .id;

    // Kill -9 whichever process runs the sync once it is under way.
    let started = Instant::now();
    let victim = loop {
        let (_, st) = call(
            &http,
            &both,
            reqwest::Method::GET,
            &format!("/api/storages/gcs/{sid}"),
            None,
        )
        .await;
        assert_ne!(st["status"], "completed", "the sync ended before it could be killed");
        let holder = test_db.db.get_job(job_id).await.unwrap().locked_by;
        let done = st["last_sync_count"].as_i64().unwrap_or(0);
        // Half-way: at least half the tasks made, the sync still running.
        if let (Some(holder), true) = (holder, st["status"] == "in_progress" && done >= (OBJECTS / 2) as i64) {
            let pid: u32 = holder.split('-').next().unwrap().parse().unwrap();
            break cluster.by_pid(pid).expect("a cluster process holds the job");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress: {st}\n{}",
            cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop(cluster.node(victim), "-KILL").await;
    let partial = task_number(&http, &both, pid).await;
    eprintln!("killed {victim} with {partial} of {OBJECTS} tasks made");
    assert!(partial < OBJECTS as i64, "killed before the end: {partial}");

    // Another process takes the job over once its lease (3 s) ran out.
    let done = wait_completed(&http, &both, sid, Duration::from_secs(180)).await;
    assert_eq!(
        task_number(&http, &both, pid).await,
        OBJECTS as i64,
        "exact count after the takeover: {done}"
    );
    // The storage counts what both attempts made, each task once.
    assert_eq!(done["last_sync_count"], OBJECTS as i64, "{done}");
    let earlier = done["meta"]["tasks_created_earlier_attempts"].as_i64().unwrap();
    assert!(
        earlier >= (OBJECTS / 2) as i64,
        "the killed attempt's tasks are counted: {done}"
    );
    assert_eq!(
        earlier + done["meta"]["tasks_created"].as_i64().unwrap(),
        OBJECTS as i64,
        "{done}"
    );
    // The storage shows `completed` just before its job is marked done.
    let started = Instant::now();
    let job = loop {
        let job = test_db.db.get_job(job_id).await.unwrap();
        if job.status != "running" || started.elapsed() > Duration::from_secs(30) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(job.taken_over && job.interruptions >= 1, "taken over: {job:?}");
    assert_eq!(
        (job.status.as_str(), job.attempts),
        ("done", 1),
        "the kill cost no attempt: {job:?}"
    );
    // The takeover is counted by the process that took the job over (the
    // killed one's counters died with it); the worker serves its metrics
    // without credentials on its own address.
    let mut takeovers = 0.0;
    for name in ["serve-a", "serve-b", "worker"].into_iter().filter(|n| *n != victim) {
        let (url, token) = match cluster.node(name).kind {
            Kind::Serve(port) => (format!("{}/metrics", base(port)), Some(TOKEN)),
            Kind::Worker(port) => (format!("http://127.0.0.1:{port}/metrics"), None),
        };
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        let text = req
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("labelport_jobs{"), "{name}: {text}");
        takeovers += text
            .lines()
            .find_map(|l| l.strip_prefix("labelport_job_takeovers_total{kind=\"import_sync\"} "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
    }
    assert!(takeovers >= 1.0, "the takeover is in /metrics");
    cluster.restart(victim);
    for port in both {
        wait_up(&http, port).await;
    }

    // Rolling restart while a second sync runs and saves are exported.
    proxy.slow(RequestKind::List, Duration::from_millis(250));
    let (_, p2) = call(
        &http,
        &both,
        reqwest::Method::POST,
        "/api/projects",
        Some(json!({"title": "c2", "label_config": CONFIG})),
    )
    .await;
    let pid2 = p2["id"].as_i64().unwrap();
    let (s, st2) = call(
        &http,
        &both,
        reqwest::Method::POST,
        "/api/storages/gcs",
        Some(json!({"project": pid2, "bucket": "many", "prefix": "o", "use_blob_urls": true})),
    )
    .await;
    assert_eq!(s, 201, "{st2}");
    let sid2 = st2["id"].as_i64().unwrap();
    let (s, ex) = call(
        &http,
        &both,
        reqwest::Method::POST,
        "/api/storages/export/gcs",
        Some(json!({"project": pid, "bucket": "many-out", "prefix": "ann"})),
    )
    .await;
    assert_eq!(s, 201, "{ex}");
    let ex_id = ex["id"].as_i64().unwrap();
    let (s, _) = call(
        &http,
        &both,
        reqwest::Method::POST,
        &format!("/api/storages/gcs/{sid2}/sync"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let job2 = test_db
        .db
        .active_job(&Direction::Import.dedup_key(sid2))
        .await
        .unwrap()
        .expect("the second sync's job")
        .id;
    let (_, page) = call(
        &http,
        &both,
        reqwest::Method::GET,
        &format!("/api/tasks?project={pid}&page_size=200"),
        None,
    )
    .await;
    let tasks: Vec<i64> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();

    // A client saving annotations all along, through whichever server answers.
    let saved = Arc::new(Mutex::new(Vec::<i64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let client = {
        let (http, saved, failures, running, tasks) = (
            http.clone(),
            saved.clone(),
            failures.clone(),
            running.clone(),
            tasks.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let task = tasks[i % tasks.len()];
                let order = if i % 2 == 0 { [a, b] } else { [b, a] };
                let body = json!({"result": [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]});
                let (s, v) = call(
                    &http,
                    &order,
                    reqwest::Method::POST,
                    &format!("/api/tasks/{task}/annotations/"),
                    Some(body),
                )
                .await;
                if s == 201 {
                    saved.lock().unwrap().push(v["id"].as_i64().unwrap());
                } else {
                    failures.lock().unwrap().push(format!("{s} {v}"));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The process running the sync goes first, so the sync spans a restart.
    let started = Instant::now();
    let holder = loop {
        if let Some(holder) = test_db.db.get_job(job2).await.unwrap().locked_by {
            let pid: u32 = holder.split('-').next().unwrap().parse().unwrap();
            break cluster.by_pid(pid).expect("a cluster process holds the job");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the second sync did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut order = vec![holder];
    order.extend(["serve-a", "worker", "serve-b"].into_iter().filter(|n| *n != holder));
    for (step, name) in order.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop(cluster.node(name), "-TERM").await;
        cluster.restart(name);
        if let Kind::Serve(port) = cluster.node(name).kind {
            wait_up(&http, port).await;
        }
        if step == 1 {
            // An explicit full export sync while processes come and go.
            let (s, st) = call(
                &http,
                &both,
                reqwest::Method::POST,
                &format!("/api/storages/export/gcs/{ex_id}/sync"),
                None,
            )
            .await;
            assert_eq!(s, 200, "{st}");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    client.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "saves refused during the restarts: {failures:?}");
    let saved: BTreeSet<i64> = saved.lock().unwrap().iter().copied().collect();
    assert!(saved.len() >= 20, "the client kept saving: {}", saved.len());

    let done = wait_completed(&http, &both, sid2, Duration::from_secs(180)).await;
    assert_eq!(
        task_number(&http, &both, pid2).await,
        OBJECTS as i64,
        "exact count across restarts: {done}"
    );
    assert_eq!(
        done["last_sync_count"], OBJECTS as i64,
        "counted once across restarts: {done}"
    );
    assert!(
        done["meta"]["interruptions"].as_i64().unwrap() >= 1,
        "the sync was interrupted by a restart: {done}"
    );
    let started = Instant::now();
    let job = loop {
        let job = test_db.db.get_job(job2).await.unwrap();
        if job.status != "running" || started.elapsed() > Duration::from_secs(30) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(job.interruptions >= 1, "the restarts interrupted the sync: {job:?}");
    assert_eq!(job.status, "done", "{job:?}");

    // Every save is in the database and, once exported, in the bucket exactly once.
    let (_, export) = call(
        &http,
        &both,
        reqwest::Method::GET,
        &format!("/api/projects/{pid}/export?exportType=JSON"),
        None,
    )
    .await;
    let stored: BTreeSet<i64> = export
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(stored, saved, "every save, once, in the database");
    let expected: BTreeSet<String> = saved.iter().map(|id| format!("ann/{id}")).collect();
    let started = Instant::now();
    loop {
        let names: BTreeSet<String> = gcs.list("many-out", "ann").await.unwrap().into_iter().collect();
        if names == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "exported {} of {}; extra: {:?}\n{}",
            names.intersection(&expected).count(),
            expected.len(),
            names.difference(&expected).collect::<Vec<_>>(),
            cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The explicit export sync ended well, and wrote nothing extra.
    let exported = wait_storage_completed(
        &http,
        &both,
        &format!("/api/storages/export/gcs/{ex_id}"),
        Duration::from_secs(60),
    )
    .await;
    assert!(exported["traceback"].is_null(), "{exported}");
    let names = gcs.list("many-out", "ann").await.unwrap();
    assert_eq!(names.len(), saved.len(), "one object per save, none extra");
    eprintln!("{} saves exported across a rolling restart", saved.len());
    drop(cluster);
    test_db.drop_database().await;
}
