//! Integration tests of the HTTP API against a real server on SQLite and
//! (when `LABELPORT_TEST_DATABASE_URL` is set) PostgreSQL.

use labelport_testkit::{backends, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const IMAGE_CONFIG: &str = r#"<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image"><Label value="Cat"/></RectangleLabels></View>"#;

async fn project(app: &TestApp, config: &str) -> i64 {
    let (s, p) = app
        .post("/api/projects/", json!({"title": "t", "label_config": config}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p["id"].as_i64().unwrap()
}

/// The counters kept on the project equal a full recount of its tasks.
async fn assert_counts_consistent(app: &TestApp, project_id: i64) {
    let kept = app.db().project_counts(project_id).await.unwrap();
    let recounted = app.db().project_counts_recomputed(project_id).await.unwrap();
    assert_eq!(kept, recounted, "kept project counters drifted from the tasks");
}

fn assert_error_shape(body: &Value, status: u16) {
    assert_eq!(body["status_code"], status, "{body}");
    assert!(body["id"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert!(body.get("exc_info").is_some(), "{body}");
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let url = format!("{}/api/projects", app.base_url);
        let r = app.http.get(&url).send().await.unwrap();
        let (s, body) = labelport_testkit::read(r).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_error_shape(&body, 401);
        let r = app
            .http
            .get(&url)
            .header("Authorization", "Token wrong-token-value")
            .send()
            .await
            .unwrap();
        let (s, body) = labelport_testkit::read(r).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid token.");
        let r = app
            .http
            .get(&url)
            .header("Authorization", "Bearer x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let (s, _) = app.get("/api/projects").await;
        assert_eq!(s, StatusCode::OK);
        // /health needs no token.
        let r = app.http.get(format!("{}/health", app.base_url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (s, me) = app.get("/api/current-user/whoami").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(me["email"], "tester@example.com");
        app.stop().await;
    }
}

#[tokio::test]
async fn projects_crud_with_validation_and_both_slash_forms() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (s, p) = app
            .post(
                "/api/projects",
                json!({"title": "Cats", "description": "d", "label_config": IMAGE_CONFIG, "show_skip_button": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let id = p["id"].as_i64().unwrap();
        assert_eq!(p["title"], "Cats");
        assert_eq!(p["show_skip_button"], false);
        assert_eq!(p["maximum_annotations"], 1);
        assert_eq!(p["task_number"], 0);
        assert_eq!(p["parsed_label_config"]["label"]["inputs"][0]["value"], "image");

        for path in [format!("/api/projects/{id}"), format!("/api/projects/{id}/")] {
            let (s, got) = app.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path}");
            assert_eq!(got["id"], id);
        }
        let (s, patched) = app
            .patch(&format!("/api/projects/{id}"), json!({"title": "Dogs"}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(patched["title"], "Dogs");
        assert_eq!(patched["description"], "d", "PATCH keeps fields it does not name");
        assert_eq!(patched["show_skip_button"], false);

        // Bad configs and fields: 400 naming the field, nothing changed.
        for (body, field) in [
            (
                json!({"label_config": "<View><Image name='i' value='$x'></View>"}),
                "label_config",
            ),
            (json!({"label_config": "<View></View>"}), "label_config"),
            (
                json!({"label_config": "<View><Image name='i' value='$x'/><Choices name='c' toName='zz'/></View>"}),
                "label_config",
            ),
            (json!({"title": "x".repeat(51)}), "title"),
            (json!({"maximum_annotations": 0}), "maximum_annotations"),
            (json!({"show_skip_button": "yes"}), "show_skip_button"),
        ] {
            let (s, e) = app.patch(&format!("/api/projects/{id}"), body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
            assert_error_shape(&e, 400);
            assert!(e["validation_errors"][field].is_array(), "{body} -> {e}");
            let (s, e) = app.post("/api/projects", body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {e}");
        }
        let (s, e) = app.post("/api/projects", json!({"title": 5})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(e["validation_errors"]["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("JSON"));
        let (s, e) = app.post_raw("/api/projects", "{not json").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let (_, got) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(got["title"], "Dogs");

        // A project without a config gets Label Studio's empty default.
        let (s, p2) = app.post("/api/projects", json!({"title": "empty"})).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(p2["label_config"], "<View></View>");

        // Paged list, newest first; a page past the end is empty, not an error.
        let (s, list) = app.get("/api/projects?page_size=1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["count"], 2);
        assert_eq!(list["results"][0]["title"], "empty");
        assert!(list["next"].as_str().unwrap().contains("page=2"));
        let (_, page2) = app.get("/api/projects?page_size=1&page=2").await;
        assert_eq!(page2["results"][0]["id"], id);
        assert!(page2["next"].is_null());
        let (s, page3) = app.get("/api/projects?page_size=1&page=3").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(page3["results"], json!([]));
        let (s, _) = app.get("/api/projects?page=0").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let (s, _) = app.delete(&format!("/api/projects/{id}/")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, e) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_error_shape(&e, 404);
        let (s, _) = app.get("/api/projects/not-a-number").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, e) = app.get("/api/no/such/route").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_error_shape(&e, 404);
        let (s, _) = app.call(reqwest::Method::PUT, "/api/projects", None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        app.stop().await;
    }
}

#[tokio::test]
async fn import_is_all_or_nothing_and_counts_are_kept() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let id = project(&app, IMAGE_CONFIG).await;
        let (s, r) = app
            .post(
                &format!("/api/projects/{id}/import"),
                json!([
                    {"image": "a.jpg"},
                    {"data": {"image": "b.jpg"}, "meta": {"source": "x"},
                     "annotations": [{"result": [{"type": "rectanglelabels", "value": {}}]},
                                     {"result": [], "was_cancelled": true}],
                     "predictions": [{"result": [], "score": 0.9, "model_version": "m1"}]},
                ]),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!(r["task_count"], 2);
        assert_eq!(r["annotation_count"], 2);
        assert_eq!(r["prediction_count"], 1);
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(p["task_number"], 2);
        assert_eq!(p["total_annotations_number"], 1);
        assert_eq!(p["skipped_annotations_number"], 1);
        assert_eq!(p["total_predictions_number"], 1);
        assert_eq!(p["num_tasks_with_annotations"], 1);
        assert_eq!(p["finished_task_number"], 1);

        // One object is one task.
        let (s, r) = app
            .post(&format!("/api/projects/{id}/import"), json!({"image": "c.jpg"}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(r["task_count"], 1);

        // Broken bodies and bad elements import nothing.
        for raw in ["[{\"image\": 1},", "", "42", "[1, 2]"] {
            let (s, e) = app.post_raw(&format!("/api/projects/{id}/import"), raw).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{raw}: {e}");
            assert_error_shape(&e, 400);
        }
        let (s, e) = app
            .post(
                &format!("/api/projects/{id}/import"),
                json!([{"image": "ok.jpg"}, {"data": {"image": "z"}, "annotations": [{"result": "nope"}]}, {"img": "typo"}]),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let listed = &e["validation_errors"]["tasks"];
        assert!(listed[0].as_str().unwrap().starts_with("task #1"), "{e}");
        assert!(listed[1].as_str().unwrap().contains("no \"image\" key"), "{e}");
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(p["task_number"], 3, "nothing of the rejected imports was written");
        assert_counts_consistent(&app, id).await;
        let (s, _) = app.post("/api/projects/999999/import", json!([{"a": 1}])).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn task_pages_crud_and_undefined_key() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let id = project(&app, IMAGE_CONFIG).await;
        let tasks: Vec<Value> = (0..250).map(|i| json!({"image": format!("{i}.jpg"), "n": i})).collect();
        let (s, _) = app
            .post(&format!("/api/projects/{id}/import"), Value::Array(tasks))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let mut seen = Vec::new();
        for page in 1..=4 {
            let (s, r) = app
                .get(&format!(
                    "/api/tasks/?fields=all&page={page}&page_size=100&project={id}"
                ))
                .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(r["total"], 250);
            let items = r["tasks"].as_array().unwrap();
            assert_eq!(items.len(), [100, 100, 50, 0][page - 1], "page {page}");
            seen.extend(items.iter().map(|t| t["data"]["n"].as_i64().unwrap()));
        }
        assert_eq!(seen, (0..250).collect::<Vec<_>>(), "every task once, in order");
        let (s, _) = app.get("/api/tasks").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "project is required");
        let (s, _) = app.get(&format!("/api/tasks?project={id}&page_size=0")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = app.get(&format!("/api/tasks?project={id}&page=abc")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, plain) = app.get(&format!("/api/projects/{id}/tasks?page_size=10")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(plain.as_array().unwrap().len(), 10);

        // $undefined$ is stored raw and shown under the first data key.
        let (s, t) = app
            .post(
                "/api/tasks",
                json!({"project": id, "data": {"$undefined$": "gs://b/k.jpg"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        assert_eq!(t["data"], json!({"image": "gs://b/k.jpg"}));
        let tid = t["id"].as_i64().unwrap();
        let (_, got) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(got["data"], json!({"image": "gs://b/k.jpg"}));
        let stored = app.db().get_task(tid).await.unwrap();
        assert_eq!(stored.data, r#"{"$undefined$":"gs://b/k.jpg"}"#);

        let (s, t) = app
            .patch(&format!("/api/tasks/{tid}"), json!({"data": {"image": "new.jpg"}}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(t["data"]["image"], "new.jpg");
        let (s, e) = app.patch(&format!("/api/tasks/{tid}"), json!({"data": [1]})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(e["validation_errors"]["data"].is_array());
        let (s, e) = app.post("/api/tasks", json!({"project": 424242, "data": {}})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["validation_errors"]["project"].is_array());
        let (s, _) = app.delete(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        assert_counts_consistent(&app, id).await;
        let (s, _) = app.delete(&format!("/api/projects/{id}/tasks/")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(p["task_number"], 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn annotations_and_predictions_lifecycle() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let id = project(&app, IMAGE_CONFIG).await;
        let (_, t) = app
            .post("/api/tasks", json!({"project": id, "data": {"image": "a.jpg"}}))
            .await;
        let tid = t["id"].as_i64().unwrap();
        let result = json!([{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["Cat"]},
            "original_width": 1, "original_height": 1}]);
        let (s, a) = app
            .post(
                &format!("/api/tasks/{tid}/annotations/"),
                json!({"result": result, "ground_truth": false, "lead_time": 1.0, "was_cancelled": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        let aid = a["id"].as_i64().unwrap();
        assert_eq!(a["task"], tid);
        assert_eq!(a["project"], id);
        assert_eq!(a["result"], result);
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(task["is_labeled"], true);
        assert_eq!(task["total_annotations"], 1);
        assert_eq!(task["annotations"][0]["id"], aid);

        for bad in [
            json!({"result": "nope"}),
            json!({"result": [1, 2]}),
            json!({"result": {"a": 1}}),
        ] {
            let (s, e) = app.post(&format!("/api/tasks/{tid}/annotations"), bad.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e["validation_errors"]["result"].is_array(), "{e}");
            let (s, _) = app.patch(&format!("/api/annotations/{aid}"), bad).await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
        }
        let (s, _) = app.post("/api/tasks/999999/annotations", json!({"result": []})).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // The only task is labeled: nothing left to label next.
        let (s, e) = app.get(&format!("/api/projects/{id}/next")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
        let (s, a2) = app
            .patch(&format!("/api/annotations/{aid}/"), json!({"was_cancelled": true}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(a2["result"], result, "PATCH keeps the result it does not name");
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(p["total_annotations_number"], 0);
        assert_eq!(p["skipped_annotations_number"], 1);
        let (s, list) = app.get(&format!("/api/tasks/{tid}/annotations")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);

        let (s, _) = app.delete(&format!("/api/annotations/{aid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.get(&format!("/api/annotations/{aid}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(task["is_labeled"], false);
        assert_eq!(task["cancelled_annotations"], 0);

        let (s, pr) = app
            .post(
                "/api/predictions",
                json!({"task": tid, "result": result, "score": 0.25, "model_version": "v2"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{pr}");
        let pid = pr["id"].as_i64().unwrap();
        let (_, list) = app.get(&format!("/api/predictions?task={tid}")).await;
        assert_eq!(list[0]["score"], 0.25);
        let (_, list) = app.get(&format!("/api/predictions?project={id}")).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        let (s, pr) = app
            .patch(&format!("/api/predictions/{pid}"), json!({"score": 0.5}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(pr["model_version"], "v2");
        assert_eq!(pr["score"], 0.5);
        let (s, _) = app.post("/api/predictions", json!({"task": tid, "result": "x"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = app
            .post("/api/predictions", json!({"task": 999999, "result": []}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(task["total_predictions"], 1);
        let (s, _) = app.delete(&format!("/api/predictions/{pid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (_, task) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(task["total_predictions"], 0);
        assert_counts_consistent(&app, id).await;
        // Deleting an annotated task takes its counts off the project.
        let (_, a) = app
            .post(&format!("/api/tasks/{tid}/annotations"), json!({"result": result}))
            .await;
        assert!(a["id"].is_i64());
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(p["total_annotations_number"], 1);
        let (s, _) = app.delete(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (_, p) = app.get(&format!("/api/projects/{id}")).await;
        assert_eq!(
            (p["task_number"].as_i64(), p["total_annotations_number"].as_i64()),
            (Some(0), Some(0))
        );
        assert_counts_consistent(&app, id).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn export_streams_every_page_and_filters_unannotated() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let id = project(&app, r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#).await;
        // More than one export page (500) to cross page boundaries.
        let mut tasks: Vec<Value> = (0..1203).map(|i| json!({"text": format!("t{i}")})).collect();
        tasks.push(json!({"$undefined$": "gs://b/x.txt"}));
        tasks[700] = json!({"data": {"text": "t700"}, "annotations": [{"result": [{"value": {"choices": ["a"]}}]}]});
        let (s, _) = app
            .post(&format!("/api/projects/{id}/import"), Value::Array(tasks))
            .await;
        assert_eq!(s, StatusCode::CREATED);

        let (s, all) = app
            .get(&format!(
                "/api/projects/{id}/export?exportType=JSON&download_all_tasks=true"
            ))
            .await;
        assert_eq!(s, StatusCode::OK);
        let all = all.as_array().expect("a JSON array");
        assert_eq!(all.len(), 1204);
        let ids: Vec<i64> = all.iter().map(|t| t["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "each task once, in order");
        assert_eq!(all[700]["annotations"][0]["result"][0]["value"]["choices"][0], "a");
        assert_eq!(all[1203]["data"], json!({"text": "gs://b/x.txt"}));

        let (s, annotated) = app.get(&format!("/api/projects/{id}/export?exportType=JSON")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(annotated.as_array().unwrap().len(), 1);
        assert_eq!(annotated[0]["data"]["text"], "t700");

        let (s, _) = app.get(&format!("/api/projects/{id}/export?exportType=CSV")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = app
            .get(&format!("/api/projects/{id}/export?download_all_tasks=maybe"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = app.get("/api/projects/999999/export").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, empty) = app
            .get(&format!("/api/projects/{}/export", project(&app, IMAGE_CONFIG).await))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(empty, json!([]));
        app.stop().await;
    }
}

#[tokio::test]
async fn deleting_a_project_deletes_its_tasks_and_annotations() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let id = project(&app, IMAGE_CONFIG).await;
        let (_, t) = app
            .post("/api/tasks", json!({"project": id, "data": {"image": "a"}}))
            .await;
        let tid = t["id"].as_i64().unwrap();
        let (_, a) = app
            .post(&format!("/api/tasks/{tid}/annotations"), json!({"result": []}))
            .await;
        let (s, _) = app.delete(&format!("/api/projects/{id}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app.get(&format!("/api/annotations/{}", a["id"])).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app.delete(&format!("/api/projects/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn openapi_document_lists_the_handlers() {
    let app = TestApp::spawn(labelport_testkit::Backend::Sqlite).await;
    let r = app
        .http
        .get(format!("{}/api/openapi.json", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/projects",
        "/api/projects/{id}",
        "/api/projects/{id}/import",
        "/api/tasks",
        "/api/annotations/{id}",
        "/health",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["paths"]["/api/projects"]["post"].is_object());
    app.stop().await;
}

/// Every page of `/api/tasks`, walked with an odd page size, gives each task
/// once in id order, by seek on inner ids past the ranges that deleted
/// tasks left, the same as by OFFSET (issue 18, item 3). Two projects
/// imported in turns so that neither's ids are contiguous.
#[tokio::test]
async fn task_pages_by_seek_and_by_offset_give_the_same_tasks() {
    async fn walk(app: &TestApp, project: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        for page in 1.. {
            let (s, r) = app
                .get(&format!("/api/tasks?project={project}&page={page}&page_size=7"))
                .await;
            assert_eq!(s, StatusCode::OK, "{r}");
            let tasks = r["tasks"].as_array().unwrap();
            if tasks.is_empty() {
                break;
            }
            ids.extend(tasks.iter().map(|t| t["id"].as_i64().unwrap()));
        }
        ids
    }
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let a = project(&app, IMAGE_CONFIG).await;
        let b = project(&app, IMAGE_CONFIG).await;
        for round in 0..4 {
            for p in [a, b] {
                let tasks: Vec<Value> = (0..25).map(|i| json!({"image": format!("{round}-{i}.jpg")})).collect();
                let (s, r) = app
                    .post(&format!("/api/projects/{p}/import"), Value::Array(tasks))
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{r}");
            }
        }
        let (s, one) = app
            .post("/api/tasks", json!({"project": a, "data": {"image": "x.jpg"}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{one}");
        let all = walk(&app, a).await;
        assert_eq!(all.len(), 101);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "in id order, each once");
        assert!(walk(&app, b).await.iter().all(|id| !all.contains(id)));
        // Deleted tasks leave gaps, kept as merged ranges of inner ids:
        // pages still seek past them, and give the same tasks as OFFSET.
        let mut expected = all.clone();
        for index in [40, 41, 39, 0, 100, 70] {
            let (s, _) = app.delete(&format!("/api/tasks/{}", all[index])).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            expected.retain(|id| *id != all[index]);
            assert_eq!(walk(&app, a).await, expected, "after deleting position {index}");
        }
        // 39, 40 and 41 are one range; 1, 71 and 101 their own.
        assert_eq!(
            app.db().task_gaps(a, 100).await.unwrap(),
            [(1, 1), (40, 42), (71, 71), (101, 101)]
        );
        let by_offset = app.db().clone().with_seek_max_gaps(0);
        for offset in [0, 1, 37, 38, 39, 60, 94, 95, 200] {
            let seek = app.db().task_page(a, offset, 7).await.unwrap();
            let scan = by_offset.task_page(a, offset, 7).await.unwrap();
            let ids = |rows: &[labelport_db::TaskRow]| rows.iter().map(|t| t.id).collect::<Vec<_>>();
            assert_eq!(ids(&seek), ids(&scan), "offset {offset}");
            // The database's sum of the gaps before a position agrees with
            // the reference walk over the ranges.
            let gaps = app.db().task_gaps(a, 100).await.unwrap();
            if let Some(first) = seek.first() {
                assert_eq!(
                    first.inner_id,
                    labelport_db::tasks::inner_id_at(offset, &gaps),
                    "offset {offset}"
                );
            }
        }
        // The count is the project's counter, not a recount.
        let (_, r) = app.get(&format!("/api/tasks?project={a}&page=1&page_size=7")).await;
        assert_eq!(r["total"], 95, "{r}");
        // Every task deleted: one range of every inner id handed out, and
        // tasks imported afterwards are paged from the start.
        let (s, _) = app.delete(&format!("/api/projects/{a}/tasks")).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(app.db().task_gaps(a, 100).await.unwrap(), [(1, 101)]);
        let (s, r) = app
            .post(
                &format!("/api/projects/{a}/import"),
                json!([{"image": "again-1.jpg"}, {"image": "again-2.jpg"}]),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let again = walk(&app, a).await;
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|id| !all.contains(id)));
        // A page past the end is empty either way.
        let (_, r) = app.get(&format!("/api/tasks?project={b}&page=99&page_size=7")).await;
        assert_eq!(r["tasks"], json!([]), "{r}");
        app.stop().await;
    }
}

/// The bulk writes of an import (multi-row VALUES on SQLite, whose ids come
/// from `last_insert_rowid`; UNNEST arrays on PostgreSQL): every task gets
/// its own id in file order, and rows another import linked first are
/// dropped, their inner ids recorded as gaps (issue 18, items 1 and 4).
#[tokio::test]
async fn bulk_imports_number_tasks_in_order_and_drop_rows_linked_first() {
    use labelport_db::tasks::LinkSpec;
    use labelport_domain::import::NewTask;
    use labelport_domain::storage::{Direction, StorageKind, StorageSettings};
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let p = project(&app, IMAGE_CONFIG).await;
        let mut settings = StorageSettings::defaults(Direction::Import);
        settings.bucket = "media".into();
        let storage = app
            .db()
            .create_storage(p, StorageKind::Gcs, &settings)
            .await
            .unwrap()
            .id;
        let (_, me) = app.get("/api/current-user/whoami").await;
        let user = me["id"].as_i64().expect("the user's id");
        let task = |i: usize| NewTask {
            data: json!({"image": format!("{i}.jpg")}),
            meta: json!({}),
            allow_skip: true,
            annotations: vec![],
            predictions: vec![],
        };
        let link = |row: usize| LinkSpec {
            key: "tasks.jsonl".into(),
            row_index: row as i64,
            generation: 0,
            etag: String::new(),
        };
        // 2,500 rows: more than one statement's 1,000.
        let tasks: Vec<NewTask> = (0..2500).map(task).collect();
        let links: Vec<LinkSpec> = (0..2500).map(link).collect();
        let first = app
            .db()
            .import_linked_tasks(p, 1, &tasks, user, Some((storage, &links)))
            .await
            .unwrap();
        assert_eq!(first.created, 2500);
        assert!(first.task_ids.windows(2).all(|w| w[0] < w[1]), "ids in file order");
        for (i, id) in [
            (0usize, first.task_ids[0]),
            (1234, first.task_ids[1234]),
            (2499, first.task_ids[2499]),
        ] {
            let row = app.db().get_task(id).await.unwrap();
            assert_eq!(row.data, json!({"image": format!("{i}.jpg")}).to_string());
            assert_eq!(row.inner_id, i as i64 + 1);
        }
        // Rows 2,000..2,500 again, with 10 new ones: only the new are kept.
        let again: Vec<NewTask> = (2000..2510).map(task).collect();
        let again_links: Vec<LinkSpec> = (2000..2510).map(link).collect();
        let second = app
            .db()
            .import_linked_tasks(p, 1, &again, user, Some((storage, &again_links)))
            .await
            .unwrap();
        assert_eq!(second.created, 10);
        assert!(second.task_ids[..500].iter().all(|id| *id == 0));
        assert!(second.task_ids[500..].iter().all(|id| *id != 0));
        // The dropped copies' inner ids (2,501..3,000) are one gap; pages
        // seek past it.
        assert_eq!(app.db().task_gaps(p, 10).await.unwrap(), [(2501, 3000)]);
        let page = app.db().task_page(p, 2500, 10).await.unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].id, second.task_ids[500]);
        let (_, r) = app.get(&format!("/api/tasks?project={p}&page=1&page_size=1")).await;
        assert_eq!(r["total"], 2510, "{r}");
        app.stop().await;
    }
}

/// Import batches whose ids were reserved ahead (`Db::reserve_import`,
/// PostgreSQL; issue 18, item 4) may be written in any order and side by
/// side: tasks keep the reserved order, a reservation not yet written is a
/// gap so pages stay exact, a deletion next to it merges into it and
/// survives the write, and a batch that fails leaves its ids as a gap.
/// SQLite reserves nothing (one writer).
#[tokio::test]
async fn import_batches_reserved_ahead_write_in_any_order_and_keep_pages_exact() {
    use labelport_db::tasks::LinkSpec;
    use labelport_db::DbError;
    use labelport_domain::import::NewTask;
    use labelport_domain::storage::{Direction, StorageKind, StorageSettings};
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let db = app.db().clone();
        let p = project(&app, IMAGE_CONFIG).await;
        let mut settings = StorageSettings::defaults(Direction::Import);
        settings.bucket = "media".into();
        let storage = db.create_storage(p, StorageKind::Gcs, &settings).await.unwrap().id;
        let (_, me) = app.get("/api/current-user/whoami").await;
        let user = me["id"].as_i64().expect("the user's id");
        let rows = |range: std::ops::Range<usize>| -> (Vec<NewTask>, Vec<LinkSpec>) {
            let tasks = range
                .clone()
                .map(|i| NewTask {
                    data: json!({"image": format!("{i}.jpg")}),
                    meta: json!({}),
                    allow_skip: true,
                    annotations: vec![],
                    predictions: vec![],
                })
                .collect();
            let links = range
                .map(|i| LinkSpec {
                    key: "tasks.jsonl".into(),
                    row_index: i as i64,
                    generation: 0,
                    etag: String::new(),
                })
                .collect();
            (tasks, links)
        };
        if db.backend_name() == "sqlite" {
            assert_eq!(db.import_writers(), 1);
            assert!(db.reserve_import(p, 10).await.unwrap().is_none());
            app.stop().await;
            continue;
        }
        assert_eq!(db.import_writers(), 2);
        let (t, l) = rows(0..100);
        let plain = db
            .import_linked_tasks(p, 1, &t, user, Some((storage, &l)))
            .await
            .unwrap();
        let a = db.reserve_import(p, 50).await.unwrap().expect("a reservation");
        let b = db.reserve_import(p, 50).await.unwrap().expect("a reservation");
        // Neither written: their inner ids are gaps, pages and count exact.
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(101, 150), (151, 200)]);
        let tail = db.task_page(p, 95, 10).await.unwrap();
        assert_eq!(tail.iter().map(|t| t.id).collect::<Vec<_>>(), plain.task_ids[95..]);
        // The later batch first.
        let (t, l) = rows(150..200);
        let written_b = db
            .import_reserved_tasks(&b, 1, &t, user, Some((storage, &l)))
            .await
            .unwrap();
        assert_eq!(written_b.created, 50);
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(101, 150)]);
        let page = db.task_page(p, 100, 3).await.unwrap();
        assert_eq!(page[0].id, written_b.task_ids[0]);
        assert_eq!(page[0].inner_id, 151);
        // Deleting the task just before the earlier reservation merges its
        // inner id into the reservation's range…
        let (s, _) = app.delete(&format!("/api/tasks/{}", plain.task_ids[99])).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(100, 150)]);
        // …and writing the batch takes out its range only.
        let (t, l) = rows(100..150);
        let written_a = db
            .import_reserved_tasks(&a, 1, &t, user, Some((storage, &l)))
            .await
            .unwrap();
        assert_eq!(written_a.created, 50);
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(100, 100)]);
        // Ids follow the reserved order, not the order of writing.
        let expected: Vec<i64> = plain.task_ids[..99]
            .iter()
            .chain(&written_a.task_ids)
            .chain(&written_b.task_ids)
            .copied()
            .collect();
        assert!(expected.windows(2).all(|w| w[0] < w[1]), "ids in reserved order");
        let by_offset = db.clone().with_seek_max_gaps(0);
        let ids = |rows: &[labelport_db::TaskRow]| rows.iter().map(|t| t.id).collect::<Vec<_>>();
        for offset in [0, 97, 98, 99, 100, 147, 148, 149, 190, 198] {
            let seek = db.task_page(p, offset, 4).await.unwrap();
            assert_eq!(
                ids(&seek),
                ids(&by_offset.task_page(p, offset, 4).await.unwrap()),
                "offset {offset}"
            );
            let end = (offset as usize + 4).min(expected.len());
            assert_eq!(ids(&seek), expected[offset as usize..end], "offset {offset}");
        }
        let (_, r) = app.get(&format!("/api/tasks?project={p}&page=1&page_size=1")).await;
        assert_eq!(r["total"], 199, "{r}");
        // Two batches written at once, each on its own connection.
        let c = db.reserve_import(p, 30).await.unwrap().unwrap();
        let d = db.reserve_import(p, 30).await.unwrap().unwrap();
        let ((tc, lc), (td, ld)) = (rows(200..230), rows(230..260));
        let (written_c, written_d) = tokio::join!(
            db.import_reserved_tasks(&c, 1, &tc, user, Some((storage, &lc))),
            db.import_reserved_tasks(&d, 1, &td, user, Some((storage, &ld))),
        );
        let (written_c, written_d) = (written_c.unwrap(), written_d.unwrap());
        assert!(written_c.task_ids.last() < written_d.task_ids.first());
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(100, 100)]);
        // A batch that fails (its links name a storage that does not exist)
        // writes nothing and leaves its inner ids as a gap: pages exact.
        let e = db.reserve_import(p, 10).await.unwrap().unwrap();
        let (t, l) = rows(260..270);
        assert!(db
            .import_reserved_tasks(&e, 1, &t, user, Some((storage + 999, &l)))
            .await
            .is_err());
        assert_eq!(db.task_gaps(p, 10).await.unwrap(), [(100, 100), (261, 270)]);
        let (t, l) = rows(270..272);
        let after = db
            .import_linked_tasks(p, 1, &t, user, Some((storage, &l)))
            .await
            .unwrap();
        let last = db.task_page(p, 259, 5).await.unwrap();
        assert_eq!(ids(&last), after.task_ids);
        assert_eq!(ids(&last), ids(&by_offset.task_page(p, 259, 5).await.unwrap()));
        let (_, r) = app.get(&format!("/api/tasks?project={p}&page=1&page_size=1")).await;
        assert_eq!(r["total"], 261, "{r}");
        // A batch of another size than reserved, and an unknown project.
        let f = db.reserve_import(p, 5).await.unwrap().unwrap();
        let (t, l) = rows(272..276);
        assert!(matches!(
            db.import_reserved_tasks(&f, 1, &t, user, Some((storage, &l))).await,
            Err(DbError::Invalid(_))
        ));
        assert!(matches!(db.reserve_import(p + 999, 5).await, Err(DbError::NotFound)));
        app.stop().await;
    }
}
