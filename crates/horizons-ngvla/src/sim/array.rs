//! An ngVLA-like array layout and its uvw geometry.
//!
//! The layout is a dense core (40 % of the antennas, Gaussian with σ = `core_radius_m`) plus
//! three spiral arms with logarithmically spaced stations out to `max_radius_m` — the ngVLA's
//! "core + spiral" shape (its reference design: 214 antennas in the main array), not its real
//! coordinates. Positions are local east/north/up; uvw follow from the hour angle and declination
//! for a site at latitude `lat_deg`.

use rand::Rng;

/// Local east/north/up positions of `n` antennas, metres.
pub fn ngvla_like_layout(n: usize, core_radius_m: f64, max_radius_m: f64, rng: &mut impl Rng) -> Vec<[f64; 3]> {
    let n_core = (n as f64 * 0.4).round() as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n_core {
        let (a, b) = super::gauss_pair(rng);
        out.push([a * core_radius_m, b * core_radius_m, 0.0]);
    }
    let n_arm = n - n_core;
    let r0 = (2.0 * core_radius_m).max(1.0);
    let r1 = max_radius_m.max(r0 * 1.01);
    for k in 0..n_arm {
        let arm = k % 3;
        let step = k / 3;
        let steps = n_arm.div_ceil(3).max(1);
        let frac = (step as f64 + 0.5) / steps as f64;
        let r = r0 * (r1 / r0).powf(frac);
        // A logarithmic spiral: the angle grows with ln r; small jitter keeps baselines distinct.
        let theta = arm as f64 * 2.0 * std::f64::consts::PI / 3.0 + 0.9 * (r / r0).ln() + rng.gen_range(-0.05..0.05);
        out.push([r * theta.cos(), r * theta.sin(), 0.0]);
    }
    out
}

/// uvw (metres) of the baseline `b = x_ant2 − x_ant1` (local ENU) at hour angle `h` and
/// declination `dec` (radians) for a site at latitude `lat` (radians).
pub fn uvw(b_enu: [f64; 3], h: f64, dec: f64, lat: f64) -> [f64; 3] {
    let [e, n, up] = b_enu;
    // Local ENU → equatorial (X towards H = 0 on the equator, Y east, Z north pole).
    let x = -lat.sin() * n + lat.cos() * up;
    let y = e;
    let z = lat.cos() * n + lat.sin() * up;
    let (sh, ch) = h.sin_cos();
    let (sd, cd) = dec.sin_cos();
    [sh * x + ch * y, -sd * ch * x + sd * sh * y + cd * z, cd * ch * x - cd * sh * y + sd * z]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn layout_has_core_and_arms() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let ants = ngvla_like_layout(214, 500.0, 30_000.0, &mut rng);
        assert_eq!(ants.len(), 214);
        let r: Vec<f64> = ants.iter().map(|a| a[0].hypot(a[1])).collect();
        assert!(r.iter().filter(|&&x| x < 2_000.0).count() >= 80);
        assert!(r.iter().any(|&x| x > 20_000.0));
    }

    #[test]
    fn east_west_baseline_at_transit_is_pure_u() {
        let w = uvw([100.0, 0.0, 0.0], 0.0, 0.5, 0.6);
        assert!((w[0] - 100.0).abs() < 1e-9 && w[1].abs() < 1e-9 && w[2].abs() < 1e-9);
    }
}
