//! Raw blocks from a uvfits file: one [`VisBlock`] per distinct timestamp and IF, baselines in
//! file order. Nothing is regularised here; autocorrelations are left out (the pipeline images
//! and calibrates cross-correlations only).

use std::collections::HashMap;

use num_complex::Complex32;

use super::UvFits;
use crate::model::{VisBlock, C_M_PER_S};

/// Julian date of MJD 0.
pub const MJD0_JD: f64 = 2_400_000.5;

impl UvFits {
    /// Splits the groups into raw blocks, ordered by first appearance of each timestamp.
    pub fn to_blocks(&self) -> Vec<VisBlock> {
        let mut order: Vec<u64> = Vec::new();
        let mut by_time: HashMap<u64, Vec<usize>> = HashMap::new();
        for (g, group) in self.groups.iter().enumerate() {
            if group.baseline.ant1 == group.baseline.ant2 {
                continue;
            }
            let key = group.jd.to_bits();
            by_time
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(g);
        }
        let ax = &self.axes;
        let npol = ax.stokes.len;
        let nchan = ax.freq.len;
        let mut blocks = Vec::with_capacity(order.len() * self.observation.spws.len());
        for (seq, key) in order.iter().enumerate() {
            let rows = &by_time[key];
            let jd = f64::from_bits(*key);
            for spw in &self.observation.spws {
                let k = spw.id as usize;
                let n = rows.len() * nchan * npol;
                let mut b = VisBlock {
                    observation_id: self.observation.id.clone(),
                    spw: spw.id,
                    integration: seq as u64,
                    time_mjd_s: (jd - MJD0_JD) * 86_400.0,
                    interval_s: 0.0,
                    first_freq_hz: spw.first_freq_hz,
                    chan_width_hz: spw.chan_width_hz,
                    n_chan: nchan,
                    pols: self.observation.pols.clone(),
                    baselines: Vec::with_capacity(rows.len()),
                    uvw_m: Vec::with_capacity(rows.len()),
                    vis: Vec::with_capacity(n),
                    weights: Vec::with_capacity(n),
                    flags: Vec::with_capacity(n),
                };
                for &g in rows {
                    let group = &self.groups[g];
                    let data = self.group_data(g);
                    b.baselines.push(group.baseline);
                    b.uvw_m.push(group.uvw_s.map(|s| s * C_M_PER_S));
                    for c in 0..nchan {
                        for p in 0..npol {
                            let o = ax.offset(c, p, k);
                            let (re, im) = (data[o], data[o + ax.complex.stride]);
                            let w = if ax.complex.len > 2 { data[o + 2 * ax.complex.stride] } else { 1.0 };
                            b.vis.push(Complex32::new(re, im));
                            // AIPS convention: a weight ≤ 0 marks a flagged sample.
                            b.weights.push(w.max(0.0));
                            b.flags.push(w.is_nan() || w <= 0.0);
                        }
                    }
                }
                blocks.push(b);
            }
        }
        blocks
    }
}
