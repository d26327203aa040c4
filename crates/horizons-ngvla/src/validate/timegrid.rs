//! Time-grid regularisation: raw blocks with ragged timestamps become one block per integration
//! on a regular grid, every baseline present (missing ones zero-filled and flagged).
//!
//! Real correlator output is not on a clean grid: in the EVLA test file the first 10 s
//! integration is spread over four stamps 0.5 s apart, and some stamps sit 0.06 s early or 0.04 s
//! late. We estimate the integration time as the median spacing of each baseline's consecutive
//! stamps, put the grid origin at the median phase of all stamps (robust to a few odd ones), and
//! snap every row to its nearest grid point when it lies within `tolerance × interval`; rows
//! farther away are dropped and counted. A baseline seen twice in one integration keeps the
//! stamp closest to the grid point.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use num_complex::Complex32;
use serde::Serialize;

use crate::error::{NgvlaError, Result};
use crate::model::{Baseline, VisBlock};

/// What regularisation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TimeGridReport {
    /// Integration time used, seconds.
    pub interval_s: f64,
    /// Grid origin, seconds since MJD 0.
    pub origin_mjd_s: f64,
    /// Distinct raw timestamps seen.
    pub raw_stamps: usize,
    /// Integrations on the grid.
    pub integrations: usize,
    /// Rows (baseline × stamp) moved by more than 1 ms to reach the grid.
    pub snapped_rows: usize,
    /// Largest move, seconds.
    pub max_snap_s: f64,
    /// Rows dropped because their baseline already had a closer row in the same integration.
    pub duplicate_rows: usize,
    /// Rows dropped because they lie too far from any grid point.
    pub off_grid_rows: usize,
    /// Baseline slots with no data, filled with zeros and flagged.
    pub missing_rows: usize,
}

/// Estimates the integration time: median spacing of each baseline's consecutive stamps.
pub fn estimate_interval(blocks: &[VisBlock]) -> Option<f64> {
    // Every block with the same baselines (a correlator's or the simulator's output): each
    // baseline's stamps are the blocks' stamps, so the median over baselines is theirs.
    if let Some(first) = blocks.first().filter(|f| blocks.iter().all(|b| b.baselines == f.baselines)) {
        if first.baselines.is_empty() {
            return None;
        }
        let mut ts: Vec<f64> = blocks.iter().map(|b| b.time_mjd_s).collect();
        ts.sort_by(f64::total_cmp);
        ts.dedup();
        let mut diffs: Vec<f64> = ts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 1e-3).collect();
        return median(&mut diffs);
    }
    let mut stamps: HashMap<Baseline, Vec<f64>> = HashMap::new();
    for b in blocks {
        for bl in &b.baselines {
            stamps.entry(*bl).or_default().push(b.time_mjd_s);
        }
    }
    let mut diffs = Vec::new();
    for ts in stamps.values_mut() {
        ts.sort_by(f64::total_cmp);
        ts.dedup();
        diffs.extend(ts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 1e-3));
    }
    median(&mut diffs)
}

/// The median (the mean of the two middle values for an even count), in O(n) by selection; `v`
/// is left reordered.
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let (lower, &mut mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(mid);
    }
    // The lower middle is the largest of the values below the middle one.
    let below = lower.iter().copied().max_by(f64::total_cmp).expect("n is even and at least 2");
    Some(0.5 * (below + mid))
}

/// One integration of one spectral window: baseline → (block, row, |snap|) of the row kept.
type Slot = HashMap<Baseline, (usize, usize, f64)>;

