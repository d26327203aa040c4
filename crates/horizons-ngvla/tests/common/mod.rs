//! Shared helpers for the integration tests: where the real EVLA file is.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real file: `HORIZONS_VLA_FILE`, else `<repo>/.cache/vla/…`. A missing file FAILS the test
/// (never skips) with the command that fetches it.
pub fn vla_file() -> PathBuf {
    let path = std::env::var_os("HORIZONS_VLA_FILE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/vla/day2_TDEM0003_10s_norx_1src_1spw.uvfits")
    });
    assert!(
        path.is_file(),
        "the real EVLA test file is missing at {}: run `scripts/fetch-vla-data` from the repository root \
         (it downloads the pyuvdata 2.4.5 wheel and extracts the file into .cache/vla/)",
        path.display()
    );
    path
}
