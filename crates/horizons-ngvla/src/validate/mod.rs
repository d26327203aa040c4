//! The validation stage: shape, NaN/Inf, time grid, dead or deviant antennas.
//!
//! - A block whose arrays disagree with its shape, or whose time or uvw are not finite, is
//!   **rejected** with a reason (on the bus: to the DLQ). It never panics a stage.
//! - Non-finite visibilities or weights are zeroed and flagged, and counted.
//! - [`timegrid::regularise`] puts the blocks on a regular time grid (see there).
//! - Per block, each antenna's median over its baselines of the baseline's mean |V| (per
//!   parallel-hand polarisation, unflagged channels) is compared with the array median of those
//!   medians: a ratio below `dead_ratio` (default 0.1)
//!   marks the antenna dead, above `deviant_ratio` (10) wildly deviant; all its baselines are
//!   flagged. Flagging the whole antenna is deliberate: a receiver that is dead in one hand is not
//!   trusted in the others (in the EVLA file antenna 7 is ~1e-6 in RR and ~3e-4 in LL vs ~5e-3).

mod health;
pub mod timegrid;

use std::collections::BTreeMap;

use num_complex::Complex32;
use serde::Serialize;

use crate::error::Result;
use crate::model::VisBlock;
pub use health::{antenna_health, AntennaVerdict, Verdict};
pub use timegrid::{regularise, regularise_owned, TimeGridReport};

/// Validation settings.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationConfig {
    /// Integration time; `None` estimates it from the stamps.
    pub interval_s: Option<f64>,
    /// Largest snap onto the grid, as a fraction of the interval.
    pub snap_tolerance: f64,
    /// Antenna/array median amplitude ratio below which an antenna is dead.
    pub dead_ratio: f64,
    /// Ratio above which an antenna is wildly deviant.
    pub deviant_ratio: f64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { interval_s: None, snap_tolerance: 0.5, dead_ratio: 0.1, deviant_ratio: 10.0 }
    }
}

/// A block refused by validation, with the reason (what a DLQ entry carries).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Spectral window of the block.
    pub spw: u32,
    /// Its integration index.
    pub integration: u64,
    /// Why.
    pub reason: String,
}

/// What validation did, for the report and the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationReport {
    /// Blocks in.
    pub blocks_in: usize,
    /// Blocks out (regularised).
    pub blocks_out: usize,
    /// Rejected blocks.
    pub rejected: Vec<Rejection>,
    /// Samples zeroed and flagged for NaN/Inf.
    pub non_finite_samples: usize,
    /// The time grid.
    pub time_grid: TimeGridReport,
    /// Antennas flagged, by label, with the worst verdict seen.
    pub flagged_antennas: BTreeMap<String, AntennaVerdict>,
    /// Samples flagged by the antenna check.
    pub antenna_flagged_samples: usize,
}

/// Checks one block's structure; `Err` is the rejection reason.
pub fn check_block(b: &VisBlock) -> std::result::Result<(), String> {
    b.check_shape().map_err(|e| e.to_string())?;
    if !b.time_mjd_s.is_finite() {
        return Err("time is not finite".into());
    }
    if b.uvw_m.iter().flatten().any(|x| !x.is_finite()) {
        return Err("uvw is not finite".into());
    }
    if !(b.first_freq_hz.is_finite() && b.chan_width_hz.is_finite() && b.first_freq_hz > 0.0) {
        return Err("frequency axis is not finite and positive".into());
    }
    Ok(())
}

/// Zeroes and flags non-finite samples; returns how many.
pub fn scrub_non_finite(b: &mut VisBlock) -> usize {
    // One branch-free pass first: almost every block has nothing to scrub.
    let finite = b.vis.iter().fold(true, |ok, v| ok & v.re.is_finite() & v.im.is_finite())
        & b.weights.iter().fold(true, |ok, w| ok & w.is_finite());
    if finite {
        return 0;
    }
    let mut n = 0;
    for i in 0..b.vis.len() {
        let v = b.vis[i];
        if !(v.re.is_finite() && v.im.is_finite() && b.weights[i].is_finite()) {
            b.vis[i] = Complex32::new(0.0, 0.0);
            b.weights[i] = 0.0;
            b.flags[i] = true;
            n += 1;
        }
    }
    n
}

/// Runs the whole validation stage over raw blocks.
pub fn validate(raw: Vec<VisBlock>, cfg: &ValidationConfig) -> Result<(Vec<VisBlock>, ValidationReport)> {
    let mut report = ValidationReport { blocks_in: raw.len(), ..Default::default() };
    let mut good = Vec::with_capacity(raw.len());
    for mut b in raw {
        match check_block(&b) {
            Ok(()) => {
                report.non_finite_samples += scrub_non_finite(&mut b);
                good.push(b);
            }
            Err(reason) => report.rejected.push(Rejection { spw: b.spw, integration: b.integration, reason }),
        }
    }
    let (mut blocks, grid) = regularise_owned(good, cfg.interval_s, cfg.snap_tolerance)?;
    report.time_grid = grid;
    for b in &mut blocks {
        let verdicts = antenna_health(b, cfg.dead_ratio, cfg.deviant_ratio);
        for v in verdicts.into_iter().filter(|v| v.verdict != Verdict::Healthy) {
            for (bi, bl) in b.baselines.clone().iter().enumerate() {
                if bl.has(v.antenna) {
                    let s = b.per_baseline();
                    for f in &mut b.flags[bi * s..(bi + 1) * s] {
                        if !*f {
                            report.antenna_flagged_samples += 1;
                            *f = true;
                        }
                    }
                }
            }
            report.flagged_antennas.entry(v.antenna.to_string()).or_insert(v);
        }
    }
    report.blocks_out = blocks.len();
    Ok((blocks, report))
}
