//! The database layer: one [`Db`] handle over SQLite (embedded default) or
//! PostgreSQL, with migrations per backend and repository functions per
//! resource. SQL is written once with `$N` placeholders, which both sqlx
//! drivers accept, and run through the [`on_read!`]/[`on_write!`] macros that
//! expand the same code for each backend's native types.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub mod annotations;
mod bulk;
pub mod export_storages;
pub mod import_links;
pub mod jobs;
pub mod members;
pub mod predictions;
pub mod projects;
pub mod secrets;
pub mod storages;
pub mod tasks;
pub mod users;

pub use annotations::AnnotationRow;
pub use predictions::PredictionRow;
pub use projects::{ProjectCounts, ProjectRow};
pub use storages::StorageRow;
pub use tasks::{TaskCursor, TaskRow};
pub use users::UserRow;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A request the data does not allow (the last admin's role).
    #[error("{0}")]
    Invalid(String),
    /// A secret could not be sealed or opened (no key, a wrong key).
    #[error("secret: {0}")]
    Secret(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// sqlx, for tools (test harness, bench) that need a raw statement.
pub use sqlx as sqlx_reexport;

/// Which backend; SQLite keeps one writer connection so that writers queue
/// in-process instead of failing with "database is locked".
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: Pool,
    /// The keys that seal credentials at rest (`secrets.rs`).
    secrets: Option<std::sync::Arc<secrets::SecretKeys>>,
    /// Up to this many gap ranges a task-list page is found by seek
    /// (`Db::task_page`); [`tasks::SEEK_MAX_GAPS`] unless changed.
    seek_max_gaps: i64,
}

/// Runs `$body` with `$p` bound to a pool fit for reads.
#[macro_export]
macro_rules! on_read {
    ($db:expr, $p:ident => $body:expr) => {
        match &$db.pool {
            $crate::Pool::Sqlite { read: $p, .. } => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$p` bound to a pool fit for writes.
#[macro_export]
macro_rules! on_write {
    ($db:expr, $p:ident => $body:expr) => {
        match &$db.pool {
            $crate::Pool::Sqlite { write: $p, .. } => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}

/// Placeholders for `rows` groups of `width` values, `($1,$2),($3,$4)` —
/// for multi-row inserts and IN lists. SQLite gets plain `?`: sqlx's SQLite
/// driver resolves each `$N` by name in time growing with the count, which
/// made a 12,000-value statement take 185 ms instead of ~5 ms.
pub fn placeholders(pool: &Pool, rows: usize, width: usize) -> String {
    placeholder_groups(matches!(pool, Pool::Postgres(_)), rows, width)
}

/// [`placeholders`] by kind: `$N` when `numbered`, else `?`.
pub(crate) fn placeholder_groups(numbered: bool, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push(',');
            }
            if numbered {
                out.push('$');
                out.push_str(&n.to_string());
                n += 1;
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// Current time in Label Studio's format (`2026-11-29T04:09:48.540943Z`).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Db {
    /// Opens `DATABASE_URL`-style URLs: `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str) -> DbResult<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?;
            return Ok(Db {
                pool: Pool::Postgres(pool),
                secrets: None,
                seek_max_gaps: tasks::SEEK_MAX_GAPS,
            });
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // 16 MiB of page cache per connection (9 connections at most).
            .pragma("cache_size", "-16384");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(false))
            .await?;
        Ok(Db {
            pool: Pool::Sqlite { read, write },
            secrets: None,
            seek_max_gaps: tasks::SEEK_MAX_GAPS,
        })
    }

    /// This handle with the keys that seal credentials at rest; without
    /// them, reading or writing a storage's credentials is an error.
    pub fn with_secret_keys(mut self, keys: secrets::SecretKeys) -> Db {
        self.secrets = Some(std::sync::Arc::new(keys));
        self
    }

    /// This handle with another limit on the gap ranges a task-list page
    /// is sought past (0: always OFFSET); for tests and benchmarks of the
    /// OFFSET path.
    pub fn with_seek_max_gaps(mut self, ranges: i64) -> Db {
        self.seek_max_gaps = ranges;
        self
    }

    pub async fn open_sqlite_file(path: &Path) -> DbResult<Db> {
        Self::connect(&format!("sqlite://{}", path.display())).await
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn migrate(&self) -> DbResult<()> {
        match &self.pool {
            Pool::Sqlite { write, .. } => sqlx::migrate!("./migrations/sqlite").run(write).await?,
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// `SELECT 1` on the read pool, for `/health`.
    pub async fn ping(&self) -> DbResult<()> {
        on_read!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }
}

pub(crate) fn not_found_if_none<T>(value: Option<T>) -> DbResult<T> {
    value.ok_or(DbError::NotFound)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn placeholders_number_rows_in_order() {
        let pg = super::Pool::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://x@127.0.0.1/x")
                .unwrap(),
        );
        assert_eq!(super::placeholders(&pg, 2, 2), "($1,$2),($3,$4)");
        let dir = tempfile::tempdir().unwrap();
        let db = super::Db::open_sqlite_file(&dir.path().join("t.db")).await.unwrap();
        assert_eq!(super::placeholders(&db.pool, 2, 2), "(?,?),(?,?)");
    }
}
