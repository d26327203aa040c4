//! The data model every stage works on: the observation (antennas, spectral windows,
//! polarisations, phase centre) and the [`VisBlock`] — one integration × a group of baselines ×
//! one spectral window, with complex visibilities, weights, flags and uvw in metres.
//!
//! Sample layout in a block: `[baseline][channel][polarisation]`, the order of a uvfits group, so
//! that reading and writing need no transposes. `flags[i] == true` means sample `i` is not used.

use num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::error::{NgvlaError, Result};

/// Speed of light, m/s.
pub const C_M_PER_S: f64 = 299_792_458.0;

/// A correlation product, with the AIPS/FITS Stokes codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Polarization {
    /// Stokes I (code 1).
    I,
    /// Stokes Q (2).
    Q,
    /// Stokes U (3).
    U,
    /// Stokes V (4).
    V,
    /// Right × right (−1).
    RR,
    /// Left × left (−2).
    LL,
    /// Right × left (−3).
    RL,
    /// Left × right (−4).
    LR,
    /// X × X (−5).
    XX,
    /// Y × Y (−6).
    YY,
    /// X × Y (−7).
    XY,
    /// Y × X (−8).
    YX,
}

impl Polarization {
    const ALL: [Polarization; 12] = [
        Polarization::I,
        Polarization::Q,
        Polarization::U,
        Polarization::V,
        Polarization::RR,
        Polarization::LL,
        Polarization::RL,
        Polarization::LR,
        Polarization::XX,
        Polarization::YY,
        Polarization::XY,
        Polarization::YX,
    ];

    /// The AIPS/FITS Stokes code (`CRVAL` of the `STOKES` axis).
    pub fn code(self) -> i32 {
        match self {
            Polarization::I => 1,
            Polarization::Q => 2,
            Polarization::U => 3,
            Polarization::V => 4,
            Polarization::RR => -1,
            Polarization::LL => -2,
            Polarization::RL => -3,
            Polarization::LR => -4,
            Polarization::XX => -5,
            Polarization::YY => -6,
            Polarization::XY => -7,
            Polarization::YX => -8,
        }
    }

    /// The polarisation with this code.
    pub fn from_code(code: i32) -> Option<Polarization> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    /// `(feed of antenna 1, feed of antenna 2)` as 0/1 for correlation products (R/X = 0,
    /// L/Y = 1); `None` for Stokes parameters.
    pub fn feeds(self) -> Option<(usize, usize)> {
        match self {
            Polarization::RR | Polarization::XX => Some((0, 0)),
            Polarization::LL | Polarization::YY => Some((1, 1)),
            Polarization::RL | Polarization::XY => Some((0, 1)),
            Polarization::LR | Polarization::YX => Some((1, 0)),
            _ => None,
        }
    }

    /// RR, LL, XX or YY.
    pub fn is_parallel_hand(self) -> bool {
        matches!(self.feeds(), Some((a, b)) if a == b)
    }
}

/// An antenna of the array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Antenna {
    /// The antenna number used in baselines (AIPS `NOSTA`, 1-based).
    pub number: u32,
    /// The station name from the antenna table (e.g. `N06`).
    pub name: String,
    /// Position (ITRF-like, relative to the array centre in the table), metres.
    pub position_m: [f64; 3],
}

impl Antenna {
    /// The label reports and flags use: the antenna number, as the observatory logs name them.
    pub fn label(&self) -> String {
        self.number.to_string()
    }
}

/// A spectral window: evenly spaced channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralWindow {
    /// Its id (0-based IF index).
    pub id: u32,
    /// Centre frequency of channel 0, Hz.
    pub first_freq_hz: f64,
    /// Channel spacing, Hz (negative for lower sideband).
    pub chan_width_hz: f64,
    /// Number of channels.
    pub n_chan: usize,
}

impl SpectralWindow {
    /// Centre frequency of channel `c`, Hz.
    pub fn freq(&self, c: usize) -> f64 {
        self.first_freq_hz + c as f64 * self.chan_width_hz
    }

    /// Mean frequency, Hz.
    pub fn centre_hz(&self) -> f64 {
        self.freq(0) + 0.5 * (self.n_chan.max(1) - 1) as f64 * self.chan_width_hz
    }
}

