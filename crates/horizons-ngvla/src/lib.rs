//! The science core of the ngVLA pipeline, as pure functions over visibility blocks.
//!
//! The chain, each stage a module: [`uvfits`] (reader) → [`model`] blocks ([`proto`] on the
//! wire) → [`validate`] (shape, NaN/Inf, time grid, dead antennas) → [`rfi`] (SumThreshold + SIR,
//! MAD alerts) → [`calibrate`] (StEFCal, `gains.json`) → [`image`] (weighting, gridding, FFT,
//! CLEAN, restoring beam) → [`archive`] (FITS, PNG, report; [`archive::srdp`] for delivery).
//! [`pipeline::run_file`] runs them all in-process; [`sim`] makes synthetic data with recorded
//! truth, and [`sim::score`] scores the stages' output against it.
//!
//! Nothing here knows the bus: stages take blocks and return blocks plus a report, so the same
//! functions run in `horizons pipeline run` and behind the bus consumers of `horizons-pipeline`.

pub mod archive;
pub mod calibrate;
pub mod closure;
pub mod error;
pub mod fits;
pub mod flagstats;
mod hint;
pub mod image;
pub mod model;
pub mod pipeline;
pub mod proto;
pub mod rfi;
pub mod sim;
pub mod sky;
pub mod uvfits;
pub mod validate;

pub use error::{NgvlaError, Result};
