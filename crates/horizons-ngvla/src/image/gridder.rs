//! Convolutional gridding and degridding on a 2× padded grid with the ES kernel, FFTs by
//! `rustfft`, and grid correction — behind the [`Gridder`] trait so that another implementation
//! (a GPU gridder, ducc0 for comparison) can slot in.
//!
//! Geometry: pixel `(i, j)` of an `npix × npix` image sits at `l = −(i − npix/2)·cell` (east is
//! to the left, FITS `CDELT1 < 0`) and `m = (j − npix/2)·cell`. A sample at `(u, v)` wavelengths
//! lands at grid position `(−u, v)/Δu` with `Δu = 1/(n·cell)`, `n = 2·npix`, so that the inverse
//! FFT of the grid is `Σ w·V·e^{+2πi(ul+vm)}`.

use std::sync::Arc;

use num_complex::{Complex32, Complex64};
use rustfft::{Fft, FftPlanner};

use super::kernel::{EsKernel, KernelTable};
use super::Image;

/// Pixel grid of an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Pixels per side (even).
    pub npix: usize,
    /// Pixel size, radians.
    pub cell_rad: f64,
}

impl Geometry {
    /// Side of the padded grid.
    pub fn padded(&self) -> usize {
        2 * self.npix
    }

    /// uv cell size of the padded grid, wavelengths.
    pub fn du(&self) -> f64 {
        1.0 / (self.padded() as f64 * self.cell_rad)
    }
}

/// Turns visibilities into images and back. Implementations must agree with the geometry in the
/// module docs so that images, PSFs and model visibilities line up across implementations.
pub trait Gridder: Send + Sync + std::fmt::Debug {
    /// The image grid.
    fn geometry(&self) -> Geometry;

    /// The weighted image `Σ wₖ·Vₖ·e^{+2πi(uₖl+vₖm)} / Σ wₖ` (real part), grid-corrected.
    /// Samples falling off the grid are skipped. `u`, `v` in wavelengths.
    fn grid(&self, u: &[f64], v: &[f64], vis: &[Complex32], weights: &[f32]) -> Image;

    /// Model visibilities of an image of Jy/pixel: `Σ M(l, m)·e^{−2πi(ul+vm)}`.
    fn degrid(&self, model: &Image, u: &[f64], v: &[f64]) -> Vec<Complex32>;
}

/// The CPU gridder: ES kernel, 2× padding, `rustfft`.
#[derive(Debug, Clone)]
pub struct EsGridder {
    geometry: Geometry,
    kernel: EsKernel,
    table: KernelTable,
    correction: Vec<f64>,
}

impl EsGridder {
    /// A gridder for `geometry` with a kernel of `support` cells (8 is accurate to ~1e-6).
    pub fn new(geometry: Geometry, support: usize) -> EsGridder {
        let kernel = EsKernel::new(support);
        let correction = kernel.correction(geometry.npix, geometry.padded());
        EsGridder { geometry, table: KernelTable::new(&kernel), kernel, correction }
    }

    fn fft2(&self, grid: &mut [Complex64], inverse: bool) {
        let n = self.geometry.padded();
        let mut planner = FftPlanner::<f64>::new();
        let fft: Arc<dyn Fft<f64>> = if inverse { planner.plan_fft_inverse(n) } else { planner.plan_fft_forward(n) };
        fft.process(grid);
        transpose(grid, n);
        fft.process(grid);
        transpose(grid, n);
    }

    #[inline]
    fn grid_pos(&self, u: f64, v: f64) -> Option<(f64, f64)> {
        let du = self.geometry.du();
        let (gu, gv) = (-u / du, v / du);
        let lim = (self.geometry.padded() / 2) as f64 - self.kernel.support as f64;
        (gu.abs() < lim && gv.abs() < lim).then_some((gu, gv))
    }

    /// Index into the padded grid of signed cell offsets.
    #[inline]
    fn wrap(k: i64, n: usize) -> usize {
        k.rem_euclid(n as i64) as usize
    }

