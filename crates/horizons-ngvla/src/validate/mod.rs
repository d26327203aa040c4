//! The validation stage: shape, NaN/Inf, time grid, dead or deviant antennas.
//!
//! - A block whose arrays disagree with its shape, or whose time or uvw are not finite, is
//!   **rejected** with a reason (on the bus: to the DLQ). It never panics a stage.
//! - Non-finite visibilities or weights are zeroed and flagged, and counted.
//! - [`timegrid::regularise`] puts the blocks on a regular time grid (see there).
//! - Per block, each antenna's median over its baselines of the baseline's mean |V| (per
//!   parallel-hand polarisation, unflagged channels) is compared with the array median of those
//!   medians: a ratio below `dead_ratio` (default 0.1)
//!   marks the antenna dead, above `deviant_ratio` (10) wildly deviant; all its baselines are
//!   flagged. Flagging the whole antenna is deliberate: a receiver that is dead in one hand is not
//!   trusted in the others (in the EVLA file antenna 7 is ~1e-6 in RR and ~3e-4 in LL vs ~5e-3).

mod health;
pub mod timegrid;

use std::collections::BTreeMap;

use num_complex::Complex32;
use serde::Serialize;

use crate::error::Result;
use crate::hint::{prefetch, AHEAD};
use crate::model::VisBlock;
pub use health::{antenna_health, judged_products, AntennaVerdict, Verdict};
pub use timegrid::{regularise, regularise_owned, TimeGridReport};

/// Validation settings.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationConfig {
    /// Integration time; `None` estimates it from the stamps.
    pub interval_s: Option<f64>,
    /// Largest snap onto the grid, as a fraction of the interval.
    pub snap_tolerance: f64,
    /// Antenna/array median amplitude ratio below which an antenna is dead.
    pub dead_ratio: f64,
    /// Ratio above which an antenna is wildly deviant.
    pub deviant_ratio: f64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { interval_s: None, snap_tolerance: 0.5, dead_ratio: 0.1, deviant_ratio: 10.0 }
    }
}

/// A block refused by validation, with the reason (what a DLQ entry carries).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Spectral window of the block.
    pub spw: u32,
    /// Its integration index.
    pub integration: u64,
    /// Why.
    pub reason: String,
}

/// What validation did, for the report and the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationReport {
    /// Blocks in.
    pub blocks_in: usize,
    /// Blocks out (regularised).
    pub blocks_out: usize,
    /// Rejected blocks.
    pub rejected: Vec<Rejection>,
    /// Samples zeroed and flagged for NaN/Inf (on the grid: rows regularisation drops are not
    /// counted).
    pub non_finite_samples: usize,
    /// The time grid.
    pub time_grid: TimeGridReport,
    /// Antennas flagged, by label, with the worst verdict seen.
    pub flagged_antennas: BTreeMap<String, AntennaVerdict>,
    /// Samples flagged by the antenna check.
    pub antenna_flagged_samples: usize,
}

/// Checks one block's structure; `Err` is the rejection reason.
pub fn check_block(b: &VisBlock) -> std::result::Result<(), String> {
    b.check_shape().map_err(|e| e.to_string())?;
    if !b.time_mjd_s.is_finite() {
        return Err("time is not finite".into());
    }
    if b.uvw_m.iter().flatten().any(|x| !x.is_finite()) {
        return Err("uvw is not finite".into());
    }
    if !(b.first_freq_hz.is_finite() && b.chan_width_hz.is_finite() && b.first_freq_hz > 0.0) {
        return Err("frequency axis is not finite and positive".into());
    }
    Ok(())
}