/// [`regularise`] taking the blocks by value: blocks already regular (one per spectral window
/// and grid point, within the tolerance, each spectral window's blocks with one strictly sorted
/// baseline list and header) are moved onto the grid instead of copied, with the same blocks and
/// report as [`regularise`] gives; anything else goes through [`regularise`].
pub fn regularise_owned(
    mut blocks: Vec<VisBlock>,
    interval_s: Option<f64>,
    tolerance: f64,
) -> Result<(Vec<VisBlock>, TimeGridReport)> {
    let Some((interval, origin)) = grid_of(&blocks, interval_s) else {
        return regularise(&blocks, interval_s, tolerance);
    };
    let fallback = |blocks: &[VisBlock]| regularise_onto(blocks, interval, origin, tolerance);
    // Grid point of each block, by spectral window.
    let mut by_spw: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    let mut report = TimeGridReport { interval_s: interval, origin_mjd_s: origin, ..Default::default() };
    let mut max_k = 0u64;
    for (i, b) in blocks.iter().enumerate() {
        b.check_shape()?;
        let (k, snap) = grid_point(b.time_mjd_s, interval, origin);
        if k < 0.0 || snap > tolerance * interval {
            return fallback(&blocks);
        }
        if snap > 1e-3 && !b.baselines.is_empty() {
            report.snapped_rows += b.baselines.len();
            report.max_snap_s = report.max_snap_s.max(snap);
        }
        max_k = max_k.max(k as u64);
        by_spw.entry(b.spw).or_default().push((k as u64, i));
    }
    let regular = by_spw.values_mut().all(|ks| {
        ks.sort_unstable();
        let t = &blocks[ks[0].1];
        ks.len() as u64 == max_k + 1
            && ks.iter().enumerate().all(|(j, &(k, _))| k == j as u64)
            && t.baselines.windows(2).all(|w| w[0] < w[1])
            && ks.iter().all(|&(_, i)| {
                let b = &blocks[i];
                b.baselines == t.baselines
                    && b.observation_id == t.observation_id
                    && b.n_chan == t.n_chan
                    && b.pols == t.pols
                    && b.first_freq_hz.to_bits() == t.first_freq_hz.to_bits()
                    && b.chan_width_hz.to_bits() == t.chan_width_hz.to_bits()
            })
    });
    if !regular {
        return fallback(&blocks);
    }
    report.raw_stamps = blocks.iter().map(|b| b.time_mjd_s.to_bits()).collect::<BTreeSet<_>>().len();
    report.integrations = max_k as usize + 1;
    let mut slots: Vec<Option<VisBlock>> = blocks.drain(..).map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for ks in by_spw.values() {
        for &(k, i) in ks {
            let mut b = slots[i].take().expect("each block is on one grid point");
            b.integration = k;
            b.time_mjd_s = origin + k as f64 * interval;
            b.interval_s = interval;
            out.push(b);
        }
    }
    Ok((out, report))
}

/// The grid's interval and origin for these blocks (see [`regularise`]); `None` without blocks.
fn grid_of(blocks: &[VisBlock], interval_s: Option<f64>) -> Option<(f64, f64)> {
    blocks.first()?;
    let interval = match interval_s.or_else(|| estimate_interval(blocks)) {
        Some(t) if t > 0.0 && t.is_finite() => t,
        _ => blocks.iter().map(|b| b.interval_s).find(|t| *t > 0.0).unwrap_or(1.0),
    };
    let t_first = blocks.iter().map(|b| b.time_mjd_s).fold(f64::INFINITY, f64::min);
    let phase = |b: &VisBlock| {
        let d = b.time_mjd_s - t_first;
        d - (d / interval).round() * interval
    };
    // Grid phase: median of each row's offset from the nearest multiple of the interval (with
    // as many rows in every block, the median of the blocks' offsets).
    let mut phases: Vec<f64> =
        if !blocks[0].baselines.is_empty() && blocks.iter().all(|b| b.baselines.len() == blocks[0].baselines.len()) {
            blocks.iter().map(phase).collect()
        } else {
            blocks.iter().flat_map(|b| std::iter::repeat_n(phase(b), b.baselines.len())).collect()
        };
    Some((interval, t_first + median(&mut phases).unwrap_or(0.0)))
}

/// Regularises blocks of one or more spectral windows onto one time grid.
///
/// `interval_s` overrides the estimate; `tolerance` is the largest snap as a fraction of the
/// interval (0.5 snaps everything to its nearest grid point).
pub fn regularise(
    blocks: &[VisBlock],
    interval_s: Option<f64>,
    tolerance: f64,
) -> Result<(Vec<VisBlock>, TimeGridReport)> {
    let (interval, origin) =
        grid_of(blocks, interval_s).ok_or_else(|| NgvlaError::NoData("no blocks to regularise".into()))?;
    regularise_onto(blocks, interval, origin, tolerance)
}

/// The grid point nearest `t` (as a float, negative before the origin) and the distance to it.
fn grid_point(t: f64, interval: f64, origin: f64) -> (f64, f64) {
    let k = ((t - origin) / interval).round();
    (k, (t - (origin + k * interval)).abs())
}

