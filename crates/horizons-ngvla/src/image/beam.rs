//! The restoring beam: a 2-D elliptical Gaussian fitted to the PSF's main lobe, and restoration
//! of CLEAN components with it.
//!
//! The fit uses the connected region around the PSF peak above `cutoff` (0.35 by default, CASA's
//! `psfcutoff`): sidelobes stay out, so a messy PSF does not widen the beam. The model is
//! `exp(−(a·x² + b·x·y + c·y²))` with peak 1 at the centre (x east, y north, pixels), fitted by
//! Levenberg–Marquardt from the log-linear least-squares start.

use serde::{Deserialize, Serialize};

use super::Image;

/// An elliptical Gaussian beam.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Beam {
    /// Major axis FWHM, arcseconds.
    pub bmaj_arcsec: f64,
    /// Minor axis FWHM, arcseconds.
    pub bmin_arcsec: f64,
    /// Position angle of the major axis, degrees east of north, in (−90, 90].
    pub bpa_deg: f64,
}

/// Fits the beam to a PSF with peak at `(npix/2, npix/2)`; `cell_arcsec` is the pixel size.
pub fn fit_beam(psf: &Image, cell_arcsec: f64, cutoff: f64) -> Option<Beam> {
    let (cx, cy) = (psf.nx / 2, psf.ny / 2);
    let peak = psf.get(cx, cy);
    if peak <= 0.0 {
        return None;
    }
    // Flood fill the main lobe.
    let mut inside = vec![false; psf.nx * psf.ny];
    let mut stack = vec![(cx, cy)];
    let mut pts: Vec<(f64, f64, f64)> = Vec::new();
    while let Some((i, j)) = stack.pop() {
        let k = j * psf.nx + i;
        if inside[k] || psf.data[k] / peak <= cutoff {
            continue;
        }
        inside[k] = true;
        // x east = −(i − cx), y north = j − cy.
        pts.push((-(i as f64 - cx as f64), j as f64 - cy as f64, psf.data[k] / peak));
        if pts.len() > 100_000 {
            return None;
        }
        for (di, dj) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
            let (ni, nj) = (i as i64 + di, j as i64 + dj);
            if ni >= 0 && nj >= 0 && (ni as usize) < psf.nx && (nj as usize) < psf.ny {
                stack.push((ni as usize, nj as usize));
            }
        }
    }
    if pts.len() < 5 {
        return None;
    }
    let mut q = log_linear(&pts)?;
    levenberg_marquardt(&pts, &mut q);
    to_beam(q, cell_arcsec)
}

/// Least squares of `−ln p = a x² + b x y + c y²` (a start for the non-linear fit).
fn log_linear(pts: &[(f64, f64, f64)]) -> Option<[f64; 3]> {
    let mut ata = [[0.0; 3]; 3];
    let mut atb = [0.0; 3];
    for &(x, y, p) in pts.iter().filter(|p| p.2 > 0.0 && (p.0 != 0.0 || p.1 != 0.0)) {
        let row = [x * x, x * y, y * y];
        let t = -p.ln();
        for r in 0..3 {
            atb[r] += row[r] * t;
            for c in 0..3 {
                ata[r][c] += row[r] * row[c];
            }
        }
    }
    solve3(ata, atb)
}

fn solve3(m: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-300 {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut mk = m;
        for r in 0..3 {
            mk[r][k] = b[r];
        }
        *o = det(&mk) / d;
    }
    Some(out)
}

fn levenberg_marquardt(pts: &[(f64, f64, f64)], q: &mut [f64; 3]) {
    let cost = |q: &[f64; 3]| -> f64 {
        pts.iter().map(|&(x, y, p)| (p - (-(q[0] * x * x + q[1] * x * y + q[2] * y * y)).exp()).powi(2)).sum()
    };
    let mut lambda = 1e-3;
    let mut c0 = cost(q);
    for _ in 0..200 {
        let mut jtj = [[0.0; 3]; 3];
        let mut jtr = [0.0; 3];
        for &(x, y, p) in pts {
            let f = (-(q[0] * x * x + q[1] * x * y + q[2] * y * y)).exp();
            let jac = [-x * x * f, -x * y * f, -y * y * f];
            let r = p - f;
            for a in 0..3 {
                jtr[a] += jac[a] * r;
                for b in 0..3 {
                    jtj[a][b] += jac[a] * jac[b];
                }
            }
        }
        let mut damped = jtj;
        for (a, row) in damped.iter_mut().enumerate() {
            row[a] *= 1.0 + lambda;
        }
        let Some(step) = solve3(damped, jtr) else { break };
        let trial = [q[0] + step[0], q[1] + step[1], q[2] + step[2]];
        let c1 = cost(&trial);
        if c1 < c0 {
            let done = (c0 - c1) < 1e-14 * c0.max(1e-300);
            *q = trial;
            c0 = c1;
            lambda *= 0.3;
            if done {
                break;
            }
        } else {
            lambda *= 10.0;
            if lambda > 1e12 {
                break;
            }
        }
    }
}

