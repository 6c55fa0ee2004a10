//! Storage faults during a sync, through a proxy before the real emulator:
//! a download cut half-way resumes on a retry and is never counted as bad
//! rows; every row ends up exactly once.

use labelport_testkit::{backends, FakeGcs, FaultProxy, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const CONFIG: &str = r#"<View><Text name="text" value="$text"/></View>"#;
const LINES: usize = 5000;

#[tokio::test]
async fn a_download_cut_half_way_resumes_without_bad_rows_or_duplicates() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    for backend in backends() {
        let bucket = format!("cut-{backend:?}").to_lowercase();
        gcs.create_bucket(&bucket).await.unwrap();
        let body: String = (0..LINES)
            .map(|i| format!("{{\"text\": \"row {i}\", \"n\": {i}}}\n"))
            .collect();
        let size = body.len();
        gcs.upload(&bucket, "tasks/big.jsonl", body.into_bytes(), "application/jsonl")
            .await
            .unwrap();
        // The first download breaks after 40 % of the file.
        proxy.cut_downloads("tasks/big.jsonl", 1, size * 2 / 5);
        let app = TestApp::spawn_with_gcs_endpoint(backend, &proxy.endpoint, 1).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "cut", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "prefix": "tasks", "use_blob_urls": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let sid = st["id"].as_i64().unwrap();
        let downloads_before = proxy.downloads();
        app.post(&format!("/api/storages/gcs/{sid}/sync"), json!({})).await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{sid}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["traceback"], serde_json::Value::Null, "{done}");
        assert_eq!(done["meta"]["tasks_failed_validation"], 0, "no bad rows: {done}");
        assert!(done["meta"]["attempts"].as_i64().unwrap() >= 2, "retried: {done}");
        assert!(proxy.downloads() - downloads_before >= 2, "read again");
        assert_created_once(&done, LINES);
        // The rows read before the cut were kept, and are counted.
        assert!(
            done["meta"]["tasks_created_earlier_attempts"].as_i64().unwrap() > 0,
            "the cut attempt's tasks: {done}"
        );
        let (_, project) = app.get(&format!("/api/projects/{pid}")).await;
        assert_eq!(project["task_number"], LINES as i64, "{project}");
        assert_each_row_once(&app, pid, LINES).await;
        app.stop().await;
    }
}

const IMAGE_CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;
const OBJECTS: usize = 1500;
const TASK_FILES: usize = 30;
const ROWS_PER_FILE: usize = 40;
const ANNOTATED: usize = 50;

/// A finished import sync counts exactly `tasks` created tasks, over all
/// the attempts of its job: `last_sync_count` is the total, and the last
/// attempt's `tasks_created` plus what earlier attempts made adds up to it
/// (a retried attempt recounts nothing).
#[track_caller]
fn assert_created_once(storage: &serde_json::Value, tasks: usize) {
    let meta = &storage["meta"];
    assert_eq!(storage["last_sync_count"], tasks as i64, "last_sync_count: {storage}");
    let last = meta["tasks_created"].as_i64().unwrap();
    let earlier = meta["tasks_created_earlier_attempts"].as_i64().unwrap();
    assert_eq!(last + earlier, tasks as i64, "counted once: {meta}");
    if meta["attempts"].as_i64().unwrap_or(1) <= 1 && meta["interruptions"].as_i64().unwrap_or(0) == 0 {
        assert_eq!(earlier, 0, "one attempt carries nothing over: {meta}");
    }
}

/// The bytes the media test uploaded for a resolve URL's object:
/// `imgs/00012.png` holds `image 12`.
fn expected_media(url: &str) -> Vec<u8> {
    let raw = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("fileuri="))
        .unwrap_or_else(|| panic!("no fileuri in {url}"));
    let raw = raw.replace("%3D", "=");
    let uri = labelport_domain::resolve::decode_fileuri(&raw);
    let n: usize = uri
        .strip_prefix("gs://media/imgs/")
        .and_then(|k| k.strip_suffix(".png"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a media object: {uri} ({url})"));
    format!("image {n}").into_bytes()
}

/// Every row's `n` exactly once across the project's tasks.
async fn assert_each_row_once(app: &TestApp, pid: i64, rows: usize) {
    let export = app
        .http
        .get(format!(
            "{}/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true",
            app.base_url
        ))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&export).unwrap();
    assert_eq!(tasks.len(), rows, "task count");
    let mut seen = vec![false; rows];
    for t in &tasks {
        let n = t["data"]["n"].as_u64().unwrap() as usize;
        assert!(!seen[n], "row {n} imported twice");
        seen[n] = true;
    }
}

