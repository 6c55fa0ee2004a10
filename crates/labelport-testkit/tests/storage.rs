//! GCS import storages against the real emulator (fake-gcs-server), on
//! SQLite and (when configured) PostgreSQL.

use std::time::Duration;

use labelport_domain::storage::Direction;
use labelport_testkit::{backends, FakeGcs, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const IMAGE_CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;
const TEXT_CONFIG: &str =
    r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#;

async fn project(app: &TestApp, config: &str) -> i64 {
    let (s, p) = app
        .post("/api/projects", json!({"title": "p", "label_config": config}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p["id"].as_i64().unwrap()
}

async fn storage(app: &TestApp, body: Value) -> i64 {
    let (s, st) = app.post("/api/storages/gcs/", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{body} -> {st}");
    st["id"].as_i64().unwrap()
}

async fn sync(app: &TestApp, id: i64) -> Value {
    let (s, st) = app.post(&format!("/api/storages/gcs/{id}/sync"), json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    app.wait_for_sync(&format!("/api/storages/gcs/{id}")).await
}

async fn all_tasks(app: &TestApp, project: i64) -> Vec<Value> {
    let (s, r) = app.get(&format!("/api/tasks?project={project}&page_size=10000")).await;
    assert_eq!(s, StatusCode::OK);
    r["tasks"].as_array().unwrap().clone()
}

async fn emulator() -> FakeGcs {
    let gcs = FakeGcs::start()
        .await
        .expect("fake-gcs-server (run ./scripts/test to install it)");
    gcs.create_bucket("media").await.unwrap();
    gcs
}

#[tokio::test]
async fn storage_crud_validation_and_secrets() {
    let gcs = emulator().await;
    gcs.upload("media", "imgs/a.jpg", b"a".to_vec(), "image/jpeg")
        .await
        .unwrap();
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let pid = project(&app, IMAGE_CONFIG).await;
        let key_file = labelport_testkit::test_service_account_key();
        let secret_key = key_file.as_str();
        let secret = labelport_testkit::private_key_piece(secret_key);
        // Bad input: each a 400 naming the field, nothing created.
        for (body, field) in [
            (
                json!({"project": pid, "bucket": "media", "regex_filter": "(unclosed"}),
                "regex_filter",
            ),
            (
                json!({"project": pid, "bucket": "media", "presign_ttl": 0}),
                "presign_ttl",
            ),
            (
                json!({"project": pid, "bucket": "media", "presign_ttl": 10081}),
                "presign_ttl",
            ),
            (
                json!({"project": pid, "bucket": "media", "google_application_credentials": "not json"}),
                "google_application_credentials",
            ),
            (
                json!({"project": pid, "bucket": "media", "google_application_credentials": "{\"type\":\"authorized_user\"}"}),
                "google_application_credentials",
            ),
            (
                json!({"project": pid, "bucket": "media", "deletion_policy": "shred"}),
                "deletion_policy",
            ),
            (json!({"project": pid}), "bucket"),
            (json!({"bucket": "media"}), "project"),
            (json!({"project": 999999, "bucket": "media"}), "project"),
        ] {
            let (s, e) = app.post("/api/storages/gcs", body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {e}");
            assert!(e["validation_errors"][field].is_array(), "{body} -> {e}");
        }
        // Connection failures: a missing bucket, an empty prefix.
        let (s, e) = app
            .post("/api/storages/gcs", json!({"project": pid, "bucket": "no-such-bucket"}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Each problem is filed under the field to change, with the next step.
        let said = e["validation_errors"]["bucket"][0].as_str().unwrap_or_default();
        assert!(
            said.contains("\"no-such-bucket\" does not exist") && said.contains("Next step"),
            "{e}"
        );
        let (s, e) = app
            .post(
                "/api/storages/gcs/validate",
                json!({"project": pid, "bucket": "media", "prefix": "nothing-here"}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let said = e["validation_errors"]["prefix"][0].as_str().unwrap_or_default();
        assert!(
            said.contains("No objects found in gs://media/nothing-here/") && said.contains("Next step"),
            "{e}"
        );
        // Presign (the default) without a key on the emulator: media go
        // through the proxy, and the answer says so. With a key that signs,
        // the answer says whether browsers may read the objects (the
        // emulator keeps no CORS policy). Proxy: empty.
        let (s, body) = app
            .post(
                "/api/storages/gcs/validate",
                json!({"project": pid, "bucket": "media", "prefix": "imgs"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(
            (body["proxied"].clone(), body["cors"]["allowed"].clone()),
            (json!(true), json!(true)),
            "{body}"
        );
        let key = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/conformance/test_service_account.not-a-test.json"
        ))
        .unwrap();
        let (s, body) = app
            .post(
                "/api/storages/gcs/validate",
                json!({"project": pid, "bucket": "media", "prefix": "imgs", "google_application_credentials": key}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["cors"]["allowed"], false, "{body}");
        assert!(body.get("proxied").is_none(), "{body}");
        assert!(
            body["cors"]["advice"]
                .as_str()
                .unwrap()
                .contains("gs://media has no CORS policy"),
            "read, and found empty: {body}"
        );
        let (s, body) = app
            .post(
                "/api/storages/gcs/validate",
                json!({"project": pid, "bucket": "media", "prefix": "imgs", "presign": false}),
            )
            .await;
        assert_eq!((s, body), (StatusCode::OK, Value::Null));
        let (_, list) = app.get(&format!("/api/storages/gcs?project={pid}")).await;
        assert_eq!(list, json!([]));

        // Create with a key: the emulator ignores auth; the key is never shown.
        let (s, st) = app
            .post(
                "/api/storages/gcs/",
                json!({"project": pid, "bucket": "gs://media/", "prefix": "imgs", "title": "t",
                "description": "d", "use_blob_urls": true, "google_application_credentials": secret_key}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let id = st["id"].as_i64().unwrap();
        assert_eq!(st["type"], "gcs");
        assert_eq!(st["bucket"], "media");
        assert_eq!(st["status"], "initialized");
        assert_eq!(
            (
                st["presign"].as_bool(),
                st["presign_ttl"].as_i64(),
                st["recursive_scan"].as_bool()
            ),
            (Some(true), Some(1), Some(false))
        );
        assert_eq!(st["deletion_policy"], "keep");
        assert!(st["last_sync"].is_null() && st["last_sync_count"].is_null() && st["meta"] == json!({}));
        for path in [
            format!("/api/storages/gcs/{id}"),
            format!("/api/storages/gcs?project={pid}"),
            format!("/api/storages/?project={pid}"),
        ] {
            let (s, body) = app.get(&path).await;
            assert_eq!(s, StatusCode::OK);
            let text = body.to_string();
            assert!(
                !text.contains(&secret) && !text.contains("google_application_credentials"),
                "{path}: {text}"
            );
        }
        let (s, patched) = app
            .patch(
                &format!("/api/storages/gcs/{id}"),
                json!({"title": "t2", "presign": false}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{patched}");
        assert_eq!(
            (
                patched["title"].as_str(),
                patched["presign"].as_bool(),
                patched["description"].as_str()
            ),
            (Some("t2"), Some(false), Some("d"))
        );
        assert_eq!(
            app.db()
                .get_storage(Direction::Import, id)
                .await
                .unwrap()
                .settings
                .credentials
                .as_ref()
                .map(|c| c.expose()),
            Some(secret_key),
            "PATCH keeps the key"
        );
        let (s, _) = app
            .patch(&format!("/api/storages/gcs/{id}"), json!({"presign_ttl": -1}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, put) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/storages/gcs/{id}"),
                Some(json!({"project": pid, "bucket": "media", "prefix": "imgs", "title": "t3"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{put}");
        assert_eq!(
            (
                put["title"].as_str(),
                put["description"].as_str(),
                put["use_blob_urls"].as_bool()
            ),
            (Some("t3"), Some(""), Some(false))
        );

        let (s, types) = app.get("/api/storages/types").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(types[1], json!({"name": "gcs", "title": "Google Cloud Storage"}));
        let (s, _) = app.get("/api/storages/export/types").await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.get("/api/storages/gcs").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "project is required");

        let (s, _) = app.delete(&format!("/api/storages/gcs/{id}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.get(&format!("/api/storages/gcs/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn files_mode_listing_rules_preview_and_idempotent_resync() {
    let gcs = emulator().await;
    for key in [
        "data/a.jpg",
        "data/b.png",
        "data/sub/c.jpg",
        "data/sub/deeper/d.jpg",
        "data/skip.txt",
        "data/folder/",
        "other/e.jpg",
        "data/ü n i.jpg",
    ] {
        gcs.upload("media", key, b"x".to_vec(), "image/jpeg").await.unwrap();
    }
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 2).await;
        let pid = project(&app, IMAGE_CONFIG).await;
        // Preview: prefix normalised, regex at the start of the full name, limit with a null sentinel.
        let (s, files) = app
            .post(
                "/api/storages/gcs/files",
                json!({"project": pid, "bucket": "media", "prefix": "/data//", "recursive_scan": true,
                "regex_filter": r"data/.*\.(jpg|png)", "limit": 3}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{files}");
        let keys: Vec<Value> = files["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["key"].clone())
            .collect();
        assert_eq!(
            keys,
            vec![
                json!("data/a.jpg"),
                json!("data/b.png"),
                json!("data/sub/c.jpg"),
                Value::Null
            ]
        );
        assert_eq!(files["files"][0]["size"], 1);

        // Keys ending in "/" (folder placeholders) are never objects to import.
        let (_, files) = app
            .post(
                "/api/storages/gcs/files",
                json!({"project": pid, "bucket": "media", "prefix": "data", "recursive_scan": true}),
            )
            .await;
        let keys: Vec<&str> = files["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["key"].as_str())
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert!(!keys.contains(&"data/folder/"), "{keys:?}");

        // One level only.
        let flat = storage(&app, json!({"project": pid, "bucket": "media", "prefix": "data", "regex_filter": r".*\.(jpg|png)", "use_blob_urls": true})).await;
        let st = sync(&app, flat).await;
        assert_eq!(st["status"], "completed", "{st}");
        assert_eq!(st["last_sync_count"], 3, "{st}");
        assert!(st["last_sync"].is_string());
        assert_eq!(st["meta"]["tasks_created"], 3);
        // Reads show resolve URLs for the storage's bucket; decode them back.
        let mut uris: Vec<String> = all_tasks(&app, pid)
            .await
            .iter()
            .map(|t| {
                let url = t["data"]["image"].as_str().unwrap();
                let fileuri = url.split("fileuri=").nth(1).expect("a resolve URL");
                labelport_domain::resolve::decode_fileuri(fileuri)
            })
            .collect();
        uris.sort();
        assert_eq!(
            uris,
            vec![
                "gs://media/data/a.jpg",
                "gs://media/data/b.png",
                "gs://media/data/ü n i.jpg"
            ]
        );
        let stored = app.db().task_page(pid, 0, 1).await.unwrap();
        assert!(stored[0].data.contains("$undefined$"), "stored raw: {}", stored[0].data);

        // Recursive, in a second project.
        let pid2 = project(&app, IMAGE_CONFIG).await;
        let deep = storage(&app, json!({"project": pid2, "bucket": "media", "prefix": "data/", "recursive_scan": true, "regex_filter": r"data/.*\.jpg", "use_blob_urls": true})).await;
        let st = sync(&app, deep).await;
        assert_eq!(st["last_sync_count"], 4, "{st}");
        // Re-sync: nothing new, nothing duplicated.
        let st = sync(&app, deep).await;
        assert_eq!(
            (st["status"].as_str(), st["last_sync_count"].as_i64()),
            (Some("completed"), Some(0)),
            "{st}"
        );
        assert_eq!(st["meta"]["tasks_existed"], 4);
        assert_eq!(st["meta"]["objects_unchanged"], 4);
        assert_eq!(all_tasks(&app, pid2).await.len(), 4);

        // Many concurrent sync calls: at most one job, no duplicates.
        gcs.upload("media", "data/new.jpg", b"n".to_vec(), "image/jpeg")
            .await
            .unwrap();
        let sync_path = format!("/api/storages/gcs/{deep}/sync");
        let calls = (0..12).map(|_| app.post(&sync_path, json!(null)));
        for (s, st) in futures::future::join_all(calls).await {
            assert_eq!(s, StatusCode::OK);
            assert!(
                ["queued", "in_progress", "completed"].contains(&st["status"].as_str().unwrap()),
                "{st}"
            );
        }
        app.wait_for_sync(&format!("/api/storages/gcs/{deep}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.wait_for_sync(&format!("/api/storages/gcs/{deep}")).await;
        assert_eq!(all_tasks(&app, pid2).await.len(), 5);
        assert_eq!(app.db().count_links(deep).await.unwrap(), 5);
        gcs.delete("media", "data/new.jpg").await.unwrap();
        app.stop().await;
    }
}

/// A small Parquet file with `text` and `n` columns.
fn parquet_bytes(rows: &[(&str, i64)]) -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let text: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()));
    let n: ArrayRef = Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()));
    let batch = RecordBatch::try_from_iter([("text", text), ("n", n)]).unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn texts(tasks: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = tasks
        .iter()
        .map(|t| t["data"]["text"].as_str().unwrap_or("?").to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn task_files_bad_rows_edits_and_deletion_policies() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    for backend in backends() {
        let bucket = format!("tasks-{backend:?}").to_lowercase();
        gcs.create_bucket(&bucket).await.unwrap();
        let put = |key: &'static str, body: Vec<u8>| {
            let (gcs, bucket) = (&gcs, bucket.clone());
            async move {
                gcs.upload(&bucket, key, body, "application/octet-stream")
                    .await
                    .unwrap()
            }
        };
        put("t/a.json", br#"[{"text": "a0"}, {"data": {"text": "a1"}, "predictions": [{"result": [], "score": 0.5}]}, 42, {"text": "a3"}]"#.to_vec()).await;
        put("t/b.json", br#"{"text": "b"}"#.to_vec()).await;
        put(
            "t/c.jsonl",
            b"{\"text\": \"c0\"}\n{\"text\": \"c1\"}\n{\"text\": oops}\n\n{\"text\": \"c3\"}\r\n{\"text\": \"c4\"}"
                .to_vec(),
        )
        .await;
        put("t/d.parquet", parquet_bytes(&[("d0", 0), ("d1", 1), ("d2", 2)])).await;
        put("t/readme.md", b"# not tasks".to_vec()).await;

        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let pid = project(&app, TEXT_CONFIG).await;
        let id = storage(
            &app,
            json!({"project": pid, "bucket": bucket, "prefix": "t", "deletion_policy": "delete"}),
        )
        .await;
        let st = sync(&app, id).await;
        assert_eq!(st["status"], "completed_with_errors", "{st}");
        assert_eq!(st["last_sync_count"], 11, "{st}");
        let traceback = st["traceback"].as_str().unwrap();
        assert!(
            traceback.contains("t/a.json:element 2: a task must be a JSON object"),
            "{traceback}"
        );
        assert!(traceback.contains("t/c.jsonl:line 3:"), "{traceback}");
        assert!(
            traceback.contains("t/readme.md: not a JSON, JSONL or Parquet file"),
            "{traceback}"
        );
        assert_eq!(st["meta"]["tasks_failed_validation"], 3);
        let tasks = all_tasks(&app, pid).await;
        assert_eq!(
            texts(&tasks),
            vec!["a0", "a1", "a3", "b", "c0", "c1", "c3", "c4", "d0", "d1", "d2"]
        );
        let d1 = tasks.iter().find(|t| t["data"]["text"] == "d1").unwrap();
        assert_eq!(d1["data"]["n"], 1, "parquet columns become data fields");
        let a1 = tasks.iter().find(|t| t["data"]["text"] == "a1").unwrap();
        assert_eq!(a1["total_predictions"], 1, "predictions of wrapped tasks are imported");

        // Edit c.jsonl (row 0 changes, a row is added) and re-sync: existing rows updated, one created.
        put("t/c.jsonl", b"{\"text\": \"c0-edited\"}\n{\"text\": \"c1\"}\n{\"text\": \"c2-fixed\"}\n{\"text\": \"c3\"}\n{\"text\": \"c4\"}\n{\"text\": \"c5\"}\n".to_vec()).await;
        let st = sync(&app, id).await;
        // readme.md is still there and still not a task file.
        assert_eq!(st["status"], "completed_with_errors", "{st}");
        assert_eq!(st["meta"]["tasks_failed_validation"], 1, "{st}");
        assert_eq!(st["last_sync_count"], 2, "c2 (was bad) and c5 are new: {st}");
        assert_eq!(st["meta"]["tasks_updated"], 4, "{st}");
        assert_eq!(
            st["meta"]["objects_read"], 1,
            "unchanged files are not downloaded: {st}"
        );
        let tasks = all_tasks(&app, pid).await;
        assert_eq!(
            texts(&tasks)
                .iter()
                .filter(|t| t.starts_with('c'))
                .cloned()
                .collect::<Vec<_>>(),
            vec!["c0-edited", "c1", "c2-fixed", "c3", "c4", "c5"]
        );

        // Annotate a0, then a.json leaves the bucket: policy "delete" removes
        // a1 and a3 (no annotations) and keeps a0 (flagged).
        let a0 = tasks.iter().find(|t| t["data"]["text"] == "a0").unwrap()["id"]
            .as_i64()
            .unwrap();
        let (s, _) = app
            .post(
                &format!("/api/tasks/{a0}/annotations"),
                json!({"result": [{"value": {"choices": ["a"]}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        gcs.delete(&bucket, "t/a.json").await.unwrap();
        // c.jsonl shrinks: rows 3.. go (none annotated).
        put(
            "t/c.jsonl",
            b"{\"text\": \"c0-edited\"}\n{\"text\": \"c1\"}\n{\"text\": \"c2-fixed\"}\n".to_vec(),
        )
        .await;
        let st = sync(&app, id).await;
        assert_eq!(st["meta"]["tasks_deleted"], 5, "a1, a3, c3, c4, c5: {st}");
        assert_eq!(st["meta"]["objects_missing"], 1, "{st}");
        let tasks = all_tasks(&app, pid).await;
        assert_eq!(
            texts(&tasks),
            vec!["a0", "b", "c0-edited", "c1", "c2-fixed", "d0", "d1", "d2"]
        );
        let links = app.db().links_of_object(id, "t/a.json").await.unwrap();
        assert_eq!(links.len(), 1);
        assert!(!links[0].object_exists, "the annotated task's link is flagged");
        let counts = app.db().project_counts(pid).await.unwrap();
        assert_eq!(counts, app.db().project_counts_recomputed(pid).await.unwrap());

        // Policy "flag": b.json leaves; its task stays, flagged. "keep": nothing changes.
        let (s, _) = app
            .patch(&format!("/api/storages/gcs/{id}"), json!({"deletion_policy": "flag"}))
            .await;
        assert_eq!(s, StatusCode::OK);
        gcs.delete(&bucket, "t/b.json").await.unwrap();
        let st = sync(&app, id).await;
        assert_eq!(st["meta"]["tasks_deleted"], 0, "{st}");
        assert_eq!(st["meta"]["objects_missing"], 2, "a.json (flagged) and b.json: {st}");
        assert_eq!(st["deletion_policy"], "flag");
        assert_eq!(all_tasks(&app, pid).await.len(), 8);
        assert!(!app.db().links_of_object(id, "t/b.json").await.unwrap()[0].object_exists);
        // It comes back: unflagged.
        put("t/b.json", br#"{"text": "b"}"#.to_vec()).await;
        sync(&app, id).await;
        assert!(app.db().links_of_object(id, "t/b.json").await.unwrap()[0].object_exists);
        let (s, _) = app
            .patch(&format!("/api/storages/gcs/{id}"), json!({"deletion_policy": "keep"}))
            .await;
        assert_eq!(s, StatusCode::OK);
        gcs.delete(&bucket, "t/d.parquet").await.unwrap();
        let st = sync(&app, id).await;
        assert_eq!(st["meta"]["objects_missing"], 2, "a.json and d.parquet: {st}");
        assert!(app
            .db()
            .links_of_object(id, "t/d.parquet")
            .await
            .unwrap()
            .iter()
            .all(|l| l.object_exists));
        assert_eq!(all_tasks(&app, pid).await.len(), 8);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_bucket_that_disappears_fails_the_sync_with_a_clear_message() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    for backend in backends() {
        let bucket = format!("gone-{backend:?}").to_lowercase();
        gcs.create_bucket(&bucket).await.unwrap();
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let pid = project(&app, IMAGE_CONFIG).await;
        let id = storage(&app, json!({"project": pid, "bucket": bucket, "use_blob_urls": true})).await;
        gcs.delete_bucket(&bucket).await.unwrap();
        let st = sync(&app, id).await;
        assert_eq!(st["status"], "failed", "{st}");
        assert!(
            st["traceback"]
                .as_str()
                .unwrap()
                .contains(&format!("bucket \"{bucket}\" does not exist")),
            "{st}"
        );
        assert!(st["meta"]["time_failure"].is_string());
        app.stop().await;
    }
}

#[tokio::test]
async fn tasks_mode_preview_shows_the_first_tasks_a_sync_would_make() {
    let gcs = emulator().await;
    gcs.upload(
        "media",
        "preview/a.jsonl",
        b"{\"text\": \"one\"}\n{\"data\": {\"text\": \"two\"}, \"predictions\": []}\n[1]\n{\"text\": \"four\"}\n"
            .to_vec(),
        "application/x-ndjson",
    )
    .await
    .unwrap();
    gcs.upload(
        "media",
        "preview/b.json",
        b"[{\"text\": \"five\"}]".to_vec(),
        "application/json",
    )
    .await
    .unwrap();
    gcs.upload("media", "preview/c.txt", b"not tasks".to_vec(), "text/plain")
        .await
        .unwrap();
    let app = TestApp::spawn_with_gcs(labelport_testkit::Backend::Sqlite, &gcs, 0).await;
    let pid = project(&app, TEXT_CONFIG).await;
    let (s, got) = app
        .post(
            "/api/storages/gcs/files",
            json!({"project": pid, "bucket": "media", "prefix": "preview", "use_blob_urls": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["files"].as_array().unwrap().len(), 3, "{got}");
    let tasks = got["tasks"].as_array().expect("tasks mode previews tasks");
    let shown: Vec<(String, String)> = tasks
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_owned(),
                if t["data"].is_object() {
                    t["data"]["text"].as_str().unwrap().to_owned()
                } else {
                    format!("error: {}", t["error"].as_str().unwrap())
                },
            )
        })
        .collect();
    assert_eq!(shown.len(), 6, "{got}");
    assert_eq!(shown[0], ("preview/a.jsonl".into(), "one".into()));
    assert_eq!(
        shown[1],
        ("preview/a.jsonl".into(), "two".into()),
        "a wrapped task shows its data"
    );
    assert!(
        shown[2].1.starts_with("error: "),
        "a bad row is shown as a sync reports it: {got}"
    );
    assert_eq!(tasks[2]["position"], "line 3", "{got}");
    assert_eq!(shown[3], ("preview/a.jsonl".into(), "four".into()));
    assert_eq!(shown[4], ("preview/b.json".into(), "five".into()));
    assert!(
        shown[5].0 == "preview/c.txt" && shown[5].1.contains("not a JSON, JSONL or Parquet file"),
        "{got}"
    );
    // Files mode: no task preview.
    let (_, got) = app
        .post(
            "/api/storages/gcs/files",
            json!({"project": pid, "bucket": "media", "prefix": "preview", "use_blob_urls": true}),
        )
        .await;
    assert!(got.get("tasks").is_none(), "{got}");
    // Bounded: a task's large data is cut, a row over 1 MiB is an error
    // (not 256 MiB read), and a file that is not a task file is named.
    let long = "y".repeat(10_000);
    let huge = "z".repeat(2 << 20);
    gcs.upload(
        "media",
        "bounded/a.jsonl",
        format!("{{\"text\": \"{long}\"}}\n{{\"text\": \"{huge}\"}}\n{{\"text\": \"after\"}}\n").into_bytes(),
        "application/x-ndjson",
    )
    .await
    .unwrap();
    let (s, got) = app
        .post(
            "/api/storages/gcs/files",
            json!({"project": pid, "bucket": "media", "prefix": "bounded", "use_blob_urls": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let tasks = got["tasks"].as_array().unwrap();
    let cut = tasks[0]["data_truncated"].as_str().expect("large data is cut");
    assert!(
        cut.chars().count() <= 4097 && cut.starts_with("{\"text\":\"yyy"),
        "{}",
        &cut[..40]
    );
    assert!(tasks[0].get("data").is_none());
    assert!(
        tasks[1]["error"].is_string(),
        "a row over 1 MiB is refused: {}",
        tasks[1]
    );
    assert!(got.to_string().len() < 64 << 10, "the answer stays small");
    // Nothing was imported by a preview.
    assert!(all_tasks(&app, pid).await.is_empty());

    // A row without a key the label config reads: refused by the preview
    // and by the sync alike (the editor could not show it), as an upload
    // refuses it.
    gcs.upload(
        "media",
        "keys/a.jsonl",
        b"{\"text\": \"fine\"}\n{\"image\": \"x.png\"}\n".to_vec(),
        "application/x-ndjson",
    )
    .await
    .unwrap();
    let body = json!({"project": pid, "bucket": "media", "prefix": "keys", "use_blob_urls": false});
    let (_, got) = app.post("/api/storages/gcs/files", body.clone()).await;
    assert_eq!(got["tasks"][0]["data"]["text"], "fine", "{got}");
    let refusal = got["tasks"][1]["error"].as_str().unwrap_or_default();
    assert!(refusal.contains("data has no \"text\" key"), "{got}");
    let (s, st) = app.post("/api/storages/gcs", body).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let (_, _) = app
        .post(&format!("/api/storages/gcs/{}/sync", st["id"]), json!(null))
        .await;
    app.run_jobs().await;
    let (_, done) = app.get(&format!("/api/storages/gcs/{}", st["id"])).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["last_sync_count"], 1, "{done}");
    assert!(
        done["traceback"]
            .as_str()
            .unwrap()
            .contains("keys/a.jsonl:line 2: data has no \"text\" key"),
        "{done}"
    );
    assert_eq!(all_tasks(&app, pid).await.len(), 1);
    // Once the config reads what the row holds, the next sync brings it in
    // (the file stayed marked unread); the first row is not made twice.
    let (s, p) = app
        .patch(&format!("/api/projects/{pid}"), json!({"label_config": IMAGE_CONFIG}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let (_, _) = app
        .post(&format!("/api/storages/gcs/{}/sync", st["id"]), json!(null))
        .await;
    app.run_jobs().await;
    let tasks = all_tasks(&app, pid).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(tasks.iter().filter(|t| t["data"].get("image").is_some()).count(), 1);
}
