//! The `horizons` binary: parses the command line and hands it to [`horizons_app::run`].

use std::process::ExitCode;

use clap::Parser;

/// Cosmic Horizons: message bus, pipelines and API in one binary.
#[derive(Debug, Parser)]
#[command(name = "horizons", version)]
struct Cli {
    #[command(flatten)]
    global: horizons_app::GlobalArgs,
    #[command(subcommand)]
    command: horizons_app::Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match horizons_app::run(cli.global, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}
