//! The calibration stage: direction-independent complex gains per antenna and feed by
//! [`stefcal`] against a sky model (default: 1 Jy at the phase centre), in solution cells of
//! `integrations × channels`, written as `gains.json` ([`gains_json`]) and applied to the data.
//!
//! Feeds are solved independently from the parallel hands (R from RR, L from LL; X/Y alike), each
//! phase-referenced to the same antenna. Applying divides `V_pq^{ab}` by `g_p^a · conj(g_q^b)` for
//! all four products; samples whose gain is unknown are flagged.
//!
//! Weights: with `update_weights` the weight is multiplied by `|g_p^a · g_q^b|²` (the calibrated
//! noise variance scales as `1/|g|²`). It is off by default, as in DP3's `applycal`, because the
//! reference results (DP3 + WSClean) were made that way: on the EVLA file it changes the effective
//! uv weighting, and with it the PSF (3.46″ × 2.96″ instead of 2.78″ × 1.79″), since antenna 12
//! is ten times weaker than the rest and would be weighted out.

pub mod gains_json;
pub mod stefcal;

use std::collections::{BTreeMap, BTreeSet};

use num_complex::Complex64;

use crate::error::{NgvlaError, Result};
use crate::model::VisBlock;
use crate::sky::SkyModel;
use stefcal::BaselineSums;

/// Calibration settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalConfig {
    /// Solution interval, seconds; 0 = one solution over the whole observation.
    pub solution_interval_s: f64,
    /// Channels per solution; 0 = the whole spectral window.
    pub chans_per_solution: usize,
    /// The sky model the data are compared with.
    pub model: SkyModel,
    /// Reference antenna number; `None` = first solvable antenna.
    pub reference_antenna: Option<u32>,
    /// Fewest unflagged baselines an antenna needs to be solved.
    pub min_baselines: usize,
    /// Iteration cap.
    pub max_iter: usize,
    /// Convergence tolerance on the relative update.
    pub tolerance: f64,
    /// Whether applying the gains rescales the weights by `|g_p·g_q|²`.
    pub update_weights: bool,
}

impl Default for CalConfig {
    fn default() -> Self {
        CalConfig {
            solution_interval_s: 0.0,
            chans_per_solution: 0,
            model: SkyModel::point_at_centre(1.0),
            reference_antenna: None,
            min_baselines: 4,
            max_iter: 500,
            tolerance: 1e-8,
            update_weights: false,
        }
    }
}

/// One solution cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Solution {
    /// Spectral window.
    pub spw: u32,
    /// First integration covered.
    pub integration_start: u64,
    /// One past the last integration covered.
    pub integration_end: u64,
    /// Start time, seconds since MJD 0.
    pub t_start_mjd_s: f64,
    /// End time, seconds since MJD 0.
    pub t_end_mjd_s: f64,
    /// First channel covered.
    pub chan_start: usize,
    /// One past the last channel.
    pub chan_end: usize,
    /// Gains `[feed][antenna]` (antenna order of [`GainTable::antennas`]).
    pub gains: Vec<Vec<Complex64>>,
    /// `true` where no solution exists.
    pub flags: Vec<Vec<bool>>,
    /// Iterations the solver ran, per feed.
    pub iterations: Vec<usize>,
    /// Whether it converged, per feed.
    pub converged: Vec<bool>,
}

/// All solutions of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GainTable {
    /// Observation the gains belong to.
    pub observation_id: String,
    /// Antenna numbers, in gain order.
    pub antennas: Vec<u32>,
    /// Feed names (`R`, `L` or `X`, `Y`).
    pub feeds: Vec<char>,
    /// The phase reference antenna.
    pub reference_antenna: Option<u32>,
    /// The model the gains were solved against.
    pub model: SkyModel,
    /// Whether [`apply`] rescales weights by `|g_p·g_q|²`.
    pub update_weights: bool,
    /// Solution cells.
    pub solutions: Vec<Solution>,
}

