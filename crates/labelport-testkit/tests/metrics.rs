//! `GET /metrics`: admins only; after a sync, media through the proxy (one
//! read throttled), an export held back by a refused upload and a missing
//! object, the Prometheus text shows each of them.

use labelport_testkit::{backends, FakeGcs, FaultProxy, RequestKind, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

/// The value of the sample `name{labels}` (labels as rendered, in order;
/// empty for none), or None when absent.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (StatusCode, String) {
    let mut req = app.http.get(format!("{}/metrics", app.base_url));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Token {t}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    if status == StatusCode::OK {
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    }
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_show_syncs_jobs_media_exports_and_errors() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("metrics").await.unwrap();
    gcs.create_bucket("metrics-out").await.unwrap();
    for i in 0..25 {
        gcs.upload("metrics", &format!("imgs/{i:02}.png"), vec![7u8; 1000], "image/png")
            .await
            .unwrap();
    }
    // Passes everything through unless told otherwise.
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    for backend in backends() {
        proxy.heal();
        // Deleted again below, on each backend.
        gcs.upload("metrics", "imgs/24.png", vec![7u8; 1000], "image/png")
            .await
            .unwrap();
        let app = TestApp::spawn_with_gcs_endpoint(backend, &proxy.endpoint, 1).await;
        // Counting starts with the server, not at the first scrape.
        let (s, _) = app.get("/api/current-user/whoami").await;
        assert_eq!(s, StatusCode::OK);
        let (_, first) = scrape(&app, Some(&app.token)).await;
        assert!(
            sample(
                &first,
                "labelport_http_requests_total",
                "method=\"GET\",route=\"/api/current-user/whoami\",status=\"200\""
            )
            .is_some_and(|n| n >= 1.0),
            "{first}"
        );
        // Only admins read the metrics.
        assert_eq!(scrape(&app, None).await.0, StatusCode::UNAUTHORIZED);
        let (_, u) = app
            .post("/api/users", json!({"username": "mgr", "role": "manager"}))
            .await;
        let manager = u["token"].as_str().unwrap().to_owned();
        assert_eq!(scrape(&app, Some(&manager)).await.0, StatusCode::FORBIDDEN);
        let (_, before) = scrape(&app, Some(&app.token)).await;

        let (_, p) = app
            .post("/api/projects", json!({"title": "m", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (_, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": "metrics", "prefix": "imgs", "presign": false, "use_blob_urls": true}),
            )
            .await;
        let sid = st["id"].as_i64().unwrap();
        app.post(&format!("/api/storages/gcs/{sid}/sync"), json!({})).await;
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{sid}")).await;
        assert_eq!(done["status"], "completed", "{done}");

        // Media through the proxy (the first read answered 429 and tried
        // again: a transient error), and an object that is gone.
        let (_, list) = app.get(&format!("/api/tasks?project={pid}&page_size=3")).await;
        proxy.throttle(&[RequestKind::Read], 10);
        for t in list["tasks"].as_array().unwrap() {
            let r = app.get_raw(t["data"]["image"].as_str().unwrap()).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.bytes().await.unwrap().len(), 1000);
        }
        assert_eq!(proxy.throttled(RequestKind::Read), 1, "one media read was throttled");
        proxy.heal();
        gcs.delete("metrics", "imgs/24.png").await.unwrap();
        let (_, gone) = app.get(&format!("/api/tasks?project={pid}&page_size=30")).await;
        let gone_url = gone["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["data"]["image"].as_str().unwrap().to_owned())
            .find(|u| u.contains(&labelport_domain::resolve::encode_fileuri("gs://metrics/imgs/24.png")))
            .expect("the task of imgs/24.png");
        // Label Studio's answer for a storage failure while serving media.
        assert_eq!(app.get_raw(&gone_url).await.status(), StatusCode::FAILED_DEPENDENCY);

        // An export storage, and a save that waits to be exported.
        let (s, ex) = app
            .post(
                "/api/storages/export/gcs",
                json!({"project": pid, "bucket": "metrics-out"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ex}");
        let eid = ex["id"].as_i64().unwrap();
        let done = app.wait_for_sync(&format!("/api/storages/export/gcs/{eid}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        // The bucket refuses writes (403) while the save waits: the export
        // is held back, and the gauges show it.
        let failed_before = proxy.failed_uploads();
        proxy.fail_uploads_with("", u64::MAX, 403);
        let task = list["tasks"][0]["id"].as_i64().unwrap();
        let (s, _) = app
            .post(
                &format!("/api/tasks/{task}/annotations/"),
                json!({"result": [{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let waiting = std::time::Instant::now();
        while proxy.failed_uploads() == failed_before {
            assert!(
                waiting.elapsed() < std::time::Duration::from_secs(30),
                "the export never tried to write"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (s, held) = scrape(&app, Some(&app.token)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(sample(&held, "labelport_export_pending", ""), Some(1.0), "{held}");
        let lag = sample(&held, "labelport_export_lag_seconds", "").unwrap();
        assert!(lag > 0.0 && lag < 60.0, "export lag while held back: {lag}");
        assert!(
            sample(&held, "labelport_storage_errors_total", "family=\"permission\"").unwrap_or(0.0)
                - sample(&before, "labelport_storage_errors_total", "family=\"permission\"").unwrap_or(0.0)
                >= 1.0,
            "{held}"
        );
        proxy.heal();
        app.post(&format!("/api/storages/export/gcs/{eid}/sync"), json!(null))
            .await;
        let done = app.wait_for_sync(&format!("/api/storages/export/gcs/{eid}")).await;
        assert_eq!(done["status"], "completed", "{done}");

        let (s, after) = scrape(&app, Some(&app.token)).await;
        assert_eq!(s, StatusCode::OK);
        let grew = |name: &str, labels: &str| {
            sample(&after, name, labels).unwrap_or_else(|| panic!("{name}{{{labels}}} missing:\n{after}"))
                - sample(&before, name, labels).unwrap_or(0.0)
        };
        assert!(grew("labelport_sync_objects_total", "direction=\"import\",op=\"listed\"") >= 25.0);
        assert!(grew("labelport_sync_tasks_created_total", "") >= 25.0);
        assert!(grew("labelport_sync_objects_total", "direction=\"export\",op=\"written\"") >= 1.0);
        assert!(grew("labelport_proxy_bytes_total", "") >= 3000.0);
        assert!(grew("labelport_storage_errors_total", "family=\"missing\"") >= 1.0);
        assert!(grew("labelport_storage_errors_total", "family=\"transient\"") >= 1.0);
        assert!(grew("labelport_storage_errors_total", "family=\"permission\"") >= 1.0);
        assert!(
            grew("labelport_jobs_started_total", "kind=\"import_sync\"") >= 1.0,
            "{after}"
        );
        assert!(grew("labelport_jobs_ended_total", "kind=\"import_sync\",outcome=\"done\"") >= 1.0);
        assert!(
            grew(
                "labelport_http_requests_total",
                "method=\"POST\",route=\"/api/storages/{kind}/{id}/sync\",status=\"200\""
            ) >= 1.0
        );
        assert!(
            sample(
                &after,
                "labelport_http_request_duration_seconds_count",
                "method=\"GET\",route=\"/api/tasks\""
            )
            .unwrap()
                >= 2.0
        );
        assert!(sample(&after, "labelport_jobs", "kind=\"import_sync\",status=\"done\"").unwrap() >= 1.0);
        assert_eq!(sample(&after, "labelport_export_pending", ""), Some(0.0), "{after}");
        assert_eq!(sample(&after, "labelport_export_lag_seconds", ""), Some(0.0));
        assert!(
            after.contains("# HELP labelport_job_takeovers_total") || !after.contains("labelport_job_takeovers_total{")
        );
        app.stop().await;
    }
}
