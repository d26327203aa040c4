//! Antenna health against the array median: the amplitude check that catches a dead receiver
//! the correlator did not flag.

use std::collections::BTreeMap;

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
    // antenna → ratio per pol (worst kept)
    let mut worst: BTreeMap<u32, f64> = BTreeMap::new();
    for &p in &pols {
        let mut amps: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (bi, bl) in b.baselines.iter().enumerate() {
            for c in 0..b.n_chan {
                let i = b.idx(bi, c, p);
                if !b.flags[i] {
                    let a = b.vis[i].norm() as f64;
                    amps.entry(bl.ant1).or_default().push(a);
                    amps.entry(bl.ant2).or_default().push(a);
                }
            }
        }
        let meds: BTreeMap<u32, f64> =
            amps.into_iter().filter_map(|(a, mut v)| median(&mut v).map(|m| (a, m))).collect();
        let mut all: Vec<f64> = meds.values().copied().collect();
        let Some(array) = median(&mut all).filter(|m| *m > 0.0) else { continue };
        for (a, m) in meds {
            let r = m / array;
            let e = worst.entry(a).or_insert(r);
            // "worst" = farthest from 1 in log terms.
            if r.ln().abs() > e.ln().abs() {
                *e = r;
            }
        }
    }
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
