//! Sky models and sky coordinates: point sources in direction cosines `(l, m)` relative to the
//! phase centre, their visibilities, and the SIN projection between `(ra, dec)` and `(l, m)`.
//!
//! Sign convention (AIPS/CASA, and the EVLA file): `V(u, v, w) = Σ S · exp(−2πi(u·l + v·m +
//! w·(n − 1)))` with u, v, w in wavelengths, l towards east (increasing RA), m towards north.

use num_complex::Complex64;
use serde::{Deserialize, Serialize};

/// A point source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointSource {
    /// Direction cosine towards east, radians.
    pub l: f64,
    /// Direction cosine towards north, radians.
    pub m: f64,
    /// Flux density (Stokes I), Jy.
    pub flux_jy: f64,
}

/// A list of point sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkyModel {
    /// The sources.
    pub sources: Vec<PointSource>,
}

impl SkyModel {
    /// One source of `flux_jy` at the phase centre — the default calibration model.
    pub fn point_at_centre(flux_jy: f64) -> SkyModel {
        SkyModel { sources: vec![PointSource { l: 0.0, m: 0.0, flux_jy }] }
    }

    /// Whether the model is a single source at the phase centre (its visibilities are constant).
    pub fn is_centred_point(&self) -> bool {
        self.sources.len() == 1 && self.sources[0].l == 0.0 && self.sources[0].m == 0.0
    }

    /// The model visibility for a baseline `uvw_m` (metres) at `freq_hz`.
    pub fn visibility(&self, uvw_m: [f64; 3], freq_hz: f64) -> Complex64 {
        let k = freq_hz / crate::model::C_M_PER_S;
        let (u, v, w) = (uvw_m[0] * k, uvw_m[1] * k, uvw_m[2] * k);
        self.sources
            .iter()
            .map(|s| {
                let n = (1.0 - s.l * s.l - s.m * s.m).max(0.0).sqrt();
                let phase = -2.0 * std::f64::consts::PI * (u * s.l + v * s.m + w * (n - 1.0));
                Complex64::from_polar(s.flux_jy, phase)
            })
            .sum()
    }
}

/// `(ra, dec)` in degrees → `(l, m)` about the centre `(ra0, dec0)` (SIN projection).
pub fn radec_to_lm(ra: f64, dec: f64, ra0: f64, dec0: f64) -> (f64, f64) {
    let (ra, dec, ra0, dec0) = (ra.to_radians(), dec.to_radians(), ra0.to_radians(), dec0.to_radians());
    let da = ra - ra0;
    (dec.cos() * da.sin(), dec.sin() * dec0.cos() - dec.cos() * dec0.sin() * da.cos())
}

/// `(l, m)` → `(ra, dec)` in degrees about the centre `(ra0, dec0)` (SIN projection).
pub fn lm_to_radec(l: f64, m: f64, ra0: f64, dec0: f64) -> (f64, f64) {
    let (ra0, dec0) = (ra0.to_radians(), dec0.to_radians());
    let n = (1.0 - l * l - m * m).max(0.0).sqrt();
    let dec = (m * dec0.cos() + n * dec0.sin()).asin();
    let ra = ra0 + l.atan2(n * dec0.cos() - m * dec0.sin());
    (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
}

/// Angular distance between two directions, arcseconds.
pub fn separation_arcsec(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let (a1, d1, a2, d2) = (ra1.to_radians(), dec1.to_radians(), ra2.to_radians(), dec2.to_radians());
    let h = ((d2 - d1) / 2.0).sin().powi(2) + d1.cos() * d2.cos() * ((a2 - a1) / 2.0).sin().powi(2);
    (2.0 * h.sqrt().min(1.0).asin()).to_degrees() * 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_round_trips() {
        for (ra, dec) in [(152.001, 7.51), (151.99, 7.49), (152.0000666676, 7.504597780065)] {
            let (l, m) = radec_to_lm(ra, dec, 152.0000666676, 7.504597780065);
            let (r2, d2) = lm_to_radec(l, m, 152.0000666676, 7.504597780065);
            assert!(separation_arcsec(ra, dec, r2, d2) < 1e-6);
        }
        let (l, _) = radec_to_lm(152.01, 7.5, 152.0, 7.5);
        assert!(l > 0.0, "east is +l");
    }

    #[test]
    fn centred_point_is_flat() {
        let s = SkyModel::point_at_centre(2.0);
        assert!((s.visibility([100.0, -50.0, 3.0], 36e9) - Complex64::new(2.0, 0.0)).norm() < 1e-12);
    }
}
