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

/// Judges every antenna of a block on its parallel-hand amplitudes.
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
    let mut amps: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
    let (npol, per) = (b.pols.len(), b.per_baseline());
    for &p in &pols {
        amps.iter_mut().for_each(Vec::clear);
        for (bi, &(s1, s2)) in ends.iter().enumerate() {
            let (vis, flags) = (&b.vis[bi * per..(bi + 1) * per], &b.flags[bi * per..(bi + 1) * per]);
            for i in (p..per).step_by(npol) {
                if !flags[i] {
                    let a = vis[i].norm() as f64;
                    amps[s1].push(a);
                    amps[s2].push(a);
                }
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