/// Zeroes and flags a block's non-finite samples (visibility or weight), returning how many,
/// and each baseline's mean |V| over its unflagged samples for each of `products`,
/// `[baseline][product]` (`None` where all are flagged; [`antenna_health`] judges those of
/// [`judged_products`]): one pass over the data, a baseline at a time.
pub fn scrub_and_measure(b: &mut VisBlock, products: &[usize]) -> (usize, Vec<Option<f64>>) {
    let (npol, per, k) = (b.pols.len(), b.per_baseline(), products.len());
    let mut means = Vec::with_capacity(b.baselines.len() * k);
    if per == 0 {
        means.resize(b.baselines.len() * k, None);
        return (0, means);
    }
    let mut amps = vec![0.0; per];
    let mut measure = |vis: &[Complex32], flags: &[bool], means: &mut Vec<Option<f64>>| match npol {
        4 => row_means::<4>(vis, flags, &mut amps, products, means),
        2 => row_means::<2>(vis, flags, &mut amps, products, means),
        1 => row_means::<1>(vis, flags, &mut amps, products, means),
        _ => row_means_any(vis, flags, npol, products, means),
    };
    // Reading only: almost every baseline has nothing to scrub. A finite |V|² says the
    // visibility is finite, so the amplitudes are the check (an overflowing |V|² only costs a
    // rescan).
    let mut dirty = Vec::new();
    let rows = b.vis.chunks_exact(per).zip(b.weights.chunks_exact(per)).zip(b.flags.chunks_exact(per));
    for (i, ((vis, weights), flags)) in rows.enumerate() {
        let next = (i + AHEAD) * per..(i + AHEAD + 1) * per;
        if let (Some(v), Some(w), Some(f)) = (b.vis.get(next.clone()), b.weights.get(next.clone()), b.flags.get(next)) {
            prefetch(v);
            prefetch(w);
            prefetch(f);
        }
        if !(measure(vis, flags, &mut means) & weights.iter().fold(true, |ok, w| ok & w.is_finite())) {
            dirty.push(i);
        }
    }
    let mut scrubbed = 0;
    let mut again = Vec::with_capacity(k);
    for i in dirty {
        let at = i * per..(i + 1) * per;
        scrubbed += scrub(&mut b.vis[at.clone()], &mut b.weights[at.clone()], &mut b.flags[at.clone()]);
        again.clear();
        measure(&b.vis[at.clone()], &b.flags[at], &mut again);
        means[i * k..(i + 1) * k].copy_from_slice(&again);
    }
    (scrubbed, means)
}

/// Zeroes and flags the non-finite samples of one baseline; returns how many.
fn scrub(vis: &mut [Complex32], weights: &mut [f32], flags: &mut [bool]) -> usize {
    let mut n = 0;
    for ((v, w), f) in vis.iter_mut().zip(weights.iter_mut()).zip(flags.iter_mut()) {
        if !(v.re.is_finite() && v.im.is_finite() && w.is_finite()) {
            (*v, *w, *f) = (Complex32::new(0.0, 0.0), 0.0, true);
            n += 1;
        }
    }
    n
}

/// Pushes one baseline's mean |V| over its unflagged samples for each of `products`, blocks of
/// `N` products: amplitudes in `f32`, added in channel order in `f64`. Returns whether every
/// `|V|²` was finite.
#[inline(always)]
fn row_means<const N: usize>(
    vis: &[Complex32],
    flags: &[bool],
    amps: &mut [f32],
    products: &[usize],
    means: &mut Vec<Option<f64>>,
) -> bool {
    // Amplitudes of the whole row first, 0 where flagged, without branches: they vectorise.
    let mut finite = true;
    for ((a, v), &f) in amps.iter_mut().zip(vis).zip(flags) {
        let x = v.re * v.re + v.im * v.im;
        finite &= x <= f32::MAX;
        *a = if f { 0.0 } else { x.sqrt() };
    }
    let (mut s, mut n) = ([0.0f64; N], [0u32; N]);
    for (a, f) in amps.chunks_exact(N).zip(flags.chunks_exact(N)) {
        for p in 0..N {
            s[p] += f64::from(a[p]);
            n[p] += u32::from(!f[p]);
        }
    }
    means.extend(products.iter().map(|&p| (n[p] > 0).then(|| s[p] / f64::from(n[p]))));
    finite
}

/// [`row_means`] for any number of products.
fn row_means_any(
    vis: &[Complex32],
    flags: &[bool],
    npol: usize,
    products: &[usize],
    means: &mut Vec<Option<f64>>,
) -> bool {
    // Every product's |V|² is checked; the means are of `products`.
    let finite = vis.iter().fold(true, |ok, v| ok & (v.re * v.re + v.im * v.im <= f32::MAX));
    for &p in products {
        let (mut s, mut n) = (0.0f64, 0u32);
        for (v, &f) in vis[p..].iter().step_by(npol).zip(flags[p..].iter().step_by(npol)) {
            s += if f { 0.0 } else { f64::from((v.re * v.re + v.im * v.im).sqrt()) };
            n += u32::from(!f);
        }
        means.push((n > 0).then(|| s / f64::from(n)));
    }
    finite
}

