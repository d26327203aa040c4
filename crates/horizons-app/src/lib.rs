//! The commands of the `horizons` binary, as a library: the binary only parses arguments and
//! calls [`run`].
//!
//! - [`config`]: layered configuration (defaults → `horizons.toml` → `HORIZONS_*` → flags).
//! - [`backend`]: the one place a backend is chosen and opened, as `Arc<dyn Backend>`.
//! - [`bus`]: `horizons bus topics|publish|consume|dlq|replay`, an operator's kcat.
//! - [`bench`]: `horizons bench bus|api|jobs|pipeline`, throughput and latency with same-run
//!   baselines (for `pipeline`, ducc0's gridder side by side).
//! - [`up`]: `horizons up` / `serve`, the bus and the HTTP API in one process.
//! - [`pipeline`]: `horizons pipeline run FILE --out DIR`, the ngVLA chain in one process;
//!   `pipeline ingest` / `audit` and the `pipeline:<stage>` worker roles, the chain on the bus.
//!
//! *Architecture invariant:* commands see the bus through `horizons_bus` traits only; the only
//! mention of a concrete backend is in [`backend::open`] (and the embedded baseline of the
//! bench, which measures the embedded engine's own record format).

pub mod backend;
pub mod background;
pub mod bench;
pub mod bus;
pub mod config;
pub mod error;
pub mod jobs;
pub mod payload;
pub mod pipeline;
pub mod portal;
pub mod shutdown;
pub mod telemetry;
pub mod up;

use std::path::PathBuf;

pub use backend::BackendKind;
pub use config::{Config, Overrides};
pub use error::AppError;

/// Flags every command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Configuration file; default `./horizons.toml` if it exists (or HORIZONS_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides `data_dir` and HORIZONS_DATA_DIR. The embedded bus lives in
    /// `<data-dir>/bus`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The top-level commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run everything in one process on the configured bus (embedded by default): the HTTP API
    /// with /healthz and /metrics. Stops cleanly on Ctrl-C or SIGTERM.
    Up(up::UpArgs),
    /// The API server; for now the same as `up`.
    Serve(up::UpArgs),
    /// Operate a bus: list topics, publish, consume, inspect and redrive dead letters, replay.
    Bus(bus::BusArgs),
    /// Measure.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The ngVLA pipeline: validate, flag, calibrate, image, archive and deliver visibilities.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Prints a bearer token for the portal API (signed with this data dir's secret).
    Token(portal::commands::TokenArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(portal::commands::AuditCommand),
    /// The search index.
    #[command(subcommand)]
    Search(portal::commands::SearchCommand),
    /// Runs workers (audit, notify, search, moderation, jobs, pipeline:<stage>) without the API.
    Worker(portal::commands::WorkerArgs),
    /// The job system.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
}

/// Runs `command`. Sets up logging (stderr; `RUST_LOG` overrides the default level), loads the
/// configuration and dispatches.
pub async fn run(global: GlobalArgs, command: Command) -> Result<(), AppError> {
    let default_level = match command {
        Command::Up(_) | Command::Serve(_) | Command::Worker(_) => "info",
        Command::Bus(_)
        | Command::Bench(_)
        | Command::Pipeline(_)
        | Command::Token(_)
        | Command::Audit(_)
        | Command::Search(_)
        | Command::Jobs(_) => "warn",
    };
    telemetry::init_tracing(default_level)?;
    let mut flags = Overrides { config: global.config, data_dir: global.data_dir.clone(), ..Default::default() };
    match command {
        Command::Up(a) => {
            flags.http_addr = a.http;
            up::run(Config::load(&flags)?, true).await
        }
        Command::Serve(a) => {
            flags.http_addr = a.http;
            up::run(Config::load(&flags)?, false).await
        }
        Command::Token(a) => portal::commands::token(Config::load(&flags)?, a).await,
        Command::Audit(c) => portal::commands::audit(Config::load(&flags)?, c).await,
        Command::Search(c) => portal::commands::search(Config::load(&flags)?, c).await,
        Command::Worker(a) => portal::commands::worker(Config::load(&flags)?, a).await,
        Command::Jobs(c) => jobs::run(Config::load(&flags)?, c).await,
        Command::Bus(a) => {
            flags.backend = a.backend;
            let cfg = Config::load(&flags)?;
            let backend = backend::open(&cfg)?;
            let result = bus::run(backend.as_ref(), a.command).await;
            let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
            result.and(closed)
        }
        Command::Bench(c) => {
            let cfg = Config::load(&flags)?;
            bench::run(cfg, global.data_dir.is_some(), c).await
        }
        Command::Pipeline(c) => pipeline::run(flags, c).await,
    }
}
