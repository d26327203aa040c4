//! `report.json`: the run's figures in one object, the fields of issue 7 first
//! (`peak`, `beam`, `rms`, `clean_flux`, `flag_fraction`, `flag_fraction_by_antenna`,
//! `phase_centre`), then what the catalog row and an operator want (time range, frequencies,
//! validation, calibration and imaging settings).
//!
//! Units: flux densities in Jy (Jy/beam for images; the data are calibrated against a 1 Jy model,
//! so "correlation units" of the model), angles in degrees or arcseconds as named, times in
//! seconds since MJD 0. `rms` is the plain rms of the final residual image; `peak` is the
//! brightest pixel of the restored image, positioned to sub-pixel accuracy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::image::Beam;
use crate::validate::AntennaVerdict;

/// A sky position with a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Peak {
    /// Pixel value, Jy/beam.
    pub value: f64,
    /// Right ascension, degrees.
    pub ra_deg: f64,
    /// Declination, degrees.
    pub dec_deg: f64,
    /// Distance from the phase centre, arcseconds.
    pub offset_arcsec: f64,
    /// Sub-pixel x (column, 0-based).
    pub x_pix: f64,
    /// Sub-pixel y (row, 0-based).
    pub y_pix: f64,
}

/// A direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Direction {
    /// Right ascension, degrees.
    pub ra_deg: f64,
    /// Declination, degrees.
    pub dec_deg: f64,
}

/// Validation figures.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationFigures {
    /// Antennas flagged whole, with their amplitude ratio and verdict.
    pub flagged_antennas: BTreeMap<String, AntennaVerdict>,
    /// Blocks rejected.
    pub rejected_blocks: usize,
    /// Samples flagged for NaN/Inf.
    pub non_finite_samples: usize,
    /// Raw timestamps → integrations.
    pub raw_stamps: usize,
    /// Integrations on the grid.
    pub integrations: usize,
    /// Integration time, s.
    pub interval_s: f64,
    /// Rows snapped onto the grid, and the largest snap in seconds.
    pub snapped_rows: usize,
    /// Largest snap, s.
    pub max_snap_s: f64,
    /// Baseline slots missing from the data (flagged).
    pub missing_rows: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Report {
    /// Brightest pixel of the restored image.
    pub peak: Peak,
    /// Brightest pixel of the dirty image.
    pub dirty_peak: Peak,
    /// Restoring beam.
    pub beam: Beam,
    /// rms of the residual image, Jy/beam.
    pub rms: f64,
    /// `peak.value / rms`.
    pub peak_over_rms: f64,
    /// Sum of the CLEAN components, Jy.
    pub clean_flux: f64,
    /// CLEAN components (pixels with flux).
    pub clean_components: usize,
    /// Minor iterations.
    pub clean_iterations: usize,
    /// Major cycles.
    pub major_cycles: usize,
    /// Fraction flagged by the flagger or missing (see [`crate::flagstats`]).
    pub flag_fraction: f64,
    /// Same, per antenna label.
    pub flag_fraction_by_antenna: BTreeMap<String, f64>,
    /// Fraction flagged for any reason, dead antennas included.
    pub total_flag_fraction: f64,
    /// Phase centre.
    pub phase_centre: Direction,
    /// Observation id.
    pub observation_id: String,
    /// Source name.
    pub object: String,
    /// Telescope.
    pub telescope: String,
    /// Start of the observation (header).
    pub date_obs: String,
    /// First and last integration mid-times, s since MJD 0.
    pub time_range_mjd_s: (f64, f64),
    /// Lowest and highest channel frequencies, Hz.
    pub freq_range_hz: (f64, f64),
    /// Validation figures.
    pub validation: ValidationFigures,
    /// Calibration: reference antenna label.
    pub reference_antenna: Option<String>,
    /// Calibration: solution cells.
    pub gain_solutions: usize,
    /// Anomaly alerts raised.
    pub alerts: usize,
    /// Image side, pixels.
    pub npix: usize,
    /// Pixel size, arcsec.
    pub cell_arcsec: f64,
    /// Weighting used.
    pub weighting: String,
    /// Samples imaged.
    pub imaged_samples: usize,
    /// Software and version.
    pub software: String,
}
