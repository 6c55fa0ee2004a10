//! `labelport-bench`: Labelport's benchmarks, a binary of their own so that
//! the server users run carries no test harness. Each subcommand starts
//! what it measures (a fresh database, the real server on a free port, the
//! GCS emulator from the test kit), prints figures and asserts nothing;
//! docs/benchmarks.md records them.
//!
//! ```text
//! cargo run --release -p labelport-bench -- api|sync|media|export|load|ui|live|scale [flags]
//! ```

mod api;
mod export;
mod live;
mod load;
mod media;
mod relay;
mod scale;
mod setup;
mod stats;
mod sync;
mod ui;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "labelport-bench",
    about = "Labelport's benchmarks: print figures, assert nothing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk task import and task-list pages through the HTTP API.
    Api(api::BenchArgs),
    /// Storage import sync speed and memory (emulator, in-memory bucket, task files).
    Sync(sync::BenchSyncArgs),
    /// Media resolution: proxy latency and throughput against a direct download, signing.
    Media(media::BenchMediaArgs),
    /// Export storage speed and annotation save latency.
    Export(export::BenchExportArgs),
    /// A large sync while clients import tasks and save annotations.
    Load(load::BenchLoadArgs),
    /// The data manager page at a million tasks: server render and whole loads in Chromium.
    Ui(ui::BenchUiArgs),
    /// Storages that keep themselves in sync: upload to task by notification and by interval, idle tick cost.
    Live(live::BenchLiveArgs),
    /// Files-mode syncs from 10k to 10M objects on SQLite and PostgreSQL beside the raw insert ceiling, with a PNG plot.
    Scale(scale::BenchScaleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LABELPORT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Api(args) => api::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Media(args) => media::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Ui(args) => ui::run(args).await,
        Command::Live(args) => live::run(args).await,
        Command::Scale(args) => scale::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
