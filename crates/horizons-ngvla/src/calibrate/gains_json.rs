//! `gains.json`: the calibration solutions as a documented JSON file.
//!
//! Schema `horizons.gains/1`:
//!
//! ```json
//! {
//!   "schema": "horizons.gains/1",
//!   "observation_id": "EVLA:J1008+0730:2010-04-26T03:21:56.000000",
//!   "reference_antenna": "1",              // phase reference (its gains have zero phase)
//!   "antennas": ["1", "2", ...],           // antenna labels, the order of every gain list
//!   "stations": ["W09", "E02", ...],       // station names, same order ("" if unknown)
//!   "polarizations": ["R", "L"],           // feeds, the order of the outer gain lists
//!   "model": {"sources": [{"l": 0.0, "m": 0.0, "flux_jy": 1.0}]},
//!   "solution_intervals": [
//!     {
//!       "spw": 0,
//!       "t_start_mjd_s": 4779303716.0,     // seconds since MJD 0, UTC
//!       "t_end_mjd_s": 4779303806.0,
//!       "integrations": [0, 9],            // [first, one past last]; null end = open
//!       "channels": [0, 64],               // [first, one past last]
//!       "gains": [[[re, im], ...], ...],   // [feed][antenna]; V_pq = g_p conj(g_q) M_pq
//!       "flags": [[false, ...], ...],      // [feed][antenna]; true = no solution
//!       "iterations": [31, 29],            // StEFCal iterations per feed
//!       "converged": [true, true]
//!     }
//!   ]
//! }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::GainTable;
use crate::error::{NgvlaError, Result};
use crate::model::Observation;
use crate::sky::SkyModel;

/// The schema id written into every file.
pub const SCHEMA: &str = "horizons.gains/1";

/// One solution cell as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalJson {
    /// Spectral window.
    pub spw: u32,
    /// Start, seconds since MJD 0.
    pub t_start_mjd_s: f64,
    /// End, seconds since MJD 0.
    pub t_end_mjd_s: f64,
    /// `[first, one past last]` integration; the end is `null` when open.
    pub integrations: (u64, Option<u64>),
    /// `[first, one past last]` channel.
    pub channels: (usize, usize),
    /// `[feed][antenna]` as `[re, im]`.
    pub gains: Vec<Vec<[f64; 2]>>,
    /// `[feed][antenna]`, true = no solution.
    pub flags: Vec<Vec<bool>>,
    /// Iterations per feed.
    pub iterations: Vec<usize>,
    /// Convergence per feed.
    pub converged: Vec<bool>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GainsJson {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Observation id.
    pub observation_id: String,
    /// Phase reference antenna label.
    pub reference_antenna: Option<String>,
    /// Antenna labels.
    pub antennas: Vec<String>,
    /// Station names.
    pub stations: Vec<String>,
    /// Feed names.
    pub polarizations: Vec<String>,
    /// The calibration sky model.
    pub model: SkyModel,
    /// Solution cells.
    pub solution_intervals: Vec<IntervalJson>,
}

impl GainsJson {
    /// The file's content for a gain table.
    pub fn from_table(t: &GainTable, obs: Option<&Observation>) -> GainsJson {
        let station = |a: u32| obs.and_then(|o| o.antenna(a)).map(|x| x.name.clone()).unwrap_or_default();
        GainsJson {
            schema: SCHEMA.into(),
            observation_id: t.observation_id.clone(),
            reference_antenna: t.reference_antenna.map(|a| a.to_string()),
            antennas: t.antennas.iter().map(|a| a.to_string()).collect(),
            stations: t.antennas.iter().map(|&a| station(a)).collect(),
            polarizations: t.feeds.iter().map(|f| f.to_string()).collect(),
            model: t.model.clone(),
            solution_intervals: t
                .solutions
                .iter()
                .map(|s| IntervalJson {
                    spw: s.spw,
                    t_start_mjd_s: s.t_start_mjd_s,
                    t_end_mjd_s: s.t_end_mjd_s,
                    integrations: (s.integration_start, (s.integration_end != u64::MAX).then_some(s.integration_end)),
                    channels: (s.chan_start, s.chan_end),
                    gains: s.gains.iter().map(|f| f.iter().map(|g| [g.re, g.im]).collect()).collect(),
                    flags: s.flags.clone(),
                    iterations: s.iterations.clone(),
                    converged: s.converged.clone(),
                })
                .collect(),
        }
    }

    /// Writes the file (pretty-printed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).map_err(|e| NgvlaError::io("writing", path, e))
    }

    /// Reads a file and checks its schema id.
    pub fn read(path: &Path) -> Result<GainsJson> {
        let text = std::fs::read_to_string(path).map_err(|e| NgvlaError::io("reading", path, e))?;
        let g: GainsJson = serde_json::from_str(&text)?;
        if g.schema != SCHEMA {
            return Err(NgvlaError::Invalid { name: "schema", reason: format!("{} is not {SCHEMA}", g.schema) });
        }
        Ok(g)
    }
}
