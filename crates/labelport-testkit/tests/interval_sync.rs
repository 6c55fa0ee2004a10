//! Interval sync (issue 17, item 4): `sync_interval` checked, scheduled on
//! the database's clock, claimed once per due time however many processes
//! look, and run through the job queue like a sync a user asks for.

use chrono::{DateTime, Utc};
use labelport_db::sqlx_reexport as sqlx;
use labelport_sync::interval::queue_due_syncs;
use labelport_testkit::{backends, FakeGcs, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn execute(app: &TestApp, sql: &str) {
    match &app.db().pool {
        labelport_db::Pool::Sqlite { write, .. } => {
            sqlx::query(sql).execute(write).await.unwrap();
        }
        labelport_db::Pool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

fn minutes_from_now(at: &Value) -> f64 {
    let at: DateTime<Utc> = at.as_str().expect("a time").parse().expect("RFC 3339");
    (at - Utc::now()).num_milliseconds() as f64 / 60_000.0
}

#[tokio::test]
async fn interval_sync_is_checked_scheduled_and_claimed_once_per_interval() {
    let gcs = FakeGcs::start()
        .await
        .expect("fake-gcs-server (run ./scripts/test to install it)");
    gcs.create_bucket("ticks").await.unwrap();
    for i in 0..3 {
        gcs.upload("ticks", &format!("t/{i}.txt"), b"x".to_vec(), "text/plain")
            .await
            .unwrap();
    }
    for backend in backends() {
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (_, p) = app.post("/api/projects", json!({"title": "ticks"})).await;
        let pid = p["id"].as_i64().unwrap();
        let body = |extra: Value| {
            let mut b = json!({"project": pid, "bucket": "ticks", "prefix": "t", "use_blob_urls": true});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };

        // Checked: a negative or too long interval is a 400 naming the field.
        for bad in [json!(-1), json!(525_601)] {
            let (s, e) = app.post("/api/storages/gcs", body(json!({"sync_interval": bad}))).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {e}");
            assert!(e["validation_errors"]["sync_interval"].is_array(), "{e}");
        }
        let (s, e) = app
            .post("/api/storages/gcs", body(json!({"sync_interval": "often"})))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

        // Off by default.
        let (s, plain) = app.post("/api/storages/gcs", body(json!({}))).await;
        assert_eq!(s, StatusCode::CREATED, "{plain}");
        assert_eq!(plain["sync_interval"], Value::Null);
        assert_eq!(plain["next_sync"], Value::Null);

        // Every 5 minutes: the first one 5 minutes from now.
        let (s, st) = app.post("/api/storages/gcs", body(json!({"sync_interval": 5}))).await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let id = st["id"].as_i64().unwrap();
        assert_eq!(st["sync_interval"], 5);
        let ahead = minutes_from_now(&st["next_sync"]);
        assert!((4.9..=5.1).contains(&ahead), "{ahead} min: {st}");
        assert_eq!(st["status"], "initialized");
        assert!(queue_due_syncs(app.db()).await.unwrap().is_empty(), "not due yet");

        // Due: several processes look at once; one of them queues it.
        execute(
            &app,
            &format!("UPDATE import_storages SET next_sync_at = '2000-01-01T00:00:00.000000Z' WHERE id = {id}"),
        )
        .await;
        let db = app.db();
        let (a, b, c) = tokio::join!(queue_due_syncs(db), queue_due_syncs(db), queue_due_syncs(db));
        let claimed: Vec<i64> = [a.unwrap(), b.unwrap(), c.unwrap()].concat();
        assert_eq!(claimed, vec![id], "one claim for one due time");
        let done = app.wait_for_sync(&format!("/api/storages/gcs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["last_sync_count"], 3, "{done}");
        assert_eq!(done["meta"]["trigger"], "interval", "{done}");
        let ahead = minutes_from_now(&done["next_sync"]);
        assert!((4.9..=5.1).contains(&ahead), "moved on by the interval: {ahead} min");
        assert!(queue_due_syncs(db).await.unwrap().is_empty());

        // Due while a sync is still queued: skipped, and moved on.
        execute(
            &app,
            &format!("UPDATE import_storages SET next_sync_at = '2000-01-01T00:00:00.000000Z' WHERE id = {id}"),
        )
        .await;
        app.db()
            .request_sync(labelport_domain::storage::Direction::Import, id, "{}")
            .await
            .unwrap();
        assert!(queue_due_syncs(db).await.unwrap().is_empty(), "the queued sync stands");
        app.wait_for_sync(&format!("/api/storages/gcs/{id}")).await;
        let (_, now) = app.get(&format!("/api/storages/gcs/{id}")).await;
        assert!(minutes_from_now(&now["next_sync"]) > 4.9, "{now}");

        // Another field changed: the schedule stands. The interval changed:
        // counted from now. Null or 0: off.
        let before = now["next_sync"].clone();
        let (s, st) = app
            .patch(&format!("/api/storages/gcs/{id}"), json!({"title": "renamed"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{st}");
        assert_eq!(st["next_sync"], before);
        assert_eq!(st["sync_interval"], 5);
        let (_, st) = app
            .patch(&format!("/api/storages/gcs/{id}"), json!({"sync_interval": 60}))
            .await;
        let ahead = minutes_from_now(&st["next_sync"]);
        assert!((59.9..=60.1).contains(&ahead), "{st}");
        for off in [json!(null), json!(0)] {
            let (_, on) = app
                .patch(&format!("/api/storages/gcs/{id}"), json!({"sync_interval": 15}))
                .await;
            assert_eq!(on["sync_interval"], 15);
            let (s, st) = app
                .patch(&format!("/api/storages/gcs/{id}"), json!({"sync_interval": off}))
                .await;
            assert_eq!(s, StatusCode::OK, "{st}");
            assert_eq!(st["sync_interval"], Value::Null, "{off}: {st}");
            assert_eq!(st["next_sync"], Value::Null, "{off}: {st}");
        }
        execute(
            &app,
            &format!("UPDATE import_storages SET next_sync_at = '2000-01-01T00:00:00.000000Z' WHERE id = {id}"),
        )
        .await;
        assert!(queue_due_syncs(db).await.unwrap().is_empty(), "off means never");
        app.stop().await;
    }
}
