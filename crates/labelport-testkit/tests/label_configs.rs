//! Label Studio's ways of reading task data, through the API: a multi-page
//! image (`valueList`) and a Repeater are accepted as configs, their tasks
//! import (and bad ones are refused naming the key), and every bucket URI
//! inside them is resolved and served.

use labelport_domain::resolve::encode_fileuri;
use labelport_testkit::{backends, FakeGcs, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const MULTI_PAGE: &str = r#"<View><Image name="pages" valueList="$images"/><Choices name="c" toName="pages" perItem="true"><Choice value="a"/></Choices></View>"#;
const REPEATER: &str = r#"<View><Repeater on="$document" indexFlag="{{idx}}"><Image name="page_{{idx}}" value="$document[{{idx}}].page"/><Choices name="c_{{idx}}" toName="page_{{idx}}"><Choice value="a"/></Choices></Repeater></View>"#;

async fn project(app: &TestApp, config: &str) -> i64 {
    let (s, p) = app
        .post("/api/projects", json!({"title": "refs", "label_config": config}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{config}: {p}");
    let pid = p["id"].as_i64().unwrap();
    let (s, st) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "refs", "presign": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    pid
}

/// Imports `data`; returns the new task's id.
async fn import_one(app: &TestApp, pid: i64, data: Value) -> i64 {
    let (s, r) = app.post(&format!("/api/projects/{pid}/import"), json!([data])).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (_, list) = app.get(&format!("/api/tasks?project={pid}")).await;
    list["tasks"].as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The resolve URL of `uri` in task `tid` serves the object's bytes.
async fn served(app: &TestApp, tid: i64, shown: &Value, uri: &str, bytes: &[u8]) {
    let url = format!("/tasks/{tid}/resolve/?fileuri={}", encode_fileuri(uri));
    assert_eq!(shown, &json!(url), "{uri} is shown as its resolve URL");
    let r = app.get_raw(&url).await;
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes);
}

#[tokio::test]
async fn multi_page_images_and_repeaters_import_and_resolve() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("refs").await.unwrap();
    for (name, body) in [("p1.jpg", b"page one".as_slice()), ("p2.jpg", b"page two".as_slice())] {
        gcs.upload("refs", name, body.to_vec(), "image/jpeg").await.unwrap();
    }
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;

        // Multi-page image.
        let pid = project(&app, MULTI_PAGE).await;
        let (s, e) = app
            .post(
                &format!("/api/projects/{pid}/import"),
                json!([{"images": "gs://refs/p1.jpg"}]),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("\\\"images\\\" must be a list"), "{e}");
        let tid = import_one(&app, pid, json!({"images": ["gs://refs/p1.jpg", "gs://refs/p2.jpg"]})).await;
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        served(&app, tid, &task["data"]["images"][0], "gs://refs/p1.jpg", b"page one").await;
        served(&app, tid, &task["data"]["images"][1], "gs://refs/p2.jpg", b"page two").await;

        // Repeater.
        let pid = project(&app, REPEATER).await;
        let (s, e) = app
            .post(&format!("/api/projects/{pid}/import"), json!([{"pages": []}]))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("document"), "{e}");
        let tid = import_one(
            &app,
            pid,
            json!({"document": [{"page": "gs://refs/p1.jpg"}, {"page": "gs://refs/p2.jpg"}]}),
        )
        .await;
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        served(
            &app,
            tid,
            &task["data"]["document"][1]["page"],
            "gs://refs/p2.jpg",
            b"page two",
        )
        .await;
        // Results name the repeated tags as the editor expands them.
        let (s, a) = app
            .post(
                &format!("/api/tasks/{tid}/annotations/"),
                json!({"result": [{"from_name": "c_1", "to_name": "page_1", "type": "choices", "value": {"choices": ["a"]}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        app.stop().await;
    }
}
