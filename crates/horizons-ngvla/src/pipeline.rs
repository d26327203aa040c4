//! The whole chain in-process: read → wire round trip → validate → flag + alerts → calibrate →
//! image → report. `horizons pipeline run FILE --out DIR` is [`run_file`] followed by
//! [`crate::archive::write_products`]; the bus stages of `horizons-pipeline` call the same functions.
//!
//! Every raw block goes through the Protobuf encoding and back before validation, so the wire
//! format is exercised on every run exactly as the streaming path will use it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::archive::report::{Direction, Peak, Report, ValidationFigures};
use crate::calibrate::{self, CalConfig, GainTable};
use crate::error::{NgvlaError, Result};
use crate::flagstats::{self, FlagSummary};
use crate::image::{self, stats, Image, ImagingConfig, ImagingProducts};
use crate::model::{Observation, VisBlock};
use crate::rfi::{self, alerts::Alert, RfiConfig, RfiReport};
use crate::sky::{lm_to_radec, separation_arcsec};
use crate::uvfits::UvFits;
use crate::validate::{self, ValidationConfig, ValidationReport};
use crate::{proto, validate::Verdict};

/// Everything a run can be told.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Options {
    /// Validation settings.
    pub validation: ValidationConfig,
    /// Whether to run the RFI flagger.
    pub flag_rfi: bool,
    /// Flagger settings.
    pub rfi: RfiConfig,
    /// Robust z beyond which a baseline raises an alert.
    pub alert_threshold: f64,
    /// Flagged fraction of a block that raises a flag-storm alert.
    pub storm_fraction: f64,
    /// Calibration settings.
    pub calibration: CalConfig,
    /// Imaging settings.
    pub imaging: ImagingConfig,
    /// Largest encoded block on the wire, bytes.
    pub max_block_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            validation: ValidationConfig::default(),
            flag_rfi: true,
            rfi: RfiConfig::default(),
            alert_threshold: 6.0,
            storm_fraction: 0.5,
            calibration: CalConfig::default(),
            imaging: ImagingConfig::default(),
            max_block_bytes: 1 << 20,
        }
    }
}

/// Sizes of the encoded blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WireStats {
    /// Messages.
    pub blocks: usize,
    /// Smallest, bytes.
    pub min_bytes: usize,
    /// Largest, bytes.
    pub max_bytes: usize,
    /// Total, bytes.
    pub total_bytes: usize,
}

/// What a run produces.
#[derive(Debug, Clone)]
pub struct Products {
    /// The options used.
    pub options: Options,
    /// The observation.
    pub observation: Observation,
    /// Wire sizes of the raw blocks.
    pub wire: WireStats,
    /// Validation.
    pub validation: ValidationReport,
    /// Blocks after validation and flagging, before calibration.
    pub flagged_blocks: Vec<VisBlock>,
    /// Flagger figures.
    pub rfi: RfiReport,
    /// Anomaly alerts.
    pub alerts: Vec<Alert>,
    /// Flag fractions.
    pub flags: FlagSummary,
    /// Gain solutions.
    pub gains: GainTable,
    /// Calibrated blocks.
    pub calibrated_blocks: Vec<VisBlock>,
    /// Images.
    pub imaging: ImagingProducts,
    /// The report.
    pub report: Report,
}

/// The stages of a run, in order (for progress reporting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the input file.
    Read,
    /// Encoding and decoding the blocks (Protobuf).
    Wire,
    /// Validation and time-grid regularisation.
    Validate,
    /// RFI flagging and anomaly alerts.
    Flag,
    /// Gain calibration.
    Calibrate,
    /// Imaging and CLEAN.
    Image,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] =
        [Stage::Read, Stage::Wire, Stage::Validate, Stage::Flag, Stage::Calibrate, Stage::Image];
}

/// Reads a uvfits file and runs the chain.
pub fn run_file(path: &Path, opts: &Options) -> Result<Products> {
    run_file_with_progress(path, opts, &mut |_| {})
}

/// [`run_file`], calling `progress` as each stage starts.
pub fn run_file_with_progress(path: &Path, opts: &Options, progress: &mut dyn FnMut(Stage)) -> Result<Products> {
    progress(Stage::Read);
    let uv = UvFits::open(path)?;
    let raw = uv.to_blocks();
    run_blocks_with_progress(uv.observation, raw, opts, progress)
}

/// Encodes every block (split to `max_bytes`) and decodes it again.
pub fn wire_round_trip(raw: Vec<VisBlock>, max_bytes: usize) -> Result<(Vec<VisBlock>, WireStats)> {
    let mut stats = WireStats { min_bytes: usize::MAX, ..Default::default() };
    let mut out = Vec::with_capacity(raw.len());
    for b in &raw {
        for part in proto::split_for_wire(b, max_bytes) {
            let bytes = proto::encode(&part);
            stats.blocks += 1;
            stats.min_bytes = stats.min_bytes.min(bytes.len());
            stats.max_bytes = stats.max_bytes.max(bytes.len());
            stats.total_bytes += bytes.len();
            out.push(proto::decode(&bytes)?);
        }
    }
    if stats.blocks == 0 {
        stats.min_bytes = 0;
    }
    Ok((out, stats))
}

/// Runs the chain on raw blocks of an observation.
pub fn run_blocks(observation: Observation, raw: Vec<VisBlock>, opts: &Options) -> Result<Products> {
    run_blocks_with_progress(observation, raw, opts, &mut |_| {})
}