/// Quadratic form (pixels) → FWHM axes (arcsec) and PA (degrees east of north).
fn to_beam(q: [f64; 3], cell_arcsec: f64) -> Option<Beam> {
    let (a, b, c) = (q[0], q[1] / 2.0, q[2]);
    let tr = a + c;
    let disc = (((a - c) / 2.0).powi(2) + b * b).sqrt();
    let (l_small, l_big) = (tr / 2.0 - disc, tr / 2.0 + disc);
    if l_small <= 0.0 {
        return None;
    }
    // exp(−λ r²) has FWHM 2·√(ln 2 / λ); the major axis goes with the smaller eigenvalue.
    let fwhm = |l: f64| 2.0 * (std::f64::consts::LN_2 / l).sqrt() * cell_arcsec;
    // Eigenvector of the smaller eigenvalue, (x east, y north).
    let (ex, ey) = if b.abs() > 1e-300 {
        (b, l_small - a)
    } else if a <= c {
        (1.0, 0.0)
    } else {
        (0.0, 1.0)
    };
    let mut pa = ex.atan2(ey).to_degrees();
    while pa <= -90.0 {
        pa += 180.0;
    }
    while pa > 90.0 {
        pa -= 180.0;
    }
    Some(Beam { bmaj_arcsec: fwhm(l_small), bmin_arcsec: fwhm(l_big), bpa_deg: pa })
}

/// Adds each component (pixel `(i, j)`, flux Jy) as the beam Gaussian of peak `flux` to `image`.
pub fn restore(image: &mut Image, components: &[(usize, usize, f64)], beam: &Beam, cell_arcsec: f64) {
    let s = std::f64::consts::LN_2 * 4.0;
    let (maj, min) = (beam.bmaj_arcsec / cell_arcsec, beam.bmin_arcsec / cell_arcsec);
    let (sp, cp) = beam.bpa_deg.to_radians().sin_cos();
    let reach = (2.5 * maj).ceil() as i64 + 1;
    for &(ci, cj, flux) in components {
        for dj in -reach..=reach {
            for di in -reach..=reach {
                let (i, j) = (ci as i64 + di, cj as i64 + dj);
                if i < 0 || j < 0 || i as usize >= image.nx || j as usize >= image.ny {
                    continue;
                }
                let (x, y) = (-(di as f64), dj as f64);
                // Coordinates along the major (PA from north through east) and minor axes.
                let along = x * sp + y * cp;
                let across = x * cp - y * sp;
                let g = (-s * ((along / maj).powi(2) + (across / min).powi(2))).exp();
                image.data[j as usize * image.nx + i as usize] += flux * g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bmaj: f64, bmin: f64, bpa: f64) {
        let beam = Beam { bmaj_arcsec: bmaj, bmin_arcsec: bmin, bpa_deg: bpa };
        let mut psf = Image::new(64, 64);
        restore(&mut psf, &[(32, 32, 1.0)], &beam, 0.25);
        let fit = fit_beam(&psf, 0.25, 0.35).unwrap();
        assert!((fit.bmaj_arcsec - bmaj).abs() < 1e-3 * bmaj, "{fit:?}");
        assert!((fit.bmin_arcsec - bmin).abs() < 1e-3 * bmin, "{fit:?}");
        let dpa = (fit.bpa_deg - bpa + 90.0).rem_euclid(180.0) - 90.0;
        assert!(dpa.abs() < 0.1, "{fit:?}");
    }

    #[test]
    fn gaussians_fit_back() {
        check(2.94, 1.91, 9.25);
        check(3.0, 1.5, -40.0);
        check(2.0, 1.0, 89.0);
    }
}
