//! The emulator harness starts the real fake-gcs-server, makes buckets,
//! holds objects, and stops.

use labelport_testkit::FakeGcs;

#[tokio::test]
async fn fake_gcs_server_starts_serves_and_stops() {
    let gcs = FakeGcs::start()
        .await
        .expect("fake-gcs-server starts (run ./scripts/test to install it)");
    gcs.create_bucket("media").await.unwrap();
    gcs.create_bucket("other").await.unwrap();
    let meta = gcs
        .upload("media", "images/a b/ü.jpg", b"jpeg bytes".to_vec(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(meta["contentType"], "image/jpeg");
    assert_eq!(meta["size"], "10");
    for i in 0..5 {
        gcs.upload("media", &format!("texts/{i}.txt"), vec![b'x'; i], "text/plain")
            .await
            .unwrap();
    }
    assert_eq!(gcs.list("media", "images/").await.unwrap(), vec!["images/a b/ü.jpg"]);
    assert_eq!(gcs.list("media", "texts/").await.unwrap().len(), 5);
    assert!(gcs.list("other", "").await.unwrap().is_empty());
    let body = reqwest::get(format!(
        "{}/storage/v1/b/media/o/images%2Fa%20b%2F%C3%BC.jpg?alt=media",
        gcs.endpoint
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(&body[..], b"jpeg bytes");
    let endpoint = gcs.endpoint.clone();
    gcs.stop();
    assert!(
        reqwest::get(format!("{endpoint}/storage/v1/b")).await.is_err(),
        "stopped emulator refuses connections"
    );
}
