//! Where the archive stage records each archived run, and the delivery stage each delivered one:
//! a [`Catalog`]. The pipeline knows no database; the composition root hands the service a
//! catalog (the portal's store, in `horizons-app`), or none, and then the stages write files
//! only.

use std::path::Path;

use async_trait::async_trait;
use horizons_ngvla::archive::Report;
use horizons_ngvla::model::Observation;

/// A run the archive stage has written.
#[derive(Debug, Clone, Copy)]
pub struct Archived<'a> {
    /// The run id.
    pub run: &'a str,
    /// The observation.
    pub observation: &'a Observation,
    /// The run's report (the figures of `report.json`).
    pub report: &'a Report,
    /// The products directory, complete.
    pub products_dir: &'a Path,
}

/// What recording in a catalog can fail with: the catalog's own error, kept as the source.
pub type CatalogError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The catalog of archived runs.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Records `run`. Called by the archive stage after the products directory is in place and
    /// before the run's completing delivery is acked, so at least once per run: a redelivered
    /// run calls it again with the same run id, and the catalog must keep one entry per run.
    /// An error makes the delivery retried (the archive then runs again, rewriting the same
    /// directory).
    async fn record(&self, run: Archived<'_>) -> Result<(), CatalogError>;

    /// Marks `run` delivered (its thumbnail and manifest are in its products directory) at
    /// `at_ms`, ms since the Unix epoch. Called by the delivery stage, at least once per run,
    /// after the archive stage recorded it: a run delivered again keeps its first time. An error
    /// makes the delivery retried.
    async fn delivered(&self, run: &str, at_ms: i64) -> Result<(), CatalogError>;
}
