//! `labelport`: the one binary. Subcommands: `serve`, `worker`, `migrate`,
//! `user`. (Benchmarks are a binary of their own, `labelport-bench`, so the
//! server ships no test harness.)

mod config;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use labelport_api::AppState;
use labelport_db::users::generate_token;
use labelport_db::Db;
use labelport_domain::access::Role;

use crate::config::{DbArgs, GoogleArgs};

#[derive(Parser)]
#[command(
    name = "labelport",
    version,
    about = "Self-hosted data labeling with cloud storage at its core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrations run first).
    Serve(ServeArgs),
    /// Run background job workers only (no HTTP), e.g. on extra machines
    /// sharing a PostgreSQL database.
    Worker(WorkerArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage users and API tokens.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage the key that seals credentials at rest.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "LABELPORT_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "LABELPORT_PORT", default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    google: GoogleArgs,
    /// Make sure this user exists (with --password and --user-token).
    #[arg(long, env = "LABELPORT_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "LABELPORT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The user's API token, exactly; generated and printed when omitted.
    #[arg(long, env = "LABELPORT_USER_TOKEN", hide_env_values = true)]
    user_token: Option<String>,
    /// Background job workers (storage syncs) in this process.
    #[arg(long, env = "LABELPORT_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Public URL of this server (e.g. https://label.example.com) for
    /// absolute media resolve URLs; relative when empty.
    #[arg(long, env = "LABELPORT_PUBLIC_URL", default_value = "")]
    public_url: String,
    /// Buckets that managers may reach with the server's own Google
    /// identity (storages without a key), comma-separated, or `*` for any.
    /// Empty: only admins may create such storages.
    #[arg(
        long,
        env = "LABELPORT_AMBIENT_CREDENTIALS_BUCKETS",
        default_value = "",
        value_delimiter = ','
    )]
    ambient_credentials_buckets: Vec<String>,
    /// Serve bucket objects whose type runs script (HTML, SVG, XML,
    /// JavaScript) inline through the media proxy instead of as downloads.
    #[arg(long, env = "LABELPORT_MEDIA_INLINE_ACTIVE", default_value_t = false)]
    media_inline_active: bool,
    /// Another host name that reaches this server (e.g.
    /// https://media.label.example.com), from which media are served with
    /// signed URLs, off the app's origin. Empty: media on the public URL.
    #[arg(long, env = "LABELPORT_MEDIA_URL", default_value = "")]
    media_url: String,
    /// Where the keys that sign Pub/Sub push tokens (bucket notifications)
    /// are fetched: Google's JWK set.
    #[arg(long, env = "LABELPORT_PUBSUB_JWKS_URL", default_value = labelport_api::notifications::GOOGLE_JWKS_URL)]
    pubsub_jwks_url: String,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    google: GoogleArgs,
    #[arg(long, env = "LABELPORT_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Serve Prometheus `GET /metrics` (without credentials) on this address,
    /// e.g. 127.0.0.1:9464; bind it where only Prometheus reaches. Unset: none.
    #[arg(long, env = "LABELPORT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// How often ended jobs and expired sessions are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long ended jobs are kept (a storage's last sync shows its job).
const KEEP_ENDED_JOBS: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The job workers with every job kind this binary runs.
/// Errors: a job setting that is not a whole number of seconds.
fn workers(state: &AppState) -> anyhow::Result<labelport_jobs::Workers> {
    let env = state.storage_env.clone();
    let mut config = labelport_jobs::WorkerConfig::default();
    // How long a dead worker's job waits before another worker takes it.
    if let Some(secs) = env_secs("LABELPORT_JOB_LEASE_SECS")? {
        anyhow::ensure!(secs >= 1, "LABELPORT_JOB_LEASE_SECS must be at least 1");
        config.lease = std::time::Duration::from_secs(secs);
        config.heartbeat = config.lease / 4;
    }
    // How long a running job may take to stop at shutdown before it is
    // handed back.
    if let Some(secs) = env_secs("LABELPORT_JOB_GRACE_SECS")? {
        config.grace = std::time::Duration::from_secs(secs);
    }
    Ok(labelport_sync::workers(
        state.db.clone(),
        env,
        state.jobs_notify.clone(),
        config,
    ))
}