impl GainTable {
    /// The solution covering (spw, integration, channel).
    pub fn find(&self, spw: u32, integration: u64, chan: usize) -> Option<&Solution> {
        self.solutions.iter().find(|s| {
            s.spw == spw
                && (s.integration_start..s.integration_end).contains(&integration)
                && (s.chan_start..s.chan_end).contains(&chan)
        })
    }
}

fn feed_name(pol: crate::model::Polarization, feed: usize) -> char {
    use crate::model::Polarization::*;
    match (pol, feed) {
        (XX | YY | XY | YX, 0) => 'X',
        (XX | YY | XY | YX, _) => 'Y',
        (_, 0) => 'R',
        _ => 'L',
    }
}

/// Solves gains over regular blocks (as [`crate::validate::validate`] returns them).
pub fn solve(blocks: &[VisBlock], cfg: &CalConfig) -> Result<GainTable> {
    let first = blocks.first().ok_or_else(|| NgvlaError::NoData("no blocks to calibrate".into()))?;
    let antennas: Vec<u32> = blocks
        .iter()
        .flat_map(|b| b.baselines.iter().flat_map(|bl| [bl.ant1, bl.ant2]))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ant_index: BTreeMap<u32, usize> = antennas.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    // Feed f is solved from the parallel-hand product (f, f).
    let parallel: Vec<(usize, usize)> =
        (0..2).filter_map(|f| first.pols.iter().position(|p| p.feeds() == Some((f, f))).map(|pi| (f, pi))).collect();
    if parallel.is_empty() {
        return Err(NgvlaError::NoData("no parallel-hand polarisation to calibrate".into()));
    }
    let feeds = parallel.iter().map(|&(f, pi)| feed_name(first.pols[pi], f)).collect();
    let interval = first.interval_s.max(1e-9);
    let per_sol = if cfg.solution_interval_s <= 0.0 {
        u64::MAX
    } else {
        ((cfg.solution_interval_s / interval).round() as u64).max(1)
    };
    let mut cells: BTreeMap<(u32, u64), Vec<&VisBlock>> = BTreeMap::new();
    for b in blocks {
        let slot = if per_sol == u64::MAX { 0 } else { b.integration / per_sol };
        cells.entry((b.spw, slot)).or_default().push(b);
    }
    let reference =
        cfg.reference_antenna.and_then(|a| ant_index.get(&a).copied()).or(Some(0)).filter(|_| !antennas.is_empty());
    let mut table = GainTable {
        observation_id: first.observation_id.clone(),
        antennas: antennas.clone(),
        feeds,
        reference_antenna: None,
        model: cfg.model.clone(),
        update_weights: cfg.update_weights,
        solutions: Vec::new(),
    };
    let centred = cfg.model.is_centred_point();
    for ((spw, _), cell) in &cells {
        let n_chan = cell[0].n_chan;
        let step = if cfg.chans_per_solution == 0 { n_chan } else { cfg.chans_per_solution.min(n_chan) };
        for c0 in (0..n_chan).step_by(step.max(1)) {
            let c1 = (c0 + step).min(n_chan);
            let mut sol = Solution {
                spw: *spw,
                integration_start: cell.iter().map(|b| b.integration).min().unwrap_or(0),
                integration_end: cell.iter().map(|b| b.integration).max().unwrap_or(0) + 1,
                t_start_mjd_s: cell.iter().map(|b| b.time_mjd_s - b.interval_s / 2.0).fold(f64::INFINITY, f64::min),
                t_end_mjd_s: cell.iter().map(|b| b.time_mjd_s + b.interval_s / 2.0).fold(f64::NEG_INFINITY, f64::max),
                chan_start: c0,
                chan_end: c1,
                gains: vec![],
                flags: vec![],
                iterations: vec![],
                converged: vec![],
            };
            if per_sol == u64::MAX {
                sol.integration_end = u64::MAX;
            }
            for &(_, pi) in &parallel {
                let mut acc: BTreeMap<(usize, usize), (Complex64, f64)> = BTreeMap::new();
                for b in cell {
                    for (bi, bl) in b.baselines.iter().enumerate() {
                        let (Some(&p), Some(&q)) = (ant_index.get(&bl.ant1), ant_index.get(&bl.ant2)) else { continue };
                        if p == q {
                            continue;
                        }
                        let e = acc.entry((p, q)).or_insert((Complex64::new(0.0, 0.0), 0.0));
                        for c in c0..c1 {
                            let i = b.idx(bi, c, pi);
                            if b.flags[i] || b.weights[i] <= 0.0 {
                                continue;
                            }
                            let w = b.weights[i] as f64;
                            let m = if centred {
                                Complex64::new(cfg.model.sources[0].flux_jy, 0.0)
                            } else {
                                cfg.model.visibility(b.uvw_m[bi], b.freq(c))
                            };
                            let v = Complex64::new(b.vis[i].re as f64, b.vis[i].im as f64);
                            e.0 += w * m.conj() * v;
                            e.1 += w * m.norm_sqr();
                        }
                    }
                }
                let sums: Vec<BaselineSums> =
                    acc.into_iter().map(|((p, q), (a, b))| BaselineSums { p, q, a, b }).collect();
                let mut s = stefcal::solve(antennas.len(), &sums, cfg.min_baselines, cfg.max_iter, cfg.tolerance);
                let r = reference.filter(|&r| s.valid[r]).or_else(|| s.valid.iter().position(|&v| v));
                if let Some(r) = r {
                    stefcal::reference_phase(&mut s.gains, r);
                    table.reference_antenna.get_or_insert(antennas[r]);
                }
                sol.flags.push(s.valid.iter().map(|v| !v).collect());
                sol.gains.push(s.gains);
                sol.iterations.push(s.iterations);
                sol.converged.push(s.converged);
            }
            table.solutions.push(sol);
        }
    }
    Ok(table)
}

