//! Errors of the log engine.

use std::path::PathBuf;

use horizons_bus::BusError;

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds bytes that are not a valid segment or record.
    #[error("corrupt {path} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment was written by a newer (or unknown) format.
    #[error("{path} has on-disk format version {found}; this build reads version {supported}")]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version we read.
        supported: u32,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another process (lock file {path}/LOCK); the embedded engine is single-process")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The engine was closed.
    #[error("the log engine is closed")]
    Closed,
    /// A bus-level rule was broken (name, size, unknown topic…).
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }
}

impl From<LogError> for BusError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Bus(b) => b,
            LogError::Closed => BusError::Unavailable("embedded engine is closed or restarting".into()),
            other => BusError::backend("embedded log", other),
        }
    }
}
