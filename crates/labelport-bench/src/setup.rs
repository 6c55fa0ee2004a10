//! What every benchmark starts from: a fresh database, the bench user, and
//! the real server in this process on a free port.

use std::path::Path;

use anyhow::Context;
use labelport_api::AppState;
use labelport_db::secrets::SecretKeys;
use labelport_db::Db;
use labelport_domain::access::Role;
use serde_json::Value;

/// `url` (a PostgreSQL database to measure), or a SQLite file in `dir`;
/// migrated, with a key for credentials that lives as long as the run.
pub async fn open_db(url: Option<&str>, dir: &Path) -> anyhow::Result<Db> {
    let url = url
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let db = Db::connect(&url)
        .await
        .context("opening the bench database")?
        .with_secret_keys(SecretKeys::ephemeral());
    db.migrate().await?;
    Ok(db)
}

/// The bench user, an admin; returns its API token.
pub async fn bench_user(db: &Db) -> anyhow::Result<String> {
    let token = labelport_db::users::generate_token();
    db.ensure_user("bench", "bench-password", &token, Some(Role::Admin))
        .await?;
    Ok(token)
}

/// The server (API and pages), serving `state` on a free loopback port
/// until [`Server::stop`].
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(state: AppState) -> anyhow::Result<Server> {
        Self::start_inner(state, false).await
    }

    /// As [`Server::start`], with its own address as the public URL
    /// (`LABELPORT_PUBLIC_URL`), which push tokens name as audience.
    pub async fn start_public(state: AppState) -> anyhow::Result<Server> {
        Self::start_inner(state, true).await
    }

    async fn start_inner(mut state: AppState, public: bool) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        if public {
            state.public_url = base.clone();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let pages = labelport_web::router(state.clone());
        let handle = tokio::spawn(labelport_api::serve_with_pages(listener, state, pages, async {
            let _ = stopped.await;
        }));
        Ok(Server { base, stop, handle })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await??;
        Ok(())
    }
}

/// An API client with the bench user's token (`Authorization: Token …`);
/// each benchmark adds the calls it makes.
pub struct Client {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The `Authorization` header's value.
    pub auth: String,
}

impl Client {
    /// `method path` with an optional JSON body; the answer's JSON (Null
    /// when it has none). Errors: a non-2xx answer, with its body.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A migrated, empty database for one measurement: a SQLite file in a
/// temporary directory when `postgres_url` is `None`, else a PostgreSQL
/// database created on that server (whose user may create databases) and
/// dropped by [`FreshDb::close`].
pub struct FreshDb {
    pub db: Db,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl FreshDb {
    /// `what` names the PostgreSQL database (`labelport_bench_<what>_<pid>`).
    pub async fn open(postgres_url: Option<&str>, what: &str) -> anyhow::Result<FreshDb> {
        let dir = tempfile::tempdir()?;
        let Some(admin_url) = postgres_url else {
            let db = open_db(None, dir.path()).await?;
            return Ok(FreshDb {
                db,
                _dir: dir,
                postgres: None,
            });
        };
        let name = format!("labelport_bench_{what}_{}", std::process::id());
        admin_exec(admin_url, &format!("CREATE DATABASE {name}")).await?;
        let mut url = reqwest::Url::parse(admin_url).context("the PostgreSQL URL")?;
        url.set_path(&format!("/{name}"));
        let db = open_db(Some(url.as_str()), dir.path()).await?;
        Ok(FreshDb {
            db,
            _dir: dir,
            postgres: Some((admin_url.to_owned(), name)),
        })
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.db.close().await;
        if let Some((admin_url, name)) = self.postgres {
            admin_exec(&admin_url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        }
        Ok(())
    }
}

async fn admin_exec(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let admin = Db::connect(admin_url)
        .await
        .context("connecting to the PostgreSQL server")?;
    if let labelport_db::Pool::Postgres(p) = &admin.pool {
        sqlx::query(sql).execute(p).await.with_context(|| sql.to_owned())?;
    }
    admin.close().await;
    Ok(())
}