/// The flag stage: RFI flagging (unless `opts.flag_rfi` is off) and the MAD alerts of every
/// block after it.
pub fn flag_stage(blocks: &mut [VisBlock], opts: &Options) -> Result<(RfiReport, Vec<Alert>)> {
    if opts.flag_rfi {
        return rfi::flag_and_alert(blocks, &opts.rfi, opts.alert_threshold, opts.storm_fraction);
    }
    Ok((RfiReport::default(), rfi::alerts::all(blocks, opts.alert_threshold, opts.storm_fraction)))
}

/// [`run_blocks`], calling `progress` as each stage starts.
pub fn run_blocks_with_progress(
    observation: Observation,
    raw: Vec<VisBlock>,
    opts: &Options,
    progress: &mut dyn FnMut(Stage),
) -> Result<Products> {
    if raw.is_empty() {
        return Err(NgvlaError::NoData("the input has no visibilities".into()));
    }
    progress(Stage::Wire);
    let (raw, wire) = wire_round_trip(raw, opts.max_block_bytes)?;
    progress(Stage::Validate);
    let (mut blocks, validation) = validate::validate(raw, &opts.validation)?;
    progress(Stage::Flag);
    let (rfi, alerts) = flag_stage(&mut blocks, opts)?;
    let dead: BTreeSet<u32> =
        validation.flagged_antennas.values().filter(|v| v.verdict != Verdict::Healthy).map(|v| v.antenna).collect();
    let flags = flagstats::summarize(&blocks, &dead);
    progress(Stage::Calibrate);
    let gains = calibrate::solve(&blocks, &opts.calibration)?;
    let mut calibrated = blocks.clone();
    calibrate::apply(&mut calibrated, &gains);
    progress(Stage::Image);
    let imaging = image::image_blocks(&calibrated, &opts.imaging)?;
    let report = build_report(&observation, opts, &validation, &flags, &gains, &imaging, &calibrated, alerts.len());
    Ok(Products {
        options: opts.clone(),
        observation,
        wire,
        validation,
        flagged_blocks: blocks,
        rfi,
        alerts,
        flags,
        gains,
        calibrated_blocks: calibrated,
        imaging,
        report,
    })
}

/// The brightest pixel of `img` as a sky position.
pub fn peak_of(img: &Image, obs: &Observation, cell_arcsec: f64) -> Peak {
    let (i, j, value) = stats::max_peak(img);
    let (x, y) = stats::refine_peak(img, i, j);
    let cell = (cell_arcsec / 3600.0).to_radians();
    let (l, m) = (-(x - (img.nx / 2) as f64) * cell, (y - (img.ny / 2) as f64) * cell);
    let (ra, dec) = lm_to_radec(l, m, obs.ra_deg, obs.dec_deg);
    Peak {
        value,
        ra_deg: ra,
        dec_deg: dec,
        offset_arcsec: separation_arcsec(ra, dec, obs.ra_deg, obs.dec_deg),
        x_pix: x,
        y_pix: y,
    }
}

/// The run's report from the products of every stage (public so that the streaming stages
/// build the very same report).
#[allow(clippy::too_many_arguments)]
pub fn build_report(
    obs: &Observation,
    opts: &Options,
    v: &ValidationReport,
    flags: &FlagSummary,
    gains: &GainTable,
    im: &ImagingProducts,
    blocks: &[VisBlock],
    alerts: usize,
) -> Report {
    let cell = opts.imaging.cell_arcsec;
    let peak = peak_of(&im.restored, obs, cell);
    let rms = stats::rms(&im.clean.residual.data);
    let t = blocks.iter().map(|b| b.time_mjd_s);
    let freqs = blocks.iter().flat_map(|b| [b.freq(0), b.freq(b.n_chan.saturating_sub(1))]);
    Report {
        peak,
        dirty_peak: peak_of(&im.dirty, obs, cell),
        beam: im.beam,
        rms,
        peak_over_rms: if rms > 0.0 { peak.value / rms } else { 0.0 },
        clean_flux: im.clean.components.iter().map(|c| c.2).sum(),
        clean_components: im.clean.components.len(),
        clean_iterations: im.clean.iterations,
        major_cycles: im.clean.major_cycles,
        flag_fraction: flags.fraction,
        flag_fraction_by_antenna: flags.by_antenna.clone(),
        total_flag_fraction: flags.total_fraction,
        phase_centre: Direction { ra_deg: obs.ra_deg, dec_deg: obs.dec_deg },
        observation_id: obs.id.clone(),
        object: obs.object.clone(),
        telescope: obs.telescope.clone(),
        date_obs: obs.date_obs.clone(),
        time_range_mjd_s: (t.clone().fold(f64::INFINITY, f64::min), t.fold(f64::NEG_INFINITY, f64::max)),
        freq_range_hz: (freqs.clone().fold(f64::INFINITY, f64::min), freqs.fold(f64::NEG_INFINITY, f64::max)),
        validation: ValidationFigures {
            flagged_antennas: v.flagged_antennas.clone(),
            rejected_blocks: v.rejected.len(),
            non_finite_samples: v.non_finite_samples,
            raw_stamps: v.time_grid.raw_stamps,
            integrations: v.time_grid.integrations,
            interval_s: v.time_grid.interval_s,
            snapped_rows: v.time_grid.snapped_rows,
            max_snap_s: v.time_grid.max_snap_s,
            missing_rows: v.time_grid.missing_rows,
        },
        reference_antenna: gains.reference_antenna.map(|a| a.to_string()),
        gain_solutions: gains.solutions.len(),
        alerts,
        npix: opts.imaging.npix,
        cell_arcsec: cell,
        weighting: format!("{:?}", opts.imaging.weighting),
        imaged_samples: im.n_samples,
        software: format!("horizons-ngvla {}", env!("CARGO_PKG_VERSION")),
    }
}
