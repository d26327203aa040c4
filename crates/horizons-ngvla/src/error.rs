//! The error type of the crate: one enum, one variant per kind of failure a caller can act on.
//!
//! Reading a file fails with [`NgvlaError::Io`] (the file system), [`NgvlaError::Truncated`] (the
//! file ends before the header said it would), [`NgvlaError::NotUvfits`] (a FITS file of another
//! kind, or no FITS at all) or [`NgvlaError::MissingTable`] (no antenna table). Blocks that break
//! their own shape give [`NgvlaError::Shape`]; the validation stage turns them into rejections.

use std::path::PathBuf;

/// Everything that can go wrong in the science core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NgvlaError {
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "writing", "creating").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The input ends before the structure its header announces.
    #[error("truncated FITS: {what} needs {needed} bytes from offset {offset}, file has {len}")]
    Truncated {
        /// The part that is cut short.
        what: String,
        /// Where the part starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// The input is not FITS, or is FITS but not random-groups uv data.
    #[error("not a uvfits file: {0}")]
    NotUvfits(String),
    /// A FITS header or card is malformed (bad keyword, value or layout).
    #[error("bad FITS header in {hdu}: {reason}")]
    BadHeader {
        /// Which HDU ("primary", "AIPS AN", ...).
        hdu: String,
        /// What is wrong.
        reason: String,
    },
    /// A required binary table extension is absent.
    #[error("uvfits file has no {0} table")]
    MissingTable(&'static str),
    /// A visibility block whose arrays disagree with its declared shape.
    #[error("block shape: {0}")]
    Shape(String),
    /// A Protobuf payload that does not decode to a visibility block.
    #[error("protobuf decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An option or parameter out of its valid range.
    #[error("invalid parameter {name}: {reason}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A stage found nothing it could work on (e.g. every sample flagged).
    #[error("no usable data: {0}")]
    NoData(String),
    /// Encoding a PNG failed.
    #[error("png encoding: {0}")]
    Png(#[from] png::EncodingError),
    /// Decoding a PNG failed.
    #[error("png decoding: {0}")]
    PngDecode(#[from] png::DecodingError),
    /// A products directory no longer holds the files its manifest lists.
    #[error("products changed since they were archived: {0}")]
    Changed(String),
    /// Serialising JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl NgvlaError {
    /// Wraps an I/O error with the operation and the path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NgvlaError::Io { op, path: path.into(), source }
    }

    pub(crate) fn header(hdu: &str, reason: impl Into<String>) -> Self {
        NgvlaError::BadHeader { hdu: hdu.to_string(), reason: reason.into() }
    }

    /// Fails with [`NgvlaError::Truncated`] unless `bytes` holds `needed` bytes from `offset`;
    /// `what` names the part (built only on failure).
    pub(crate) fn ensure_len(bytes: &[u8], offset: usize, needed: usize, what: impl FnOnce() -> String) -> Result<()> {
        if offset.checked_add(needed).is_some_and(|end| end <= bytes.len()) {
            return Ok(());
        }
        Err(NgvlaError::Truncated {
            what: what(),
            offset: offset as u64,
            needed: needed as u64,
            len: bytes.len() as u64,
        })
    }
}

/// The crate's result type.
pub type Result<T, E = NgvlaError> = std::result::Result<T, E>;
