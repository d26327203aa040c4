//! Imaging weights: natural, uniform and Briggs (robust), with the density counted on the padded
//! uv grid (each sample and its Hermitian mirror), as WSClean and CASA do.

use serde::{Deserialize, Serialize};

use super::gridder::Geometry;

/// How visibilities are weighted when imaging.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Weighting {
    /// Data weights as they are: best sensitivity.
    Natural,
    /// Data weights divided by the local uv density: best resolution.
    Uniform,
    /// Briggs' robust weighting between the two (robust −2 ≈ uniform, +2 ≈ natural).
    Briggs {
        /// The robustness parameter.
        robust: f64,
    },
}

impl std::str::FromStr for Weighting {
    type Err = String;

    /// `natural`, `uniform` or `briggs:<robust>` (e.g. `briggs:0.5`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "natural" => Ok(Weighting::Natural),
            "uniform" => Ok(Weighting::Uniform),
            other => match other.strip_prefix("briggs") {
                Some(rest) => {
                    let r = rest.trim_start_matches([':', ' ', '=']);
                    let robust = if r.is_empty() { 0.0 } else { r.parse().map_err(|_| format!("bad robust {r:?}"))? };
                    Ok(Weighting::Briggs { robust })
                }
                None => Err(format!("unknown weighting {s:?} (natural, uniform, briggs:<robust>)")),
            },
        }
    }
}

/// Imaging weights for samples at `(u, v)` wavelengths with data weights `w`.
pub fn imaging_weights(u: &[f64], v: &[f64], w: &[f32], weighting: Weighting, geom: Geometry) -> Vec<f32> {
    let robust = match weighting {
        Weighting::Natural => return w.to_vec(),
        Weighting::Uniform => None,
        Weighting::Briggs { robust } => Some(robust),
    };
    let n = geom.padded();
    let du = geom.du();
    let cell = |uu: f64, vv: f64| -> Option<usize> {
        let (x, y) = ((uu / du).round() as i64 + (n / 2) as i64, (vv / du).round() as i64 + (n / 2) as i64);
        ((0..n as i64).contains(&x) && (0..n as i64).contains(&y)).then(|| y as usize * n + x as usize)
    };
    let mut density = vec![0.0f64; n * n];
    for k in 0..u.len() {
        if w[k] > 0.0 {
            for s in [1.0, -1.0] {
                if let Some(c) = cell(s * u[k], s * v[k]) {
                    density[c] += w[k] as f64;
                }
            }
        }
    }
    let d_of = |k: usize| cell(u[k], v[k]).map_or(0.0, |c| density[c]);
    match robust {
        None => {
            (0..u.len()).map(|k| if w[k] > 0.0 { (w[k] as f64 / d_of(k).max(1e-30)) as f32 } else { 0.0 }).collect()
        }
        Some(robust) => {
            let (mut sdw, mut sw) = (0.0, 0.0);
            for (k, &wk) in w.iter().enumerate().take(u.len()) {
                if wk > 0.0 {
                    sdw += d_of(k) * wk as f64;
                    sw += wk as f64;
                }
            }
            let f2 = (5.0 * 10f64.powf(-robust)).powi(2) / (sdw / sw.max(1e-30)).max(1e-30);
            (0..u.len()).map(|k| if w[k] > 0.0 { (w[k] as f64 / (1.0 + d_of(k) * f2)) as f32 } else { 0.0 }).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(weighting: Weighting, expect_equal_cells: bool) {
        let geom = Geometry { npix: 64, cell_rad: 1e-5 };
        let du = geom.du();
        // 10 samples in one cell, 1 sample in another.
        let mut u: Vec<f64> = vec![3.0 * du; 10];
        u.push(-9.0 * du);
        let v = vec![5.0 * du; 11];
        let w = vec![1.0f32; 11];
        let iw = imaging_weights(&u, &v, &w, weighting, geom);
        let dense: f32 = iw[..10].iter().sum();
        if expect_equal_cells {
            assert!((dense - iw[10]).abs() < 1e-6, "{weighting:?}: {dense} vs {}", iw[10]);
        } else {
            assert!(dense > iw[10], "{weighting:?}: {dense} vs {}", iw[10]);
        }
    }

    #[test]
    fn uniform_equalises_cells_natural_and_briggs_do_not() {
        check(Weighting::Uniform, true);
        check(Weighting::Natural, false);
        check(Weighting::Briggs { robust: 0.0 }, false);
        assert_eq!("briggs:-0.5".parse::<Weighting>(), Ok(Weighting::Briggs { robust: -0.5 }));
        assert!("fancy".parse::<Weighting>().is_err());
    }
}
