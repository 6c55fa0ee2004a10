//! The credentials columns hold no key material, on SQLite and PostgreSQL:
//! read straight from the tables after storages of both directions were
//! created with a pasted key. (The binary's own test searches the SQLite
//! files and a trace log; see `crates/labelport/tests/secrets.rs`.)

use labelport_db::sqlx_reexport as sqlx;
use labelport_testkit::{backends, private_key_piece, test_service_account_key, FakeGcs, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn credential_columns_hold_only_sealed_values() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("sealed").await.unwrap();
    let key = test_service_account_key();
    let piece = private_key_piece(&key);
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 0).await;
        let (s, p) = app.post("/api/projects", json!({"title": "s"})).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let pid = p["id"].as_i64().unwrap();
        for path in ["/api/storages/gcs", "/api/storages/export/gcs"] {
            let (s, st) = app
                .post(
                    path,
                    json!({"project": pid, "bucket": "sealed", "google_application_credentials": key}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{path}: {st}");
            assert!(!st.to_string().contains(&piece), "{path} answered the key");
        }
        let sql = "SELECT credentials FROM import_storages UNION ALL SELECT credentials FROM export_storages";
        let stored: Vec<Option<String>> = match &app.db().pool {
            labelport_db::Pool::Sqlite { read, .. } => sqlx::query_scalar(sql).fetch_all(read).await.unwrap(),
            labelport_db::Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        };
        assert_eq!(stored.len(), 2);
        for value in stored {
            let value = value.expect("a credential");
            assert!(value.starts_with("lp1:"), "{backend:?}: not sealed");
            assert!(
                !value.contains(&piece) && !value.contains("PRIVATE KEY"),
                "{backend:?}: key material at rest"
            );
        }
        app.stop().await;
    }
}