/// A whole number of seconds from the environment; unset or empty: None.
fn env_secs(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name} must be a whole number of seconds, not {v:?}")),
        _ => Ok(None),
    }
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Print a new random key for LABELPORT_SECRET_KEY.
    NewKey,
    /// Re-seal every stored credential under the current key (after a key
    /// change: the new key as LABELPORT_SECRET_KEY, the old one in
    /// LABELPORT_OLD_SECRET_KEYS, on every process). Servers keep running.
    Rotate {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user, or reset its password, token and role; prints the token.
    Create {
        #[arg(long)]
        username: String,
        /// admin (everything), manager (creates and manages projects it is a
        /// member of), or annotator (labels in projects it is a member of).
        /// Default: annotator for a new user; an existing one keeps theirs.
        #[arg(long, value_parser = ["admin", "manager", "annotator"])]
        role: Option<String>,
        #[arg(long, env = "LABELPORT_PASSWORD", hide_env_values = true)]
        password: String,
        /// The API token to set; a new random one when omitted.
        #[arg(long, env = "LABELPORT_USER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give a user a new random API token and print it.
    ResetToken {
        #[arg(long)]
        username: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List users (never their tokens).
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LABELPORT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("LABELPORT_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Colours only on a terminal, not in files or journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token must be usable in `Authorization: Token <key>`.
fn check_token(token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.len() >= 16 && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "the API token must be at least 16 characters of letters, digits, '-' or '_'"
    );
    Ok(())
}

async fn ensure_startup_user(db: &Db, args: &ServeArgs) -> anyhow::Result<()> {
    match (&args.username, &args.password) {
        (Some(username), Some(password)) => {
            let (token, generated) = match &args.user_token {
                Some(t) => (t.clone(), false),
                None => (generate_token(), true),
            };
            check_token(&token)?;
            // The startup user runs the server: an admin.
            let user = db.ensure_user(username, password, &token, Some(Role::Admin)).await?;
            tracing::info!(user.id = user.id, "user {username} is ready");
            if generated {
                println!("API token for {username}: {token}");
            }
        }
        (Some(_), None) => anyhow::bail!("--username needs --password (or LABELPORT_PASSWORD)"),
        (None, _) if args.user_token.is_some() => {
            anyhow::bail!("--user-token needs --username and --password")
        }
        (None, _) => {
            if db.count_users().await? == 0 {
                let password = generate_token();
                let token = generate_token();
                db.ensure_user("admin", &password, &token, Some(Role::Admin)).await?;
                // Printed once, to the console only (never to the log).
                println!("Created the first user.\n  username: admin\n  password: {password}\n  API token: {token}");
            }
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db = args.db.open_migrated().await?;
    ensure_startup_user(&db, &args).await?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("invalid --host/--port {}:{}", args.host, args.port))?;
    let mut state = AppState::new(db.clone());
    let public_url = args.public_url.trim().trim_end_matches('/');
    anyhow::ensure!(
        public_url.is_empty() || public_url.starts_with("http://") || public_url.starts_with("https://"),
        "--public-url must start with http:// or https://"
    );
    state.public_url = public_url.to_owned();
    state.secure_cookies = public_url.starts_with("https://");
    state.storage_env = args.google.storage_env()?;
    // Job settings are checked before the port is taken.
    let workers = workers(&state)?;
    state.ambient_buckets = args
        .ambient_credentials_buckets
        .iter()
        // `gs://name/` as users type buckets is the bucket `name`.
        .map(|b| labelport_domain::storage::normalize_bucket(b))
        .filter(|b| !b.is_empty())
        .collect();
    state.media_inline_active = args.media_inline_active;
    anyhow::ensure!(
        args.pubsub_jwks_url.starts_with("https://") || args.pubsub_jwks_url.starts_with("http://"),
        "--pubsub-jwks-url must be an http(s) URL"
    );
    state.push_verifier = std::sync::Arc::new(labelport_api::notifications::PushVerifier::new(&args.pubsub_jwks_url));
    if !args.media_url.trim().is_empty() {
        let key = args.db.secret_keys()?.derived_key();
        state.media = Some(
            labelport_api::media_origin::MediaOrigin::new(&args.media_url, &key)
                .map_err(|e| anyhow::anyhow!("--media-url: {e}"))?,
        );
    }
    // Every setting is checked before the port is taken, so "listening"
    // means the server is ready.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        backend = db.backend_name(),
        "Labelport listening on http://{}",
        listener.local_addr()?
    );
    let handles = workers.spawn(args.workers);
    let requeuer = (args.workers > 0).then(|| {
        labelport_sync::export_job::spawn_export_requeuer(
            db.clone(),
            state.jobs_notify.clone(),
            labelport_sync::export_job::REQUEUE_EVERY,
        )
    });
    // Interval syncs are queued by every process (serve without workers
    // too): the database hands each due storage to one of them.
    let scheduler = labelport_sync::interval::spawn_interval_scheduler(
        db.clone(),
        state.jobs_notify.clone(),
        labelport_sync::interval::CHECK_EVERY,
    );
    let pruner = labelport_jobs::spawn_pruner(db.clone(), PRUNE_EVERY, KEEP_ENDED_JOBS);
    let pages = labelport_web::router(state.clone());
    // The signal stops job-taking at once: running jobs checkpoint and
    // hand back their leases while the HTTP server drains its requests.
    let signalled = {
        let workers = workers.clone();
        async move {
            shutdown_signal().await;
            workers.shutdown();
        }
    };
    let served = labelport_api::serve_with_pages(listener, state, pages, signalled).await;
    pruner.abort();
    scheduler.abort();
    if let Some(r) = requeuer {
        r.abort();
    }
    // Also when the server ended without a signal (idempotent).
    workers.shutdown();
    for h in handles {
        let _ = h.await;
    }
    db.close().await;
    served?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn user(action: UserAction) -> anyhow::Result<()> {
    match action {
        UserAction::Create {
            username,
            role,
            password,
            token,
            db,
        } => {
            let db = db.open_migrated().await?;
            let token = token.unwrap_or_else(generate_token);
            check_token(&token)?;
            let role = role.as_deref().and_then(Role::parse);
            db.ensure_user(&username, &password, &token, role).await?;
            println!("{token}");
        }
        UserAction::ResetToken { username, db } => {
            let db = db.open_migrated().await?;
            let token = generate_token();
            anyhow::ensure!(db.set_user_token(&username, &token).await?, "no user named {username}");
            println!("{token}");
        }
        UserAction::List { db } => {
            let db = db.open_migrated().await?;
            for u in db.list_users().await? {
                println!("{}\t{}\t{}\t{}", u.id, u.username, u.role_name, u.created_at);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Worker(args) => {
            let db = args.db.open_migrated().await?;
            let mut state = AppState::new(db.clone());
            state.storage_env = args.google.storage_env()?;
            labelport_api::metrics::handle();
            let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
            let metrics_server = match args.metrics_addr {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding --metrics-addr {addr}"))?;
                    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
                    Some(tokio::spawn(labelport_api::metrics::serve_standalone(
                        listener,
                        state.clone(),
                        async {
                            let _ = metrics_stopped.await;
                        },
                    )))
                }
                None => None,
            };
            let workers = workers(&state)?;
            let handles = workers.spawn(args.workers.max(1));
            let requeuer = labelport_sync::export_job::spawn_export_requeuer(
                db.clone(),
                state.jobs_notify.clone(),
                labelport_sync::export_job::REQUEUE_EVERY,
            );
            let pruner = labelport_jobs::spawn_pruner(db.clone(), PRUNE_EVERY, KEEP_ENDED_JOBS);
            let scheduler = labelport_sync::interval::spawn_interval_scheduler(
                db.clone(),
                state.jobs_notify.clone(),
                labelport_sync::interval::CHECK_EVERY,
            );
            tracing::info!("{} job workers running", args.workers.max(1));
            shutdown_signal().await;
            pruner.abort();
            scheduler.abort();
            requeuer.abort();
            workers.shutdown();
            for h in handles {
                let _ = h.await;
            }
            let _ = metrics_stop.send(());
            if let Some(server) = metrics_server {
                let _ = server.await;
            }
            db.close().await;
            Ok(())
        }
        Command::Migrate(db) => {
            db.open_migrated().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::User { action } => user(action).await,
        Command::Secrets { action } => match action {
            SecretsAction::NewKey => {
                println!("{}", labelport_db::secrets::generate_key());
                Ok(())
            }
            SecretsAction::Rotate { db } => {
                let db = db.open().await?;
                db.migrate().await.context("running migrations")?;
                let keys = db.secret_key_id().unwrap_or_default();
                let n = db.reseal_secrets().await?;
                println!("{n} credentials re-sealed under key {keys}");
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The server users run carries no test harness: the test kit is a
    /// dev-dependency only (the benchmarks are `labelport-bench`).
    #[test]
    fn the_server_depends_on_no_test_code() {
        let manifest = include_str!("../Cargo.toml");
        let normal = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .expect("a [dependencies] table");
        assert!(normal.contains("labelport-api"), "{normal}");
        assert!(
            !normal.contains("testkit"),
            "the server depends on the test kit:\n{normal}"
        );
    }

    #[test]
    fn tokens_are_checked() {
        assert!(super::check_token("0123456789abcdef0123").is_ok());
        assert!(super::check_token("short").is_err());
        assert!(super::check_token("has space 0123456789").is_err());
    }
}
