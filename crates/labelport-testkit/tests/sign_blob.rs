//! Presigning without a private key: Application Default Credentials give
//! an access token (from a local fake of Google's token endpoint) and IAM
//! `signBlob` (a local fake) signs. Both fakes check what they receive.

use labelport_testkit::{assert_signed_like_the_key, Backend, FakeGcs, FakeGoogle, TestApp};
use reqwest::header;
use reqwest::StatusCode;

#[tokio::test]
async fn presign_without_a_key_signs_through_iam_sign_blob() {
    let key_json = labelport_testkit::test_service_account_key();
    let fake = FakeGoogle::start(&key_json).await.unwrap();
    let fake_url = fake.url.clone();

    // ADC: a key file whose token endpoint is the fake (this process only).
    let _adc = labelport_testkit::use_adc_key_file(&format!("{fake_url}/token"));

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("iam-signed").await.unwrap();
    gcs.upload("iam-signed", "a.jpg", b"jpeg".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_iam(Backend::Sqlite, &gcs, &fake_url).await;
    // No key on the storage: signing must go through IAM.
    let (_, _, resolve) = app.keyless_presign_task("iam-signed", 2, "gs://iam-signed/a.jpg").await;
    let r = app.get_raw(&resolve).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(fake.seen(), vec!["token", "signBlob"]);
    // The IAM-signed URL equals the one signed locally with the same key.
    let body = assert_signed_like_the_key(&location, &key_json, "iam-signed", "a.jpg", 120, &gcs.endpoint).await;
    assert_eq!(body, b"jpeg");

    // When IAM refuses (unknown account), the resolve answers 404 and logs why.
    std::env::set_var(
        labelport_api::signing::SIGNING_ACCOUNT_ENV,
        "nobody@elsewhere.iam.gserviceaccount.com",
    );
    let r = app.get_raw(&resolve).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
