//! Test harness for Labelport: a real server on a free port over a fresh
//! SQLite or PostgreSQL database ([`TestApp`]), and the real GCS emulator
//! fake-gcs-server on a free port ([`FakeGcs`]).
//!
//! PostgreSQL runs when `LABELPORT_TEST_DATABASE_URL` names a server (each
//! app gets its own new database there); SQLite always runs.

mod fake_gcs;
mod fake_google;
pub mod fake_pubsub;
mod fake_wif;
mod fault_proxy;

use std::time::Duration;

use anyhow::Context;
use labelport_api::AppState;
use labelport_db::secrets::SecretKeys;
use labelport_db::Db;
use labelport_domain::access::Role;
pub use labelport_storage::StorageEnv;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use fake_gcs::FakeGcs;
pub use fake_google::{assert_signed_like_the_key, FakeGoogle, FAKE_ACCESS_TOKEN};
pub use fake_pubsub::{storage_push_body, FakePubSubKeys};

/// Google's published test service-account key (testdata/conformance):
/// a real RSA key file, never a real account.
pub fn test_service_account_key() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/test_service_account.not-a-test.json"
    );
    std::fs::read_to_string(path).expect("testdata/conformance in the repository")
}

/// Application Default Credentials for this process: the test key file
/// with its `token_uri` pointed at `token_url` (a local fake of Google's
/// token endpoint), written to a temporary directory and named by
/// `GOOGLE_APPLICATION_CREDENTIALS`. Keep the directory while ADC is used.
pub fn use_adc_key_file(token_url: &str) -> tempfile::TempDir {
    let mut key: serde_json::Value = serde_json::from_str(&test_service_account_key()).expect("a key file");
    key["token_uri"] = serde_json::Value::String(token_url.to_owned());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("adc.json");
    std::fs::write(&path, key.to_string()).expect("writing the ADC key file");
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &path);
    dir
}

/// A piece from the middle of a key file's private key, within one line
/// of its PEM (so it appears as is in any text that holds the key, JSON
/// escapes or not): if it shows up in a response, a log or a database
/// file, the key leaked.
pub fn private_key_piece(key_json: &str) -> String {
    let key: serde_json::Value = serde_json::from_str(key_json).expect("a key file");
    let pem = key["private_key"].as_str().expect("a private_key");
    let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let line = lines[lines.len() / 2];
    line[line.len() / 2 - 12..line.len() / 2 + 12].to_owned()
}
pub use fake_wif::{FakeWif, WifExpectations};
pub use fault_proxy::{CorsPatch, FaultProxy, RequestKind};

/// Env var naming a PostgreSQL server for tests (any database on it).
pub const TEST_DATABASE_URL_ENV: &str = "LABELPORT_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The backends to run every database test on.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    if std::env::var(TEST_DATABASE_URL_ENV).is_ok_and(|v| !v.is_empty()) {
        out.push(Backend::Postgres);
    }
    out
}