    /// The convolutional gridding step of [`Gridder::grid`] alone: the samples spread onto the
    /// padded uv grid with the kernel (public so that `horizons bench pipeline` can time it
    /// apart from the FFT). The grid is **centred** (uv origin at cell `(n/2, n/2)`): a kernel
    /// footprint never wraps (samples within `W` cells of the edge are skipped), so each of its
    /// rows is one contiguous run of cells; [`to_image`](Self::to_image) undoes the shift.
    pub fn grid_uv(&self, u: &[f64], v: &[f64], vis: &[Complex32], weights: &[f32]) -> UvGrid {
        let n = self.geometry.padded();
        let mut grid = vec![Complex64::new(0.0, 0.0); n * n];
        let w = self.kernel.support;
        let centre = (n / 2) as i64;
        let (mut ku, mut kv) = (vec![0.0; w], vec![0.0; w]);
        let mut wsum = 0.0f64;
        for k in 0..u.len() {
            let wt = weights[k] as f64;
            if wt <= 0.0 {
                continue;
            }
            let Some((gu, gv)) = self.grid_pos(u[k], v[k]) else { continue };
            wsum += wt;
            let val = Complex64::new(vis[k].re as f64, vis[k].im as f64) * wt;
            let u0 = (self.table.weights(gu, &mut ku) + centre) as usize;
            let v0 = (self.table.weights(gv, &mut kv) + centre) as usize;
            for (b, wv) in kv.iter().enumerate() {
                let row = &mut grid[(v0 + b) * n + u0..][..w];
                let vv = val * *wv;
                for (cell, wu) in row.iter_mut().zip(&ku) {
                    *cell += vv * *wu;
                }
            }
        }
        UvGrid { cells: grid, weight_sum: wsum }
    }

    /// The rest of [`Gridder::grid`]: inverse FFT of the padded grid, grid correction and
    /// normalisation by the sum of the gridded weights.
    pub fn to_image(&self, uv: UvGrid) -> Image {
        let UvGrid { cells: mut grid, weight_sum: wsum } = uv;
        let n = self.geometry.padded();
        let npix = self.geometry.npix;
        self.fft2(&mut grid, true);
        let mut img = Image::new(npix, npix);
        if wsum <= 0.0 {
            return img;
        }
        let half = (npix / 2) as i64;
        // The grid was centred: shifting it by n/2 cells multiplies the image by (−1)^(x+y).
        for j in 0..npix {
            let y = Self::wrap(j as i64 - half, n);
            for i in 0..npix {
                let x = Self::wrap(i as i64 - half, n);
                img.data[j * npix + i] =
                    shift_sign(x + y) * grid[y * n + x].re / (self.correction[i] * self.correction[j] * wsum);
            }
        }
        img
    }
}

