//! MAD-based anomaly alerts: per block, each baseline's mean parallel-hand amplitude is compared
//! with the block's median over baselines in units of the robust spread (1.4826 × MAD); a
//! baseline beyond `threshold` raises an alert, and so does a block whose flagged fraction jumps
//! above `storm_fraction`. Alerts are reports for operators (the alerts topic), not flags.

use serde::Serialize;

use crate::model::{Baseline, VisBlock};
use crate::validate::timegrid::median;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A baseline's amplitude is far from the block's median.
    BaselineAmplitude,
    /// Most of a block is flagged.
    FlagStorm,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Alert {
    /// Kind.
    pub kind: AlertKind,
    /// Spectral window.
    pub spw: u32,
    /// Integration.
    pub integration: u64,
    /// The baseline, for baseline alerts.
    pub baseline: Option<Baseline>,
    /// The measured value (amplitude, or flagged fraction).
    pub value: f64,
    /// The reference (median amplitude, or the storm fraction).
    pub reference: f64,
    /// Robust z-score (0 for storms).
    pub z: f64,
}

/// Alerts for one block.
pub fn block_alerts(b: &VisBlock, threshold: f64, storm_fraction: f64) -> Vec<Alert> {
    alerts_from_sums(b, &parallel_sums(b), b.flag_fraction(), threshold, storm_fraction)
}

/// [`block_alerts`] of every block, in order.
pub fn all(blocks: &[VisBlock], threshold: f64, storm_fraction: f64) -> Vec<Alert> {
    blocks.iter().flat_map(|b| block_alerts(b, threshold, storm_fraction)).collect()
}

/// [`block_alerts`] from each baseline's `(Σ |V|, count)` over its unflagged parallel-hand
/// samples, as [`parallel_sums`] adds them, and the block's flagged fraction (the combined
/// flagger finds both in its own pass, the same numbers: `super::flag_and_alert`).
pub(crate) fn alerts_from_sums(
    b: &VisBlock,
    sums: &[(f32, f32)],
    frac: f64,
    threshold: f64,
    storm_fraction: f64,
) -> Vec<Alert> {
    let mut out = Vec::new();
    if frac > storm_fraction {
        out.push(Alert {
            kind: AlertKind::FlagStorm,
            spw: b.spw,
            integration: b.integration,
            baseline: None,
            value: frac,
            reference: storm_fraction,
            z: 0.0,
        });
    }
    let means: Vec<(usize, f64)> =
        sums.iter().enumerate().filter(|(_, &(_, n))| n > 0.0).map(|(bi, &(s, n))| (bi, s as f64 / n as f64)).collect();
    let mut vals: Vec<f64> = means.iter().map(|m| m.1).collect();
    let Some(med) = median(&mut vals) else { return out };
    let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
    let spread = 1.4826 * median(&mut dev).unwrap_or(0.0);
    if spread <= 0.0 {
        return out;
    }
    for (bi, m) in means {
        let z = (m - med) / spread;
        if z.abs() > threshold {
            out.push(Alert {
                kind: AlertKind::BaselineAmplitude,
                spw: b.spw,
                integration: b.integration,
                baseline: Some(b.baselines[bi]),
                value: m,
                reference: med,
                z,
            });
        }
    }
    out
}

/// Per baseline, `(Σ |V|, count)` over its unflagged parallel-hand samples, `|V|` as
/// `√(re² + im²)`: per sample the products' amplitudes added in product order, then the
/// samples in channel order, in `f32` (a few dozen values per baseline).
fn parallel_sums(b: &VisBlock) -> Vec<(f32, f32)> {
    let parallel: Vec<usize> = (0..b.pols.len()).filter(|&p| b.pols[p].is_parallel_hand()).collect();
    let (npol, per) = (b.pols.len(), b.per_baseline());
    if npol == 0 {
        return vec![(0.0, 0.0); b.baselines.len()];
    }
    let mut sums = Vec::with_capacity(b.baselines.len());
    for (vis, flags) in b.vis.chunks_exact(per).zip(b.flags.chunks_exact(per)) {
        let (mut s, mut n) = (0.0f32, 0.0f32);
        for (v, f) in vis.chunks_exact(npol).zip(flags.chunks_exact(npol)) {
            let mut x = 0.0f32;
            for &p in parallel.iter().filter(|&&p| !f[p]) {
                x += (v[p].re * v[p].re + v[p].im * v[p].im).sqrt();
                n += 1.0;
            }
            s += x;
        }
        sums.push((s, n));
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};

    fn block() -> VisBlock {
        let sim = Simulator::new(SimConfig { n_ant: 12, n_chan: 16, n_int: 1, rfi: None, ..Default::default() });
        sim.block(0).0
    }

    #[test]
    fn a_hot_baseline_raises_an_alert_and_nothing_else_does() {
        let mut b = block();
        assert!(block_alerts(&b, 6.0, 0.5).is_empty());
        let s = b.per_baseline();
        for v in &mut b.vis[5 * s..6 * s] {
            *v *= 20.0;
        }
        let alerts = block_alerts(&b, 6.0, 0.5);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::BaselineAmplitude);
        assert_eq!(alerts[0].baseline, Some(b.baselines[5]));
        assert!(alerts[0].z > 6.0);
    }

    #[test]
    fn a_mostly_flagged_block_is_a_flag_storm() {
        let mut b = block();
        let n = b.flags.len();
        b.flags[..n * 3 / 4].iter_mut().for_each(|f| *f = true);
        let alerts = block_alerts(&b, 6.0, 0.5);
        assert!(alerts.iter().any(|a| a.kind == AlertKind::FlagStorm && a.value > 0.7), "{alerts:?}");
    }
}
