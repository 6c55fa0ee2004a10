//! A storage's scope changing is not its objects vanishing: after a change
//! of bucket, prefix, filter or depth, tasks of keys now outside stay (the
//! `delete` policy applies only to objects that left the bucket within the
//! scope), and a storage deleted and made again for the same bucket adopts
//! the tasks it made before instead of importing them twice.

use labelport_testkit::{backends, FakeGcs, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

async fn sync(app: &TestApp, id: i64) -> Value {
    let (s, r) = app.post(&format!("/api/storages/gcs/{id}/sync"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let done = app.wait_for_sync(&format!("/api/storages/gcs/{id}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    done
}

async fn task_count(app: &TestApp, project: i64) -> i64 {
    let (s, p) = app.get(&format!("/api/projects/{project}")).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    p["task_number"].as_i64().unwrap()
}

async fn patch(app: &TestApp, id: i64, body: Value) {
    let (s, r) = app.patch(&format!("/api/storages/gcs/{id}"), body).await;
    assert_eq!(s, StatusCode::OK, "{r}");
}

#[tokio::test]
async fn scope_changes_keep_tasks_and_recreated_storages_adopt_them() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    for backend in backends() {
        let b = format!("scope-{backend:?}").to_lowercase();
        let b2 = format!("{b}-two");
        gcs.create_bucket(&b).await.unwrap();
        gcs.create_bucket(&b2).await.unwrap();
        for key in ["imgs/a.jpg", "imgs/b.jpg", "imgs/deep/d.jpg", "other/c.jpg"] {
            gcs.upload(&b, key, key.as_bytes().to_vec(), "image/jpeg")
                .await
                .unwrap();
        }
        gcs.upload(&b2, "imgs/a.jpg", b"two".to_vec(), "image/jpeg")
            .await
            .unwrap();
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "scope", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": b, "prefix": "imgs", "use_blob_urls": true,
                       "presign": false, "recursive_scan": true, "deletion_policy": "delete"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let sid = st["id"].as_i64().unwrap();
        assert_eq!(sync(&app, sid).await["last_sync_count"], 3);

        // Another prefix: the imgs/ tasks stay, other/ is added.
        patch(&app, sid, json!({"prefix": "other"})).await;
        let done = sync(&app, sid).await;
        assert_eq!(done["meta"]["objects_missing"], 0, "{done}");
        assert_eq!(task_count(&app, pid).await, 4);
        // A filter and one level only: nothing is deleted either.
        patch(
            &app,
            sid,
            json!({"prefix": "imgs", "regex_filter": r".*b\.jpg", "recursive_scan": false}),
        )
        .await;
        let done = sync(&app, sid).await;
        assert_eq!(done["meta"]["objects_missing"], 0, "{done}");
        assert_eq!(task_count(&app, pid).await, 4);
        // Within the scope, an object that left the bucket follows the
        // policy (delete: the task goes).
        gcs.delete(&b, "imgs/b.jpg").await.unwrap();
        let done = sync(&app, sid).await;
        assert_eq!(done["meta"]["objects_missing"], 1, "{done}");
        assert_eq!(task_count(&app, pid).await, 3);
        gcs.upload(&b, "imgs/b.jpg", b"back".to_vec(), "image/jpeg")
            .await
            .unwrap();

        // Another bucket with a key of the same name: the old tasks stay,
        // the new bucket's object is a task of its own.
        patch(
            &app,
            sid,
            json!({"bucket": b2, "prefix": "", "regex_filter": "", "recursive_scan": true}),
        )
        .await;
        let done = sync(&app, sid).await;
        assert_eq!(done["meta"]["objects_missing"], 0, "{done}");
        assert_eq!(done["last_sync_count"], 1, "{done}");
        assert_eq!(task_count(&app, pid).await, 4);
        assert!(app.db().count_orphan_links(pid).await.unwrap() >= 3);
        // Back to the first bucket: its tasks are adopted, not imported
        // again (only imgs/b.jpg, which came back, is new).
        patch(&app, sid, json!({"bucket": b})).await;
        let done = sync(&app, sid).await;
        assert_eq!(done["last_sync_count"], 1, "{done}");
        assert_eq!(task_count(&app, pid).await, 5);

        // Deleted and made again for the same bucket: adopted, no copies.
        let (s, _) = app
            .call(Method::DELETE, &format!("/api/storages/gcs/{sid}"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(task_count(&app, pid).await, 5, "deleting a storage keeps its tasks");
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": b, "use_blob_urls": true, "presign": false,
                       "recursive_scan": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let again = st["id"].as_i64().unwrap();
        let done = sync(&app, again).await;
        assert_eq!(done["last_sync_count"], 0, "{done}");
        assert_eq!(done["meta"]["tasks_existed"], 4, "{done}");
        assert_eq!(task_count(&app, pid).await, 5);

        // Another project's storage of the same bucket adopts nothing.
        let (_, p2) = app
            .post("/api/projects", json!({"title": "other", "label_config": CONFIG}))
            .await;
        let pid2 = p2["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid2, "bucket": b, "use_blob_urls": true, "presign": false, "recursive_scan": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        assert_eq!(sync(&app, st["id"].as_i64().unwrap()).await["last_sync_count"], 4);
        app.stop().await;
    }
}