/// `(−1)^k`: centring the uv grid (shifting it by `n/2` cells in both axes) multiplies the
/// image by `(−1)^(x+y)`.
fn shift_sign(k: usize) -> f64 {
    if k.is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// A gridded, not yet transformed padded uv grid ([`EsGridder::grid_uv`]).
#[derive(Debug, Clone)]
pub struct UvGrid {
    /// `padded × padded` cells, row-major (v rows, u columns), uv origin at `(n/2, n/2)`.
    pub cells: Vec<Complex64>,
    /// Sum of the weights of the samples that landed on the grid.
    pub weight_sum: f64,
}

/// In-place transpose of an `n × n` matrix, in tiles so both sides stay in cache.
fn transpose(a: &mut [Complex64], n: usize) {
    const TILE: usize = 32;
    for rb in (0..n).step_by(TILE) {
        for cb in (rb..n).step_by(TILE) {
            for r in rb..(rb + TILE).min(n) {
                let c0 = if cb == rb { r + 1 } else { cb };
                for c in c0..(cb + TILE).min(n) {
                    a.swap(r * n + c, c * n + r);
                }
            }
        }
    }
}

impl Gridder for EsGridder {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn grid(&self, u: &[f64], v: &[f64], vis: &[Complex32], weights: &[f32]) -> Image {
        let uv = self.grid_uv(u, v, vis, weights);
        self.to_image(uv)
    }

    /// The uv grid is **centred** as in [`grid_uv`](Self::grid_uv): the model goes in times
    /// `(−1)^(x+y)`, which shifts its transform by `n/2` cells, so each kernel row read is one
    /// contiguous run of cells (no wrapping of every tap's index).
    fn degrid(&self, model: &Image, u: &[f64], v: &[f64]) -> Vec<Complex32> {
        let n = self.geometry.padded();
        let npix = self.geometry.npix;
        let mut grid = vec![Complex64::new(0.0, 0.0); n * n];
        let half = (npix / 2) as i64;
        for j in 0..npix.min(model.ny) {
            let y = Self::wrap(j as i64 - half, n);
            for i in 0..npix.min(model.nx) {
                let m = model.data[j * model.nx + i];
                if m != 0.0 {
                    let x = Self::wrap(i as i64 - half, n);
                    grid[y * n + x] =
                        Complex64::new(shift_sign(x + y) * m / (self.correction[i] * self.correction[j]), 0.0);
                }
            }
        }
        self.fft2(&mut grid, false);
        let w = self.kernel.support;
        let centre = (n / 2) as i64;
        let (mut ku, mut kv) = (vec![0.0; w], vec![0.0; w]);
        let mut out = Vec::with_capacity(u.len());
        for (&uu, &vv) in u.iter().zip(v) {
            let Some((gu, gv)) = self.grid_pos(uu, vv) else {
                out.push(Complex32::new(0.0, 0.0));
                continue;
            };
            let u0 = (self.table.weights(gu, &mut ku) + centre) as usize;
            let v0 = (self.table.weights(gv, &mut kv) + centre) as usize;
            let mut acc = Complex64::new(0.0, 0.0);
            for (b, wv) in kv.iter().enumerate() {
                let row = &grid[(v0 + b) * n + u0..][..w];
                let mut r = Complex64::new(0.0, 0.0);
                for (cell, wu) in row.iter().zip(&ku) {
                    r += cell * *wu;
                }
                acc += r * *wv;
            }
            out.push(Complex32::new(acc.re as f32, acc.im as f32));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sky::{PointSource, SkyModel};
    use rand::{Rng, SeedableRng};

    fn setup() -> (EsGridder, Vec<f64>, Vec<f64>) {
        let geom = Geometry { npix: 64, cell_rad: (1.0f64 / 3600.0).to_radians() };
        let g = EsGridder::new(geom, 8);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let umax = 0.4 / geom.cell_rad;
        let (u, v): (Vec<f64>, Vec<f64>) =
            (0..2000).map(|_| (rng.gen_range(-umax..umax), rng.gen_range(-umax..umax))).unzip();
        (g, u, v)
    }

    #[test]
    fn degrid_matches_direct_transform_off_centre() {
        let (g, u, v) = setup();
        let cell = g.geometry().cell_rad;
        for (i, j) in [(32usize, 32usize), (40, 25), (3, 60), (60, 2)] {
            let mut model = Image::new(64, 64);
            model.data[j * 64 + i] = 1.5;
            let (l, m) = (-(i as f64 - 32.0) * cell, (j as f64 - 32.0) * cell);
            let sky = SkyModel { sources: vec![PointSource { l, m, flux_jy: 1.5 }] };
            let got = g.degrid(&model, &u, &v);
            for k in 0..u.len() {
                // w = 0 and a small field: the DFT without the n − 1 term is exact.
                let want = sky.visibility([u[k] * crate::model::C_M_PER_S, v[k] * crate::model::C_M_PER_S, 0.0], 1.0);
                let d = (Complex64::new(got[k].re as f64, got[k].im as f64) - want).norm();
                assert!(d < 1e-4, "pixel ({i},{j}) sample {k}: {} vs {want}", got[k]);
            }
        }
    }

    #[test]
    fn gridded_point_lands_on_its_pixel() {
        let (g, u, v) = setup();
        for (i, j) in [(32usize, 32usize), (40, 25), (5, 58)] {
            let mut model = Image::new(64, 64);
            model.data[j * 64 + i] = 1.0;
            let vis = g.degrid(&model, &u, &v);
            let img = g.grid(&u, &v, &vis, &vec![1.0; u.len()]);
            let (pi, pj, p) = crate::image::stats::max_peak(&img);
            assert_eq!((pi, pj), (i, j));
            assert!((p - 1.0).abs() < 1e-4, "{p}");
        }
    }
}
