//! The imaging stage: Stokes I samples from the blocks, imaging weights, gridding
//! ([`Gridder`], ES kernel), dirty image and PSF, CLEAN with major cycles, the restoring beam
//! fitted to the PSF, and the restored image.
//!
//! Stokes I is `(RR + LL)/2` (or `(XX + YY)/2`): both parallel hands are gridded as samples of I
//! with their weights, so the weighted mean is I. The cross hands (RL, LR) carry Q and U only and
//! get zero weight in I; they pass through the earlier stages untouched.

pub mod beam;
pub mod clean;
pub mod gridder;
pub mod kernel;
pub mod stats;
pub mod weighting;

use num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::error::{NgvlaError, Result};
use crate::model::{VisBlock, C_M_PER_S};
pub use beam::Beam;
pub use clean::{CleanConfig, CleanOutput};
pub use gridder::{EsGridder, Geometry, Gridder, UvGrid};
pub use weighting::Weighting;

/// A real image, row-major, row 0 southernmost, column 0 easternmost (see [`gridder`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels per row.
    pub nx: usize,
    /// Rows.
    pub ny: usize,
    /// Pixels.
    pub data: Vec<f64>,
}

impl Image {
    /// An image of zeros.
    pub fn new(nx: usize, ny: usize) -> Image {
        Image { nx, ny, data: vec![0.0; nx * ny] }
    }

    /// Pixel `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[j * self.nx + i]
    }
}

/// Imaging settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImagingConfig {
    /// Pixels per side (even).
    pub npix: usize,
    /// Pixel size, arcseconds.
    pub cell_arcsec: f64,
    /// Visibility weighting.
    pub weighting: Weighting,
    /// Kernel support, grid cells.
    pub kernel_support: usize,
    /// PSF level bounding the main lobe used for the beam fit.
    pub psf_cutoff: f64,
    /// CLEAN settings.
    pub clean: CleanConfig,
}

impl Default for ImagingConfig {
    fn default() -> Self {
        ImagingConfig {
            npix: 512,
            cell_arcsec: 0.25,
            weighting: Weighting::Natural,
            kernel_support: 8,
            psf_cutoff: 0.35,
            clean: CleanConfig::default(),
        }
    }
}

impl ImagingConfig {
    /// The image geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry { npix: self.npix, cell_rad: (self.cell_arcsec / 3600.0).to_radians() }
    }

    fn check(&self) -> Result<()> {
        if self.npix < 16 || !self.npix.is_multiple_of(2) || self.npix > 16_384 {
            return Err(NgvlaError::Invalid { name: "npix", reason: format!("{} (even, 16..=16384)", self.npix) });
        }
        if !(self.cell_arcsec > 0.0 && self.cell_arcsec.is_finite()) {
            return Err(NgvlaError::Invalid { name: "cell_arcsec", reason: format!("{}", self.cell_arcsec) });
        }
        Ok(())
    }
}

/// Stokes I samples ready to grid: u, v in wavelengths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UvSamples {
    /// u, wavelengths.
    pub u: Vec<f64>,
    /// v, wavelengths.
    pub v: Vec<f64>,
    /// Visibilities.
    pub vis: Vec<Complex32>,
    /// Data weights.
    pub weight: Vec<f32>,
    /// Sum of the observed frequencies, Hz (for the mean).
    pub freq_sum_hz: f64,
}

/// Collects the unflagged parallel-hand samples of the blocks as Stokes I samples.
pub fn stokes_i_samples(blocks: &[VisBlock]) -> UvSamples {
    let mut s = UvSamples::default();
    for b in blocks {
        let pols: Vec<usize> = (0..b.pols.len()).filter(|&p| b.pols[p].is_parallel_hand()).collect();
        for (bi, bl) in b.baselines.iter().enumerate() {
            if bl.ant1 == bl.ant2 {
                continue;
            }
            let uvw = b.uvw_m[bi];
            for c in 0..b.n_chan {
                let k = b.freq(c) / C_M_PER_S;
                for &p in &pols {
                    let i = b.idx(bi, c, p);
                    if b.flags[i] || b.weights[i] <= 0.0 {
                        continue;
                    }
                    s.u.push(uvw[0] * k);
                    s.v.push(uvw[1] * k);
                    s.vis.push(b.vis[i]);
                    s.weight.push(b.weights[i]);
                    s.freq_sum_hz += b.freq(c);
                }
            }
        }
    }
    s
}

/// The imaging stage's products.
#[derive(Debug, Clone)]
pub struct ImagingProducts {
    /// Dirty image, Jy/beam.
    pub dirty: Image,
    /// PSF, peak 1.
    pub psf: Image,
    /// Restoring beam fitted to the PSF.
    pub beam: Beam,
    /// CLEAN's output (model, residual, components).
    pub clean: CleanOutput,
    /// Restored image: model ⊛ beam + residual, Jy/beam.
    pub restored: Image,
    /// Samples imaged.
    pub n_samples: usize,
    /// Mean frequency of the imaged samples, Hz.
    pub mean_freq_hz: f64,
}

/// The dirty image and PSF of a set of samples with the configured weighting.
pub fn dirty_and_psf(gridder: &dyn Gridder, s: &UvSamples, weighting: Weighting) -> (Image, Image, Vec<f32>) {
    let w = weighting::imaging_weights(&s.u, &s.v, &s.weight, weighting, gridder.geometry());
    let dirty = gridder.grid(&s.u, &s.v, &s.vis, &w);
    let ones = vec![Complex32::new(1.0, 0.0); s.vis.len()];
    let psf = gridder.grid(&s.u, &s.v, &ones, &w);
    (dirty, psf, w)
}

/// Runs the whole imaging stage.
pub fn image_blocks(blocks: &[VisBlock], cfg: &ImagingConfig) -> Result<ImagingProducts> {
    cfg.check()?;
    let s = stokes_i_samples(blocks);
    if s.vis.is_empty() {
        return Err(NgvlaError::NoData("no unflagged parallel-hand samples to image".into()));
    }
    let gridder = EsGridder::new(cfg.geometry(), cfg.kernel_support);
    let (dirty, psf, w) = dirty_and_psf(&gridder, &s, cfg.weighting);
    let beam = beam::fit_beam(&psf, cfg.cell_arcsec, cfg.psf_cutoff)
        .ok_or_else(|| NgvlaError::NoData("PSF main lobe could not be fitted".into()))?;
    // Minor cycles need the PSF at every offset between two image pixels: a PSF of the image's
    // size leaves the far half of each shift unsubtracted, which makes Högbom diverge on sparse
    // uv coverage (sidelobes of 0.65 in the EVLA snapshot). So CLEAN gets a double-size PSF.
    let big = EsGridder::new(Geometry { npix: 2 * cfg.npix, ..cfg.geometry() }, cfg.kernel_support);
    let psf_big = big.grid(&s.u, &s.v, &vec![Complex32::new(1.0, 0.0); s.vis.len()], &w);
    let out = clean::clean(&gridder, &s.u, &s.v, &s.vis, &w, &psf_big, &cfg.clean);
    let mut restored = out.residual.clone();
    beam::restore(&mut restored, &out.components, &beam, cfg.cell_arcsec);
    Ok(ImagingProducts {
        dirty,
        psf,
        beam,
        restored,
        n_samples: s.vis.len(),
        mean_freq_hz: s.freq_sum_hz / s.vis.len() as f64,
        clean: out,
    })
}
