//! Event-driven sync (issue 17, item 5): Pub/Sub push requests of Cloud
//! Storage notifications, shaped as Pub/Sub sends them and signed by a local
//! key served as a JWK set, against the real emulator and both databases.
//! Every claim of the OIDC token is checked; events are applied by the
//! rules of a sync whatever their order, and replays change nothing.

use std::time::{Duration, Instant};

use labelport_testkit::{
    backends, fake_pubsub::PUSH_KEY_ID, storage_push_body, test_service_account_key, FakeGcs, FakePubSubKeys, TestApp,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PUSH_ACCOUNT: &str = "gcs-push@test-project.iam.gserviceaccount.com";
const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;
const TEXT_CONFIG: &str =
    r#"<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>"#;

async fn push(app: &TestApp, id: i64, authorization: Option<String>, body: &Value) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/storages/gcs/{id}/notifications", app.base_url))
        .json(body);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    labelport_testkit::read(req.send().await.unwrap()).await
}

async fn task_count(app: &TestApp, project: i64) -> i64 {
    let (s, p) = app.get(&format!("/api/projects/{project}")).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    p["task_number"].as_i64().unwrap()
}

/// Waits until no job is queued or running (the notifications are applied).
async fn settle(app: &TestApp) {
    let started = Instant::now();
    while app.db().count_active_jobs().await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "notification jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn generation(object: &Value) -> i64 {
    object["generation"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn bucket_notifications_are_authenticated_and_applied_by_the_rules_of_a_sync() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    let keys = FakePubSubKeys::start(&test_service_account_key()).await.unwrap();
    for backend in backends() {
        let bucket = format!("events-{}", backend.name());
        gcs.create_bucket(&bucket).await.unwrap();
        let app = TestApp::spawn_with_pubsub_keys(backend, &gcs, 1, &keys.jwks_url).await;
        let fetches_before = keys.fetches();
        let (s, p) = app
            .post("/api/projects", json!({"title": "events", "label_config": CONFIG}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let pid = p["id"].as_i64().unwrap();

        // The storage's check wants an object under its prefix.
        let a1 = gcs
            .upload(&bucket, "media/a.jpg", b"one".to_vec(), "image/jpeg")
            .await
            .unwrap();
        // A bad account is refused at the field.
        let (s, e) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "pubsub_push_service_account": "not an account"}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["validation_errors"]["pubsub_push_service_account"].is_array(), "{e}");

        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "prefix": "media", "use_blob_urls": true,
                       "deletion_policy": "delete", "pubsub_push_service_account": PUSH_ACCOUNT}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        assert_eq!(st["pubsub_push_service_account"], PUSH_ACCOUNT, "{st}");
        assert!(st["last_notification"].is_null(), "{st}");
        let sid = st["id"].as_i64().unwrap();
        let audience = format!("{}/api/storages/gcs/{sid}/notifications", app.base_url);
        let bearer = |claims: &Value| Some(format!("Bearer {}", keys.sign(claims)));
        let good = FakePubSubKeys::claims(&audience, PUSH_ACCOUNT);

        let finalize_a1 = storage_push_body("OBJECT_FINALIZE", &bucket, "media/a.jpg", generation(&a1));

        // --- Authentication: every claim counts. ---
        let (s, e) = push(&app, sid, None, &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert!(e["detail"].as_str().unwrap().contains("Bearer"), "{e}");
        let (s, e) = push(&app, sid, Some(format!("Token {}", app.token)), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "a user's API token is no push token: {e}");
        // A token for another server, sent with that server's Host: the
        // audience is the public URL's, never the request's.
        let elsewhere = format!("http://staging.example.com/api/storages/gcs/{sid}/notifications");
        let r = app
            .http
            .post(format!("{}/api/storages/gcs/{sid}/notifications", app.base_url))
            .header("Host", "staging.example.com")
            .header("X-Forwarded-Proto", "http")
            .header(
                "Authorization",
                format!(
                    "Bearer {}",
                    keys.sign(&FakePubSubKeys::claims(&elsewhere, PUSH_ACCOUNT))
                ),
            )
            .json(&finalize_a1)
            .send()
            .await
            .unwrap();
        let (s, e) = labelport_testkit::read(r).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "a forged Host: {e}");
        let mut claims = good.clone();
        claims["aud"] = json!("https://elsewhere.example.com/push");
        let (s, e) = push(&app, sid, bearer(&claims), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert!(e["detail"].as_str().unwrap().contains(&audience), "{e}");
        let mut claims = good.clone();
        let past = chrono::Utc::now().timestamp() - 7200;
        claims["iat"] = json!(past);
        claims["exp"] = json!(past + 3600);
        let (s, e) = push(&app, sid, bearer(&claims), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert!(e["detail"].as_str().unwrap().contains("expired"), "{e}");
        let mut claims = good.clone();
        claims["iss"] = json!("https://issuer.example.com");
        let (s, e) = push(&app, sid, bearer(&claims), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert!(e["detail"].as_str().unwrap().contains("issuer"), "{e}");
        let token = keys.sign(&good);
        let (head, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{head}.{flipped}{}", &sig[1..]);
        let (s, e) = push(&app, sid, Some(format!("Bearer {forged}")), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "a changed signature: {e}");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("unknown-key".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(
            serde_json::from_str::<Value>(&test_service_account_key()).unwrap()["private_key"]
                .as_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let other_kid = jsonwebtoken::encode(&header, &good, &key).unwrap();
        let (s, e) = push(&app, sid, Some(format!("Bearer {other_kid}")), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert!(e["detail"].as_str().unwrap().contains("unknown-key"), "{e}");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(PUSH_KEY_ID.into());
        let hs = jsonwebtoken::encode(&header, &good, &jsonwebtoken::EncodingKey::from_secret(b"guess")).unwrap();
        let (s, e) = push(&app, sid, Some(format!("Bearer {hs}")), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "an HMAC token: {e}");
        let mut claims = good.clone();
        claims["email"] = json!("someone-else@test-project.iam.gserviceaccount.com");
        let (s, e) = push(&app, sid, bearer(&claims), &finalize_a1).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "another account: {e}");
        let mut claims = good.clone();
        claims["email_verified"] = json!(false);
        let (s, e) = push(&app, sid, bearer(&claims), &finalize_a1).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "an unverified e-mail: {e}");
        settle(&app).await;
        assert_eq!(task_count(&app, pid).await, 0, "a refused push changed nothing");
        // One fetch of the keys served every check (the unknown kid came
        // within the refetch guard).
        let fetched = keys.fetches();
        assert_eq!(fetched - fetches_before, 1, "the key set was fetched once");

        // --- A new object: its task appears within seconds. ---
        let pushed = Instant::now();
        let (s, r) = push(&app, sid, bearer(&good), &finalize_a1).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        while task_count(&app, pid).await < 1 {
            assert!(pushed.elapsed() < Duration::from_secs(20), "the task did not appear");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, list) = app.get(&format!("/api/tasks?project={pid}")).await;
        // The task's URI, as the API resolves it for the browser.
        let uri = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE,
            format!("gs://{bucket}/media/a.jpg"),
        );
        assert!(
            list["tasks"][0]["data"]["image"].as_str().unwrap().ends_with(&uri),
            "{list}"
        );
        // A replay changes nothing.
        for _ in 0..3 {
            let (s, r) = push(&app, sid, bearer(&good), &finalize_a1).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        }
        settle(&app).await;
        assert_eq!(task_count(&app, pid).await, 1);

        // --- Acknowledged and ignored. ---
        gcs.upload(&bucket, "other/b.jpg", b"b".to_vec(), "image/jpeg")
            .await
            .unwrap();
        gcs.upload(&bucket, "media/deep/c.jpg", b"c".to_vec(), "image/jpeg")
            .await
            .unwrap();
        for (event, bucket_id, key, why) in [
            ("OBJECT_FINALIZE", bucket.as_str(), "other/b.jpg", "outside"),
            ("OBJECT_FINALIZE", bucket.as_str(), "media/deep/c.jpg", "outside"),
            ("OBJECT_FINALIZE", "another-bucket", "media/a.jpg", "another-bucket"),
            (
                "OBJECT_SOME_FUTURE_EVENT",
                bucket.as_str(),
                "media/a.jpg",
                "OBJECT_SOME_FUTURE_EVENT",
            ),
        ] {
            let (s, r) = push(&app, sid, bearer(&good), &storage_push_body(event, bucket_id, key, 1)).await;
            assert_eq!(s, StatusCode::OK, "{event} {key}: {r}");
            assert_eq!(r["queued"], false, "{r}");
            assert!(r["reason"].as_str().unwrap().contains(why), "{r}");
        }
        // From the subscription but not a Cloud Storage notification:
        // acknowledged (Pub/Sub would redeliver it for days) and ignored.
        let (s, r) = push(&app, sid, bearer(&good), &json!({"hello": "world"})).await;
        assert_eq!((s, &r["queued"]), (StatusCode::OK, &json!(false)), "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("not a Pub/Sub push message"),
            "{r}"
        );
        let (s, r) = push(&app, sid, bearer(&good), &json!({"message": {"attributes": {}}})).await;
        assert_eq!((s, &r["queued"]), (StatusCode::OK, &json!(false)), "{r}");
        assert!(r["reason"].as_str().unwrap().contains("eventType"), "{r}");
        let long = format!("media/{}.jpg", "x".repeat(1100));
        let (s, r) = push(
            &app,
            sid,
            bearer(&good),
            &storage_push_body("OBJECT_FINALIZE", &bucket, &long, 1),
        )
        .await;
        assert_eq!((s, &r["queued"]), (StatusCode::OK, &json!(false)), "{r}");
        settle(&app).await;
        assert_eq!(task_count(&app, pid).await, 1);

        // --- Out of order: an overwrite sends DELETE (old generation) and
        // FINALIZE (new); they come in reverse, with a stale replay. ---
        let a2 = gcs
            .upload(&bucket, "media/a.jpg", b"two".to_vec(), "image/jpeg")
            .await
            .unwrap();
        assert_ne!(generation(&a2), generation(&a1));
        for body in [
            storage_push_body("OBJECT_DELETE", &bucket, "media/a.jpg", generation(&a1)),
            storage_push_body("OBJECT_FINALIZE", &bucket, "media/a.jpg", generation(&a2)),
            finalize_a1.clone(),
            storage_push_body("OBJECT_METADATA_UPDATE", &bucket, "media/a.jpg", generation(&a2)),
        ] {
            let (s, r) = push(&app, sid, bearer(&good), &body).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        }
        settle(&app).await;
        assert_eq!(task_count(&app, pid).await, 1, "an overwrite keeps its one task");
        let links = app.db().links_of_object(sid, "media/a.jpg").await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].generation, generation(&a2), "the newest generation is linked");

        // --- A real delete follows the deletion policy; a late FINALIZE of
        // the deleted generation does not bring it back. ---
        gcs.delete(&bucket, "media/a.jpg").await.unwrap();
        // (A bucket with versioning sends OBJECT_ARCHIVE for it.)
        let (s, r) = push(
            &app,
            sid,
            bearer(&good),
            &storage_push_body("OBJECT_ARCHIVE", &bucket, "media/a.jpg", generation(&a2)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        assert_eq!(
            task_count(&app, pid).await,
            0,
            "policy delete removed the unannotated task"
        );
        let (s, r) = push(
            &app,
            sid,
            bearer(&good),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "media/a.jpg", generation(&a2)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        assert_eq!(task_count(&app, pid).await, 0, "a stale finalize of a deleted object");

        // The storage shows the notifications; the keys were fetched once.
        let (_, st) = app.get(&format!("/api/storages/gcs/{sid}")).await;
        assert!(st["last_notification"].is_string(), "{st}");
        assert_eq!(keys.fetches(), fetched, "the keys are cached");

        // --- A storage with notifications off refuses a valid token. ---
        let (s, off) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "prefix": "media", "use_blob_urls": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{off}");
        let off_id = off["id"].as_i64().unwrap();
        let off_audience = format!("{}/api/storages/gcs/{off_id}/notifications", app.base_url);
        let (s, e) = push(
            &app,
            off_id,
            bearer(&FakePubSubKeys::claims(&off_audience, PUSH_ACCOUNT)),
            &finalize_a1,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
        assert!(
            e["detail"].as_str().unwrap().contains("pubsub_push_service_account"),
            "{e}"
        );
        // An unknown storage is told only to a valid token for its URL.
        let (s, e) = push(&app, 999_999, bearer(&good), &finalize_a1).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        let unknown = format!("{}/api/storages/gcs/999999/notifications", app.base_url);
        let (s, e) = push(
            &app,
            999_999,
            bearer(&FakePubSubKeys::claims(&unknown, PUSH_ACCOUNT)),
            &finalize_a1,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{e}");

        // --- Task files: a new generation is read again. ---
        let (_, p2) = app
            .post("/api/projects", json!({"title": "files", "label_config": TEXT_CONFIG}))
            .await;
        let pid2 = p2["id"].as_i64().unwrap();
        let v1 = gcs
            .upload(
                &bucket,
                "tasks/batch.jsonl",
                b"{\"text\": \"one\"}\n{\"text\": \"two\"}\n".to_vec(),
                "application/jsonl",
            )
            .await
            .unwrap();
        let (s, files) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid2, "bucket": bucket, "prefix": "tasks", "use_blob_urls": false,
                       "regex_filter": r".*\.jsonl$", "deletion_policy": "flag",
                       "pubsub_push_service_account": PUSH_ACCOUNT}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{files}");
        let fid = files["id"].as_i64().unwrap();
        let files_claims = FakePubSubKeys::claims(
            &format!("{}/api/storages/gcs/{fid}/notifications", app.base_url),
            PUSH_ACCOUNT,
        );
        let (s, r) = push(
            &app,
            fid,
            bearer(&files_claims),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "tasks/batch.jsonl", generation(&v1)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        assert_eq!(task_count(&app, pid2).await, 2);
        let v2 = gcs
            .upload(
                &bucket,
                "tasks/batch.jsonl",
                b"{\"text\": \"one, edited\"}\n{\"text\": \"two\"}\n{\"text\": \"three\"}\n".to_vec(),
                "application/jsonl",
            )
            .await
            .unwrap();
        let (s, r) = push(
            &app,
            fid,
            bearer(&files_claims),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "tasks/batch.jsonl", generation(&v2)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        assert_eq!(task_count(&app, pid2).await, 3, "the new row came in");
        let (_, list) = app.get(&format!("/api/tasks?project={pid2}")).await;
        let texts: Vec<&str> = list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["data"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["one, edited", "two", "three"], "the changed row was updated");
        // Outside the filter: ignored.
        let (s, r) = push(
            &app,
            fid,
            bearer(&files_claims),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "tasks/readme.txt", 1),
        )
        .await;
        assert_eq!((s, &r["queued"]), (StatusCode::OK, &json!(false)), "{r}");
        // The file shrinks: its last row goes by the policy (flag).
        let v3 = gcs
            .upload(
                &bucket,
                "tasks/batch.jsonl",
                b"{\"text\": \"one, edited\"}\n{\"text\": \"two\"}\n".to_vec(),
                "application/jsonl",
            )
            .await
            .unwrap();
        let (s, r) = push(
            &app,
            fid,
            bearer(&files_claims),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "tasks/batch.jsonl", generation(&v3)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        let links = app.db().links_of_object(fid, "tasks/batch.jsonl").await.unwrap();
        let exists: Vec<bool> = links.iter().map(|l| l.object_exists).collect();
        assert_eq!(exists, [true, true, false], "the gone row is flagged, the others not");
        // The file is deleted: every row flagged, no task deleted.
        gcs.delete(&bucket, "tasks/batch.jsonl").await.unwrap();
        let (s, r) = push(
            &app,
            fid,
            bearer(&files_claims),
            &storage_push_body("OBJECT_DELETE", &bucket, "tasks/batch.jsonl", generation(&v3)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settle(&app).await;
        let links = app.db().links_of_object(fid, "tasks/batch.jsonl").await.unwrap();
        assert!(links.iter().all(|l| !l.object_exists), "{links:?}");
        assert_eq!(task_count(&app, pid2).await, 3, "flag keeps the tasks");
        app.stop().await;
    }
}

/// Beside a running full sync a notification is applied (the sync's rules
/// allow it); only an object that is gone and was never linked makes the
/// sync run once more, since the sync may have listed it before it went.
#[tokio::test]
async fn notifications_beside_a_running_sync() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    let keys = FakePubSubKeys::start(&test_service_account_key()).await.unwrap();
    for backend in backends() {
        let bucket = format!("beside-{}", backend.name());
        gcs.create_bucket(&bucket).await.unwrap();
        gcs.upload(&bucket, "in/0.jpg", b"0".to_vec(), "image/jpeg")
            .await
            .unwrap();
        // No workers: jobs run when the test says.
        let app = TestApp::spawn_with_pubsub_keys(backend, &gcs, 0, &keys.jwks_url).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "beside", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "prefix": "in", "use_blob_urls": true,
                       "deletion_policy": "delete", "pubsub_push_service_account": PUSH_ACCOUNT}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let sid = st["id"].as_i64().unwrap();
        let audience = format!("{}/api/storages/gcs/{sid}/notifications", app.base_url);
        let bearer = Some(format!(
            "Bearer {}",
            keys.sign(&FakePubSubKeys::claims(&audience, PUSH_ACCOUNT))
        ));
        let (s, r) = app.post(&format!("/api/storages/gcs/{sid}/sync"), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        // Another process holds the sync (its listing under way).
        let sync = app
            .db()
            .claim_job("another-process", Duration::from_secs(60))
            .await
            .unwrap()
            .expect("the sync is claimed");
        assert_eq!(sync.kind, "import_sync");
        // A new object: applied at once, beside the sync.
        let object = gcs
            .upload(&bucket, "in/1.jpg", b"1".to_vec(), "image/jpeg")
            .await
            .unwrap();
        let (s, r) = push(
            &app,
            sid,
            bearer.clone(),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "in/1.jpg", generation(&object)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        app.run_jobs().await;
        assert_eq!(task_count(&app, pid).await, 1, "applied beside the running sync");
        // An object that came and went before its events were applied: the
        // sync may have listed it, so it is asked to run once more.
        let brief = gcs
            .upload(&bucket, "in/2.jpg", b"2".to_vec(), "image/jpeg")
            .await
            .unwrap();
        gcs.delete(&bucket, "in/2.jpg").await.unwrap();
        let (s, r) = push(
            &app,
            sid,
            bearer.clone(),
            &storage_push_body("OBJECT_FINALIZE", &bucket, "in/2.jpg", generation(&brief)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        app.run_jobs().await;
        assert!(app.db().finish_job(sync.id, "another-process", None).await.unwrap());
        assert_eq!(
            app.db().get_job(sync.id).await.unwrap().status,
            "queued",
            "the sync runs once more"
        );
        app.run_jobs().await;
        assert_eq!(
            task_count(&app, pid).await,
            2,
            "in/0.jpg by the sync, in/1.jpg by the event"
        );
        // A new object's event while nothing runs does not queue a sync.
        let object = gcs
            .upload(&bucket, "in/3.jpg", b"3".to_vec(), "image/jpeg")
            .await
            .unwrap();
        let (s, r) = push(
            &app,
            sid,
            bearer,
            &storage_push_body("OBJECT_FINALIZE", &bucket, "in/3.jpg", generation(&object)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        app.run_jobs().await;
        assert_eq!(task_count(&app, pid).await, 3);
        assert!(app
            .db()
            .active_job(&format!("import_sync:{sid}"))
            .await
            .unwrap()
            .is_none());
        app.stop().await;
    }
}

/// Without `LABELPORT_PUBLIC_URL` the audience cannot be known (the
/// request's own Host is the caller's to write): every push is refused,
/// naming the setting.
#[tokio::test]
async fn without_a_public_url_pushes_are_refused() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    let app = TestApp::spawn_with_gcs(labelport_testkit::Backend::Sqlite, &gcs, 0).await;
    let (s, e) = push(
        &app,
        1,
        Some("Bearer a.b.c".into()),
        &storage_push_body("OBJECT_FINALIZE", "b", "k", 1),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("LABELPORT_PUBLIC_URL"), "{e}");
    app.stop().await;
}

/// The storage's card gives the push endpoint to configure (the token's
/// audience too), the account it expects and, without a public URL, says
/// notifications stay off (issue 17, item 5).
#[tokio::test]
async fn the_storage_card_shows_the_push_endpoint() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("card").await.unwrap();
    let page = |app: &TestApp, pid: i64| {
        let request = app
            .http
            .get(format!("{}/projects/{pid}/settings/storage", app.base_url))
            .header("Authorization", format!("Token {}", app.token));
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }
    };
    // No key server is called: nothing is pushed.
    let with_url =
        TestApp::spawn_with_pubsub_keys(labelport_testkit::Backend::Sqlite, &gcs, 0, "http://127.0.0.1:9/certs").await;
    let without_url = TestApp::spawn_with_gcs(labelport_testkit::Backend::Sqlite, &gcs, 0).await;
    for (app, public) in [(&with_url, true), (&without_url, false)] {
        let (_, p) = app.post("/api/projects", json!({"title": "card"})).await;
        let pid = p["id"].as_i64().unwrap();
        let (s, quiet) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": "card", "title": "Quiet"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{quiet}");
        let html = page(app, pid).await;
        assert!(!html.contains("Bucket notifications</dt>"), "off: no line");
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": "card", "title": "Pushed", "pubsub_push_service_account": PUSH_ACCOUNT}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let sid = st["id"].as_i64().unwrap();
        let html = page(app, pid).await;
        // As the page writes it (minijinja escapes `/` in HTML).
        let endpoint = format!("{}/api/storages/gcs/{sid}/notifications", app.base_url).replace('/', "&#x2f;");
        if public {
            assert!(
                html.contains(&format!("<code class=\"push-endpoint\">{endpoint}</code>"))
                    && html.contains(PUSH_ACCOUNT),
                "{html}"
            );
            // Nothing pushed yet; and the test server's http:// address is
            // one Pub/Sub will not push to.
            assert!(html.contains("last applied never"), "{html}");
            assert!(html.contains("Pub/Sub pushes only to https:"), "{html}");
        } else {
            assert!(!html.contains("push-endpoint\""), "{html}");
            assert!(
                html.contains("Off until the server is started with LABELPORT_PUBLIC_URL"),
                "{html}"
            );
        }
    }
    with_url.stop().await;
    without_url.stop().await;
}
