//! Test connection of a keyless storage that uses the server's own
//! identity (Application Default Credentials) against GCS with credentials
//! (here a local endpoint, not the anonymous emulator): with presign on,
//! one URL is signed through IAM `signBlob` (a local fake), so a refusal is
//! found at Test connection, not by annotators (issue 17, item 1).

use labelport_storage::StorageEnv;
use labelport_testkit::{Backend, FakeGcs, FakeGoogle, FaultProxy, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn test_connection_signs_once_as_the_servers_own_identity() {
    let key_json = labelport_testkit::test_service_account_key();
    let fake = FakeGoogle::start(&key_json).await.unwrap();
    // ADC: a key file whose token endpoint is the fake (this process only).
    let _adc = labelport_testkit::use_adc_key_file(&format!("{}/token", fake.url));

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("adc-check").await.unwrap();
    gcs.upload("adc-check", "a.jpg", b"jpeg".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let proxy = FaultProxy::start(&gcs.endpoint).await.unwrap();
    let mut env = StorageEnv {
        gcs_endpoint: Some(proxy.endpoint.clone()),
        ..StorageEnv::default()
    };
    env.wif.iam_endpoint = fake.url.clone();
    env.wif.iam_api_endpoint = format!("{}/iam-api", fake.url);
    let app = TestApp::spawn_with_env(Backend::Sqlite, env, 0).await;
    let (_, p) = app.post("/api/projects", json!({"title": "adc"})).await;
    let pid = p["id"].as_i64().unwrap();
    let body = json!({"project": pid, "bucket": "adc-check", "presign": true});

    let (s, v) = app.post("/api/storages/gcs/validate", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        fake.seen().contains(&"signBlob".to_owned()),
        "signed once: {:?}",
        fake.seen()
    );

    // IAM cannot sign as the account named: found now, at the field.
    std::env::set_var(
        labelport_api::signing::SIGNING_ACCOUNT_ENV,
        "nobody@elsewhere.iam.gserviceaccount.com",
    );
    let (s, v) = app.post("/api/storages/gcs/validate", body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let said = v["validation_errors"]["presign"][0].as_str().unwrap_or_default();
    assert!(
        said.starts_with("Pre-signed URLs cannot be made for gs://adc-check") && said.contains("nobody@elsewhere"),
        "{v}"
    );
    // The proxy needs no signing.
    let (s, v) = app
        .post(
            "/api/storages/gcs/validate",
            json!({"project": pid, "bucket": "adc-check", "presign": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.stop().await;
}