/// What is constant over an observation: the "antenna table" blocks refer to by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// A stable id blocks carry as their antenna-table reference.
    pub id: String,
    /// Source name (`OBJECT`).
    pub object: String,
    /// Telescope (`TELESCOP`).
    pub telescope: String,
    /// Start of observation (`DATE-OBS`).
    pub date_obs: String,
    /// Phase centre right ascension, degrees.
    pub ra_deg: f64,
    /// Phase centre declination, degrees.
    pub dec_deg: f64,
    /// Antennas, in table order.
    pub antennas: Vec<Antenna>,
    /// Spectral windows.
    pub spws: Vec<SpectralWindow>,
    /// Polarisations, in data order.
    pub pols: Vec<Polarization>,
}

impl Observation {
    /// The antenna with this number.
    pub fn antenna(&self, number: u32) -> Option<&Antenna> {
        self.antennas.iter().find(|a| a.number == number)
    }
}

/// A baseline: two antenna numbers, `ant1 < ant2` for cross-correlations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Baseline {
    /// First antenna number.
    pub ant1: u32,
    /// Second antenna number.
    pub ant2: u32,
}

impl Baseline {
    /// A baseline from two antenna numbers.
    pub fn new(ant1: u32, ant2: u32) -> Baseline {
        Baseline { ant1, ant2 }
    }

    /// Whether antenna `a` is one of the two.
    pub fn has(&self, a: u32) -> bool {
        self.ant1 == a || self.ant2 == a
    }
}

/// One integration of a group of baselines in one spectral window.
#[derive(Debug, Clone, PartialEq)]
pub struct VisBlock {
    /// The observation (antenna table) this block refers to.
    pub observation_id: String,
    /// Spectral window id; the bus key.
    pub spw: u32,
    /// Integration index on the observation's time grid (raw blocks: order of arrival).
    pub integration: u64,
    /// Mid-time of the integration, seconds since MJD 0 (UTC).
    pub time_mjd_s: f64,
    /// Integration time, seconds.
    pub interval_s: f64,
    /// Centre frequency of the block's channel 0, Hz.
    pub first_freq_hz: f64,
    /// Channel spacing, Hz.
    pub chan_width_hz: f64,
    /// Number of channels.
    pub n_chan: usize,
    /// Polarisations, in sample order.
    pub pols: Vec<Polarization>,
    /// Baselines, in sample order.
    pub baselines: Vec<Baseline>,
    /// uvw of each baseline, metres.
    pub uvw_m: Vec<[f64; 3]>,
    /// Visibilities, `[baseline][channel][pol]`.
    pub vis: Vec<Complex32>,
    /// Weights, same layout.
    pub weights: Vec<f32>,
    /// Flags, same layout (`true` = do not use).
    pub flags: Vec<bool>,
}

impl VisBlock {
    /// Samples per baseline.
    pub fn per_baseline(&self) -> usize {
        self.n_chan * self.pols.len()
    }

    /// Index of sample (baseline, channel, pol).
    #[inline]
    pub fn idx(&self, b: usize, c: usize, p: usize) -> usize {
        (b * self.n_chan + c) * self.pols.len() + p
    }

    /// Frequency of channel `c`, Hz.
    pub fn freq(&self, c: usize) -> f64 {
        self.first_freq_hz + c as f64 * self.chan_width_hz
    }

    /// The bus key: blocks are partitioned by spectral window.
    pub fn key(&self) -> String {
        format!("spw-{}", self.spw)
    }

    /// Position of polarisation `p` in this block's sample order.
    pub fn pol_index(&self, p: Polarization) -> Option<usize> {
        self.pols.iter().position(|&q| q == p)
    }

    /// Checks that every array matches the declared shape.
    pub fn check_shape(&self) -> Result<()> {
        let n = self.baselines.len() * self.per_baseline();
        let bad = |what: &str, got: usize, want: usize| {
            NgvlaError::Shape(format!(
                "{what} has {got} entries, {want} expected ({} baselines × {} channels × {} pols)",
                self.baselines.len(),
                self.n_chan,
                self.pols.len()
            ))
        };
        if self.uvw_m.len() != self.baselines.len() {
            return Err(bad("uvw", self.uvw_m.len(), self.baselines.len()));
        }
        for (what, got) in [("vis", self.vis.len()), ("weights", self.weights.len()), ("flags", self.flags.len())] {
            if got != n {
                return Err(bad(what, got, n));
            }
        }
        if self.n_chan == 0 || self.pols.is_empty() {
            return Err(NgvlaError::Shape("no channels or no polarisations".into()));
        }
        Ok(())
    }

    /// Fraction of samples flagged.
    pub fn flag_fraction(&self) -> f64 {
        if self.flags.is_empty() {
            return 0.0;
        }
        self.flags.iter().filter(|&&f| f).count() as f64 / self.flags.len() as f64
    }
}
