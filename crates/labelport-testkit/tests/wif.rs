//! Workload Identity Federation end to end: `gcswif` storages (and
//! `external_account` configurations) against local fakes of the EC2
//! metadata service, Google STS and IAM Credentials that check every
//! request, and the real GCS emulator behind a proxy that lets through only
//! the service-account tokens the fake IAM issued.

use std::sync::Arc;
use std::time::Duration;

use labelport_storage::wif::{Exchange, SubjectConfig, SubjectSource, TokenFormat, JWT_TOKEN_TYPE};
use labelport_storage::{ObjectStore, StorageEnv};
use labelport_testkit::{assert_signed_like_the_key, backends, FakeGcs, FakeWif, FaultProxy, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const POOL: &str = "labelport-pool";
const PROVIDER: &str = "aws-provider";
const NUMBER: &str = "123456789012";
const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

fn audience() -> String {
    format!("//iam.googleapis.com/projects/{NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}")
}

fn key_json() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/test_service_account.not-a-test.json"
    ))
    .expect("testdata/conformance")
}

fn email() -> String {
    serde_json::from_str::<Value>(&key_json()).unwrap()["client_email"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The emulator behind a proxy that requires the impersonated token, and
/// the fakes; `env` reaches GCS through the proxy with WIF credentials.
struct World {
    gcs: FakeGcs,
    wif: FakeWif,
    proxy: FaultProxy,
    env: StorageEnv,
}

async fn world(buckets: &[&str]) -> World {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    for b in buckets {
        gcs.create_bucket(b).await.unwrap();
    }
    let wif = FakeWif::start(&key_json(), &audience()).await.unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    proxy.require_bearer(wif.bearer_check());
    let mut env = StorageEnv {
        gcs_endpoint: Some(proxy.endpoint.clone()),
        ..StorageEnv::default()
    };
    env.wif.sts_endpoint = wif.url.clone();
    env.wif.iam_endpoint = wif.url.clone();
    env.wif.iam_api_endpoint = wif.iam_api_url.clone();
    env.wif.imds_endpoint = Some(wif.url.clone());
    World { gcs, wif, proxy, env }
}

fn wif_fields() -> Value {
    json!({
        "google_wif_pool_id": POOL,
        "google_wif_provider_id": PROVIDER,
        "google_service_account_email": email(),
        "google_project_number": NUMBER,
        "google_project_id": "dummy-project-id",
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

async fn project(app: &TestApp) -> i64 {
    let (s, p) = app
        .post("/api/projects", json!({"title": "wif", "label_config": CONFIG}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_gcswif_storage_imports_serves_media_and_exports_through_the_whole_chain() {
    for backend in backends() {
        let bucket = format!("wif-{backend:?}").to_lowercase();
        let w = world(&[&bucket]).await;
        for name in ["imgs/a.jpg", "imgs/b.jpg"] {
            w.gcs
                .upload(&bucket, name, format!("pixels of {name}").into_bytes(), "image/jpeg")
                .await
                .unwrap();
        }
        let app = TestApp::spawn_with_env(backend, w.env.clone(), 1).await;
        let pid = project(&app).await;

        // The type lists name it.
        let (_, types) = app.get("/api/storages/types").await;
        assert!(types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "gcswif" && t["title"] == "Google Cloud Storage (WIF Auth)"));
        let (_, types) = app.get("/api/storages/export/types").await;
        assert!(types.as_array().unwrap().iter().any(|t| t["name"] == "gcswif"));

        // Import storage: Test connection, create, preview, sync.
        let body = with(
            json!({"project": pid, "bucket": bucket, "prefix": "imgs", "use_blob_urls": true,
                   "presign": true, "presign_ttl": 5, "title": "WIF source"}),
            wif_fields(),
        );
        let (s, v) = app.post("/api/storages/gcswif/validate", body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, st) = app.post("/api/storages/gcswif", body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let sid = st["id"].as_i64().unwrap();
        assert_eq!(st["type"], "gcswif");
        assert_eq!(st["google_wif_pool_id"], POOL);
        assert_eq!(st["google_wif_provider_id"], PROVIDER);
        assert_eq!(st["google_service_account_email"], email());
        assert_eq!(st["google_project_number"], NUMBER);
        assert!(st.get("google_application_credentials").is_none());
        let (s, files) = app.post("/api/storages/gcswif/files", json!({"id": sid})).await;
        assert_eq!(s, StatusCode::OK, "{files}");
        assert_eq!(files["files"].as_array().unwrap().len(), 2, "{files}");
        let (s, _) = app.post(&format!("/api/storages/gcswif/{sid}/sync"), json!({})).await;
        assert_eq!(s, StatusCode::OK);
        let done = app.wait_for_sync(&format!("/api/storages/gcswif/{sid}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 2, "{done}");
        let (_, all) = app.get(&format!("/api/storages/?project={pid}")).await;
        assert!(all.as_array().unwrap().iter().any(|s| s["type"] == "gcswif"), "{all}");
        // Task files (tasks mode) come through the same engine.
        w.gcs
            .upload(
                &bucket,
                "tasks/batch.jsonl",
                b"{\"image\": \"gs://elsewhere/x.jpg\"}\n{\"data\": {\"image\": \"gs://elsewhere/y.jpg\"}}\n".to_vec(),
                "application/json",
            )
            .await
            .unwrap();
        let files = with(
            json!({"project": pid, "bucket": bucket, "prefix": "tasks", "use_blob_urls": false, "presign": false}),
            wif_fields(),
        );
        let (s, tf) = app.post("/api/storages/gcswif", files).await;
        assert_eq!(s, StatusCode::CREATED, "{tf}");
        let tf_id = tf["id"].as_i64().unwrap();
        app.post(&format!("/api/storages/gcswif/{tf_id}/sync"), json!({})).await;
        let done = app.wait_for_sync(&format!("/api/storages/gcswif/{tf_id}")).await;
        assert_eq!(
            (done["status"].as_str(), done["last_sync_count"].as_i64()),
            (Some("completed"), Some(2)),
            "{done}"
        );
        let (_, list) = app.get(&format!("/api/storages/gcswif?project={pid}")).await;
        assert_eq!(list.as_array().unwrap().len(), 2);

        // Media: presigned through IAM signBlob as the service account.
        let (_, tasks) = app.get(&format!("/api/tasks?project={pid}")).await;
        let task = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["data"]["image"].as_str().unwrap().contains("/resolve/"))
            .expect("a task of the bucket");
        let tid = task["id"].as_i64().unwrap();
        // Task data shows the object as its resolve URL.
        let resolve = task["data"]["image"].as_str().unwrap().to_owned();
        assert!(
            resolve.starts_with(&format!("/tasks/{tid}/resolve/?fileuri=")),
            "{resolve}"
        );
        let r = app.get_raw(&resolve).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let prefix = format!("{}/{bucket}/", w.proxy.endpoint);
        assert!(location.starts_with(&prefix), "{location}");
        let object = location[prefix.len()..].split('?').next().unwrap().to_owned();
        let bytes = assert_signed_like_the_key(&location, &key_json(), &bucket, &object, 300, &w.proxy.endpoint).await;
        assert_eq!(bytes, format!("pixels of {object}").into_bytes());
        // …and through the proxy, with the impersonated token.
        let (s, _) = app
            .patch(&format!("/api/storages/gcswif/{sid}"), json!({"presign": false}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let r = app.get_raw(&resolve).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.bytes().await.unwrap().to_vec(),
            format!("pixels of {object}").into_bytes()
        );

        // Export storage: created, then an annotation becomes an object.
        let body = with(
            json!({"project": pid, "bucket": bucket, "prefix": "out", "can_delete_objects": true}),
            wif_fields(),
        );
        let (s, ex) = app.post("/api/storages/export/gcswif", body).await;
        assert_eq!(s, StatusCode::CREATED, "{ex}");
        let eid = ex["id"].as_i64().unwrap();
        let (s, a) = app
            .post(
                &format!("/api/tasks/{tid}/annotations/"),
                json!({"result": [{"from_name": "c", "to_name": "image", "type": "choices",
                                   "value": {"choices": ["a"]}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        let aid = a["id"].as_i64().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !w
            .gcs
            .list(&bucket, "out/")
            .await
            .unwrap()
            .contains(&format!("out/{aid}"))
        {
            assert!(std::time::Instant::now() < deadline, "the annotation was not exported");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, ex) = app.get(&format!("/api/storages/export/gcswif/{eid}")).await;
        assert_eq!(s, StatusCode::OK, "{ex}");
        // Deleting the annotation deletes its object (can_delete_objects).
        let (s, _) = app
            .call(reqwest::Method::DELETE, &format!("/api/annotations/{aid}"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        while w
            .gcs
            .list(&bucket, "out/")
            .await
            .unwrap()
            .contains(&format!("out/{aid}"))
        {
            assert!(std::time::Instant::now() < deadline, "the object was not deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Every request was right, GCS saw only impersonated tokens, and
        // the tokens were fetched once for everything (same exchange).
        assert_eq!(w.wif.violations(), Vec::<String>::new());
        assert_eq!(w.proxy.unauthorized(), Vec::<String>::new());
        assert!(w.proxy.authorized() > 5, "{}", w.proxy.authorized());
        assert_eq!(w.wif.count("sts"), 1, "{:?}", w.wif.seen());
        assert_eq!(w.wif.count("generateAccessToken"), 1, "{:?}", w.wif.seen());
        assert!(w.wif.count("signBlob") >= 2, "{:?}", w.wif.seen());
        let seen = w.wif.seen();
        let order: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|s| ["imds-token", "imds-credentials", "sts", "generateAccessToken"].contains(s))
            .collect();
        assert_eq!(order.first(), Some(&"imds-token"), "{seen:?}");
        let sts_at = order.iter().position(|s| *s == "sts").unwrap();
        assert!(order[..sts_at].contains(&"imds-credentials"), "{seen:?}");
        assert_eq!(order[sts_at + 1], "generateAccessToken", "{seen:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire_and_once_for_many_callers() {
    let w = world(&["refresh"]).await;
    w.gcs
        .upload("refresh", "x.txt", b"x".to_vec(), "text/plain")
        .await
        .unwrap();
    w.wif.configure(|e| e.token_lifetime = Duration::from_secs(4));
    w.wif.delay_sts(Duration::from_millis(300));
    let settings = labelport_domain::storage::StorageSettings {
        bucket: "refresh".into(),
        wif: labelport_domain::storage::WifSettings {
            pool_id: POOL.into(),
            provider_id: PROVIDER.into(),
            service_account_email: email(),
            project_number: NUMBER.into(),
        },
        ..labelport_domain::storage::StorageSettings::defaults(labelport_domain::storage::Direction::Import)
    };
    let kind = labelport_domain::storage::StorageKind::GcsWif;
    let tokens = w.env.wif.tokens(w.env.wif.storage_exchange(&settings.wif));
    // 50 concurrent requests to GCS share one fetch of the chain.
    let store = Arc::new(w.env.connect(kind, &settings).await.unwrap());
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.read_all("x.txt", None).await })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap().as_ref(), b"x");
    }
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(w.wif.count("sts"), 1);
    assert_eq!(w.wif.count("generateAccessToken"), 1);
    // Within a quarter of the lifetime of expiry, the next request gets a
    // new token first: it is never sent expired (the proxy would refuse).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    store.read_all("x.txt", None).await.unwrap();
    assert_eq!(tokens.refreshes(), 2);
    assert_eq!(w.wif.count("generateAccessToken"), 2);
    store.stat("x.txt").await.unwrap();
    assert_eq!(tokens.refreshes(), 2, "a fresh token is reused");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    store.stat("x.txt").await.unwrap();
    assert_eq!(tokens.refreshes(), 3);
    assert_eq!(w.proxy.unauthorized(), Vec::<String>::new());
    // When the exchange fails, callers waiting on it get its error; they do
    // not each try the chain again in turn.
    w.wif
        .configure(|e| e.refuse_sts = Some((400, "invalid_grant".into(), "pool disabled".into())));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let stats: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.stat("x.txt").await })
        })
        .collect();
    for s in stats {
        let e = s.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("Google STS refused") && e.contains("pool disabled"), "{e}");
    }
    assert_eq!(w.wif.count("sts-refused"), 1, "{:?}", w.wif.seen());
    assert_eq!(w.wif.violations(), Vec::<String>::new());
}

/// Test connection's answer for each refusal names the step and the cause.
#[tokio::test]
async fn each_refusal_is_named_at_test_connection() {
    let w = world(&["refusals"]).await;
    w.gcs
        .upload("refusals", "a.jpg", b"a".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, w.env.clone(), 0).await;
    let pid = project(&app).await;
    let body = with(
        json!({"project": pid, "bucket": "refusals", "presign": true}),
        wif_fields(),
    );
    let validate = |body: Value| {
        let app = &app;
        async move { app.post("/api/storages/gcswif/validate", body).await }
    };
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Shapes: a 400 naming the field, before any request.
    let (s, v) = validate(with(body.clone(), json!({"google_project_number": "my-project"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["validation_errors"]["google_project_number"].is_array(), "{v}");
    let (s, v) = validate(with(body.clone(), json!({"google_wif_pool_id": "UPPER"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["validation_errors"]["google_wif_pool_id"].is_array(), "{v}");

    // STS refuses an audience it does not know (wrong project number).
    let (s, v) = validate(with(body.clone(), json!({"google_project_number": "999"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let text = v.to_string();
    assert!(
        text.contains("Google STS refused")
            && text.contains("invalid_target")
            && text.contains("google_project_number"),
        "{text}"
    );
    // Filed under the provider, the field the wizard shows it at.
    assert!(v["validation_errors"]["google_wif_provider_id"].is_array(), "{v}");
    // STS refuses the identity (attribute condition not met).
    w.wif.configure(|e| {
        e.refuse_sts = Some((
            403,
            "unauthorized_client".into(),
            "The given credential is rejected by the attribute condition.".into(),
        ))
    });
    let (s, v) = validate(with(body.clone(), json!({"google_wif_provider_id": "other-provider"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v.to_string().contains("rejected by the attribute condition"), "{v}");
    w.wif.configure(|e| e.refuse_sts = None);
    // IAM refuses the impersonation of an account the pool may not act
    // as (no Workload Identity User on it).
    let other = "someone-else@dummy-project-id.iam.gserviceaccount.com";
    let (s, v) = validate(with(body.clone(), json!({"google_service_account_email": other}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let text = v.to_string();
    assert!(
        text.contains("IAM refused generateAccessToken for someone-else@")
            && text.contains("getAccessToken' denied")
            && text.contains("roles/iam.workloadIdentityUser"),
        "{text}"
    );
    assert!(v["validation_errors"]["google_service_account_email"].is_array(), "{v}");
    // IAM refuses signBlob (no Token Creator): found at Test connection
    // because presign is on.
    w.wif
        .configure(|e| e.refuse_sign_blob = Some((403, "Permission 'iam.serviceAccounts.signBlob' denied".into())));
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let text = v.to_string();
    assert!(
        text.contains("signBlob") && text.contains("roles/iam.serviceAccountTokenCreator"),
        "{text}"
    );
    // IAM's testIamPermissions on the account confirms which permission
    // is missing: named at the presign field and, structured, with the
    // command that grants the role on the account.
    assert!(
        w.wif.seen().contains(&"testIamPermissions".to_owned()),
        "{:?}",
        w.wif.seen()
    );
    let sa = email();
    let said = v["validation_errors"]["presign"][0].as_str().unwrap_or_default();
    assert!(
        said.contains(&format!(
            "the service account {sa} lacks iam.serviceAccounts.signBlob on itself"
        )),
        "{v}"
    );
    let missing = &v["permissions"]["missing"][0];
    assert_eq!(missing["permission"], "iam.serviceAccounts.signBlob", "{v}");
    assert_eq!(missing["resource"], format!("serviceAccounts/{sa}"), "{v}");
    assert_eq!(missing["role"], "roles/iam.serviceAccountTokenCreator", "{v}");
    assert_eq!(
        missing["grant_command"],
        format!(
            "gcloud iam service-accounts add-iam-policy-binding {sa} --member=serviceAccount:{sa} \
             --role=roles/iam.serviceAccountTokenCreator"
        ),
        "{v}"
    );
    // A 403 although IAM says the permission is held: not about roles,
    // so no role is advised and nothing structured is guessed.
    w.wif.configure(|e| e.sign_blob_held = Some(true));
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let said = v["validation_errors"]["presign"][0].as_str().unwrap_or_default();
    assert!(
        said.contains("not about roles")
            && said.contains("iamcredentials.googleapis.com")
            && !said.contains("roles/iam.serviceAccountTokenCreator"),
        "{v}"
    );
    assert!(v.get("permissions").is_none(), "{v}");
    // IAM cannot say (its testIamPermissions refused): the refusal with
    // the role that usually fixes it, nothing structured.
    w.wif.configure(|e| {
        e.sign_blob_held = None;
        e.refuse_permission_check = Some((403, "testIamPermissions refused (injected)".into()));
    });
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let said = v["validation_errors"]["presign"][0].as_str().unwrap_or_default();
    assert!(said.contains("Service Account Token Creator"), "{v}");
    assert!(v.get("permissions").is_none(), "{v}");
    w.wif.configure(|e| e.refuse_permission_check = None);
    // A refusal that is not a 403: shown as it came; IAM is not asked.
    let asked = w.wif.count("testIamPermissions");
    w.wif
        .configure(|e| e.refuse_sign_blob = Some((400, "Invalid argument (injected)".into())));
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v.get("permissions").is_none(), "{v}");
    assert!(
        v["validation_errors"]["presign"][0]
            .as_str()
            .unwrap()
            .contains("Invalid argument (injected)"),
        "{v}"
    );
    assert_eq!(w.wif.count("testIamPermissions"), asked, "asked after a 403 only");
    let (s, v) = validate(with(body.clone(), json!({"presign": false}))).await;
    assert_eq!(s, StatusCode::OK, "the proxy needs no signing: {v}");
    w.wif.configure(|e| e.refuse_sign_blob = None);
    // The bucket refuses the account (export probe answered 403).
    w.proxy.fail_uploads_with("", u64::MAX, 403);
    let (s, v) = app
        .post(
            "/api/storages/export/gcswif/validate",
            with(json!({"project": pid, "bucket": "refusals"}), wif_fields()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Filed under the account, with the command that grants the role.
    let said = v["validation_errors"]["google_service_account_email"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("may not write objects to gs://refusals")
            && said.contains("--role=roles/storage.objectUser")
            && said.contains(&format!(
                "--member=serviceAccount:{}",
                wif_fields()["google_service_account_email"].as_str().unwrap()
            )),
        "{v}"
    );
    w.proxy.heal();
    // GCS says which permissions the account lacks: named with the
    // command that grants the role to that account.
    w.proxy.deny(labelport_testkit::RequestKind::List);
    w.proxy.grant_permissions(&["storage.objects.list"]);
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let said = v["validation_errors"]["google_service_account_email"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("lacks storage.objects.get")
            && said.contains("--role=roles/storage.objectViewer")
            && said.contains(&format!("--member=serviceAccount:{}", email())),
        "{v}"
    );
    w.proxy.heal();
    let (s, v) = validate(body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(w.wif.violations(), Vec::<String>::new());
    app.stop().await;

    // No AWS identity at all: the metadata service does not answer.
    let mut env = w.env.clone();
    env.wif = fresh(env.wif);
    env.wif.imds_endpoint = Some("http://127.0.0.1:9".into());
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, env, 0).await;
    let pid = project(&app).await;
    let (s, v) = app
        .post(
            "/api/storages/gcswif/validate",
            with(
                json!({"project": pid, "bucket": "refusals", "presign": false}),
                wif_fields(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let text = v.to_string();
    assert!(
        text.contains("subject token from the server's AWS identity") && text.contains("no AWS credentials"),
        "{text}"
    );
    app.stop().await;

    // A token file that is missing.
    let mut env = w.env.clone();
    env.wif = fresh(env.wif);
    env.wif.subject = SubjectConfig {
        source: SubjectSource::File {
            path: "/nonexistent/labelport/token".into(),
            format: TokenFormat::Text,
        },
        token_type: JWT_TOKEN_TYPE.into(),
    };
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, env, 0).await;
    let pid = project(&app).await;
    let (s, v) = app
        .post(
            "/api/storages/gcswif/validate",
            with(
                json!({"project": pid, "bucket": "refusals", "presign": false}),
                wif_fields(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v.to_string()
            .contains("the file /nonexistent/labelport/token: cannot read it"),
        "{v}"
    );
    app.stop().await;
}

/// A sync whose tokens can no longer be had fails with the step's reason.
#[tokio::test]
async fn a_failed_sync_names_the_step_that_failed() {
    let w = world(&["failing"]).await;
    w.gcs
        .upload("failing", "a.jpg", b"a".to_vec(), "image/jpeg")
        .await
        .unwrap();
    w.wif.configure(|e| e.token_lifetime = Duration::from_secs(2));
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, w.env.clone(), 1).await;
    let pid = project(&app).await;
    let body = with(
        json!({"project": pid, "bucket": "failing", "use_blob_urls": true, "presign": false}),
        wif_fields(),
    );
    let (s, st) = app.post("/api/storages/gcswif", body).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let sid = st["id"].as_i64().unwrap();
    // The provider's attribute condition now refuses the server, and the
    // cached token runs out.
    w.wif.configure(|e| {
        e.refuse_sts = Some((
            403,
            "unauthorized_client".into(),
            "The given credential is rejected by the attribute condition.".into(),
        ))
    });
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.post(&format!("/api/storages/gcswif/{sid}/sync"), json!({})).await;
    let done = app.wait_for_sync(&format!("/api/storages/gcswif/{sid}")).await;
    assert_eq!(done["status"], "failed", "{done}");
    let traceback = done["traceback"].as_str().unwrap_or_default();
    assert!(
        traceback.contains("Google STS refused") && traceback.contains("rejected by the attribute condition"),
        "{done}"
    );
    assert!(
        !traceback.contains("sa-token-") && !traceback.contains("federated-"),
        "{traceback}"
    );
    app.stop().await;
}

/// The same settings with no tokens cached.
fn fresh(wif: labelport_storage::wif::WifEnv) -> labelport_storage::wif::WifEnv {
    let mut out = labelport_storage::wif::WifEnv::default();
    out.sts_endpoint = wif.sts_endpoint;
    out.iam_endpoint = wif.iam_endpoint;
    out.iam_api_endpoint = wif.iam_api_endpoint;
    out.subject = wif.subject;
    out.imds_endpoint = wif.imds_endpoint;
    out
}

/// A server off AWS: an OIDC token from a file (a Kubernetes projected
/// service-account token), read again at each refresh.
#[tokio::test]
async fn an_oidc_token_file_is_traded_the_same_way() {
    let w = world(&["oidc"]).await;
    w.gcs
        .upload("oidc", "a.txt", b"a".to_vec(), "text/plain")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "eyJhbGciOiJSUzI1NiJ9.k8s-projected.sig\n").unwrap();
    w.wif.configure(|e| {
        e.subject_token_type = JWT_TOKEN_TYPE.into();
        e.oidc_token = Some("eyJhbGciOiJSUzI1NiJ9.k8s-projected.sig".into());
    });
    let source = json!({"subject_token_type": JWT_TOKEN_TYPE, "credential_source": {"file": path}});
    let mut env = w.env.clone();
    env.wif.subject = SubjectConfig::from_setting(&source.to_string()).unwrap();
    let exchange = Exchange {
        audience: audience(),
        subject: env.wif.subject.clone(),
        service_account_email: Some(email()),
    };
    let tokens = env.wif.tokens(exchange);
    assert!(w.wif.is_live_service_account_token(&tokens.token().await.unwrap()));
    assert_eq!(w.wif.count("imds-token"), 0, "no AWS call off AWS");
    assert_eq!(w.wif.violations(), Vec::<String>::new());
    // A rotated token is read at the next refresh.
    std::fs::write(&path, "rotated").unwrap();
    w.wif.configure(|e| e.oidc_token = Some("rotated".into()));
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, env, 0).await;
    let pid = project(&app).await;
    let (s, v) = app
        .post(
            "/api/storages/gcswif/validate",
            with(json!({"project": pid, "bucket": "oidc", "presign": true}), wif_fields()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(w.wif.violations(), Vec::<String>::new());
    app.stop().await;
}

fn external_account(token_url: &str, impersonation: Option<&str>, source: Value) -> String {
    let mut config = json!({
        "type": "external_account",
        "audience": audience(),
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": token_url,
        "credential_source": source,
    });
    if let Some(url) = impersonation {
        config["service_account_impersonation_url"] = url.into();
    }
    config.to_string()
}

/// An `external_account` configuration pasted into a `gcs` storage: the
/// same chain, Google's URLs only, signing as the impersonated account.
#[tokio::test]
async fn a_pasted_external_account_configuration_signs_without_a_key() {
    let w = world(&["pasted"]).await;
    w.gcs
        .upload("pasted", "a.jpg", b"jpeg".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, w.env.clone(), 0).await;
    let pid = project(&app).await;
    let aws = json!({"environment_id": "aws1",
        "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
        "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        "imdsv2_session_token_url": "http://169.254.169.254/latest/api/token"});
    let impersonation = format!(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        email()
    );
    let good = external_account("https://sts.googleapis.com/v1/token", Some(&impersonation), aws.clone());
    let (s, st) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "pasted", "presign": true, "google_application_credentials": good}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    assert!(st.get("google_application_credentials").is_none());
    let (s, t) = app
        .post(
            "/api/tasks",
            json!({"project": pid, "data": {"image": "gs://pasted/a.jpg"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let tid = t["id"].as_i64().unwrap();
    let r = app
        .get_raw(&format!(
            "/tasks/{tid}/resolve/?fileuri={}",
            labelport_domain::resolve::encode_fileuri("gs://pasted/a.jpg")
        ))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let bytes = assert_signed_like_the_key(&location, &key_json(), "pasted", "a.jpg", 60, &w.proxy.endpoint).await;
    assert_eq!(bytes, b"jpeg");
    assert_eq!(w.wif.violations(), Vec::<String>::new());
    assert!(w.wif.count("signBlob") >= 1);

    // Configurations that would send the server's identity elsewhere, or
    // read its files, are refused at the field.
    for (config, says) in [
        (
            external_account("https://attacker.example/v1/token", Some(&impersonation), aws.clone()),
            "token_url",
        ),
        (
            external_account(
                "https://sts.googleapis.com/v1/token",
                Some("https://attacker.example/v1/projects/-/serviceAccounts/a@b.c:generateAccessToken"),
                aws.clone(),
            ),
            "service_account_impersonation_url",
        ),
        (
            external_account(
                "https://sts.googleapis.com/v1/token",
                Some(&impersonation),
                json!({"file": "/etc/passwd"}),
            ),
            "AWS credential source",
        ),
    ] {
        let (s, v) = app
            .post(
                "/api/storages/gcs/validate",
                json!({"project": pid, "bucket": "pasted", "google_application_credentials": config}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let text = v["validation_errors"]["google_application_credentials"].to_string();
        assert!(text.contains(says), "{says}: {v}");
    }
    app.stop().await;
}

/// Application Default Credentials that are an `external_account` file
/// (`GOOGLE_APPLICATION_CREDENTIALS`): the same chain, and signing as the
/// account of `service_account_impersonation_url`.
#[tokio::test]
async fn adc_that_is_an_external_account_signs_as_the_impersonated_account() {
    let w = world(&["adc"]).await;
    w.gcs
        .upload("adc", "a.jpg", b"adc".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adc.json");
    let impersonation = format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        w.wif.url,
        email()
    );
    let config = external_account(
        &format!("{}/v1/token", w.wif.url),
        Some(&impersonation),
        json!({"environment_id": "aws1"}),
    );
    std::fs::write(&path, config).unwrap();
    // As the server reads GOOGLE_APPLICATION_CREDENTIALS at start.
    let mut env = w.env.clone();
    env.adc_external_account = Some(
        labelport_storage::wif::ExternalAccount::parse(&std::fs::read_to_string(&path).unwrap(), &env.wif, false)
            .unwrap(),
    );
    let app = TestApp::spawn_with_env(labelport_testkit::Backend::Sqlite, env, 0).await;
    let (pid, tid, resolve) = app.keyless_presign_task("adc", 2, "gs://adc/a.jpg").await;
    let _ = (pid, tid);
    let r = app.get_raw(&resolve).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let bytes = assert_signed_like_the_key(&location, &key_json(), "adc", "a.jpg", 120, &w.proxy.endpoint).await;
    assert_eq!(bytes, b"adc");
    assert_eq!(w.wif.violations(), Vec::<String>::new());
    assert_eq!(w.wif.count("generateAccessToken"), 1);
    app.stop().await;
}
