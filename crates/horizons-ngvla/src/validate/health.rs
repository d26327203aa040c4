//! Antenna health against the array median: the amplitude check that catches a dead receiver
//! the correlator did not flag.

use serde::Serialize;

use super::timegrid::median;
use crate::model::VisBlock;

/// The outcome for one antenna.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within range.
    Healthy,
    /// Far below the array median.
    Dead,
    /// Far above the array median.
    Deviant,
}

/// One antenna's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct AntennaVerdict {
    /// Antenna number.
    pub antenna: u32,
    /// Its worst ratio (median |V| on its baselines / array median), over parallel hands.
    pub ratio: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Judges every antenna of a block on its parallel-hand amplitudes: per polarisation, the
/// antenna's median over its baselines of each baseline's mean |V| (unflagged channels),
/// against the array median of those medians.
pub fn antenna_health(b: &VisBlock, dead_ratio: f64, deviant_ratio: f64) -> Vec<AntennaVerdict> {
    let pols: Vec<usize> = (0..b.pols.len()).filter(|&p| b.pols[p].is_parallel_hand()).collect();
    let pols = if pols.is_empty() { (0..b.pols.len()).collect() } else { pols };
    // Antennas by number, and each baseline's two slots in that list.
    let mut ids: Vec<u32> = b.baselines.iter().flat_map(|bl| [bl.ant1, bl.ant2]).collect();
    ids.sort_unstable();
    ids.dedup();
    let slot = |a: u32| ids.binary_search(&a).expect("every antenna of a baseline is listed");
    let ends: Vec<(usize, usize)> = b.baselines.iter().map(|bl| (slot(bl.ant1), slot(bl.ant2))).collect();
    // Per antenna: the ratio farthest from 1 over the polarisations.
    let mut worst: Vec<Option<f64>> = vec![None; ids.len()];
    let (npol, per) = (b.pols.len(), b.per_baseline());
    // Each baseline's mean |V| over its unflagged channels, per polarisation.
    let mut means: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(ends.len()); pols.len()];
    for bi in 0..ends.len() {
        let (vis, flags) = (&b.vis[bi * per..(bi + 1) * per], &b.flags[bi * per..(bi + 1) * per]);
        for (j, &p) in pols.iter().enumerate() {
            let (mut s, mut n) = (0.0f64, 0usize);
            for (v, &f) in vis[p..].iter().step_by(npol).zip(flags[p..].iter().step_by(npol)) {
                if !f {
                    s += f64::from((v.re * v.re + v.im * v.im).sqrt());
                    n += 1;
                }
            }
            means[j].push((n > 0).then(|| s / n as f64));
        }
    }
    let mut amps: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
    for means in &means {
        amps.iter_mut().for_each(Vec::clear);
        for (&(s1, s2), m) in ends.iter().zip(means) {
            if let Some(m) = *m {
                amps[s1].push(m);
                amps[s2].push(m);
            }
        }
        let meds: Vec<Option<f64>> = amps.iter_mut().map(|v| median(v)).collect();
        let mut all: Vec<f64> = meds.iter().flatten().copied().collect();
        let Some(array) = median(&mut all).filter(|m| *m > 0.0) else { continue };
        for (e, m) in worst.iter_mut().zip(&meds) {
            let Some(m) = m else { continue };
            let r = m / array;
            // "worst" = farthest from 1 in log terms.
            match e {
                Some(w) if r.ln().abs() <= w.ln().abs() => {}
                _ => *e = Some(r),
            }
        }
    }
    let worst = ids.iter().zip(worst).filter_map(|(&a, r)| r.map(|r| (a, r)));
    worst
        .into_iter()
        .map(|(antenna, ratio)| {
            let verdict = if ratio < dead_ratio {
                Verdict::Dead
            } else if ratio > deviant_ratio {
                Verdict::Deviant
            } else {
                Verdict::Healthy
            };
            AntennaVerdict { antenna, ratio, verdict }
        })
        .collect()
}
