//! The wire format of a visibility block: Protobuf, via `prost`'s derive on a hand-written
//! message (no `protoc` needed). The equivalent `.proto` (schema version 1):
//!
//! ```proto
//! message VisBlock {
//!   uint32 schema_version = 1;   // 1
//!   string observation_id = 2;   // antenna-table reference
//!   uint32 spw = 3;              // spectral window; the bus key
//!   uint64 integration = 4;
//!   double time_mjd_s = 5;
//!   double interval_s = 6;
//!   double first_freq_hz = 7;
//!   double chan_width_hz = 8;
//!   uint32 n_chan = 9;
//!   repeated sint32 pols = 10;   // AIPS Stokes codes (RR = -1, LL = -2, RL = -3, LR = -4)
//!   repeated uint32 ant1 = 11;
//!   repeated uint32 ant2 = 12;
//!   repeated double uvw_m = 13;  // 3 per baseline
//!   repeated float vis = 14;     // re, im interleaved, [baseline][channel][pol]
//!   repeated float weights = 15;
//!   bytes flags = 16;            // bit i (LSB first) = sample i flagged
//! }
//! ```
//!
//! A block of one integration × B baselines × C channels × P pols encodes to about
//! `B·C·P·(8 + 4 + 1/8)` bytes; [`split_for_wire`] cuts blocks into baseline groups so that each
//! message lands in the 128 KiB – 1 MiB range Kafka likes.

use num_complex::Complex32;

use crate::error::{NgvlaError, Result};
use crate::model::{Baseline, Polarization, VisBlock};

/// The schema version this crate writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// The Protobuf message (see the module docs for its `.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VisBlockProto {
    /// Schema version.
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    /// Antenna-table reference.
    #[prost(string, tag = "2")]
    pub observation_id: String,
    /// Spectral window.
    #[prost(uint32, tag = "3")]
    pub spw: u32,
    /// Integration index.
    #[prost(uint64, tag = "4")]
    pub integration: u64,
    /// Seconds since MJD 0.
    #[prost(double, tag = "5")]
    pub time_mjd_s: f64,
    /// Integration time, s.
    #[prost(double, tag = "6")]
    pub interval_s: f64,
    /// Frequency of channel 0, Hz.
    #[prost(double, tag = "7")]
    pub first_freq_hz: f64,
    /// Channel spacing, Hz.
    #[prost(double, tag = "8")]
    pub chan_width_hz: f64,
    /// Channels.
    #[prost(uint32, tag = "9")]
    pub n_chan: u32,
    /// Polarisation codes.
    #[prost(sint32, repeated, tag = "10")]
    pub pols: Vec<i32>,
    /// First antenna of each baseline.
    #[prost(uint32, repeated, tag = "11")]
    pub ant1: Vec<u32>,
    /// Second antenna of each baseline.
    #[prost(uint32, repeated, tag = "12")]
    pub ant2: Vec<u32>,
    /// uvw, metres, 3 per baseline.
    #[prost(double, repeated, tag = "13")]
    pub uvw_m: Vec<f64>,
    /// Visibilities, re/im interleaved.
    #[prost(float, repeated, tag = "14")]
    pub vis: Vec<f32>,
    /// Weights.
    #[prost(float, repeated, tag = "15")]
    pub weights: Vec<f32>,
    /// Flags, one bit per sample.
    #[prost(bytes = "vec", tag = "16")]
    pub flags: Vec<u8>,
}

/// Encodes a block.
pub fn encode(b: &VisBlock) -> Vec<u8> {
    use prost::Message;
    let mut flags = vec![0u8; b.flags.len().div_ceil(8)];
    for (i, _) in b.flags.iter().enumerate().filter(|(_, &f)| f) {
        flags[i / 8] |= 1 << (i % 8);
    }
    let msg = VisBlockProto {
        schema_version: SCHEMA_VERSION,
        observation_id: b.observation_id.clone(),
        spw: b.spw,
        integration: b.integration,
        time_mjd_s: b.time_mjd_s,
        interval_s: b.interval_s,
        first_freq_hz: b.first_freq_hz,
        chan_width_hz: b.chan_width_hz,
        n_chan: b.n_chan as u32,
        pols: b.pols.iter().map(|p| p.code()).collect(),
        ant1: b.baselines.iter().map(|x| x.ant1).collect(),
        ant2: b.baselines.iter().map(|x| x.ant2).collect(),
        uvw_m: b.uvw_m.iter().flatten().copied().collect(),
        vis: b.vis.iter().flat_map(|v| [v.re, v.im]).collect(),
        weights: b.weights.clone(),
        flags,
    };
    msg.encode_to_vec()
}

