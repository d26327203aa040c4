//! Flag accounting: overall and per-antenna flagged fractions, the figures `flags-summary.json`
//! and the report carry.
//!
//! On baselines of antennas in `exclude` (the ones validation declared dead) only samples with no
//! data at all (weight 0: missing from the correlator output) count as flagged; the rest of their
//! flags are validation's and are listed separately. So the fractions measure what the flagger and
//! the correlator flagged — the quantity AOFlagger reports on the same data — while
//! `total_fraction` counts everything.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::VisBlock;

/// Flag fractions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct FlagSummary {
    /// Samples counted (baseline × channel × polarisation × integration).
    pub samples: usize,
    /// Of those, flagged (excluding antennas in `excluded_antennas`).
    pub flagged: usize,
    /// `flagged / samples`.
    pub fraction: f64,
    /// Per antenna label: flagged fraction of the samples on its baselines.
    pub by_antenna: BTreeMap<String, f64>,
    /// Antennas whose samples are not counted as flagged (validation flagged them whole).
    pub excluded_antennas: Vec<String>,
    /// Fraction of all samples flagged for any reason, excluded antennas included.
    pub total_fraction: f64,
}

/// Summarises the flags of `blocks`.
pub fn summarize(blocks: &[VisBlock], exclude: &BTreeSet<u32>) -> FlagSummary {
    let mut per: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    let (mut samples, mut flagged, mut any) = (0usize, 0usize, 0usize);
    for b in blocks {
        let s = b.per_baseline();
        for (bi, bl) in b.baselines.iter().enumerate() {
            let slice = &b.flags[bi * s..(bi + 1) * s];
            let nf = slice.iter().filter(|&&f| f).count();
            any += nf;
            let counted = if exclude.contains(&bl.ant1) || exclude.contains(&bl.ant2) {
                let w = &b.weights[bi * s..(bi + 1) * s];
                slice.iter().zip(w).filter(|(&f, &w)| f && w <= 0.0).count()
            } else {
                nf
            };
            samples += s;
            flagged += counted;
            for a in [bl.ant1, bl.ant2] {
                let e = per.entry(a).or_default();
                e.0 += s;
                e.1 += counted;
            }
        }
    }
    let frac = |f: usize, n: usize| if n == 0 { 0.0 } else { f as f64 / n as f64 };
    FlagSummary {
        samples,
        flagged,
        fraction: frac(flagged, samples),
        by_antenna: per.into_iter().map(|(a, (n, f))| (a.to_string(), frac(f, n))).collect(),
        excluded_antennas: exclude.iter().map(|a| a.to_string()).collect(),
        total_fraction: frac(any, samples),
    }
}