/// A fresh, migrated database; PostgreSQL ones are dropped by [`TestDb::drop_database`].
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> anyhow::Result<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let db = Db::connect(&url).await?.with_secret_keys(SecretKeys::ephemeral());
                db.migrate().await?;
                Ok(TestDb {
                    db,
                    url,
                    pg_admin: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = std::env::var(TEST_DATABASE_URL_ENV).context(TEST_DATABASE_URL_ENV)?;
                let name = format!("labelport_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Db::connect(&admin_url)
                    .await
                    .context("connecting to the test PostgreSQL server")?;
                if let labelport_db::Pool::Postgres(p) = &admin.pool {
                    sqlx_exec(p, &format!("CREATE DATABASE {name}")).await?;
                }
                admin.close().await;
                let url = replace_db_name(&admin_url, &name);
                let db = Db::connect(&url).await?.with_secret_keys(SecretKeys::ephemeral());
                db.migrate().await?;
                Ok(TestDb {
                    db,
                    url,
                    pg_admin: Some((admin_url, name)),
                    _dir: None,
                })
            }
        }
    }

    pub async fn drop_database(self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.pg_admin {
            if let Ok(admin) = Db::connect(&admin_url).await {
                if let labelport_db::Pool::Postgres(p) = &admin.pool {
                    let _ = sqlx_exec(p, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
                admin.close().await;
            }
        }
    }
}

async fn sqlx_exec(pool: &sqlx_pg::PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx_pg::query(sql).execute(pool).await?;
    Ok(())
}

/// sqlx re-exported through the db crate's dependency.
mod sqlx_pg {
    pub use labelport_db::sqlx_reexport::postgres::PgPool;
    pub use labelport_db::sqlx_reexport::query;
}

/// Storage settings that reach GCS at `emulator` without credentials.
pub fn emulator_env(emulator: Option<String>) -> StorageEnv {
    StorageEnv {
        emulator,
        ..StorageEnv::default()
    }
}

/// A running server with one user, and a client that sends its token.
pub struct TestApp {
    pub base_url: String,
    pub token: String,
    pub http: reqwest::Client,
    pub backend: Backend,
    test_db: Option<TestDb>,
    pub workers: labelport_jobs::Workers,
    worker_handles: Vec<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub const TEST_TOKEN: &str = "feedc0de0123456789abcdef0123456789abcdef";

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::try_spawn(backend, None, 2).await.expect("starting the test app")
    }

    /// A server whose GCS connectors talk to `gcs` and that runs `workers`
    /// job workers (0: jobs stay queued until [`TestApp::run_jobs`]).
    pub async fn spawn_with_gcs(backend: Backend, gcs: &FakeGcs, workers: usize) -> TestApp {
        Self::try_spawn(backend, Some(gcs.endpoint.clone()), workers)
            .await
            .expect("starting the test app")
    }

    /// As [`TestApp::spawn_with_gcs`], with GCS at `endpoint` (e.g. a
    /// [`FaultProxy`] in front of the emulator).
    pub async fn spawn_with_gcs_endpoint(backend: Backend, endpoint: &str, workers: usize) -> TestApp {
        Self::try_spawn(backend, Some(endpoint.to_owned()), workers)
            .await
            .expect("starting the test app")
    }

    /// As [`TestApp::spawn_with_gcs`], signing media URLs without a key
    /// through the IAM endpoint `iam_endpoint` (a local fake).
    pub async fn spawn_with_iam(backend: Backend, gcs: &FakeGcs, iam_endpoint: &str) -> TestApp {
        let mut env = emulator_env(Some(gcs.endpoint.clone()));
        env.wif.iam_endpoint = iam_endpoint.to_owned();
        // The IAM API is another service: not this fake's (which answers
        // IAM Credentials only), so a mix-up is a 404, not a pass.
        env.wif.iam_api_endpoint = format!("{iam_endpoint}/iam-api");
        Self::try_spawn_with(backend, env, 1, false, None)
            .await
            .expect("starting the test app")
    }

    /// A server whose storage connectors use `env` as given (GCS endpoint
    /// with credentials, WIF endpoints), with `workers` job workers.
    pub async fn spawn_with_env(backend: Backend, env: StorageEnv, workers: usize) -> TestApp {
        Self::try_spawn_with(backend, env, workers, false, None)
            .await
            .expect("starting the test app")
    }

    async fn try_spawn(backend: Backend, gcs_endpoint: Option<String>, worker_count: usize) -> anyhow::Result<TestApp> {
        Self::try_spawn_with(backend, emulator_env(gcs_endpoint), worker_count, false, None).await
    }

    /// As [`TestApp::spawn_with_gcs`], with a media origin
    /// (`LABELPORT_MEDIA_URL`) at `http://localhost:<port>`: the same server
    /// under another host name.
    pub async fn spawn_with_media_origin(backend: Backend, gcs: &FakeGcs) -> TestApp {
        Self::try_spawn_with(backend, emulator_env(Some(gcs.endpoint.clone())), 1, true, None)
            .await
            .expect("starting the test app")
    }

    /// As [`TestApp::spawn_with_gcs`], checking Pub/Sub push tokens against
    /// the JWK set at `jwks_url` (`LABELPORT_PUBSUB_JWKS_URL`), with the
    /// server's own address as `LABELPORT_PUBLIC_URL`.
    pub async fn spawn_with_pubsub_keys(backend: Backend, gcs: &FakeGcs, workers: usize, jwks_url: &str) -> TestApp {
        Self::try_spawn_with(
            backend,
            emulator_env(Some(gcs.endpoint.clone())),
            workers,
            false,
            Some(jwks_url),
        )
        .await
        .expect("starting the test app")
    }

    async fn try_spawn_with(
        backend: Backend,
        storage_env: StorageEnv,
        worker_count: usize,
        media_origin: bool,
        jwks_url: Option<&str>,
    ) -> anyhow::Result<TestApp> {
        let test_db = TestDb::new(backend).await?;
        test_db
            .db
            .ensure_user("tester@example.com", "test-password", TEST_TOKEN, Some(Role::Admin))
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut state = AppState::new(test_db.db.clone());
        if media_origin {
            let port = listener.local_addr()?.port();
            let key = SecretKeys::ephemeral().derived_key();
            state.media = Some(
                labelport_api::media_origin::MediaOrigin::new(&format!("http://localhost:{port}"), &key)
                    .map_err(anyhow::Error::msg)?,
            );
        }
        state.storage_env = storage_env;
        if let Some(url) = jwks_url {
            state.push_verifier = std::sync::Arc::new(labelport_api::notifications::PushVerifier::new(url));
            // Push tokens name the endpoint's public URL as audience.
            state.public_url = base_url.clone();
        }
        let env = state.storage_env.clone();
        let config = labelport_jobs::WorkerConfig {
            lease: Duration::from_secs(5),
            heartbeat: Duration::from_millis(500),
            poll: Duration::from_millis(100),
            max_attempts: 5,
            ..labelport_jobs::WorkerConfig::default()
        };
        let workers = labelport_sync::workers(test_db.db.clone(), env, state.jobs_notify.clone(), config);
        let worker_handles = workers.spawn(worker_count);
        let pages = labelport_web::router(state.clone());
        let server = tokio::spawn(labelport_api::serve_with_pages(listener, state, pages, async {
            let _ = stop_rx.await;
        }));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        Ok(TestApp {
            base_url,
            token: TEST_TOKEN.into(),
            http,
            backend,
            test_db: Some(test_db),
            workers,
            worker_handles,
            stop: Some(stop_tx),
            server: Some(server),
        })
    }

    pub fn db(&self) -> &Db {
        &self.test_db.as_ref().expect("running").db
    }

    /// Sends a request with the token; returns status and JSON (Null when
    /// the body is empty, a string when it is not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// As [`TestApp::call`], with another user's token.
    pub async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("Authorization", format!("Token {token}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// A project whose one import storage serves `bucket` with presigned
    /// URLs and no key (so signing goes through IAM), and a task pointing
    /// at `uri`; returns (project id, task id, the task's resolve path).
    pub async fn keyless_presign_task(&self, bucket: &str, presign_ttl: i64, uri: &str) -> (i64, i64, String) {
        let config = r#"<View><Image name="image" value="$image"/></View>"#;
        let (s, p) = self
            .post(
                "/api/projects",
                serde_json::json!({"title": "media", "label_config": config}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let pid = p["id"].as_i64().expect("project id");
        let storage =
            serde_json::json!({"project": pid, "bucket": bucket, "presign": true, "presign_ttl": presign_ttl});
        let (s, st) = self.post("/api/storages/gcs", storage).await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let (s, t) = self
            .post(
                "/api/tasks",
                serde_json::json!({"project": pid, "data": {"image": uri}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let tid = t["id"].as_i64().expect("task id");
        let encoded = labelport_domain::resolve::encode_fileuri(uri);
        (pid, tid, format!("/tasks/{tid}/resolve/?fileuri={encoded}"))
    }

    /// An authenticated GET answered as is: redirects not followed (a
    /// presign's 303 is the answer), body unread.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client")
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .expect("request sent")
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Posts raw bytes (for bodies that are not valid JSON).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Token {}", self.token))
            .header("Content-Type", "application/json")
            .body(body);
        read(req.send().await.expect("request sent")).await
    }

    /// Runs queued jobs in this task until none is left.
    pub async fn run_jobs(&self) {
        while self.workers.run_one("test-runner").await.expect("job queue") {}
    }

    /// Polls a storage until its status is final; returns it.
    pub async fn wait_for_sync(&self, path: &str) -> Value {
        let started = std::time::Instant::now();
        loop {
            let (status, body) = self.get(path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["status"].as_str() {
                Some("completed" | "completed_with_errors" | "failed") => return body,
                _ if started.elapsed() > Duration::from_secs(120) => panic!("sync did not finish: {body}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        self.workers.shutdown();
        for h in self.worker_handles.drain(..) {
            let _ = h.await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        if let Some(db) = self.test_db.take() {
            db.drop_database().await;
        }
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body read");
    if text.is_empty() {
        return (status, Value::Null);
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_name() {
        assert_eq!(
            super::replace_db_name("postgres://u@127.0.0.1:5432/postgres?sslmode=disable", "x"),
            "postgres://u@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            super::replace_db_name("postgres://127.0.0.1", "x"),
            "postgres://127.0.0.1/x"
        );
    }
}
