//! GCS export storages against the real emulator (fake-gcs-server), on
//! SQLite and (when configured) PostgreSQL.

use std::time::{Duration, Instant};

use labelport_domain::storage::Direction;
use labelport_testkit::{backends, FakeGcs, FaultProxy, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>"#;

fn result(choice: &str) -> Value {
    json!([{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}])
}

/// A service-account key (Google's conformance test key) that signs URLs
/// locally: with it, a storage on the anonymous emulator signs media as
/// on GCS instead of serving them through the proxy.
fn signing_key() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/test_service_account.not-a-test.json"
    ))
    .expect("testdata/conformance in the repository")
}

async fn emulator(buckets: &[&str]) -> FakeGcs {
    let gcs = FakeGcs::start()
        .await
        .expect("fake-gcs-server (run ./scripts/test to install it)");
    for b in buckets {
        gcs.create_bucket(b).await.unwrap();
    }
    gcs
}

/// A project with `n` tasks; returns (project id, task ids).
async fn project_with_tasks(app: &TestApp, n: usize) -> (i64, Vec<i64>) {
    let (s, p) = app
        .post("/api/projects", json!({"title": "export", "label_config": CONFIG}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_i64().unwrap();
    let tasks: Vec<Value> = (0..n).map(|i| json!({"text": format!("task {i}")})).collect();
    let (s, r) = app.post(&format!("/api/projects/{pid}/import"), json!(tasks)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (_, list) = app.get(&format!("/api/tasks?project={pid}&page_size=1000")).await;
    let ids = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    (pid, ids)
}

async fn annotate(app: &TestApp, task: i64, choice: &str) -> i64 {
    let (s, a) = app
        .post(
            &format!("/api/tasks/{task}/annotations/"),
            json!({"result": result(choice), "lead_time": 1.0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    a["id"].as_i64().unwrap()
}

async fn create_export(app: &TestApp, body: Value) -> Value {
    let (s, st) = app.post("/api/storages/export/gcs", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{body} -> {st}");
    st
}

async fn sync(app: &TestApp, id: i64) -> Value {
    let (s, st) = app
        .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    app.wait_for_sync(&format!("/api/storages/export/gcs/{id}")).await
}

/// Waits until `check` holds for the bucket listing under `prefix`.
async fn wait_for_objects(gcs: &FakeGcs, bucket: &str, prefix: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let mut names = gcs.list(bucket, prefix).await.unwrap_or_default();
        names.sort();
        if check(&names) {
            return names;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bucket {bucket}/{prefix} never reached the expected state: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn object_json(gcs: &FakeGcs, bucket: &str, name: &str) -> Value {
    let (body, content_type) = gcs.download(bucket, name).await.unwrap();
    assert_eq!(content_type, "application/json", "{name}");
    serde_json::from_slice(&body).unwrap()
}

/// Waits until the object holds an annotation (or task) satisfying `check`.
async fn wait_for_content(gcs: &FakeGcs, bucket: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Ok((body, _)) = gcs.download(bucket, name).await {
            let v: Value = serde_json::from_slice(&body).unwrap();
            if check(&v) {
                return v;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} never got the expected content"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn export_storage_api_create_sync_and_saves() {
    let gcs = emulator(&["out"]).await;
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (pid, tasks) = project_with_tasks(&app, 3).await;
        let mut annotations = Vec::new();
        for t in &tasks {
            annotations.push(annotate(&app, *t, "a").await);
        }
        let prefix = format!("exp-{}", backend.name());
        let key_file = labelport_testkit::test_service_account_key();
        let secret_key = key_file.as_str();
        let secret = labelport_testkit::private_key_piece(secret_key);

        // Bad input: a 400 naming the problem, nothing created.
        for (body, needle) in [
            (json!({"project": pid}), "bucket"),
            (
                json!({"project": pid, "bucket": "out", "export_format": "csv"}),
                "export_format",
            ),
            (
                json!({"project": pid, "bucket": "out", "google_application_credentials": "not json"}),
                "google_application_credentials",
            ),
            (json!({"project": pid, "bucket": "no-such-bucket"}), "no-such-bucket"),
            (json!({"bucket": "out"}), "project"),
            (json!({"project": 999999, "bucket": "out"}), "project"),
        ] {
            let (s, e) = app.post("/api/storages/export/gcs", body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {e}");
            assert!(e.to_string().contains(needle), "{body} -> {e}");
            assert!(!e.to_string().contains(&secret));
            let (s, _) = app.post("/api/storages/export/gcs/validate", body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "validate {body}");
        }
        let (_, list) = app.get(&format!("/api/storages/export/gcs?project={pid}")).await;
        assert_eq!(list, json!([]));

        // The SDK's validate body (no response data expected).
        let sdk_body = json!({"bucket": "out", "can_delete_objects": false, "description": "desc",
            "google_application_credentials": "", "google_project_id": "", "prefix": format!("{prefix}/"),
            "project": pid, "regex_filter": "", "title": "calls-export", "use_blob_urls": false});
        let (s, _) = app.post("/api/storages/export/gcs/validate", sdk_body.clone()).await;
        assert_eq!(s, StatusCode::OK);

        // Create: answers at once, queued; then exports what exists.
        let st = create_export(&app, sdk_body.clone()).await;
        let id = st["id"].as_i64().unwrap();
        assert_eq!(st["type"], "gcs");
        assert_eq!(st["can_delete_objects"], false);
        assert!(st.get("google_application_credentials").is_none());
        assert!(
            matches!(st["status"].as_str(), Some("queued" | "in_progress" | "completed")),
            "{st}"
        );
        let done = app.wait_for_sync(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 3);
        assert_eq!(done["meta"]["total_annotations"], 3);
        // Prefix "exp/" and the key joined by exactly one slash; the write
        // check left nothing behind.
        let names = gcs.list("out", &prefix).await.unwrap();
        let mut expected: Vec<String> = annotations.iter().map(|a| format!("{prefix}/{a}")).collect();
        expected.sort();
        let mut names_sorted = names.clone();
        names_sorted.sort();
        assert_eq!(names_sorted, expected);
        let obj = object_json(&gcs, "out", &format!("{prefix}/{}", annotations[0])).await;
        assert_eq!(obj["id"].as_i64(), Some(annotations[0]));
        assert_eq!(obj["result"], result("a"));
        assert_eq!(obj["task"]["id"].as_i64(), Some(tasks[0]));
        assert_eq!(obj["task"]["data"]["text"], "task 0");
        assert!(obj["task"].get("annotations").is_none());
        assert_eq!(obj["completed_by"]["email"], "tester@example.com", "{obj}");
        assert_eq!(obj["project"].as_i64(), Some(pid));

        // A sync with nothing new writes nothing.
        let again = sync(&app, id).await;
        assert_eq!(again["status"], "completed");
        assert_eq!(again["last_sync_count"], 0, "{again}");

        // Saves are exported in the background: an update, then a new one.
        let (s, _) = app
            .patch(
                &format!("/api/annotations/{}", annotations[1]),
                json!({"result": result("b")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        wait_for_content(&gcs, "out", &format!("{prefix}/{}", annotations[1]), |v| {
            v["result"] == result("b")
        })
        .await;
        let extra = annotate(&app, tasks[0], "b").await;
        wait_for_objects(&gcs, "out", &prefix, |n| n.len() == 4).await;
        wait_for_content(&gcs, "out", &format!("{prefix}/{extra}"), |v| {
            v["id"].as_i64() == Some(extra)
        })
        .await;
        // …so a manual sync finds nothing left to write.
        let after_saves = sync(&app, id).await;
        assert_eq!(after_saves["last_sync_count"], 0, "{after_saves}");
        let links = app.db().export_links_of_annotation(annotations[1]).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].2, 2, "exported version of an annotation updated once");
        assert!(!links[0].3, "not dirty");

        // Without can_delete_objects, deleting an annotation keeps its object.
        let (s, _) = app.delete(&format!("/api/annotations/{extra}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        app.run_jobs().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(gcs
            .list("out", &prefix)
            .await
            .unwrap()
            .contains(&format!("{prefix}/{extra}")));

        // Get, list, patch, put (the key is kept), delete.
        let (s, got) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got["title"], "calls-export");
        let (_, list) = app.get(&format!("/api/storages/export/gcs?project={pid}")).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        let (s, patched) = app
            .patch(
                &format!("/api/storages/export/gcs/{id}"),
                json!({"title": "calls-export-2"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{patched}");
        assert_eq!(patched["title"], "calls-export-2");
        assert_eq!(patched["prefix"], format!("{prefix}/"));
        let (s, e) = app
            .patch(
                &format!("/api/storages/export/gcs/{id}"),
                json!({"bucket": "no-such-bucket"}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "a new bucket is checked: {e}");
        let (s, e) = app
            .patch(
                &format!("/api/storages/export/gcs/{id}"),
                json!({"google_application_credentials": "{\"type\":\"authorized_user\"}"}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e.to_string().contains("google_application_credentials"), "{e}");
        // A key is stored but never shown (the emulator ignores it).
        let (s, with_key) = app
            .patch(
                &format!("/api/storages/export/gcs/{id}"),
                json!({"google_application_credentials": secret_key}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{with_key}");
        assert!(!with_key.to_string().contains(&secret), "{with_key}");
        let (_, shown) = app.get(&format!("/api/storages/export/gcs?project={pid}")).await;
        assert!(!shown.to_string().contains(&secret), "{shown}");
        let (s, put) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/storages/export/gcs/{id}"),
                Some(json!({"bucket": "out", "prefix": format!("{prefix}/"), "title": "put"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{put}");
        assert_eq!(put["title"], "put");
        assert_eq!(put["description"], "");
        let (s, _) = app.delete(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(gcs.list("out", &prefix).await.unwrap().len(), 4, "objects stay");
        // Saves go on working without a storage.
        annotate(&app, tasks[2], "a").await;
        app.stop().await;
    }
}

#[tokio::test]
async fn deletions_follow_can_delete_objects() {
    let gcs = emulator(&["del"]).await;
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (pid, tasks) = project_with_tasks(&app, 3).await;
        let a0 = annotate(&app, tasks[0], "a").await;
        let a1 = annotate(&app, tasks[1], "a").await;
        let a1b = annotate(&app, tasks[1], "b").await;
        let a2 = annotate(&app, tasks[2], "a").await;
        let base = backend.name().to_string();
        let deleting = create_export(
            &app,
            json!({"project": pid, "bucket": "del", "prefix": format!("{base}/yes"), "can_delete_objects": true}),
        )
        .await;
        let keeping = create_export(
            &app,
            json!({"project": pid, "bucket": "del", "prefix": format!("{base}/no")}),
        )
        .await;
        for st in [&deleting, &keeping] {
            let done = app
                .wait_for_sync(&format!("/api/storages/export/gcs/{}", st["id"]))
                .await;
            assert_eq!(done["last_sync_count"], 4, "{done}");
        }
        let yes = format!("{base}/yes/");
        let no = format!("{base}/no/");

        // One annotation.
        let (s, _) = app.delete(&format!("/api/annotations/{a0}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        wait_for_objects(&gcs, "del", &yes, |n| {
            n.len() == 3 && !n.contains(&format!("{yes}{a0}"))
        })
        .await;
        // A task: both its annotations.
        let (s, _) = app.delete(&format!("/api/tasks/{}", tasks[1])).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let left = wait_for_objects(&gcs, "del", &yes, |n| n.len() == 1).await;
        assert_eq!(left, vec![format!("{yes}{a2}")]);
        assert!(!left.contains(&format!("{yes}{a1}")) && !left.contains(&format!("{yes}{a1b}")));
        // The project: the rest, and the storages go with it.
        let (s, _) = app.delete(&format!("/api/projects/{pid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        wait_for_objects(&gcs, "del", &yes, |n| n.is_empty()).await;
        // The storage without can_delete_objects kept all four.
        assert_eq!(gcs.list("del", &no).await.unwrap().len(), 4);
        let started = Instant::now();
        loop {
            let left: i64 = match &app.db().pool {
                labelport_db::Pool::Sqlite { read, .. } => {
                    labelport_db::sqlx_reexport::query_scalar("SELECT COUNT(*) FROM export_storages")
                        .fetch_one(read)
                        .await
                        .unwrap()
                }
                labelport_db::Pool::Postgres(p) => {
                    labelport_db::sqlx_reexport::query_scalar("SELECT COUNT(*) FROM export_storages")
                        .fetch_one(p)
                        .await
                        .unwrap()
                }
            };
            if left == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{left} export storages left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn task_format_one_object_per_task() {
    let gcs = emulator(&["tasks"]).await;
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (pid, tasks) = project_with_tasks(&app, 2).await;
        let a = annotate(&app, tasks[0], "a").await;
        let b = annotate(&app, tasks[0], "b").await;
        annotate(&app, tasks[1], "a").await;
        let prefix = backend.name().to_string();
        let st = create_export(
            &app,
            json!({"project": pid, "bucket": "tasks", "prefix": prefix, "export_format": "task", "can_delete_objects": true}),
        )
        .await;
        assert_eq!(st["export_format"], "task");
        let done = app
            .wait_for_sync(&format!("/api/storages/export/gcs/{}", st["id"]))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        let names = gcs.list("tasks", &format!("{prefix}/")).await.unwrap();
        let mut expected = vec![
            format!("{prefix}/{}.json", tasks[0]),
            format!("{prefix}/{}.json", tasks[1]),
        ];
        expected.sort();
        let mut names = names;
        names.sort();
        assert_eq!(names, expected);
        let t0 = format!("{prefix}/{}.json", tasks[0]);
        let obj = object_json(&gcs, "tasks", &t0).await;
        assert_eq!(obj["id"].as_i64(), Some(tasks[0]));
        assert_eq!(obj["data"]["text"], "task 0");
        let anns = obj["annotations"].as_array().unwrap();
        assert_eq!(anns.len(), 2);
        assert_eq!(anns[0]["completed_by"]["email"], "tester@example.com");

        // Deleting one of two annotations rewrites the task's object…
        let (s, _) = app.delete(&format!("/api/annotations/{a}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let obj = wait_for_content(&gcs, "tasks", &t0, |v| {
            v["annotations"].as_array().map(Vec::len) == Some(1)
        })
        .await;
        assert_eq!(obj["annotations"][0]["id"].as_i64(), Some(b));
        // …deleting the last one deletes it.
        let (s, _) = app.delete(&format!("/api/annotations/{b}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        wait_for_objects(&gcs, "tasks", &format!("{prefix}/"), |n| n.len() == 1).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn failed_uploads_are_retried_reported_and_written_later() {
    let gcs = emulator(&["flaky"]).await;
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    for backend in backends() {
        // No workers: jobs run when the test says, so the order is exact.
        let app = TestApp::spawn_with_gcs_endpoint(backend, &proxy.endpoint, 0).await;
        let (pid, tasks) = project_with_tasks(&app, 3).await;
        let mut ids = Vec::new();
        for t in &tasks {
            ids.push(annotate(&app, *t, "a").await);
        }
        let prefix = backend.name().to_string();

        // No permission to write: create and validate refuse, naming it.
        proxy.fail_uploads_with(".labelport-write-check", 1, 403);
        let (s, e) = app
            .post(
                "/api/storages/export/gcs",
                json!({"project": pid, "bucket": "flaky", "prefix": prefix}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let said = e["validation_errors"]["google_application_credentials"][0]
            .as_str()
            .unwrap_or_default();
        assert!(
            said.contains("may not write objects to gs://flaky")
                && said.contains("Next step: grant it Storage Object User (roles/storage.objectUser)"),
            "{e}"
        );
        let (_, list) = app.get(&format!("/api/storages/export/gcs?project={pid}")).await;
        assert_eq!(list, json!([]), "nothing created");
        proxy.heal();

        // Two failures, then success: retried with backoff inside the sync.
        proxy.fail_uploads(&format!("{prefix}/{}", ids[0]), 2);
        let failed_before = proxy.failed_uploads();
        let st = create_export(&app, json!({"project": pid, "bucket": "flaky", "prefix": prefix})).await;
        let id = st["id"].as_i64().unwrap();
        assert_eq!(st["status"], "queued");
        app.run_jobs().await;
        let (_, done) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 3);
        assert_eq!(proxy.failed_uploads() - failed_before, 2);

        // One object keeps failing: the sync ends completed_with_errors
        // naming it, counts only what was written, and keeps the old object.
        proxy.fail_uploads(&format!("{prefix}/{}", ids[1]), u64::MAX);
        for a in &ids[1..] {
            let (s, _) = app
                .patch(&format!("/api/annotations/{a}"), json!({"result": result("b")}))
                .await;
            assert_eq!(s, StatusCode::OK);
        }
        app.run_jobs().await; // the background run: one written, one left dirty
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, partial) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(partial["status"], "completed_with_errors", "{partial}");
        assert_eq!(partial["last_sync_count"], 0, "{partial}");
        let traceback = partial["traceback"].as_str().unwrap();
        assert!(traceback.contains(&format!("annotation {}", ids[1])), "{traceback}");
        assert!(!traceback.contains(&format!("annotation {}", ids[2])), "{traceback}");
        let stale = object_json(&gcs, "flaky", &format!("{prefix}/{}", ids[1])).await;
        assert_eq!(stale["result"], result("a"));
        let fresh = object_json(&gcs, "flaky", &format!("{prefix}/{}", ids[2])).await;
        assert_eq!(fresh["result"], result("b"));

        // Healed: the next sync writes exactly the one left.
        proxy.heal();
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, healed) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(healed["status"], "completed", "{healed}");
        assert_eq!(healed["last_sync_count"], 1);
        assert_eq!(healed["traceback"], Value::Null);
        let now = object_json(&gcs, "flaky", &format!("{prefix}/{}", ids[1])).await;
        assert_eq!(now["result"], result("b"));
        app.stop().await;
    }
}

#[tokio::test]
async fn bucket_that_disappears_fails_clearly_and_recovers() {
    let gcs = emulator(&[]).await;
    for backend in backends() {
        let bucket = format!("vanishing-{}", backend.name());
        gcs.create_bucket(&bucket).await.unwrap();
        let app = TestApp::spawn_with_gcs(backend, &gcs, 0).await;
        let (pid, tasks) = project_with_tasks(&app, 2).await;
        let first = annotate(&app, tasks[0], "a").await;
        let st = create_export(&app, json!({"project": pid, "bucket": bucket})).await;
        let id = st["id"].as_i64().unwrap();
        app.run_jobs().await;
        let (_, done) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(gcs.list(&bucket, "").await.unwrap(), vec![first.to_string()]);

        // The bucket goes away.
        gcs.delete(&bucket, &first.to_string()).await.unwrap();
        gcs.delete_bucket(&bucket).await.unwrap();
        // Saving does not wait for (or fail with) the storage.
        let started = Instant::now();
        let second = annotate(&app, tasks[1], "b").await;
        assert!(started.elapsed() < Duration::from_secs(2));
        app.run_jobs().await; // background run fails and backs off
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, failed) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["last_sync_count"], 0);
        let traceback = failed["traceback"].as_str().unwrap();
        assert!(
            traceback.contains(&bucket) && traceback.contains("does not exist"),
            "{traceback}"
        );

        // Back again: the next sync writes only what was never written.
        gcs.create_bucket(&bucket).await.unwrap();
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, back) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(back["status"], "completed", "{back}");
        assert_eq!(back["last_sync_count"], 1);
        assert_eq!(gcs.list(&bucket, "").await.unwrap(), vec![second.to_string()]);
        app.stop().await;
    }
}

#[tokio::test]
async fn bucket_gone_in_the_middle_of_a_sync() {
    let gcs = emulator(&["midway"]).await;
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    for backend in backends() {
        let app = TestApp::spawn_with_gcs_endpoint(backend, &proxy.endpoint, 0).await;
        let (s, p) = app
            .post("/api/projects", json!({"title": "midway", "label_config": CONFIG}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let pid = p["id"].as_i64().unwrap();
        let tasks: Vec<Value> = (0..120)
            .map(|i| json!({"data": {"text": format!("t{i}")}, "annotations": [{"result": result("a")}]}))
            .collect();
        let (s, r) = app.post(&format!("/api/projects/{pid}/import"), json!(tasks)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let prefix = backend.name().to_string();
        let st = create_export(&app, json!({"project": pid, "bucket": "midway", "prefix": prefix})).await;
        let id = st["id"].as_i64().unwrap();

        // 40 objects are written, then the bucket is gone.
        proxy.vanish_bucket_after("midway", 40);
        app.run_jobs().await;
        let (_, failed) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["last_sync_count"], 40, "{failed}");
        let traceback = failed["traceback"].as_str().unwrap();
        assert!(
            traceback.contains("midway") && traceback.contains("does not exist"),
            "{traceback}"
        );
        assert_eq!(gcs.list("midway", &format!("{prefix}/")).await.unwrap().len(), 40);
        // Only what was written counts as exported.
        assert_eq!(app.db().count_export_links(id).await.unwrap(), (120, 80));

        // Back: the next sync writes exactly the other 80.
        proxy.heal();
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, done) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 80);
        assert_eq!(gcs.list("midway", &format!("{prefix}/")).await.unwrap().len(), 120);
        app.stop().await;
    }
}

#[tokio::test]
async fn work_left_by_a_job_that_gave_up_is_requeued_and_moves_rewrite() {
    let gcs = emulator(&["left"]).await;
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 0).await;
        let (pid, tasks) = project_with_tasks(&app, 2).await;
        let first = annotate(&app, tasks[0], "a").await;
        let prefix = backend.name().to_string();
        let st = create_export(&app, json!({"project": pid, "bucket": "left", "prefix": prefix})).await;
        let id = st["id"].as_i64().unwrap();
        app.run_jobs().await;
        // Nothing waits: nothing is queued.
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 0);

        // A save whose job then gives up (as after its last retry).
        let second = annotate(&app, tasks[1], "b").await;
        exec(&app, "UPDATE jobs SET status = 'failed' WHERE status = 'queued'").await;
        app.run_jobs().await;
        assert!(!gcs
            .list("left", &prefix)
            .await
            .unwrap()
            .contains(&format!("{prefix}/{second}")));
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 1);
        app.run_jobs().await;
        assert!(gcs
            .list("left", &prefix)
            .await
            .unwrap()
            .contains(&format!("{prefix}/{second}")));

        // A new prefix: everything is written again there, without a sync.
        let moved = format!("{prefix}-moved");
        let (s, r) = app
            .patch(&format!("/api/storages/export/gcs/{id}"), json!({"prefix": moved}))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        app.run_jobs().await;
        let mut names = gcs.list("left", &format!("{moved}/")).await.unwrap();
        names.sort();
        let mut expected = vec![format!("{moved}/{first}"), format!("{moved}/{second}")];
        expected.sort();
        assert_eq!(names, expected);
        app.stop().await;
    }
}

async fn exec(app: &TestApp, sql: &str) {
    match &app.db().pool {
        labelport_db::Pool::Sqlite { write, .. } => {
            labelport_db::sqlx_reexport::query(sql).execute(write).await.unwrap();
        }
        labelport_db::Pool::Postgres(p) => {
            labelport_db::sqlx_reexport::query(sql).execute(p).await.unwrap();
        }
    }
}

/// On PostgreSQL a save whose transaction linked before a new storage
/// committed, and committed after the storage's first sync linked the
/// project, is missed by both: no link (a new annotation), or a link left
/// clean at an older version (an update). Both outcomes are made by hand
/// here; the requeuer must find them while the storage is young.
#[tokio::test]
async fn saves_that_raced_the_storage_creation_are_found_by_the_requeuer() {
    let gcs = emulator(&["raced"]).await;
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 0).await;
        let (pid, tasks) = project_with_tasks(&app, 3).await;
        let updated = annotate(&app, tasks[0], "a").await;
        let prefix = backend.name().to_string();
        let st = create_export(&app, json!({"project": pid, "bucket": "raced", "prefix": prefix})).await;
        let id = st["id"].as_i64().unwrap();
        // Waiting for its first full sync (which links everything): left alone.
        assert_eq!(app.db().repair_recent_export_links().await.unwrap(), 0);
        app.run_jobs().await;
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 0);
        let updated_key = format!("{prefix}/{updated}");
        assert_eq!(object_json(&gcs, "raced", &updated_key).await["result"], result("a"));

        // A new annotation with no link and no job; an update whose link
        // stayed clean and whose job is gone.
        let unlinked = annotate(&app, tasks[1], "b").await;
        let (s, r) = app
            .patch(&format!("/api/annotations/{updated}"), json!({"result": result("b")}))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        exec(
            &app,
            &format!("DELETE FROM export_storage_links WHERE annotation_id = {unlinked}"),
        )
        .await;
        exec(
            &app,
            &format!("UPDATE export_storage_links SET dirty = FALSE WHERE annotation_id = {updated}"),
        )
        .await;
        exec(&app, "DELETE FROM jobs WHERE status = 'queued'").await;
        app.run_jobs().await;
        assert!(!gcs
            .list("raced", &prefix)
            .await
            .unwrap()
            .contains(&format!("{prefix}/{unlinked}")));

        // One storage to repair: one job, which writes both.
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 1);
        app.run_jobs().await;
        let unlinked_obj = object_json(&gcs, "raced", &format!("{prefix}/{unlinked}")).await;
        assert_eq!(unlinked_obj["result"], result("b"));
        assert_eq!(object_json(&gcs, "raced", &updated_key).await["result"], result("b"));
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 0);
        // A background run: the storage's status is untouched.
        let (_, after) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(after["status"], "completed", "{after}");

        // Past the window (an hour after creation and after the last full
        // sync), storages are not scanned; a manual sync still links
        // everything.
        exec(
            &app,
            &format!(
                "UPDATE export_storages SET created_at = '2000-01-01T00:00:00.000000Z',
                 last_sync = '2000-01-01T00:00:00.000000Z' WHERE id = {id}"
            ),
        )
        .await;
        let late = annotate(&app, tasks[2], "a").await;
        exec(
            &app,
            &format!("DELETE FROM export_storage_links WHERE annotation_id = {late}"),
        )
        .await;
        exec(&app, "DELETE FROM jobs WHERE status = 'queued'").await;
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 0);
        let (s, _) = app
            .post(&format!("/api/storages/export/gcs/{id}/sync"), json!(null))
            .await;
        assert_eq!(s, StatusCode::OK);
        app.run_jobs().await;
        let (_, done) = app.get(&format!("/api/storages/export/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 1, "{done}");
        assert!(gcs
            .list("raced", &prefix)
            .await
            .unwrap()
            .contains(&format!("{prefix}/{late}")));
        app.stop().await;
    }
}

/// A deleted project's storage (with `can_delete_objects`) whose deletions
/// keep failing because the bucket can no longer be reached is retried,
/// and given up once they have failed for a week: the storage goes, with
/// its queue; the objects stay in the bucket.
#[tokio::test]
async fn a_deleted_projects_storage_whose_deletions_keep_failing_is_given_up_after_a_week() {
    let gcs = emulator(&["orphan"]).await;
    for backend in backends() {
        let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
        let app = TestApp::spawn_with_gcs_endpoint(backend, &proxy.endpoint, 0).await;
        let (pid, tasks) = project_with_tasks(&app, 1).await;
        let annotation = annotate(&app, tasks[0], "a").await;
        let prefix = backend.name().to_string();
        let st = create_export(
            &app,
            json!({"project": pid, "bucket": "orphan", "prefix": prefix, "can_delete_objects": true}),
        )
        .await;
        let id = st["id"].as_i64().unwrap();
        app.run_jobs().await;
        let key = format!("{prefix}/{annotation}");
        assert!(gcs.list("orphan", &prefix).await.unwrap().contains(&key));

        // The bucket can no longer be reached; then the project is deleted.
        drop(proxy);
        let (s, _) = app.delete(&format!("/api/projects/{pid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        app.run_jobs().await;
        // Failed, to be retried: the storage waits, unlisted, with its queue.
        assert!(app.db().get_storage(Direction::Export, id).await.is_ok());
        let due_now = "UPDATE jobs SET run_after = '2000-01-01T00:00:00.000000Z' WHERE status = 'queued'";
        exec(&app, due_now).await;
        app.run_jobs().await;
        assert!(
            app.db().get_storage(Direction::Export, id).await.is_ok(),
            "given up too early"
        );

        // A week of failures later, the next failing run gives it up.
        exec(
            &app,
            &format!(
                "UPDATE export_storage_deletions SET created_at = '2000-01-01T00:00:00.000000Z' WHERE storage_id = {id}"
            ),
        )
        .await;
        exec(&app, due_now).await;
        app.run_jobs().await;
        assert!(matches!(
            app.db().get_storage(Direction::Export, id).await,
            Err(labelport_db::DbError::NotFound)
        ));
        assert_eq!(app.db().requeue_pending_exports().await.unwrap(), 0);
        assert!(gcs.list("orphan", &prefix).await.unwrap().contains(&key));
        app.stop().await;
    }
}

/// Test connection asks GCS which permissions are held
/// (`buckets.testIamPermissions`, answered by the FaultProxy as GCS does;
/// the emulator lacks it) and names every missing one with the role that
/// grants them, for both directions (issue 17, item 1).
#[tokio::test]
async fn test_connection_names_missing_permissions_and_the_role() {
    let gcs = emulator(&["guarded"]).await;
    gcs.upload("guarded", "in/a.txt", b"a".to_vec(), "text/plain")
        .await
        .unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    let app = TestApp::spawn_with_gcs_endpoint(labelport_testkit::Backend::Sqlite, &proxy.endpoint, 0).await;
    let (_, p) = app.post("/api/projects", json!({"title": "perm"})).await;
    let pid = p["id"].as_i64().unwrap();
    let source = json!({"project": pid, "bucket": "guarded", "prefix": "in"});
    let target = json!({"project": pid, "bucket": "guarded", "prefix": "out"});

    // Permissions GCS reports on the bucket as a whole are only asked for
    // after a refusal: grants on a prefix, which it does not see, must not
    // fail a check whose requests work.
    proxy.grant_permissions(&["storage.objects.list"]);
    let (s, e) = app.post("/api/storages/gcs/validate", source.clone()).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert!(
        proxy.permission_checks().is_empty(),
        "not asked while nothing is refused"
    );

    // Listing refused: GCS is asked, and every missing permission named.
    proxy.deny(labelport_testkit::RequestKind::List);
    let (s, e) = app.post("/api/storages/gcs/validate", source.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let said = e["validation_errors"]["google_application_credentials"][0]
        .as_str()
        .unwrap_or_default();
    // Presign is on (the default), so the CORS check's storage.buckets.get
    // is asked too, and named with the role that grants it.
    assert!(
        said.contains("lacks storage.objects.get, storage.buckets.get on gs://guarded")
            && said.contains(
                "grant it Storage Object Viewer (roles/storage.objectViewer) on the bucket; and Storage Legacy \
                 Bucket Reader (roles/storage.legacyBucketReader) on the bucket"
            ),
        "{e}"
    );
    assert_eq!(
        proxy.permission_checks().last().unwrap(),
        &["storage.objects.list", "storage.objects.get", "storage.buckets.get"]
    );
    // The same, structured for the UI: each missing permission, where,
    // and the role that grants it.
    let missing = e["permissions"]["missing"].as_array().cloned().unwrap_or_default();
    let named: Vec<(&str, &str, &str)> = missing
        .iter()
        .map(|p| {
            (
                p["permission"].as_str().unwrap(),
                p["resource"].as_str().unwrap(),
                p["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("storage.objects.get", "gs://guarded", "roles/storage.objectViewer"),
            (
                "storage.buckets.get",
                "gs://guarded",
                "roles/storage.legacyBucketReader"
            )
        ],
        "{e}"
    );
    assert_eq!(e["permissions"]["account"], "the server's own Google identity", "{e}");
    // Nothing granted (GCS then leaves the field out): all named.
    proxy.grant_permissions(&[]);
    let (_, e) = app.post("/api/storages/gcs", source.clone()).await;
    let said = e["validation_errors"]["google_application_credentials"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("lacks storage.objects.list, storage.objects.get, storage.buckets.get"),
        "{e}"
    );
    // With presign off the bucket's metadata is never read: not asked.
    let mut proxied = source.clone();
    proxied["presign"] = json!(false);
    let (_, e) = app.post("/api/storages/gcs/validate", proxied).await;
    assert_eq!(
        proxy.permission_checks().last().unwrap(),
        &["storage.objects.list", "storage.objects.get"],
        "{e}"
    );
    assert_eq!(e["permissions"]["missing"].as_array().map(Vec::len), Some(2), "{e}");
    let (_, list) = app.get(&format!("/api/storages/gcs?project={pid}")).await;
    assert_eq!(list, json!([]), "nothing created");
    // Refused although GCS reports every permission held: what a bucket's
    // IP filter does to a server outside its ranges (issue 17, item 3).
    // Filed at the bucket, with the presign consequence (presign is on by
    // default) and without it when presign is off.
    proxy.grant_permissions(&["storage.objects.list", "storage.objects.get"]);
    let (s, e) = app.post("/api/storages/gcs/validate", source.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let said = e["validation_errors"]["bucket"][0].as_str().unwrap_or_default();
    // storage.buckets.get (presign's CORS reading) is not held: it does not
    // explain a refused listing, but is named beside the network advice.
    assert_eq!(
        e["permissions"]["missing"][0]["permission"], "storage.buckets.get",
        "{e}"
    );
    assert!(
        said.contains("holds every permission this check uses")
            && said.contains("IP filter probably does not allow this server's address")
            && said.contains("browsers outside the allowed ranges cannot load signed URLs")
            && said.contains("use the proxy"),
        "{e}"
    );
    let mut proxied = source.clone();
    proxied["presign"] = json!(false);
    let (_, e) = app.post("/api/storages/gcs/validate", proxied).await;
    let said = e["validation_errors"]["bucket"][0].as_str().unwrap_or_default();
    assert!(said.contains("IP filter") && !said.contains("signed URLs"), "{e}");
    // GCS names the IP filter itself, and cannot say what is granted: the
    // refusal is read as the IP filter's.
    proxy.heal();
    proxy.deny_with(
        labelport_testkit::RequestKind::List,
        "Access to this bucket is denied by the bucket's IP filter (injected)",
    );
    let (s, e) = app.post("/api/storages/gcs/validate", source.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let said = e["validation_errors"]["bucket"][0].as_str().unwrap_or_default();
    assert!(
        said.starts_with("The bucket's IP filter does not allow this server's address"),
        "{e}"
    );
    proxy.heal();

    // A target needs list, create and delete (overwriting deletes).
    proxy.fail_uploads_with("", u64::MAX, 403);
    proxy.grant_permissions(&["storage.objects.list", "storage.objects.get", "storage.objects.create"]);
    let (s, e) = app.post("/api/storages/export/gcs/validate", target.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let said = e["validation_errors"]["google_application_credentials"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("lacks storage.objects.delete")
            && !said.contains("storage.objects.create,")
            && said.contains("Storage Object User (roles/storage.objectUser)"),
        "{e}"
    );
    assert_eq!(
        proxy.permission_checks().last().unwrap(),
        &[
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete"
        ]
    );
    assert_eq!(
        e["permissions"]["missing"][0]["permission"], "storage.objects.delete",
        "{e}"
    );
    proxy.heal();
    // Healed: both pass.
    let (s, e) = app.post("/api/storages/gcs/validate", source).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = app.post("/api/storages/export/gcs/validate", target).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    app.stop().await;
}

/// With presign on, Test connection says whether the bucket's CORS policy
/// lets the labeling page's origin read objects, and `POST …/{id}/cors`
/// adds a rule for it, keeping the rules there are (issue 17, item 2). The
/// emulator keeps no CORS policy: the FaultProxy answers the bucket
/// resource as GCS does and records the PATCH it gets.
#[tokio::test]
async fn cors_is_checked_at_test_connection_and_fixed_keeping_the_policy() {
    let gcs = emulator(&["browsers"]).await;
    gcs.upload("browsers", "a/1.txt", b"a".to_vec(), "text/plain")
        .await
        .unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    let app = TestApp::spawn_with_gcs_endpoint(labelport_testkit::Backend::Sqlite, &proxy.endpoint, 0).await;
    let (_, p) = app.post("/api/projects", json!({"title": "cors"})).await;
    let pid = p["id"].as_i64().unwrap();
    // A real policy's shape: a rule for another site, without responseHeader.
    let theirs = json!({"origin": ["https://other.example.com"], "method": ["GET"], "maxAgeSeconds": 60});
    proxy.set_cors(vec![theirs.clone()]);
    let body = json!({"project": pid, "bucket": "browsers", "prefix": "a", "presign": true,
                      "google_application_credentials": signing_key()});

    let (s, v) = app.post("/api/storages/gcs/validate", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let origin = v["cors"]["origin"].as_str().unwrap().to_owned();
    assert!(origin.starts_with("http://127.0.0.1:"), "the request's host: {v}");
    assert_eq!(v["cors"]["allowed"], false, "{v}");
    assert!(
        v["cors"]["advice"]
            .as_str()
            .unwrap()
            .contains(&format!("no rule for {origin} and GET")),
        "{v}"
    );
    // The proxy needs no CORS: no report.
    let (s, v) = app
        .post(
            "/api/storages/gcs/validate",
            json!({"project": pid, "bucket": "browsers", "presign": false}),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, Value::Null));

    let (_, st) = app.post("/api/storages/gcs", body.clone()).await;
    let id = st["id"].as_i64().unwrap();
    // Fix CORS writes the origin of the browser's own page only: without a
    // public URL, a call whose Origin is not the host it called is refused.
    let fix = |origin: Option<String>| {
        let mut request = app
            .http
            .post(format!("{}/api/storages/gcs/{id}/cors", app.base_url))
            .header("Authorization", format!("Token {}", app.token));
        if let Some(o) = origin {
            request = request.header("Origin", o);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    for claimed in [None, Some("https://evil.example.com".to_owned())] {
        let (s, e) = fix(claimed.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{claimed:?}: {e}");
        assert!(e.to_string().contains("LABELPORT_PUBLIC_URL"), "{e}");
    }
    assert!(proxy.cors_patches().is_empty());
    let (s, fixed) = fix(Some(origin.clone())).await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["changed"], true);
    assert_eq!(fixed["cors"]["allowed"], true, "{fixed}");
    // One PATCH, guarded by the metageneration read, with only the policy:
    // their rule as it was, then ours.
    let patches = proxy.cors_patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let patch = &patches[0];
    assert_eq!(patch.status, 200);
    assert!(
        patch.query.contains(&("ifMetagenerationMatch".into(), "1".into())),
        "{patch:?}"
    );
    assert_eq!(
        patch.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cors"],
        "nothing else of the bucket is touched: {patch:?}"
    );
    assert_eq!(patch.body["cors"][0], theirs);
    assert_eq!(patch.body["cors"][1]["origin"], json!([origin]));
    assert_eq!(patch.body["cors"][1]["method"], json!(["GET", "HEAD"]));
    assert!(patch.body["cors"][1]["responseHeader"]
        .as_array()
        .unwrap()
        .contains(&json!("Content-Type")));
    assert_eq!(proxy.cors().unwrap().len(), 2);
    // Test connection now agrees; a second fix writes nothing.
    let (_, v) = app.post("/api/storages/gcs/validate", body).await;
    assert_eq!(v["cors"]["allowed"], true, "{v}");
    let (_, again) = fix(Some(origin.clone())).await;
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(proxy.cors_patches().len(), 1);
    app.stop().await;
}

/// The wizard's Fix CORS works before the storage is saved: `POST
/// /api/storages/{kind}/cors` takes the settings as validate does, and
/// while editing (`id`) fills in what is stored. A policy that cannot be
/// read because the account lacks `storage.buckets.get` is reported with
/// that permission and its role (issue 17, items 1 and 2).
#[tokio::test]
async fn cors_is_fixed_from_the_wizard_and_an_unreadable_policy_names_the_permission() {
    let gcs = emulator(&["unsaved"]).await;
    gcs.upload("unsaved", "a/1.txt", b"a".to_vec(), "text/plain")
        .await
        .unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    let app = TestApp::spawn_with_gcs_endpoint(labelport_testkit::Backend::Sqlite, &proxy.endpoint, 0).await;
    let (_, p) = app.post("/api/projects", json!({"title": "wizard cors"})).await;
    let pid = p["id"].as_i64().unwrap();
    proxy.set_cors(vec![]);
    let body = json!({"project": pid, "bucket": "unsaved", "prefix": "a", "presign": true,
                      "google_application_credentials": signing_key()});
    let call = |path: &str, body: Value, origin: &str| {
        let request = app
            .http
            .post(format!("{}{path}", app.base_url))
            .header("Authorization", format!("Token {}", app.token))
            .header("Origin", origin)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let origin = app.base_url.trim_end_matches('/').to_owned();

    // The policy cannot be read: GCS refuses the bucket resource, and says
    // storage.buckets.get is not held. Test connection still passes (the
    // objects are readable) and names the permission and its role.
    proxy.deny(labelport_testkit::RequestKind::Bucket);
    proxy.grant_permissions(&["storage.objects.list", "storage.objects.get"]);
    let (s, v) = call("/api/storages/gcs/validate", body.clone(), &origin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cors"]["allowed"], false, "{v}");
    let advice = v["cors"]["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("lacks storage.buckets.get on gs://unsaved")
            && advice.contains("Storage Legacy Bucket Reader (roles/storage.legacyBucketReader)"),
        "{v}"
    );
    assert_eq!(
        v["permissions"]["missing"][0]["permission"], "storage.buckets.get",
        "{v}"
    );
    assert_eq!(proxy.permission_checks().last().unwrap(), &["storage.buckets.get"]);
    // Held, and still refused: the reason is given without a guess.
    proxy.grant_permissions(&["storage.buckets.get"]);
    let (_, v) = call("/api/storages/gcs/validate", body.clone(), &origin).await;
    assert!(v.get("permissions").is_none(), "{v}");
    assert!(
        v["cors"]["advice"].as_str().unwrap().contains("could not be read"),
        "{v}"
    );
    proxy.heal();
    proxy.set_cors(vec![]);

    // Fixed before saving: the rule is written, nothing is stored.
    let (s, fixed) = call("/api/storages/gcs/cors", body.clone(), &origin).await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_eq!(
        (fixed["changed"].clone(), fixed["cors"]["allowed"].clone()),
        (json!(true), json!(true)),
        "{fixed}"
    );
    assert_eq!(proxy.cors_patches().len(), 1);
    assert_eq!(proxy.cors().unwrap()[0]["origin"], json!([origin]));
    let (_, list) = app.get(&format!("/api/storages/gcs?project={pid}")).await;
    assert_eq!(list, json!([]), "nothing saved");
    // Bad settings are a 400 naming the field, and write nothing.
    let (s, e) = call(
        "/api/storages/gcs/cors",
        json!({"project": pid, "bucket": "Not a bucket!"}),
        &origin,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["validation_errors"]["bucket"].is_array(), "{e}");
    // Pre-signed URLs off: no CORS rule is needed, none is written.
    let mut proxied = body.clone();
    proxied["presign"] = json!(false);
    let (s, e) = call("/api/storages/gcs/cors", proxied, &origin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["validation_errors"]["presign"][0]
            .as_str()
            .unwrap()
            .contains("needs no CORS rule"),
        "{e}"
    );
    assert_eq!(proxy.cors_patches().len(), 1);
    // A bucket that does not keep the rule (the emulator keeps no CORS
    // policy: the proxy lets the PATCH through to it) is said so.
    proxy.heal();
    let (s, fixed) = call("/api/storages/gcs/cors", body.clone(), &origin).await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_eq!(
        (fixed["changed"].clone(), fixed["cors"]["allowed"].clone()),
        (json!(true), json!(false)),
        "{fixed}"
    );
    assert!(
        fixed["cors"]["advice"]
            .as_str()
            .unwrap()
            .starts_with("The rule was sent, but the bucket's policy that came back does not hold it"),
        "{fixed}"
    );
    proxy.set_cors(vec![]);
    // While editing: the stored storage's settings, by id.
    let (_, st) = app.post("/api/storages/gcs", body.clone()).await;
    let id = st["id"].as_i64().unwrap();
    let (s, fixed) = call("/api/storages/gcs/cors", json!({"id": id}), &origin).await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["changed"], true, "{fixed}");
    assert_eq!(proxy.cors_patches().len(), 2);
    app.stop().await;
}

/// Against the GCS emulator reached without credentials, a storage with no
/// key has no account to sign URLs as: with presign on, Test connection
/// says media go through the proxy, and they do (no 404 "could not sign").
#[tokio::test]
async fn the_emulator_without_a_key_serves_presigned_media_through_the_proxy() {
    let gcs = emulator(&["anonymous"]).await;
    gcs.upload("anonymous", "img/a.png", b"png bytes".to_vec(), "image/png")
        .await
        .unwrap();
    let app = TestApp::spawn_with_gcs(labelport_testkit::Backend::Sqlite, &gcs, 1).await;
    let (_, p) = app.post("/api/projects", json!({"title": "emulator"})).await;
    let pid = p["id"].as_i64().unwrap();
    let body = json!({"project": pid, "bucket": "anonymous", "prefix": "img", "presign": true, "use_blob_urls": true});
    let (s, v) = app.post("/api/storages/gcs/validate", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["proxied"], true, "{v}");
    assert!(
        v["cors"]["advice"]
            .as_str()
            .unwrap()
            .contains("go through Labelport's proxy"),
        "{v}"
    );
    let (s, st) = app.post("/api/storages/gcs", body).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let media = app
        .http
        .get(format!("{}/projects/{pid}/resolve", app.base_url))
        .query(&[("fileuri", "gs://anonymous/img/a.png")])
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(media.bytes().await.unwrap().as_ref(), b"png bytes");
    app.stop().await;
}