/// Decodes and shape-checks a block; any inconsistency is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<VisBlock> {
    use prost::Message;
    let m = VisBlockProto::decode(bytes)?;
    if m.schema_version != SCHEMA_VERSION {
        return Err(NgvlaError::Shape(format!("unknown schema version {}", m.schema_version)));
    }
    let pols = m
        .pols
        .iter()
        .map(|&c| Polarization::from_code(c).ok_or_else(|| NgvlaError::Shape(format!("unknown polarisation {c}"))))
        .collect::<Result<Vec<_>>>()?;
    if m.ant1.len() != m.ant2.len() || m.uvw_m.len() != 3 * m.ant1.len() || m.vis.len() % 2 != 0 {
        return Err(NgvlaError::Shape("baseline, uvw or vis arrays disagree".into()));
    }
    let n = m.vis.len() / 2;
    if m.flags.len() != n.div_ceil(8) {
        return Err(NgvlaError::Shape(format!("{} flag bytes for {n} samples", m.flags.len())));
    }
    let b = VisBlock {
        observation_id: m.observation_id,
        spw: m.spw,
        integration: m.integration,
        time_mjd_s: m.time_mjd_s,
        interval_s: m.interval_s,
        first_freq_hz: m.first_freq_hz,
        chan_width_hz: m.chan_width_hz,
        n_chan: m.n_chan as usize,
        pols,
        baselines: m.ant1.iter().zip(&m.ant2).map(|(&a, &b)| Baseline::new(a, b)).collect(),
        uvw_m: m.uvw_m.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
        vis: m.vis.chunks_exact(2).map(|c| Complex32::new(c[0], c[1])).collect(),
        weights: m.weights,
        flags: (0..n).map(|i| m.flags[i / 8] & (1 << (i % 8)) != 0).collect(),
    };
    b.check_shape()?;
    Ok(b)
}

/// Bytes one baseline of this block takes on the wire (close upper estimate).
fn bytes_per_baseline(b: &VisBlock) -> usize {
    let samples = b.per_baseline();
    samples * 12 + samples.div_ceil(8) + 3 * 8 + 8
}

/// Cuts a block into baseline groups of at most `max_bytes` encoded each (at least one baseline
/// per group). Blocks already small enough come back whole.
pub fn split_for_wire(b: &VisBlock, max_bytes: usize) -> Vec<VisBlock> {
    let per = bytes_per_baseline(b).max(1);
    let n_bl = (max_bytes.saturating_sub(256) / per).max(1);
    if b.baselines.len() <= n_bl {
        return vec![b.clone()];
    }
    let s = b.per_baseline();
    b.baselines
        .chunks(n_bl)
        .enumerate()
        .map(|(k, chunk)| {
            let (lo, hi) = (k * n_bl, k * n_bl + chunk.len());
            VisBlock {
                baselines: chunk.to_vec(),
                uvw_m: b.uvw_m[lo..hi].to_vec(),
                vis: b.vis[lo * s..hi * s].to_vec(),
                weights: b.weights[lo * s..hi * s].to_vec(),
                flags: b.flags[lo * s..hi * s].to_vec(),
                ..b.clone_header()
            }
        })
        .collect()
}

impl VisBlock {
    /// A copy of the block's description with no baselines (for building sub-blocks).
    pub fn clone_header(&self) -> VisBlock {
        VisBlock {
            observation_id: self.observation_id.clone(),
            spw: self.spw,
            integration: self.integration,
            time_mjd_s: self.time_mjd_s,
            interval_s: self.interval_s,
            first_freq_hz: self.first_freq_hz,
            chan_width_hz: self.chan_width_hz,
            n_chan: self.n_chan,
            pols: self.pols.clone(),
            baselines: vec![],
            uvw_m: vec![],
            vis: vec![],
            weights: vec![],
            flags: vec![],
        }
    }
}
