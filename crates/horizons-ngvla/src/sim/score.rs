//! Scores of a pipeline's output against a simulation's truth: flags against the injected RFI,
//! gain solutions against the true gains, image peaks against the true point sources.
//!
//! Blocks are matched to the truth by time (integration `k` is stamped `t0 + k·interval`) and by
//! antenna pair, so the blocks may be validated, cut for the wire or reordered.

use std::collections::HashMap;

use num_complex::Complex64;
use serde::Serialize;

use super::Simulator;
use crate::calibrate::GainTable;
use crate::image::{stats, Image};
use crate::model::VisBlock;
use crate::sky::SkyModel;

/// Flags against the injected RFI, over `(integration, baseline, channel)` cells; a cell counts
/// as flagged when its first polarisation is (the flagger flags all of a cell's polarisations
/// together).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlagScore {
    /// RFI cells in the truth.
    pub rfi_cells: usize,
    /// Cells scored (present in the blocks).
    pub cells: usize,
    /// Flagged cells with RFI.
    pub true_positives: usize,
    /// Flagged cells without RFI.
    pub false_positives: usize,
    /// RFI cells left unflagged.
    pub missed: usize,
    /// `tp / (tp + fp)`, 1 when nothing is flagged.
    pub precision: f64,
    /// `tp / (tp + missed)`, 1 when there is no RFI.
    pub recall: f64,
}

/// Scores the flags of `blocks` (after flagging) against `sim`'s injected RFI.
pub fn flags(sim: &Simulator, blocks: &[VisBlock]) -> FlagScore {
    let cfg = sim.config();
    let index: HashMap<(u32, u32), usize> =
        sim.baselines().iter().enumerate().map(|(i, b)| ((b.ant1, b.ant2), i)).collect();
    let truths: Vec<Vec<bool>> = (0..cfg.n_int).map(|k| sim.rfi_truth(k)).collect();
    let (mut cells, mut tp, mut fp, mut missed) = (0, 0, 0, 0);
    for b in blocks {
        let k = (b.time_mjd_s - super::T0_MJD_S) / cfg.interval_s;
        let Some(truth) = truths.get(k.round() as usize).filter(|_| k >= -0.5) else { continue };
        for (bi, bl) in b.baselines.iter().enumerate() {
            let Some(&ti) = index.get(&(bl.ant1, bl.ant2)) else { continue };
            for c in 0..b.n_chan.min(cfg.n_chan) {
                cells += 1;
                match (b.flags[b.idx(bi, c, 0)], truth[ti * cfg.n_chan + c]) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => missed += 1,
                    (false, false) => {}
                }
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    FlagScore {
        rfi_cells: truths.iter().map(|t| t.iter().filter(|&&x| x).count()).sum(),
        cells,
        true_positives: tp,
        false_positives: fp,
        missed,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + missed),
    }
}

/// Gain solutions against the true gains, both referred to the solutions' reference antenna
/// (phase `0`), the usual convention. A solution over integrations `[a, b)` is compared in
/// amplitude with the mean true amplitude over them, and in phase with the phase of the mean
/// true gain (the simulated gains drift in phase from one integration to the next).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GainScore {
    /// Antenna-feed solutions compared.
    pub compared: usize,
    /// Antenna-feed solutions flagged (none found).
    pub unsolved: usize,
    /// Largest `| |g| / |t| − 1 |`.
    pub worst_amplitude: f64,
    /// Largest `| arg(g / t) |`, degrees.
    pub worst_phase_deg: f64,
}

/// Scores `table` against `sim`'s true gains. `None` when the table has no reference antenna.
pub fn gains(sim: &Simulator, table: &GainTable) -> Option<GainScore> {
    let ref_index = table.reference_antenna.filter(|r| table.antennas.contains(r))? as usize - 1;
    let n_int = sim.config().n_int as u64;
    let mut s = GainScore { compared: 0, unsolved: 0, worst_amplitude: 0.0, worst_phase_deg: 0.0 };
    for sol in &table.solutions {
        let ks: Vec<usize> = (sol.integration_start..sol.integration_end.min(n_int)).map(|k| k as usize).collect();
        if ks.is_empty() {
            continue;
        }
        for (f, feed) in sol.gains.iter().enumerate().take(2) {
            for (ai, g) in feed.iter().enumerate() {
                if sol.flags[f][ai] {
                    s.unsolved += 1;
                    continue;
                }
                let a = table.antennas[ai] as usize - 1;
                let t: Vec<Complex64> = ks
                    .iter()
                    .map(|&k| {
                        let r = sim.true_gain(k, f, ref_index);
                        sim.true_gain(k, f, a) * r.conj() / r.norm()
                    })
                    .collect();
                // Amplitude and phase apart: the mean of phasors that drift is shorter than each.
                let amplitude = t.iter().map(|x| x.norm()).sum::<f64>() / t.len() as f64;
                let phase = t.iter().sum::<Complex64>();
                s.compared += 1;
                s.worst_amplitude = s.worst_amplitude.max((g.norm() / amplitude - 1.0).abs());
                s.worst_phase_deg = s.worst_phase_deg.max((g * phase.conj()).arg().to_degrees().abs());
            }
        }
    }
    Some(s)
}

