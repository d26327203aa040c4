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

/// The polarisation products [`antenna_health`] judges: the parallel hands, or every product
/// where there are none.
pub fn judged_products(b: &VisBlock) -> Vec<usize> {
    let npol = b.pols.len();
    let pols: Vec<usize> = (0..npol).filter(|&p| b.pols[p].is_parallel_hand()).collect();
    if pols.is_empty() {
        (0..npol).collect()
    } else {
        pols
    }
}

/// Judges every antenna of a block on its parallel-hand amplitudes: per polarisation, the
/// antenna's median over its baselines of each baseline's mean |V| (unflagged channels),
/// against the array median of those medians. `means` holds each baseline's mean |V| per
/// judged product ([`judged_products`]), `[baseline][product]`, `None` where every channel is
/// flagged (as [`super::scrub_and_measure`] finds them).
pub fn antenna_health(b: &VisBlock, means: &[Option<f64>], dead_ratio: f64, deviant_ratio: f64) -> Vec<AntennaVerdict> {
    let judged = judged_products(b).len();
    let (ids, ends) = antenna_slots(b);
    // Per antenna: the ratio farthest from 1 over the polarisations.
    let mut worst: Vec<Option<f64>> = vec![None; ids.len()];
    // Each antenna's baselines' means, side by side: antenna k's from start[k].
    let mut start = vec![0usize; ids.len() + 1];
    for &(s1, s2) in &ends {
        start[s1 + 1] += 1;
        start[s2 + 1] += 1;
    }
    for k in 1..start.len() {
        start[k] += start[k - 1];
    }
    let mut amps = vec![0.0; start[ids.len()]];
    for j in 0..judged {
        let mut end = start[..ids.len()].to_vec();
        for (&(s1, s2), m) in ends.iter().zip(means.iter().skip(j).step_by(judged)) {
            if let Some(m) = *m {
                amps[end[s1]] = m;
                end[s1] += 1;
                amps[end[s2]] = m;
                end[s2] += 1;
            }
        }
        let meds: Vec<Option<f64>> = (0..ids.len()).map(|k| median(&mut amps[start[k]..end[k]])).collect();
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

/// The block's antenna numbers in order, and each baseline's two indices in that list.
fn antenna_slots(b: &VisBlock) -> (Vec<u32>, Vec<(usize, usize)>) {
    let top = b.baselines.iter().map(|bl| bl.ant1.max(bl.ant2)).max().unwrap_or(0) as usize;
    if top < 1 << 16 {
        // Antenna numbers are small (a few hundred): a table by number, no sorting.
        let mut slot = vec![usize::MAX; top + 1];
        for bl in &b.baselines {
            slot[bl.ant1 as usize] = 0;
            slot[bl.ant2 as usize] = 0;
        }
        let mut ids = Vec::new();
        for (a, s) in slot.iter_mut().enumerate().filter(|(_, s)| **s == 0) {
            *s = ids.len();
            ids.push(a as u32);
        }
        let ends = b.baselines.iter().map(|bl| (slot[bl.ant1 as usize], slot[bl.ant2 as usize])).collect();
        return (ids, ends);
    }
    let mut ids: Vec<u32> = b.baselines.iter().flat_map(|bl| [bl.ant1, bl.ant2]).collect();
    ids.sort_unstable();
    ids.dedup();
    let slot = |a: u32| ids.binary_search(&a).expect("every antenna of a baseline is listed");
    let ends = b.baselines.iter().map(|bl| (slot(bl.ant1), slot(bl.ant2))).collect();
    (ids, ends)
}
