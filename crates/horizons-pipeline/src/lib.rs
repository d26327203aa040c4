//! The ngVLA pipeline on the bus: the stages of `horizons-ngvla` as consumer groups, each on its
//! own topic, connected by Protobuf visibility blocks and end-of-observation markers.
//!
//! ```text
//!  pipeline ingest|simulate ─► ngvla.raw ─[validate]─► ngvla.valid ─[flag]─► ngvla.flagged ─[calibrate]─►
//!  ngvla.calibrated ─[image]─► ngvla.images ─[archive]─► ngvla.archive ─[srdp]─► ngvla.srdp
//!                       (every stage) ─► ngvla.audit      [flag] ─► ngvla.alerts
//!  archive and srdp write <products_dir>/<observation>/run-<id>/ and the catalog
//! ```
//!
//! ## Framing ([`frame`])
//! One ingest of one file, or one simulated observation, is a **run** (a UUIDv7 id), published
//! block by block by an [`ingest::RunPublisher`]. On every stage topic a run is a set of
//! messages, each with headers `ngvla-frame` (`block`, `part` or `end`), `ngvla-run`,
//! `ngvla-observation`, `ngvla-seq` and the bus key:
//! - `block`: one Protobuf [`horizons_ngvla::proto`] visibility block (128 KiB – 1 MiB, cut by
//!   [`horizons_ngvla::proto::split_for_wire`]), keyed by spectral window (`spw-N`). `ngvla-seq`
//!   is the block's index in the run (the order `pipeline run` processes blocks in); a block cut
//!   into pieces carries `ngvla-piece: i/n` and the receiver glues the pieces back together.
//! - `part`: a chunk (≤ 1 MiB) of a binary artifact (an image), `ngvla-artifact` names it.
//! - `end`: one per key, JSON [`frame::EndMarker`]: how many blocks that key carried, which
//!   artifacts with how many parts, every key of the run on this topic, and the run context
//!   ([`context::RunContext`]: observation, options, and each finished stage's report).
//!
//! Validation (time grid, dead antennas), RFI flagging (time-frequency planes), calibration and
//! imaging all need every block of an observation, so **each stage buffers a run until it holds
//! the end marker of every key and every block and part those markers announce**, then runs its
//! `horizons-ngvla` function once over the whole run and publishes its output run downstream.
//! Per spectral window the bus keeps order (groups use `OrderingMode::BlockKey`); the stage
//! nevertheless sorts by `ngvla-seq`, so even a reordered redelivery gives the same input, and it
//! reports in its audit record whether each key arrived in order.
//!
//! ## Durability ([`spool`])
//! A stage writes each frame to its spool directory (fsync, atomic rename) *before* the bus
//! delivery is acked; the message completing a run is acked only after the stage's output and
//! audit record are published and the run is marked done. A crash therefore loses nothing: the
//! spool survives, unacked frames come again, and duplicates overwrite the same spool file (the
//! name is the frame's sequence number). A finished run leaves a `done/<run>` marker, so late
//! duplicates of its frames are acked and dropped. The archive writes a run's products into a
//! `.partial` directory and renames it, so a products directory that exists is complete, then
//! records the run in the [`Catalog`] the service was given (`horizons-app` gives it the
//! portal's database), keyed by run id so a redelivered run is recorded once; a catalog error
//! retries the delivery. A run archived again keeps the directory it has. The archive's output
//! run on `ngvla.archive` carries the products directory (in the context) and its manifest
//! (every file with size and SHA-256) as an artifact.
//!
//! ## Delivery (SRDP)
//! The `srdp` stage checks the products directory against the archive's manifest (a file
//! changed or missing since is a permanent failure, dead-lettered with the file named), adds
//! what the portal serves without computing anything per request
//! ([`horizons_ngvla::archive::srdp::deliver`]: `thumbnail.png` and `manifest.json`), marks the
//! run delivered in the catalog, and announces it on `ngvla.srdp` as a [`service::ProductReady`]
//! (files, checksums, the portal's links), which the `portal` reader group keeps.
//!
//! ## Failures
//! A frame without the pipeline's headers, a block that does not decode, or one that fails
//! [`horizons_ngvla::validate::check_block`] (shape, non-finite time or uvw) is a permanent
//! failure: the bus moves it to the group's dead-letter queue with the reason, and the spool
//! notes the rejection so that the run still completes (the rejection is counted in the
//! validation report). NaN/Inf visibilities are not rejected: validation zeroes and flags them,
//! as in `pipeline run`. A stage whose science fails (e.g. nothing left to image) dead-letters
//! the completing frame with the error and publishes an audit record saying so.
//!
//! ## Limits (deliberate, for now)
//! - The spool is local to the stage's process: run **one member per stage group** (a second
//!   member on another host would see only part of a run). On the embedded backend that is
//!   automatic: one process owns the data directory, so all stages run in one `horizons worker`
//!   process (any subset of roles), or in separate processes one after another.
//! - Replay of a time range ([`replay`]) publishes the runs found whole in the range again as
//!   new runs; `bus replay` into a stage's group does not rebuild products (the stage drops
//!   frames of finished runs as late duplicates).
//! - The portal serves the catalog rows and the products directories (`/api/products` in
//!   `horizons-api`), so the API must see the archive's file system.

pub mod catalog;
pub mod context;
pub mod frame;
pub mod ingest;
pub mod replay;
pub mod service;
pub mod spool;
pub mod stages;
pub mod topology;

pub use catalog::{Archived, Catalog};
pub use context::RunContext;
pub use service::{Service, ServiceConfig};
pub use topology::{Stage, Topics};

/// What the streaming pipeline can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A message that is not a well-formed pipeline frame (missing or bad header, bad payload).
    #[error("not a pipeline frame: {0}")]
    Frame(String),
    /// The science core failed.
    #[error("{stage} stage")]
    Science {
        /// Which stage.
        stage: &'static str,
        /// The cause.
        #[source]
        source: horizons_ngvla::NgvlaError,
    },
    /// Reading or writing the spool or the products.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A run's context or marker did not (de)serialise.
    #[error("run context JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A bus operation failed.
    #[error("{context}")]
    Bus {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: horizons_bus::BusError,
    },
    /// The catalog did not record an archived run.
    #[error("recording run {run} in the catalog")]
    Catalog {
        /// The run.
        run: String,
        /// The catalog's error.
        #[source]
        source: catalog::CatalogError,
    },
    /// The run is inconsistent (e.g. a stage received a run missing an earlier stage's report).
    #[error("inconsistent run: {0}")]
    Inconsistent(String),
}

impl PipelineError {
    pub(crate) fn io(op: &'static str, path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| PipelineError::Io { op, path, source }
    }

    pub(crate) fn bus(context: impl Into<String>) -> impl FnOnce(horizons_bus::BusError) -> Self {
        let context = context.into();
        move |source| PipelineError::Bus { context, source }
    }

    /// Whether trying again may help (bus, I/O and catalog trouble); frame, science and
    /// consistency errors are permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::Bus { .. } | PipelineError::Io { .. } | PipelineError::Catalog { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// What stages write into audit records as their software.
pub fn software() -> String {
    format!("horizons-pipeline {}", env!("CARGO_PKG_VERSION"))
}
