//! Presigning on GCE/GKE/Cloud Run: no key anywhere. Application Default
//! Credentials come from the metadata server (a local fake, found through
//! `GCE_METADATA_HOST` as Google's libraries do), which also names the
//! service account; IAM `signBlob` (a local fake) signs with the token the
//! metadata server issued. The fakes refuse requests without
//! `Metadata-Flavor: Google`, a cloud-platform scope or that token.
//!
//! Its own test binary: ADC is resolved once per process.

use labelport_testkit::{assert_signed_like_the_key, Backend, FakeGcs, FakeGoogle, TestApp};
use reqwest::header;
use reqwest::StatusCode;

#[tokio::test]
async fn presign_with_metadata_server_credentials_signs_as_its_default_account() {
    let key_json = labelport_testkit::test_service_account_key();
    let fake = FakeGoogle::start(&key_json).await.unwrap();

    // Nothing but the metadata server: no key file, no well-known gcloud
    // file (an empty HOME), no account named by hand.
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", home.path());
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS_JSON");
    std::env::remove_var(labelport_api::signing::SIGNING_ACCOUNT_ENV);
    std::env::set_var("GCE_METADATA_HOST", &fake.host);

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("gce-signed").await.unwrap();
    gcs.upload("gce-signed", "clip one.mp4", b"mp4 bytes".to_vec(), "video/mp4")
        .await
        .unwrap();
    let app = TestApp::spawn_with_iam(Backend::Sqlite, &gcs, &fake.url).await;
    let (pid, tid, resolve) = app
        .keyless_presign_task("gce-signed", 5, "gs://gce-signed/clip one.mp4")
        .await;
    // The metadata server is not ready at first: that presign fails (404,
    // reason in the log) and the failure is not kept.
    fake.fail_metadata_email(1);
    let r = app.get_raw(&resolve).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(fake.seen().contains(&"metadata-email-503".to_owned()));
    let r = app.get_raw(&resolve).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store, max-age=300");
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();

    // The token and the account came from the metadata server; no OAuth
    // token endpoint was used.
    let seen = fake.seen();
    assert!(seen.contains(&"metadata-token".to_owned()), "{seen:?}");
    assert!(seen.contains(&"metadata-email".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"token".to_owned()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("signBlob"), "{seen:?}");
    assert!(
        location.contains(&format!("X-Goog-Credential={}", fake.email.replace('@', "%40"))),
        "{location}"
    );

    // The URL is exactly what the key would sign locally, and the emulator
    // serves the object with it.
    let body = assert_signed_like_the_key(&location, &key_json, "gce-signed", "clip one.mp4", 300, &gcs.endpoint).await;
    assert_eq!(body, b"mp4 bytes");

    // Signed again: the metadata token and account are reused, not fetched
    // per URL.
    let before = fake.seen().len();
    let r = app
        .get_raw(&resolve.replace(&format!("/tasks/{tid}/"), &format!("/projects/{pid}/")))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(fake.seen()[before..], ["signBlob".to_owned()]);
    app.stop().await;
}
