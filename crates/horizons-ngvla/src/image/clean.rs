//! Högbom CLEAN inside Cotton–Schwab major cycles.
//!
//! Minor cycles subtract `gain × peak × PSF` at the brightest residual pixel until the peak drops
//! below `(1 − mgain)` of where the cycle started (or the stopping level). Each major cycle then
//! degrids the model, subtracts it from the visibilities and regrids, so approximations of the
//! image-plane PSF subtraction (its finite size) never accumulate. Stopping level:
//! `max(threshold_jy, auto_threshold × σ)` with σ the MAD-based rms of the residual, or `niter`
//! components.
//!
//! Auto-masking (WSClean's `-auto-mask`): CLEAN first runs anywhere down to `auto_mask × σ`; the
//! pixels that received components become the mask, and the run continues to the final level
//! inside the mask only. Without it a 3σ CLEAN of a noise-limited snapshot picks up dozens of
//! noise peaks of both signs whose sum biases the total clean flux.

use num_complex::Complex32;
use serde::{Deserialize, Serialize};

use super::gridder::Gridder;
use super::{stats, Image};

/// CLEAN settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CleanConfig {
    /// Loop gain of a minor iteration.
    pub gain: f64,
    /// Fraction of the peak a minor cycle removes before the next major cycle.
    pub mgain: f64,
    /// Most minor iterations in total.
    pub niter: usize,
    /// Absolute stopping level, Jy/beam.
    pub threshold_jy: f64,
    /// Stopping level in units of the residual rms.
    pub auto_threshold: f64,
    /// Most major cycles.
    pub max_major: usize,
    /// Auto-mask level in units of the residual rms (`None`: no mask).
    pub auto_mask: Option<f64>,
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            gain: 0.1,
            mgain: 0.8,
            niter: 10_000,
            threshold_jy: 0.0,
            auto_threshold: 1.0,
            max_major: 20,
            auto_mask: Some(5.0),
        }
    }
}

/// What CLEAN produced.
#[derive(Debug, Clone)]
pub struct CleanOutput {
    /// Components, `(i, j, flux Jy)` (merged per pixel).
    pub components: Vec<(usize, usize, f64)>,
    /// The model image, Jy/pixel.
    pub model: Image,
    /// The final residual image.
    pub residual: Image,
    /// Minor iterations run.
    pub iterations: usize,
    /// Major cycles run.
    pub major_cycles: usize,
}

/// Runs CLEAN. `vis`/`weights` are the imaged samples with their imaging weights; `psf` has its
/// peak at the centre.
pub fn clean(
    gridder: &dyn Gridder,
    u: &[f64],
    v: &[f64],
    vis: &[Complex32],
    weights: &[f32],
    psf: &Image,
    cfg: &CleanConfig,
) -> CleanOutput {
    let npix = gridder.geometry().npix;
    let mut model = Image::new(npix, npix);
    let mut residual = gridder.grid(u, v, vis, weights);
    let mut iterations = 0;
    let mut major_cycles = 0;
    let (pcx, pcy) = ((psf.nx / 2) as i64, (psf.ny / 2) as i64);
    // Phase 1 (with auto-masking): unmasked down to the mask level; phase 2: masked to the end.
    let mut mask: Option<Vec<bool>> = None;
    let mut masking = cfg.auto_mask.is_some_and(|m| m > cfg.auto_threshold);
    while major_cycles < cfg.max_major && iterations < cfg.niter {
        let rms = stats::robust_rms(&residual.data);
        let level = if masking { cfg.auto_mask.unwrap_or(cfg.auto_threshold) } else { cfg.auto_threshold };
        let stop = cfg.threshold_jy.max(level * rms);
        let (_, _, peak) = match &mask {
            Some(m) => masked_peak(&residual, m),
            None => stats::abs_peak(&residual),
        };
        if peak.abs() <= stop {
            if masking {
                masking = false;
                mask = Some(model.data.iter().map(|&f| f != 0.0).collect());
                continue;
            }
            break;
        }
        let cycle_stop = stop.max((1.0 - cfg.mgain) * peak.abs());
        let mut work = residual.clone();
        let mut subtracted = false;
        while iterations < cfg.niter {
            let (pi, pj, p) = match &mask {
                Some(m) => masked_peak(&work, m),
                None => stats::abs_peak(&work),
            };
            if p.abs() <= cycle_stop {
                break;
            }
            let flux = cfg.gain * p;
            model.data[pj * npix + pi] += flux;
            subtracted = true;
            iterations += 1;
            // Pixel i reads PSF column i − pi + pcx: the columns inside the PSF are one run.
            let i_lo = (pi as i64 - pcx).max(0);
            let i_hi = (pi as i64 - pcx + psf.nx as i64).min(npix as i64);
            for j in 0..npix as i64 {
                let sj = j - pj as i64 + pcy;
                if sj < 0 || sj >= psf.ny as i64 || i_lo >= i_hi {
                    continue;
                }
                let row = &psf.data[sj as usize * psf.nx..(sj as usize + 1) * psf.nx];
                let out = &mut work.data[j as usize * npix..(j as usize + 1) * npix];
                let s_lo = (i_lo - pi as i64 + pcx) as usize;
                let span = (i_hi - i_lo) as usize;
                for (o, p) in out[i_lo as usize..i_hi as usize].iter_mut().zip(&row[s_lo..s_lo + span]) {
                    *o -= flux * p;
                }
            }
        }
        major_cycles += 1;
        if !subtracted {
            break;
        }
        let model_vis = gridder.degrid(&model, u, v);
        let resid_vis: Vec<Complex32> = vis.iter().zip(&model_vis).map(|(a, b)| a - b).collect();
        residual = gridder.grid(u, v, &resid_vis, weights);
    }
    let components =
        model.data.iter().enumerate().filter(|(_, &f)| f != 0.0).map(|(k, &f)| (k % npix, k / npix, f)).collect();
    CleanOutput { components, model, residual, iterations, major_cycles }
}

/// The largest |value| among masked-in pixels.
fn masked_peak(img: &Image, mask: &[bool]) -> (usize, usize, f64) {
    let mut best = (0usize, 0.0f64);
    for (k, (&x, &m)) in img.data.iter().zip(mask).enumerate() {
        if m && x.abs() > best.1.abs() {
            best = (k, x);
        }
    }
    (best.0 % img.nx.max(1), best.0 / img.nx.max(1), best.1)
}