/// Applies gains to blocks in place (see the module docs); returns the samples newly flagged.
pub fn apply(blocks: &mut [VisBlock], table: &GainTable) -> usize {
    let ant_index: BTreeMap<u32, usize> = table.antennas.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut newly_flagged = 0;
    for b in blocks.iter_mut() {
        // Which solved feed index serves feed 0/1 of this block's products.
        let feed_slot: Vec<Option<usize>> = (0..2)
            .map(|f| table.feeds.iter().position(|&n| matches!((n, f), ('R' | 'X', 0) | ('L' | 'Y', 1))))
            .collect();
        let sols: Vec<Option<&Solution>> = (0..b.n_chan).map(|c| table.find(b.spw, b.integration, c)).collect();
        for bi in 0..b.baselines.len() {
            let bl = b.baselines[bi];
            let (p, q) = (ant_index.get(&bl.ant1).copied(), ant_index.get(&bl.ant2).copied());
            for (c, &sol) in sols.iter().enumerate() {
                for pi in 0..b.pols.len() {
                    let i = b.idx(bi, c, pi);
                    if b.flags[i] {
                        continue;
                    }
                    let gain = |ant: Option<usize>, feed: usize| -> Option<Complex64> {
                        let (s, a, f) = (sol?, ant?, feed_slot.get(feed).copied().flatten()?);
                        (!s.flags[f][a]).then(|| s.gains[f][a]).filter(|g| g.norm() > 0.0)
                    };
                    let (fa, fb) = b.pols[pi].feeds().unwrap_or((0, 0));
                    match (gain(p, fa), gain(q, fb)) {
                        (Some(gp), Some(gq)) => {
                            let g = gp * gq.conj();
                            let v = Complex64::new(b.vis[i].re as f64, b.vis[i].im as f64) / g;
                            b.vis[i] = num_complex::Complex32::new(v.re as f32, v.im as f32);
                            if table.update_weights {
                                b.weights[i] = (b.weights[i] as f64 * g.norm_sqr()) as f32;
                            }
                        }
                        _ => {
                            b.flags[i] = true;
                            newly_flagged += 1;
                        }
                    }
                }
            }
        }
    }
    newly_flagged
}
