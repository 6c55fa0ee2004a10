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
        assert_eq!(done["meta"]["rows_failed"].as_i64().unwrap_or(0), 0, "{done}");
        assert!(done["meta"]["attempts"].as_i64().unwrap() >= 2, "retried: {done}");
        assert!(proxy.downloads() - downloads_before >= 2, "read again");
        let (_, project) = app.get(&format!("/api/projects/{pid}")).await;
        assert_eq!(project["task_number"], LINES as i64, "{project}");
        // Every row exactly once.
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
        let mut seen = vec![false; LINES];
        for t in &tasks {
            let n = t["data"]["n"].as_u64().unwrap() as usize;
            assert!(!seen[n], "row {n} imported twice");
            seen[n] = true;
        }
        assert!(seen.iter().all(|s| *s));
        app.stop().await;
    }
}
