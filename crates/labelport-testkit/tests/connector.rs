//! The GCS connector against the unmodified emulator.

use bytes::Bytes;
use futures::TryStreamExt;
use labelport_storage::gcs::{GcsConfig, GcsStore};
use labelport_storage::{ObjectStore, StorageError};
use labelport_testkit::FakeGcs;

async fn store(gcs: &FakeGcs, bucket: &str) -> GcsStore {
    GcsStore::connect(GcsConfig::emulator(bucket, gcs.endpoint.clone()))
        .await
        .unwrap()
}

#[tokio::test]
async fn lists_reads_ranges_writes_and_deletes() {
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("conn").await.unwrap();
    for i in 0..25 {
        gcs.upload(
            "conn",
            &format!("p/{i:02}.txt"),
            format!("body {i}").into_bytes(),
            "text/plain",
        )
        .await
        .unwrap();
    }
    gcs.upload("conn", "p/sub/x.txt", b"x".to_vec(), "text/plain")
        .await
        .unwrap();
    gcs.upload("conn", "q/y.txt", b"y".to_vec(), "text/plain")
        .await
        .unwrap();
    let s = store(&gcs, "conn").await;
    s.check().await.unwrap();

    // Recursive listing in pages of 10 sees every object under the prefix, in order.
    let (mut keys, mut token) = (Vec::new(), None);
    loop {
        let page = s.list_page("p/", true, token, 10).await.unwrap();
        assert!(page.objects.len() <= 10);
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(keys.len(), 26);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    // One level: the sub-"folder" is a prefix, not an object.
    let page = s.list_page("p/", false, None, 1000).await.unwrap();
    assert_eq!(page.objects.len(), 25);
    assert_eq!(page.prefixes, vec!["p/sub/"]);

    let meta = s.stat("p/07.txt").await.unwrap();
    assert_eq!((meta.size, meta.content_type.as_deref()), (6, Some("text/plain")));
    assert!(meta.generation > 0 && !meta.etag.is_empty() && meta.updated.is_some());
    assert_eq!(
        &s.read_all("p/07.txt", Some(meta.generation)).await.unwrap()[..],
        b"body 7"
    );
    let range: Vec<Bytes> = s
        .read_stream("p/07.txt", None, 2, Some(3))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(range.concat(), b"dy");
    let tail: Vec<Bytes> = s
        .read_stream("p/07.txt", None, 5, None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tail.concat(), b"7");

    let written = s
        .write("out/a b/ü.json", Bytes::from_static(b"{\"a\":1}"), "application/json")
        .await
        .unwrap();
    assert_eq!(written.size, 7);
    assert_eq!(
        s.stat("out/a b/ü.json").await.unwrap().content_type.as_deref(),
        Some("application/json")
    );
    s.delete("out/a b/ü.json").await.unwrap();
    assert!(matches!(s.stat("out/a b/ü.json").await, Err(StorageError::NotFound(_))));
    assert!(matches!(
        s.delete("out/a b/ü.json").await,
        Err(StorageError::NotFound(_))
    ));

    let missing = store(&gcs, "no-such-bucket").await;
    let err = missing.check().await.unwrap_err();
    assert!(
        matches!(err, StorageError::BucketNotFound(ref b) if b == "no-such-bucket"),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-bucket"));
}

#[tokio::test]
async fn emulator_host_env_and_credentials_are_checked() {
    // STORAGE_EMULATOR_HOST is honoured as Google's libraries do (host:port or URL).
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("envb").await.unwrap();
    std::env::set_var("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", gcs.port));
    assert_eq!(
        labelport_storage::gcs::emulator_from_env().as_deref(),
        Some(gcs.endpoint.as_str())
    );
    let s = GcsStore::connect(GcsConfig {
        bucket: "envb".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.check().await.unwrap();
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    // Without an emulator, a pasted key must be a service-account key.
    let err = GcsStore::connect(GcsConfig {
        bucket: "b".into(),
        auth: labelport_storage::gcs::GcsAuth::ServiceAccountKey("{\"type\": \"authorized_user\"}".into()),
        ..Default::default()
    })
    .await
    .err()
    .expect("rejected");
    assert!(err.to_string().contains("service-account key"), "{err}");
}