/// Runs the whole validation stage over raw blocks.
pub fn validate(raw: Vec<VisBlock>, cfg: &ValidationConfig) -> Result<(Vec<VisBlock>, ValidationReport)> {
    let mut report = ValidationReport { blocks_in: raw.len(), ..Default::default() };
    let mut good = Vec::with_capacity(raw.len());
    for b in raw {
        match check_block(&b) {
            Ok(()) => good.push(b),
            Err(reason) => report.rejected.push(Rejection { spw: b.spw, integration: b.integration, reason }),
        }
    }
    // Regularising moves or copies samples and does no arithmetic on them, so the scrub can
    // come after it, in the same pass as the amplitudes the antenna check needs.
    let (mut blocks, grid) = regularise_owned(good, cfg.interval_s, cfg.snap_tolerance)?;
    report.time_grid = grid;
    for b in &mut blocks {
        let (scrubbed, means) = scrub_and_measure(b, &judged_products(b));
        report.non_finite_samples += scrubbed;
        let verdicts = antenna_health(b, &means, cfg.dead_ratio, cfg.deviant_ratio);
        for v in verdicts.into_iter().filter(|v| v.verdict != Verdict::Healthy) {
            for (bi, bl) in b.baselines.clone().iter().enumerate() {
                if bl.has(v.antenna) {
                    let s = b.per_baseline();
                    for f in &mut b.flags[bi * s..(bi + 1) * s] {
                        if !*f {
                            report.antenna_flagged_samples += 1;
                            *f = true;
                        }
                    }
                }
            }
            report.flagged_antennas.entry(v.antenna.to_string()).or_insert(v);
        }
    }
    report.blocks_out = blocks.len();
    Ok((blocks, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};

    fn block() -> VisBlock {
        Simulator::new(SimConfig { n_ant: 10, n_chan: 8, n_int: 1, ..Default::default() }).block(0).0
    }

    #[test]
    fn scrub_and_measure_zeroes_what_is_not_finite_and_gives_each_baselines_mean_amplitude() {
        let mut b = block();
        let (npol, per) = (b.pols.len(), b.per_baseline());
        b.vis[3] = Complex32::new(f32::NAN, 1.0);
        b.vis[per + 5].im = f32::NEG_INFINITY;
        b.weights[2 * per + 1] = f32::INFINITY;
        b.flags[4 * per..5 * per].fill(true);
        b.flags[6 * per + 2] = true;
        // Finite, but |V|² overflows f32: the baseline is rescanned, nothing scrubbed.
        b.vis[7 * per] = Complex32::new(3e19, 0.0);
        let all: Vec<usize> = (0..npol).collect();
        let (n, means) = scrub_and_measure(&mut b, &all);
        assert_eq!(n, 3);
        assert!(b.flags[3] && b.flags[per + 5] && b.flags[2 * per + 1]);
        assert_eq!((b.vis[3], b.weights[2 * per + 1]), (Complex32::new(0.0, 0.0), 0.0));
        assert!(b.vis.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
        assert_eq!(means.len(), b.baselines.len() * npol);
        for (bi, row) in means.chunks_exact(npol).enumerate() {
            for (p, &m) in row.iter().enumerate() {
                let (mut s, mut k) = (0.0f64, 0u32);
                for c in 0..b.n_chan {
                    let at = bi * per + c * npol + p;
                    if !b.flags[at] {
                        let v = b.vis[at];
                        s += f64::from((v.re * v.re + v.im * v.im).sqrt());
                        k += 1;
                    }
                }
                assert_eq!(m, (k > 0).then(|| s / f64::from(k)), "baseline {bi}, product {p}");
            }
        }
        assert_eq!(means[4 * npol], None);
        assert!(!b.flags[7 * per]);
        assert_eq!(means[7 * npol], Some(f64::INFINITY));
    }

    #[test]
    fn antenna_numbers_beyond_the_table_give_the_same_verdicts() {
        let mut b = block();
        let s = b.per_baseline();
        let dead: Vec<usize> = (0..b.baselines.len()).filter(|&i| b.baselines[i].has(3)).collect();
        for &i in &dead {
            b.vis[i * s..(i + 1) * s].iter_mut().for_each(|v| *v *= 1e-3);
        }
        let (_, means) = scrub_and_measure(&mut b.clone(), &judged_products(&b));
        let small = antenna_health(&b, &means, 0.1, 10.0);
        assert_eq!(small.iter().filter(|v| v.verdict == Verdict::Dead).map(|v| v.antenna).collect::<Vec<_>>(), [3]);
        let far = 1 << 20;
        for bl in &mut b.baselines {
            (bl.ant1, bl.ant2) = (bl.ant1 + far, bl.ant2 + far);
        }
        let large = antenna_health(&b, &means, 0.1, 10.0);
        assert_eq!(large.len(), small.len());
        for (l, s) in large.iter().zip(&small) {
            assert_eq!((l.antenna, l.ratio, l.verdict), (s.antenna + far, s.ratio, s.verdict));
        }
    }
}
