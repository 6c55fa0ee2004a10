//! Where the database is: `DATABASE_URL` (PostgreSQL or SQLite URL) or the
//! embedded SQLite file `<data-dir>/labelport.db`.

use std::path::PathBuf;

use anyhow::Context;
use labelport_db::Db;

#[derive(clap::Args, Clone)]
pub struct DbArgs {
    /// Directory for the embedded SQLite database and other local state.
    #[arg(long, env = "LABELPORT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; otherwise SQLite in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DbArgs {
    pub fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        Ok(format!("sqlite://{}", self.data_dir.join("labelport.db").display()))
    }

    pub async fn open(&self) -> anyhow::Result<Db> {
        let url = self.url()?;
        // The URL may carry a password: name only the backend on failure.
        let backend = if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        Db::connect(&url)
            .await
            .with_context(|| format!("connecting to the {backend} database"))
    }

    pub async fn open_migrated(&self) -> anyhow::Result<Db> {
        let db = self.open().await?;
        db.migrate().await.context("running migrations")?;
        Ok(db)
    }
}