/// One true point source and the image peak found for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SourceScore {
    /// True offset east of the phase centre, arcseconds.
    pub ra_offset_arcsec: f64,
    /// True offset north, arcseconds.
    pub dec_offset_arcsec: f64,
    /// True flux, Jy.
    pub flux_jy: f64,
    /// The peak found within [`MATCH_PIXELS`] of it: offset from the true position, arcseconds.
    pub position_error_arcsec: Option<f64>,
    /// That peak's value (Jy/beam) over the true flux.
    pub flux_ratio: Option<f64>,
}

/// How far (pixels) a peak may be from a true source to be its match.
pub const MATCH_PIXELS: f64 = 2.0;

/// Matches every source of `sky` with the nearest peak of `restored` above 5 times `residual`'s
/// robust rms, positions refined to a fraction of a pixel (`cell_arcsec` per pixel; east is to
/// lower column numbers, north to higher rows, the phase centre at `(nx/2, ny/2)`).
pub fn sources(sky: &SkyModel, restored: &Image, residual: &Image, cell_arcsec: f64) -> Vec<SourceScore> {
    let arcsec = (1.0f64 / 3600.0).to_radians();
    let rms = stats::robust_rms(&residual.data);
    let peaks = stats::find_peaks(restored, 5.0 * rms, 2.0);
    let (cx, cy) = ((restored.nx / 2) as f64, (restored.ny / 2) as f64);
    sky.sources
        .iter()
        .map(|s| {
            let (ra, dec) = (s.l / arcsec, s.m / arcsec);
            let (x, y) = (cx - ra / cell_arcsec, cy + dec / cell_arcsec);
            let near = peaks
                .iter()
                .map(|&(i, j, v)| ((i as f64 - x).hypot(j as f64 - y), i, j, v))
                .filter(|p| p.0 <= MATCH_PIXELS)
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let found = near.map(|(_, i, j, v)| {
                let (px, py) = stats::refine_peak(restored, i, j);
                ((px - x).hypot(py - y) * cell_arcsec, v / s.flux_jy)
            });
            SourceScore {
                ra_offset_arcsec: ra,
                dec_offset_arcsec: dec,
                flux_jy: s.flux_jy,
                position_error_arcsec: found.map(|f| f.0),
                flux_ratio: found.map(|f| f.1),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{RfiInjection, SimConfig};

    fn small(rfi: bool) -> Simulator {
        Simulator::new(SimConfig {
            n_ant: 8,
            n_chan: 16,
            n_int: 6,
            rfi: rfi.then(|| RfiInjection { spikes_per_baseline: 1.0, ..Default::default() }),
            seed: 3,
            ..Default::default()
        })
    }

    #[test]
    fn flags_equal_to_the_truth_score_one_and_none_score_no_recall() {
        let sim = small(true);
        let (mut blocks, truth) = sim.run();
        for (b, t) in blocks.iter_mut().zip(&truth) {
            for bi in 0..b.baselines.len() {
                for c in 0..b.n_chan {
                    for p in 0..b.pols.len() {
                        let i = b.idx(bi, c, p);
                        b.flags[i] = t[bi * b.n_chan + c];
                    }
                }
            }
        }
        let s = flags(&sim, &blocks);
        assert!(s.rfi_cells > 0);
        assert_eq!((s.true_positives, s.false_positives, s.missed), (s.rfi_cells, 0, 0));
        assert_eq!((s.precision, s.recall, s.cells), (1.0, 1.0, 6 * 28 * 16));
        // Blocks in another order and a missing integration: only what is there is scored.
        blocks.reverse();
        blocks.pop();
        assert_eq!(flags(&sim, &blocks).cells, 5 * 28 * 16);
        for b in &mut blocks {
            b.flags.iter_mut().for_each(|f| *f = false);
        }
        let none = flags(&sim, &blocks);
        assert_eq!((none.true_positives, none.precision, none.recall), (0, 1.0, 0.0));
    }

    #[test]
    fn the_true_gains_score_zero_error() {
        let sim = small(false);
        let (valid, _) = crate::validate::validate(sim.run().0, &Default::default()).unwrap();
        let mut table = crate::calibrate::solve(&valid, &Default::default()).unwrap();
        let r = table.reference_antenna.expect("a reference antenna") as usize - 1;
        for sol in &mut table.solutions {
            let k = sol.integration_start as usize;
            for f in 0..2 {
                let rot = sim.true_gain(k, f, r).conj() / sim.true_gain(k, f, r).norm();
                for (ai, &a) in table.antennas.iter().enumerate() {
                    sol.gains[f][ai] = sim.true_gain(k, f, a as usize - 1) * rot;
                    sol.flags[f][ai] = false;
                }
            }
            sol.integration_end = sol.integration_start + 1;
        }
        let s = gains(&sim, &table).expect("a reference antenna");
        assert_eq!((s.compared, s.unsolved), (table.solutions.len() * 2 * 8, 0));
        // Solutions that are the truth referred to the reference antenna: what is left is rounding.
        assert!(s.worst_amplitude < 1e-12 && s.worst_phase_deg < 1e-9, "{s:?}");
    }
}
