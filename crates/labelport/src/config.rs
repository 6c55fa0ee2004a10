//! Where the database is: `DATABASE_URL` (PostgreSQL or SQLite URL) or the
//! embedded SQLite file `<data-dir>/labelport.db`.

use std::path::PathBuf;

use anyhow::Context;
use labelport_db::secrets::{generate_key, parse_key, SecretKeys};
use labelport_db::Db;

#[derive(clap::Args, Clone)]
pub struct DbArgs {
    /// Directory for the embedded SQLite database and other local state.
    #[arg(long, env = "LABELPORT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; otherwise SQLite in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The key that seals credentials at rest (32 bytes, base64; `labelport
    /// secrets new-key` makes one). Unset: the key file `secret.key` in
    /// --data-dir, created on first start. Processes sharing a database
    /// need the same key.
    #[arg(long, env = "LABELPORT_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Earlier keys, comma-separated: they only open credentials, during a
    /// key change (see `labelport secrets rotate`).
    #[arg(
        long,
        env = "LABELPORT_OLD_SECRET_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub old_secret_keys: Vec<String>,
}

/// The key file's name in the data directory.
const KEY_FILE: &str = "secret.key";

impl DbArgs {
    pub fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        self.ensure_data_dir()?;
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
        let keys = self.secret_keys()?;
        Ok(Db::connect(&url)
            .await
            .with_context(|| format!("connecting to the {backend} database"))?
            .with_secret_keys(keys))
    }

    /// Opens the database, applies the migrations, and seals any credential
    /// still stored in plaintext (rows from before sealing existed).
    pub async fn open_migrated(&self) -> anyhow::Result<Db> {
        let db = self.open().await?;
        db.migrate().await.context("running migrations")?;
        let sealed = db
            .seal_plaintext_secrets()
            .await
            .context("checking and sealing stored credentials")?;
        if sealed > 0 {
            tracing::info!(rows = sealed, "sealed stored credentials under the current key");
        }
        Ok(db)
    }

    /// Creates the data directory when missing, readable by its owner only
    /// (it holds the database and the key file).
    fn ensure_data_dir(&self) -> anyhow::Result<()> {
        if !self.data_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.data_dir)
                .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        }
        Ok(())
    }

    /// The current key (the setting, else the key file, made with mode 0600
    /// when missing) and the old ones.
    pub fn secret_keys(&self) -> anyhow::Result<SecretKeys> {
        let current = match self.secret_key.as_deref().filter(|k| !k.trim().is_empty()) {
            Some(text) => parse_key(text).map_err(|e| anyhow::anyhow!("LABELPORT_SECRET_KEY: {e}"))?,
            None => self.key_file()?,
        };
        let old = self
            .old_secret_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| parse_key(k).map_err(|e| anyhow::anyhow!("LABELPORT_OLD_SECRET_KEYS: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(SecretKeys::new(&current, &old))
    }

    fn key_file(&self) -> anyhow::Result<[u8; 32]> {
        self.ensure_data_dir()?;
        let path = self.data_dir.join(KEY_FILE);
        if !path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // create_new: two processes starting at once cannot both write one.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(generate_key().as_bytes())?;
                    f.sync_all()?;
                    tracing::info!("created the secret key file {} (mode 0600); back it up", path.display());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        parse_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Where Google (and, for Workload Identity Federation, AWS) is reached:
/// every endpoint is a setting, so the whole chain can run against local
/// fakes and the GCS emulator.
#[derive(clap::Args, Clone)]
pub struct GoogleArgs {
    /// A GCS JSON API base URL used with each storage's real credentials
    /// (unlike STORAGE_EMULATOR_HOST, which means no credentials). Signed
    /// URLs point at it too.
    #[arg(long, env = "LABELPORT_GCS_ENDPOINT")]
    pub gcs_endpoint: Option<String>,
    /// IAM Credentials: generateAccessToken (WIF) and signBlob (signing
    /// media URLs without a private key).
    #[arg(long, env = "LABELPORT_IAM_ENDPOINT", default_value = labelport_storage::wif::DEFAULT_IAM_ENDPOINT)]
    pub iam_endpoint: String,
    /// IAM API: Test connection asks it which permissions are held on the
    /// service account that signs (`testIamPermissions`).
    #[arg(long, env = "LABELPORT_IAM_API_ENDPOINT", default_value = labelport_storage::wif::DEFAULT_IAM_API_ENDPOINT)]
    pub iam_api_endpoint: String,
    /// Google's Security Token Service (WIF token exchange).
    #[arg(long, env = "LABELPORT_GCP_STS_ENDPOINT", default_value = labelport_storage::wif::DEFAULT_STS_ENDPOINT)]
    pub sts_endpoint: String,
    /// Where gcswif storages get the server's subject token: Google's
    /// `credential_source` JSON (with `subject_token_type`), or the path of
    /// a file holding it. Unset: the server's AWS identity.
    #[arg(long, env = "LABELPORT_WIF_CREDENTIAL_SOURCE")]
    pub wif_credential_source: Option<String>,
    /// The EC2 metadata service (the AWS SDKs' own variable).
    #[arg(long, env = "AWS_EC2_METADATA_SERVICE_ENDPOINT")]
    pub aws_ec2_metadata_service_endpoint: Option<String>,
    /// Seconds a storage request may wait for an answer (or a download for
    /// its next bytes) before it is abandoned and retried.
    #[arg(long, env = "LABELPORT_STORAGE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub storage_timeout_secs: u64,
}

impl GoogleArgs {
    /// The storage connectors' settings; an unusable value is an error
    /// at start, not at the first sync.
    pub fn storage_env(&self) -> anyhow::Result<labelport_storage::StorageEnv> {
        let mut env = labelport_storage::StorageEnv::default();
        let url = |name: &str, value: &str| -> anyhow::Result<String> {
            let value = value.trim().trim_end_matches('/');
            anyhow::ensure!(
                value.starts_with("http://") || value.starts_with("https://"),
                "{name} must be an http(s) URL, not {value:?}"
            );
            Ok(value.to_owned())
        };
        if let Some(endpoint) = self.gcs_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            env.gcs_endpoint = Some(url("LABELPORT_GCS_ENDPOINT", endpoint)?);
        }
        env.wif.iam_endpoint = url("LABELPORT_IAM_ENDPOINT", &self.iam_endpoint)?;
        env.wif.iam_api_endpoint = url("LABELPORT_IAM_API_ENDPOINT", &self.iam_api_endpoint)?;
        env.wif.sts_endpoint = url("LABELPORT_GCP_STS_ENDPOINT", &self.sts_endpoint)?;
        if let Some(source) = self.wif_credential_source.as_deref().filter(|s| !s.trim().is_empty()) {
            env.wif.subject = labelport_storage::wif::SubjectConfig::from_setting(source)
                .map_err(|e| anyhow::anyhow!("LABELPORT_WIF_CREDENTIAL_SOURCE: {e}"))?;
        }
        if let Some(endpoint) = self
            .aws_ec2_metadata_service_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            env.wif.imds_endpoint = Some(url("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)?);
        }
        env.request_timeout = Some(std::time::Duration::from_secs(self.storage_timeout_secs));
        env.read_adc();
        Ok(env)
    }
}
