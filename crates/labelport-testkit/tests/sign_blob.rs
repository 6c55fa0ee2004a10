//! Presigning without a private key: Application Default Credentials give
//! an access token (from a local fake of Google's token endpoint) and IAM
//! `signBlob` (a local fake) signs. Both fakes check what they receive.

use labelport_storage::signing::{signed_url, KeySigner, SignedUrlRequest};
use labelport_testkit::{Backend, FakeGcs, FakeGoogle, TestApp};
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn presign_without_a_key_signs_through_iam_sign_blob() {
    let key_json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/test_service_account.not-a-test.json"
    ))
    .expect("shared/conformance beside the repository");
    let key: Value = serde_json::from_str(&key_json).unwrap();
    let fake = FakeGoogle::start(&key_json).await.unwrap();
    let fake_url = fake.url.clone();
    let local_key = KeySigner::from_service_account_json(&key_json).unwrap();

    // ADC: a key file whose token endpoint is the fake (this process only).
    let dir = tempfile::tempdir().unwrap();
    let mut adc = key.clone();
    adc["token_uri"] = json!(format!("{fake_url}/token"));
    let adc_path = dir.path().join("adc.json");
    std::fs::write(&adc_path, adc.to_string()).unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &adc_path);

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("iam-signed").await.unwrap();
    gcs.upload("iam-signed", "a.jpg", b"jpeg".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_iam(Backend::Sqlite, &gcs, &fake_url).await;
    let (_, p) = app
        .post(
            "/api/projects",
            json!({"title": "i", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"}),
        )
        .await;
    let pid = p["id"].as_i64().unwrap();
    // No key on the storage: signing must go through IAM.
    let (s, st) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "iam-signed", "presign": true, "presign_ttl": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let (_, t) = app
        .post(
            "/api/tasks",
            json!({"project": pid, "data": {"image": "gs://iam-signed/a.jpg"}}),
        )
        .await;
    let tid = t["id"].as_i64().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "{}/tasks/{tid}/resolve/?fileuri={}",
            app.base_url,
            labelport_domain::resolve::encode_fileuri("gs://iam-signed/a.jpg")
        ))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(fake.seen(), vec!["token", "signBlob"]);
    // The IAM-signed URL equals the one signed locally with the same key.
    let date = location
        .split("X-Goog-Date=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let mut req = SignedUrlRequest::new("GET", "iam-signed", "a.jpg", 120, at);
    req.host = Some(gcs.endpoint.clone());
    assert_eq!(location, signed_url(&req, &local_key).await.unwrap());
    assert_eq!(
        reqwest::get(&location).await.unwrap().bytes().await.unwrap().as_ref(),
        b"jpeg"
    );

    // When IAM refuses (unknown account), the resolve answers 404 and logs why.
    std::env::set_var(
        labelport_api::signing::SIGNING_ACCOUNT_ENV,
        "nobody@elsewhere.iam.gserviceaccount.com",
    );
    let r = client
        .get(format!(
            "{}/tasks/{tid}/resolve/?fileuri={}",
            app.base_url,
            labelport_domain::resolve::encode_fileuri("gs://iam-signed/a.jpg")
        ))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
