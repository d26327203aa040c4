//! The error type of every command.
//!
//! Display strings say what we were doing; the cause stays in `#[source]`, so the binary
//! prints the whole chain (`context: cause: cause`).

use std::path::PathBuf;

use crate::backend::BackendKind;

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The configuration file could not be read.
    #[error("reading configuration file {path}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid: unknown key, wrong type, bad value. The source
    /// names the key and shows the line.
    #[error("invalid configuration file {path}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The cause, naming the key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A `HORIZONS_*` environment variable holds a value that does not parse.
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    ConfigEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The merged configuration breaks a rule; the message names the key.
    #[error("invalid configuration: {0}")]
    ConfigInvalid(String),
    /// The chosen backend is not part of this build.
    #[error(
        "the {0} backend is not built yet: only `embedded` is available in this build (choose it with \
         --backend embedded, bus.backend in horizons.toml or HORIZONS_BUS_BACKEND)"
    )]
    BackendNotBuilt(BackendKind),
    /// A command-line argument or combination is not acceptable.
    #[error("{0}")]
    Usage(String),
    /// A bus operation failed.
    #[error("{context}")]
    Bus {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: horizons_bus::BusError,
    },
    /// A file-system or terminal operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("serving HTTP")]
    Http(#[source] horizons_api::ApiError),
    /// Telemetry (tracing or the metrics recorder) could not be set up.
    #[error("setting up telemetry: {0}")]
    Telemetry(String),
    /// A background task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(String),
    /// A benchmark did not complete (e.g. the consumers stalled).
    #[error("benchmark failed: {0}")]
    Bench(String),
    /// The comment pipeline failed (database, index, mail, keys).
    #[error("comment pipeline")]
    Portal(#[source] horizons_comments::CommentsError),
    /// A check found a problem (e.g. `horizons audit verify`); the message says where.
    #[error("{0}")]
    Check(String),
    /// The ngVLA pipeline failed (bad input file, no usable data, writing products).
    #[error("pipeline")]
    Pipeline(#[source] horizons_ngvla::NgvlaError),
    /// The ngVLA stages on the bus failed (declaring, ingesting, routing).
    #[error("ngVLA stages")]
    Stages(#[source] horizons_pipeline::PipelineError),
}

impl AppError {
    /// A closure wrapping a [`horizons_bus::BusError`] with `context`.
    pub fn bus(context: impl Into<String>) -> impl FnOnce(horizons_bus::BusError) -> AppError {
        let context = context.into();
        move |source| AppError::Bus { context, source }
    }

    /// Wraps a pipeline error.
    pub fn pipeline(e: horizons_ngvla::NgvlaError) -> AppError {
        AppError::Pipeline(e)
    }

    /// A closure wrapping an I/O error with `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
        let context = context.into();
        move |source| AppError::Io { context, source }
    }
}