/// [`regularise`] onto the grid of `interval` and `origin`.
fn regularise_onto(
    blocks: &[VisBlock],
    interval: f64,
    origin: f64,
    tolerance: f64,
) -> Result<(Vec<VisBlock>, TimeGridReport)> {
    let first = blocks.first().ok_or_else(|| NgvlaError::NoData("no blocks to regularise".into()))?;

    let mut report = TimeGridReport {
        interval_s: interval,
        origin_mjd_s: origin,
        raw_stamps: blocks.iter().map(|b| b.time_mjd_s.to_bits()).collect::<BTreeSet<_>>().len(),
        ..Default::default()
    };
    let mut slots: BTreeMap<(u32, u64), Slot> = BTreeMap::new();
    let mut baselines: BTreeMap<u32, BTreeSet<Baseline>> = BTreeMap::new();
    let mut max_k = 0u64;
    for (bi, b) in blocks.iter().enumerate() {
        b.check_shape()?;
        let (k, snap) = grid_point(b.time_mjd_s, interval, origin);
        if k < 0.0 || snap > tolerance * interval {
            report.off_grid_rows += b.baselines.len();
            continue;
        }
        let k = k as u64;
        max_k = max_k.max(k);
        let slot = slots.entry((b.spw, k)).or_default();
        for (r, bl) in b.baselines.iter().enumerate() {
            baselines.entry(b.spw).or_default().insert(*bl);
            if snap > 1e-3 {
                report.snapped_rows += 1;
                report.max_snap_s = report.max_snap_s.max(snap);
            }
            match slot.get(bl) {
                Some(&(_, _, s)) if s <= snap => report.duplicate_rows += 1,
                Some(_) => {
                    report.duplicate_rows += 1;
                    slot.insert(*bl, (bi, r, snap));
                }
                None => {
                    slot.insert(*bl, (bi, r, snap));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (spw, bls) in &baselines {
        let template = blocks.iter().find(|b| b.spw == *spw).unwrap_or(first);
        let s = template.per_baseline();
        for k in 0..=max_k {
            let empty = HashMap::new();
            let slot = slots.get(&(*spw, k)).unwrap_or(&empty);
            let mut b = template.clone_header();
            b.integration = k;
            b.time_mjd_s = origin + k as f64 * interval;
            b.interval_s = interval;
            // Sized once: growing them row by row would copy each block's samples again.
            b.baselines.reserve_exact(bls.len());
            b.uvw_m.reserve_exact(bls.len());
            b.vis.reserve_exact(bls.len() * s);
            b.weights.reserve_exact(bls.len() * s);
            b.flags.reserve_exact(bls.len() * s);
            for bl in bls {
                b.baselines.push(*bl);
                match slot.get(bl) {
                    Some(&(bi, r, _)) => {
                        let src = &blocks[bi];
                        if src.per_baseline() != s || src.pols != template.pols {
                            return Err(NgvlaError::Shape(format!(
                                "spectral window {spw} changes shape between blocks ({} vs {s} samples per baseline)",
                                src.per_baseline()
                            )));
                        }
                        b.uvw_m.push(src.uvw_m[r]);
                        b.vis.extend_from_slice(&src.vis[r * s..(r + 1) * s]);
                        b.weights.extend_from_slice(&src.weights[r * s..(r + 1) * s]);
                        b.flags.extend_from_slice(&src.flags[r * s..(r + 1) * s]);
                    }
                    None => {
                        report.missing_rows += 1;
                        b.uvw_m.push([0.0; 3]);
                        b.vis.extend(std::iter::repeat_n(Complex32::new(0.0, 0.0), s));
                        b.weights.extend(std::iter::repeat_n(0.0, s));
                        b.flags.extend(std::iter::repeat_n(true, s));
                    }
                }
            }
            out.push(b);
        }
    }
    report.integrations = max_k as usize + 1;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    #[test]
    fn regularise_owned_gives_what_regularise_gives() {
        use crate::sim::{SimConfig, Simulator};
        let sim = Simulator::new(SimConfig { n_ant: 6, n_chan: 4, n_int: 5, seed: 2, ..Default::default() });
        let one: Vec<_> = (0..5).map(|k| sim.block(k).0).collect();
        // Two spectral windows, interleaved, stamps jittered within the tolerance.
        let mut regular = Vec::new();
        for (k, b) in one.iter().enumerate() {
            for spw in [1, 0] {
                let mut b = b.clone();
                b.spw = spw;
                b.time_mjd_s += [0.0, 0.3, -0.2][k % 3];
                regular.push(b);
            }
        }
        let check = |blocks: Vec<super::VisBlock>, what: &str| {
            let want = super::regularise(&blocks, None, 0.25).unwrap();
            let got = super::regularise_owned(blocks, None, 0.25).unwrap();
            assert_eq!(got.1, want.1, "{what}: report");
            assert!(got.0 == want.0, "{what}: blocks");
        };
        check(regular.clone(), "regular");
        // Not regular: a duplicate, a missing integration, a baseline list out of order.
        let mut dup = regular.clone();
        dup.push(regular[3].clone());
        check(dup, "duplicate");
        let mut gap = regular.clone();
        gap.remove(4);
        check(gap, "gap");
        let mut swapped = regular.clone();
        for b in &mut swapped {
            b.baselines.swap(0, 1);
        }
        check(swapped, "order");
    }

    #[test]
    fn median_by_selection_matches_the_sorted_middle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(super::median(&mut []), None);
        for _ in 0..500 {
            let n = rng.gen_range(1..40);
            // Few distinct values, so ties are common.
            let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-4..5) as f64 * 0.5).collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
            assert_eq!(super::median(&mut v.clone()), Some(want), "{v:?}");
        }
    }
}
