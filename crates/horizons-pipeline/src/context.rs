//! The run context: what travels with a run from stage to stage in its end markers — the
//! observation, the options every stage uses (fixed at ingest, so all stages of a run agree and
//! the audit trail records them), and each finished stage's report.

use std::collections::BTreeMap;

use horizons_ngvla::archive::Report;
use horizons_ngvla::calibrate::GainTable;
use horizons_ngvla::flagstats::FlagSummary;
use horizons_ngvla::image::Beam;
use horizons_ngvla::model::Observation;
use horizons_ngvla::pipeline::{Options, WireStats};
use horizons_ngvla::rfi::alerts::Alert;
use horizons_ngvla::rfi::RfiReport;
use horizons_ngvla::validate::ValidationReport;
use serde::{Deserialize, Serialize};

/// A run as far as it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// The run id (UUIDv7, from ingest).
    pub run: String,
    /// The input file's name, for the audit trail.
    pub source: String,
    /// The observation.
    pub observation: Observation,
    /// The options of every stage.
    pub options: Options,
    /// Wire sizes of the raw blocks.
    pub wire: WireStats,
    /// From validate.
    pub validation: Option<ValidationReport>,
    /// From flag.
    pub rfi: Option<RfiReport>,
    /// From flag.
    pub alerts: Option<Vec<Alert>>,
    /// From flag.
    pub flags: Option<FlagSummary>,
    /// From calibrate.
    pub gains: Option<GainTable>,
    /// From image (the pixels travel as artifacts).
    pub imaging: Option<ImagingMeta>,
    /// From image.
    pub report: Option<Report>,
    /// From archive: the run's products directory.
    #[serde(default)]
    pub products_dir: Option<String>,
}

impl RunContext {
    /// A run that no stage has touched yet.
    pub fn new(run: String, source: String, observation: Observation, options: Options, wire: WireStats) -> Self {
        RunContext {
            run,
            source,
            observation,
            options,
            wire,
            validation: None,
            rfi: None,
            alerts: None,
            flags: None,
            gains: None,
            imaging: None,
            report: None,
            products_dir: None,
        }
    }
}

/// What the image stage produced besides pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagingMeta {
    /// `(nx, ny)` of each image artifact (`dirty`, `psf`, `restored`, `residual`, `model`).
    pub images: BTreeMap<String, (usize, usize)>,
    /// Restoring beam.
    pub beam: Beam,
    /// CLEAN components `(i, j, flux)`.
    pub components: Vec<(usize, usize, f64)>,
    /// Minor iterations.
    pub iterations: usize,
    /// Major cycles.
    pub major_cycles: usize,
    /// Samples imaged.
    pub n_samples: usize,
    /// Mean frequency of the imaged samples, Hz.
    pub mean_freq_hz: f64,
}

impl RunContext {
    /// The report of an earlier stage, or an error naming it.
    pub fn need<'a, T>(&self, what: &'static str, v: &'a Option<T>) -> crate::Result<&'a T> {
        v.as_ref().ok_or_else(|| {
            crate::PipelineError::Inconsistent(format!("run {} reached this stage without {what}", self.run))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use horizons_ngvla::model::{Polarization, SpectralWindow};

    pub(crate) fn context() -> RunContext {
        RunContext::new(
            "0190-run".into(),
            "test.uvfits".into(),
            Observation {
                id: "obs".into(),
                object: "J1008+0730".into(),
                telescope: "EVLA".into(),
                date_obs: "2010-01-01".into(),
                ra_deg: 152.0 + 1.0 / 3.0,
                dec_deg: 7.5,
                antennas: vec![],
                spws: vec![SpectralWindow { id: 0, first_freq_hz: 36e9, chan_width_hz: 2e6, n_chan: 64 }],
                pols: vec![Polarization::RR, Polarization::LL],
            },
            Options::default(),
            WireStats::default(),
        )
    }

    #[test]
    fn floats_survive_json_exactly() {
        let mut c = context();
        c.observation.ra_deg = 0.1 + 0.2;
        c.options.imaging.cell_arcsec = 1.0 / 7.0;
        let back: RunContext = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.observation.ra_deg.to_bits(), c.observation.ra_deg.to_bits());
    }
}