/// Waits until the bucket listing under `prefix` has `n` names.
async fn wait_for_object_count(gcs: &FakeGcs, bucket: &str, prefix: &str, n: usize) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let names = gcs.list(bucket, prefix).await.unwrap_or_default();
        if names.len() == n {
            return names;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{bucket}/{prefix} has {} objects, not {n}",
            names.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One request in ten of each kind (list pages, object reads, uploads) is
/// answered 429 or 503, then requests that never get an answer: a files
/// sync, a task-file sync, the media proxy and an export each end with
/// exactly the right tasks, bytes and objects, and no error is reported.
#[tokio::test]
async fn throttled_and_hanging_storage_gives_exact_results() {
    use futures::StreamExt;
    use labelport_testkit::{emulator_env, RequestKind};
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("media").await.unwrap();
    // Written straight to the emulator, before the proxy starts failing.
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let gcs = &gcs;
            async move {
                let body = format!("image {i}").into_bytes();
                gcs.upload("media", &format!("imgs/{i:05}.png"), body, "image/png")
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    for f in 0..=TASK_FILES {
        // The last file is added later, while reads hang.
        let body: String = (0..ROWS_PER_FILE)
            .map(|r| format!("{{\"image\": \"row\", \"n\": {}}}\n", f * ROWS_PER_FILE + r))
            .collect();
        let name = if f == TASK_FILES {
            "later/t.jsonl".to_owned()
        } else {
            format!("tasks/{f:03}.jsonl")
        };
        gcs.upload("media", &name, body.into_bytes(), "application/jsonl")
            .await
            .unwrap();
    }
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    for backend in backends() {
        let out = format!("out-{}", backend.name());
        gcs.create_bucket(&out).await.unwrap();
        proxy.heal();
        let all = [RequestKind::List, RequestKind::Read, RequestKind::Upload];
        proxy.throttle(&all, 10);
        let mut env = emulator_env(Some(proxy.endpoint.clone()));
        env.request_timeout = Some(std::time::Duration::from_secs(2));
        let app = TestApp::spawn_with_env(backend, env, 2).await;

        // Files mode: one task per object, over two list pages.
        let (_, p) = app
            .post("/api/projects", json!({"title": "files", "label_config": IMAGE_CONFIG}))
            .await;
        let files_project = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": files_project, "bucket": "media", "prefix": "imgs", "presign": false,
                       "use_blob_urls": true, "regex_filter": ".*\\.png"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let files_storage = st["id"].as_i64().unwrap();
        // Counting starts again: the sync's first list page is refused.
        proxy.throttle(&all, 10);
        app.post(&format!("/api/storages/gcs/{files_storage}/sync"), json!({}))
            .await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{files_storage}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["traceback"], serde_json::Value::Null, "{done}");
        assert!(proxy.throttled(RequestKind::List) >= 1, "a list page was throttled");
        let (_, project) = app.get(&format!("/api/projects/{files_project}")).await;
        assert_eq!(project["task_number"], OBJECTS as i64, "{project}");
        assert_created_once(&done, OBJECTS);

        // Tasks mode: every row of every file exactly once, none bad.
        let (_, p) = app
            .post("/api/projects", json!({"title": "rows", "label_config": IMAGE_CONFIG}))
            .await;
        let rows_project = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": rows_project, "bucket": "media", "prefix": "tasks", "use_blob_urls": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let rows_storage = st["id"].as_i64().unwrap();
        proxy.throttle(&all, 10);
        app.post(&format!("/api/storages/gcs/{rows_storage}/sync"), json!({}))
            .await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{rows_storage}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["traceback"], serde_json::Value::Null, "{done}");
        assert_eq!(done["meta"]["tasks_failed_validation"], 0, "no bad rows: {done}");
        assert!(proxy.throttled(RequestKind::Read) >= 3, "file reads were throttled");
        assert_each_row_once(&app, rows_project, TASK_FILES * ROWS_PER_FILE).await;
        assert_created_once(&done, TASK_FILES * ROWS_PER_FILE);

        // The media proxy: every object's bytes, whole.
        let (_, list) = app
            .get(&format!("/api/tasks?project={files_project}&page_size=40"))
            .await;
        proxy.throttle(&all, 10);
        for task in list["tasks"].as_array().unwrap() {
            let url = task["data"]["image"].as_str().unwrap();
            assert!(url.starts_with("/tasks/"), "{url}");
            let r = app.get_raw(url).await;
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            let body = r.bytes().await.unwrap();
            assert_eq!(body.as_ref(), expected_media(url).as_slice(), "{url}: {body:?}");
        }
        assert!(proxy.throttled(RequestKind::Read) >= 4, "media reads were throttled");

        // Export: one object per annotation, none missing, none extra. The
        // annotations are saved first, so the full sync that creating the
        // storage starts writes all of them (no background run before it).
        for task in list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .chain(list["tasks"].as_array().unwrap())
            .take(ANNOTATED)
        {
            let (s, a) = app
                .post(
                    &format!("/api/tasks/{}/annotations/", task["id"]),
                    json!({"result": [{"from_name": "c", "to_name": "image", "type": "choices",
                                       "value": {"choices": ["a"]}}]}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{a}");
        }
        proxy.throttle(&all, 10);
        let (s, st) = app
            .post(
                "/api/storages/export/gcs",
                json!({"project": files_project, "bucket": out, "prefix": "ann"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let export_storage = st["id"].as_i64().unwrap();
        let done = app
            .wait_for_sync(&format!("/api/storages/export/gcs/{export_storage}"))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["traceback"], serde_json::Value::Null, "{done}");
        // Retried uploads are counted once: exactly one write per annotation.
        assert_eq!(done["last_sync_count"], ANNOTATED as i64, "{done}");
        assert_eq!(done["meta"]["total_annotations"], ANNOTATED as i64, "{done}");
        wait_for_object_count(&gcs, &out, "ann", ANNOTATED).await;
        assert!(proxy.throttled(RequestKind::Upload) >= 5, "uploads were throttled");
        // A sync asked for again finds nothing left to write.
        app.post(&format!("/api/storages/export/gcs/{export_storage}/sync"), json!(null))
            .await;
        let done = app
            .wait_for_sync(&format!("/api/storages/export/gcs/{export_storage}"))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 0, "nothing written twice: {done}");
        assert_eq!(gcs.list(&out, "ann").await.unwrap().len(), ANNOTATED);

        // Requests that never get an answer time out (2 s here) and are tried again.
        proxy.heal();
        let hung = proxy.hung();
        proxy.hang(RequestKind::List, 1);
        app.post(&format!("/api/storages/gcs/{files_storage}/sync"), json!({}))
            .await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{files_storage}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        let (_, project) = app.get(&format!("/api/projects/{files_project}")).await;
        assert_eq!(project["task_number"], OBJECTS as i64, "{project}");
        assert_created_once(&done, 0);

        proxy.hang(RequestKind::Read, 1);
        let (s, _) = app
            .patch(
                &format!("/api/storages/gcs/{rows_storage}"),
                json!({"prefix": "", "recursive_scan": true, "regex_filter": "(tasks|later)/.*\\.jsonl"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        app.post(&format!("/api/storages/gcs/{rows_storage}/sync"), json!({}))
            .await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{rows_storage}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["traceback"], serde_json::Value::Null, "{done}");
        assert_each_row_once(&app, rows_project, (TASK_FILES + 1) * ROWS_PER_FILE).await;
        assert_created_once(&done, ROWS_PER_FILE);

        proxy.hang(RequestKind::Upload, 1);
        let extra = list["tasks"][0]["id"].as_i64().unwrap();
        let (s, _) = app
            .post(
                &format!("/api/tasks/{extra}/annotations/"),
                json!({"result": [{"from_name": "c", "to_name": "image", "type": "choices",
                                   "value": {"choices": ["a"]}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        wait_for_object_count(&gcs, &out, "ann", ANNOTATED + 1).await;
        assert_eq!(proxy.hung() - hung, 3, "a list, a read and an upload were left hanging");
        app.stop().await;
    }
}
