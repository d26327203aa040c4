//! The RFI / anomaly stage: SumThreshold with the SIR operator per baseline on the time ×
//! frequency plane (AOFlagger's approach), and MAD-based anomaly alerts ([`alerts`]).
//!
//! Two flaggers share the steps below ([`Polarisations`]): by default one plane per baseline of
//! `Σ_p |V_p|` over the polarisation products, in `f32` with a box-filter background and σ by
//! bisection (`combined.rs`, about 14 × faster); or one plane per product, in `f64` with a
//! Gaussian background and exact MADs, as first built and described here.
//!
//! Per baseline and polarisation: amplitudes `|V|` on the plane, a smooth background (masked
//! Gaussian filter) subtracted, the noise σ estimated robustly ([`NoiseEstimate`]: by default
//! from the MAD of the residual's channel-to-channel differences), and SumThreshold
//! run along time and frequency with `χ₁ = base_threshold·σ·s` for sensitivities `s` going down to
//! 1 over the iterations (strong RFI first, so the background refit is not dragged by it; each
//! iteration re-thresholds from the entry mask, as AOFlagger does), optionally followed by
//! `refits` more iterations at the last sensitivity, each with the background refitted without
//! what the one before found. SumThreshold flags only runs *above* the background by default
//! ([`RfiConfig::flag_dips`]): the background of the first iteration at `s = 1` still holds the
//! faint RFI only that iteration finds, and the residual next to it dips below zero, where a
//! two-sided test (AOFlagger's) flags clean samples. Two-sided, the refits were what kept
//! precision up (simulator, planes of 32 channels × 8 integrations: 0.61 without refits, 0.91
//! with two); one-sided, precision is 0.99 without refits and refits lower it (they also cost a
//! third of the stage's speed), so the default is none. (With σ from the residual's MAD, refits
//! raised recall on very short planes, 16 channels × 4 integrations: 0.36 → 0.44 with two; σ
//! from channel differences takes it to 0.99 without them.) Flags
//! of the four polarisations are OR-ed, SIR dilates the combined mask, and the result flags every
//! polarisation of the sample. Existing flags (missing data, dead antennas) are respected and never
//! cleared; a baseline already fully flagged is skipped.
//!
//! The stage needs all integrations of a baseline at once, so it takes the regular blocks of a
//! time range (as validation returns them); on the bus this is a windowed consumer.

pub mod alerts;
mod combined;
pub mod sumthreshold;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{NgvlaError, Result};
use crate::model::VisBlock;
use sumthreshold::Plane;

/// Flagger settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfiConfig {
    /// χ₁ in units of the residual σ at the final sensitivity: 8 on the combined plane (the
    /// default), 6 per product (AOFlagger's; [`RfiConfig::each`]). Summing four products makes
    /// a plane about twice as sensitive to power common to them; at 6 the combined plane flags
    /// the EVLA file's first integration (~20 % noisier on most baselines) for 1.7 % more
    /// flags, at 8 it adds 0.4 % (592 → 1 352 new flags) and the simulator's scores stay ≥ 0.95
    /// (`tests/simulator.rs`).
    pub base_threshold: f64,
    /// Threshold decrease per doubling of the window (AOFlagger: 1.5).
    pub rho: f64,
    /// Sensitivity multipliers, one per iteration, last one usually 1.
    pub sensitivities: [f64; 3],
    /// Iterations after those, at the last sensitivity, each with the background refitted
    /// without what the one before found.
    #[serde(default = "default_refits")]
    pub refits: usize,
    /// Longest window along time.
    pub max_window_time: usize,
    /// Longest window along frequency.
    pub max_window_freq: usize,
    /// Gaussian σ of the background filter along time, samples.
    pub smooth_time: f64,
    /// Gaussian σ of the background filter along frequency, channels.
    pub smooth_freq: f64,
    /// SIR η along time. AOFlagger's LOFAR default is 0.2; we default to 0.1 because on the
    /// simulator (recall 1.0 either way) 0.2 dilates sharp-edged events enough to drop precision
    /// to 0.84, 0.1 keeps it at 0.91, and the real EVLA file's flag fractions do not move.
    pub eta_time: f64,
    /// SIR η along frequency.
    pub eta_freq: f64,
    /// Also flag runs of residuals below `−χ` (AOFlagger does). Off by default: RFI adds power,
    /// and such dips are mostly where RFI next to them pulled the background up. On the
    /// simulator, off takes precision from 0.91 to 0.99 on planes of 32 channels × 8
    /// integrations and from 0.71 to 0.99 on 16 × 4, recall unchanged (64 × 8: 0.98 → 0.97);
    /// the EVLA file's flag fractions do not move.
    #[serde(default)]
    pub flag_dips: bool,
    /// How each plane's noise σ is estimated.
    #[serde(default)]
    pub noise: NoiseEstimate,
    /// One plane per baseline for all polarisation products, or one per product.
    #[serde(default)]
    pub polarisations: Polarisations,
}

/// Which planes the flagger runs on. Spelled `combined` and `each` on the command line and in
/// JSON alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Polarisations {
    /// One plane per baseline of `Σ_p |V_p|` over the products, in `f32`, with a box-filter
    /// background and σ by bisection ([`combined`]): about 14 × faster than [`Polarisations::Each`].
    /// The simulator's RFI is scored with it as with the other (`tests/simulator.rs`).
    #[default]
    Combined,
    /// One plane per product, in `f64`, with a masked Gaussian background and exact MADs; the
    /// flags of the products are OR-ed (the flagger as first built).
    Each,
}

impl std::str::FromStr for Polarisations {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "combined" => Ok(Polarisations::Combined),
            "each" => Ok(Polarisations::Each),
            other => Err(format!("unknown polarisation mode {other:?}: expected combined or each")),
        }
    }
}

/// How the flagger estimates a plane's noise σ, which scales its thresholds.
/// Spelled `differences` and `residual` on the command line and in JSON alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseEstimate {
    /// `1.4826 × MAD / √2` of the residual's differences between neighbouring channels (both
    /// unflagged): broadband RFI is the same in neighbouring channels and cancels, narrowband
    /// RFI touches few differences. On a plane of 4 integrations where a burst covers 2 of them,
    /// the background along time is the burst's half, the residual is ±half the burst and its
    /// MAD is that half: thresholds scaled by it let the burst through. With this estimate the
    /// simulator's 214 antennas × 16 channels × 4 integrations go from recall 0.365 to 0.993
    /// (precision 0.998 → 0.996); planes of 8 or more integrations move by less than 0.01. A
    /// plane of one channel falls back to [`NoiseEstimate::Residual`].
    #[default]
    #[serde(rename = "differences")]
    ChannelDifferences,
    /// `1.4826 × MAD` of the residual itself (the flagger's first estimate; AOFlagger uses a
    /// winsorised standard deviation of the residual, which fails the same way on short planes).
    Residual,
}

impl std::str::FromStr for NoiseEstimate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "differences" => Ok(NoiseEstimate::ChannelDifferences),
            "residual" => Ok(NoiseEstimate::Residual),
            other => Err(format!("unknown noise estimate {other:?}: expected differences or residual")),
        }
    }
}

impl Default for RfiConfig {
    fn default() -> Self {
        RfiConfig {
            base_threshold: 8.0,
            rho: 1.5,
            sensitivities: [4.0, 2.0, 1.0],
            refits: default_refits(),
            max_window_time: 32,
            max_window_freq: 64,
            smooth_time: 2.0,
            smooth_freq: 4.0,
            eta_time: 0.1,
            eta_freq: 0.1,
            flag_dips: false,
            noise: NoiseEstimate::default(),
            polarisations: Polarisations::default(),
        }
    }
}

fn default_refits() -> usize {
    0
}

impl RfiConfig {
    /// The defaults, flagging each polarisation product on its own plane at AOFlagger's
    /// threshold of 6 σ (the flagger as first built).
    pub fn each() -> RfiConfig {
        RfiConfig { base_threshold: 6.0, polarisations: Polarisations::Each, ..RfiConfig::default() }
    }

    /// SumThreshold's rule with windows up to `max_window`.
    pub fn rule(&self, max_window: usize) -> sumthreshold::Rule {
        sumthreshold::Rule { rho: self.rho, max_window, dips: self.flag_dips }
    }

    /// The sensitivity of each iteration: [`RfiConfig::sensitivities`], then
    /// [`RfiConfig::refits`] more of the last.
    pub fn schedule(&self) -> impl Iterator<Item = f64> + '_ {
        let [.., last] = self.sensitivities;
        self.sensitivities.iter().copied().chain(std::iter::repeat_n(last, self.refits))
    }
}

/// What the flagger did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RfiReport {
    /// Samples seen.
    pub samples: usize,
    /// Samples flagged on entry.
    pub flagged_before: usize,
    /// Samples newly flagged by SumThreshold + SIR.
    pub flagged_new: usize,
    /// Baselines processed (not fully flagged on entry).
    pub baselines_processed: usize,
}

/// Samples per polarisation in one stack of baselines (rows × channels × baselines): a stack's
/// dozen buffers stay within a few MB (see [`Workspace`]).
const STACK_SAMPLES: usize = 32 * 1024;

/// [`STACK_SAMPLES`] for the combined flagger: its `f32` buffers are a quarter of the size, and
/// a smaller stack keeps the dozen of them in L2 (8 Ki measured ~8 % faster than 32 Ki on the
/// 214-antenna bench input; 4 Ki and 16 Ki no better).
const COMBINED_STACK_SAMPLES: usize = 8 * 1024;

/// Flags RFI in place over regular blocks; blocks of each spectral window must share one
/// baseline list (validation guarantees it).
///
/// Baselines are flagged in stacks: the planes of up to `STACK_SAMPLES / (rows × channels)`
/// baselines side by side, `[time][channel][baseline]`, so every step (filter taps, window
/// sums, thresholds) runs over all of them at once. Each baseline still gets its own σ and
/// thresholds and the same arithmetic in the same order as alone: the flags are those of one
/// baseline at a time (tests check it bit for bit, for [`Polarisations::Each`] against
/// [`flag_plane`]).
pub fn flag(blocks: &mut [VisBlock], cfg: &RfiConfig) -> Result<RfiReport> {
    match cfg.polarisations {
        Polarisations::Combined => Ok(combined::flag(blocks, cfg, COMBINED_STACK_SAMPLES, combined::GROUP)?.0),
        Polarisations::Each => flag_in_stacks(blocks, cfg, STACK_SAMPLES),
    }
}

/// [`flag`], then [`alerts::block_alerts`] for every block in order: the same alerts, which
/// the combined flagger raises from the amplitudes of its own pass over the data instead of
/// reading the blocks again (a test checks they are equal).
pub fn flag_and_alert(
    blocks: &mut [VisBlock],
    cfg: &RfiConfig,
    threshold: f64,
    storm_fraction: f64,
) -> Result<(RfiReport, Vec<alerts::Alert>)> {
    let report = match cfg.polarisations {
        Polarisations::Combined => {
            let (report, sums) = combined::flag(blocks, cfg, COMBINED_STACK_SAMPLES, combined::GROUP)?;
            let alerts = blocks
                .iter()
                .zip(&sums)
                .flat_map(|(b, s)| {
                    let frac = if b.flags.is_empty() { 0.0 } else { s.flagged as f64 / b.flags.len() as f64 };
                    alerts::alerts_from_sums(b, &s.baselines, frac, threshold, storm_fraction)
                })
                .collect();
            return Ok((report, alerts));
        }
        Polarisations::Each => flag_in_stacks(blocks, cfg, STACK_SAMPLES)?,
    };
    Ok((report, alerts::all(blocks, threshold, storm_fraction)))
}

/// How [`flag`] lays blocks out as time × frequency planes: per spectral window (in id order),
/// the indices of its blocks in integration order, one plane row each.
pub fn planes(blocks: &[VisBlock]) -> Vec<Vec<usize>> {
    let mut by_spw: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, b) in blocks.iter().enumerate() {
        by_spw.entry(b.spw).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = by_spw.into_values().collect();
    for idx in &mut out {
        idx.sort_by_key(|&i| blocks[i].integration);
    }
    out
}

/// [`planes`], after checking every block's shape and that the blocks of each spectral window
/// share one baseline list.
fn checked_planes(blocks: &[VisBlock]) -> Result<Vec<Vec<usize>>> {
    for b in blocks.iter() {
        b.check_shape()?;
    }
    let planes = planes(blocks);
    for idx in &planes {
        let first = &blocks[idx[0]];
        if idx
            .iter()
            .any(|&i| blocks[i].baselines != first.baselines || blocks[i].per_baseline() != first.per_baseline())
        {
            return Err(NgvlaError::Shape(
                "blocks of one spectral window differ in baselines; regularise first".into(),
            ));
        }
    }
    Ok(planes)
}

/// [`flag`] with stacks of at most `stack_samples` samples per polarisation (at least one
/// baseline each).
fn flag_in_stacks(blocks: &mut [VisBlock], cfg: &RfiConfig, stack_samples: usize) -> Result<RfiReport> {
    let mut report = RfiReport::default();
    let mut ws = Workspace::new(cfg);
    for idx in checked_planes(blocks)? {
        let first = &blocks[idx[0]];
        let (rows, cols, npol, nbl) = (idx.len(), first.n_chan, first.pols.len(), first.baselines.len());
        let per = cols * npol;
        let width = (stack_samples / (rows * cols).max(1)).clamp(1, nbl.max(1));
        for b0 in (0..nbl).step_by(width) {
            let lanes = width.min(nbl - b0);
            let n = rows * cols * lanes;
            // Entry mask: a sample with every polarisation flagged.
            let mask = &mut ws.mask;
            mask.clear();
            mask.resize(n, false);
            for (r, &k) in idx.iter().enumerate() {
                let flags = &blocks[k].flags[b0 * per..(b0 + lanes) * per];
                for c in 0..cols {
                    let out = &mut mask[(r * cols + c) * lanes..(r * cols + c + 1) * lanes];
                    for (l, m) in out.iter_mut().enumerate() {
                        *m = flags[l * per + c * npol..l * per + (c + 1) * npol].iter().all(|&f| f);
                    }
                }
            }
            ws.active.clear();
            ws.active.resize(lanes, false);
            for (i, &m) in mask.iter().enumerate() {
                ws.active[i % lanes] |= !m;
            }
            report.samples += n * npol;
            report.flagged_before += mask.iter().filter(|&&f| f).count() * npol;
            report.baselines_processed += ws.active.iter().filter(|&&a| a).count();
            ws.combined.clear();
            ws.combined.extend_from_slice(&ws.mask);
            for p in 0..npol {
                ws.amp.clear();
                ws.amp.resize(n, 0.0);
                ws.pmask.clear();
                ws.pmask.resize(n, false);
                for (r, &k) in idx.iter().enumerate() {
                    let b = &blocks[k];
                    let (vis, flags) = (&b.vis[b0 * per..(b0 + lanes) * per], &b.flags[b0 * per..(b0 + lanes) * per]);
                    for c in 0..cols {
                        let at = (r * cols + c) * lanes;
                        let (a, m) = (&mut ws.amp[at..at + lanes], &mut ws.pmask[at..at + lanes]);
                        for l in 0..lanes {
                            let i = l * per + c * npol + p;
                            a[l] = vis[i].norm() as f64;
                            m[l] = flags[i];
                        }
                    }
                }
                let (amp, mut pmask) = (std::mem::take(&mut ws.amp), std::mem::take(&mut ws.pmask));
                flag_stack(&amp, &mut pmask, rows, cols, cfg, &mut ws);
                for (m, f) in ws.combined.iter_mut().zip(&pmask) {
                    *m |= *f;
                }
                (ws.amp, ws.pmask) = (amp, pmask);
            }
            // SIR per baseline, on its own plane.
            let plane = &mut ws.plane_mask;
            for l in (0..lanes).filter(|&l| ws.active[l]) {
                plane.clear();
                plane.extend(ws.combined[l..].iter().step_by(lanes).take(rows * cols));
                sumthreshold::sir_plane(plane, rows, cols, cfg.eta_time, cfg.eta_freq);
                for (r, &k) in idx.iter().enumerate() {
                    let row = &mut blocks[k].flags[(b0 + l) * per..(b0 + l + 1) * per];
                    for c in 0..cols {
                        if plane[r * cols + c] {
                            for f in &mut row[c * npol..(c + 1) * npol] {
                                report.flagged_new += usize::from(!*f);
                                *f = true;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Buffers and filter kernels reused from one stack to the next (each at most
/// `STACK_SAMPLES` long, or one plane when a single baseline's plane is larger).
#[derive(Debug)]
struct Workspace {
    kernel_time: Vec<f64>,
    kernel_freq: Vec<f64>,
    mask: Vec<bool>,
    combined: Vec<bool>,
    pmask: Vec<bool>,
    plane_mask: Vec<bool>,
    amp: Vec<f64>,
    active: Vec<bool>,
    done: Vec<bool>,
    changed: Vec<bool>,
    chi: Vec<f64>,
    entry: Vec<bool>,
    current: Vec<bool>,
    background: Vec<f64>,
    resid: Vec<f64>,
    free: Vec<f64>,
    masked: Vec<f64>,
    weight: Vec<f64>,
    num: Vec<f64>,
    den: Vec<f64>,
    sum_threshold: sumthreshold::Scratch,
}

impl Workspace {
    /// A workspace for planes flagged with `cfg`.
    fn new(cfg: &RfiConfig) -> Workspace {
        let kernel = |s: f64| -> Vec<f64> {
            let half = (3.0 * s).ceil().max(1.0) as i64;
            (-half..=half).map(|k| (-(k as f64).powi(2) / (2.0 * s * s)).exp()).collect()
        };
        Workspace {
            kernel_time: kernel(cfg.smooth_time),
            kernel_freq: kernel(cfg.smooth_freq),
            mask: Vec::new(),
            combined: Vec::new(),
            pmask: Vec::new(),
            plane_mask: Vec::new(),
            amp: Vec::new(),
            active: Vec::new(),
            done: Vec::new(),
            changed: Vec::new(),
            chi: Vec::new(),
            entry: Vec::new(),
            current: Vec::new(),
            background: Vec::new(),
            resid: Vec::new(),
            free: Vec::new(),
            masked: Vec::new(),
            weight: Vec::new(),
            num: Vec::new(),
            den: Vec::new(),
            sum_threshold: sumthreshold::Scratch::default(),
        }
    }
}

/// The iterated SumThreshold on one amplitude plane; `mask` is updated in place.
///
/// Each iteration starts again from the entry mask: the previous iteration's RFI flags only keep
/// RFI out of the background fit. Accumulating flags instead would keep the false detections of
/// the first, RFI-dragged background (negative residuals next to a strong burst) for good.
pub fn flag_plane(amp: &Plane, mask: &mut [bool], cfg: &RfiConfig) {
    let mut ws = Workspace::new(cfg);
    ws.active = vec![true];
    flag_stack(&amp.data, mask, amp.rows, amp.cols, cfg, &mut ws);
}

/// [`flag_plane`] for a stack of `ws.active.len()` planes side by side (`[row][col][lane]`);
/// an inactive lane keeps its mask.
///
/// On an x86-64 CPU with AVX2 and FMA it runs a build of [`flag_stack_portable`] compiled for
/// them (four f64 per instruction instead of SSE2's two): 37–39 → 51–54 MB/s on the
/// 214-antenna simulation. Rust never fuses a multiply and an add on its own, so both builds
/// give the same flags (a test compares them). This is the workspace's one `unsafe` block (see
/// ARCHITECTURE.md, "Unsafe code").
fn flag_stack(amp: &[f64], mask: &mut [bool], rows: usize, cols: usize, cfg: &RfiConfig, ws: &mut Workspace) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: `flag_stack_avx2` needs only the CPU features checked just above.
        #[allow(unsafe_code)]
        return unsafe { flag_stack_avx2(amp, mask, rows, cols, cfg, ws) };
    }
    flag_stack_portable(amp, mask, rows, cols, cfg, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn flag_stack_avx2(amp: &[f64], mask: &mut [bool], rows: usize, cols: usize, cfg: &RfiConfig, ws: &mut Workspace) {
    flag_stack_portable(amp, mask, rows, cols, cfg, ws)
}

/// [`flag_stack`]'s body, inlined into both builds.
#[inline(always)]
fn flag_stack_portable(amp: &[f64], mask: &mut [bool], rows: usize, cols: usize, cfg: &RfiConfig, ws: &mut Workspace) {
    let lanes = ws.active.len();
    ws.entry.clear();
    ws.entry.extend_from_slice(mask);
    ws.current.clear();
    ws.current.extend_from_slice(mask);
    ws.done.clear();
    ws.done.extend(ws.active.iter().map(|a| !a));
    let mut previous = None;
    for s in cfg.schedule() {
        // A plane whose last iteration left its mask as it was is at a fixed point for another
        // iteration at the same sensitivity (same mask, same background, same σ, same flags):
        // the refits stop there.
        if previous == Some(s) {
            for (d, &c) in ws.done.iter_mut().zip(&ws.changed) {
                *d |= !c;
            }
        }
        previous = Some(s);
        if ws.done.iter().all(|&d| d) {
            break;
        }
        smooth(amp, rows, cols, lanes, ws);
        ws.resid.clear();
        ws.resid.extend(amp.iter().zip(&ws.background).map(|(a, b)| a - b));
        // Each plane's σ from its unflagged residuals ([`NoiseEstimate`]); a plane without
        // enough of them, or without spread, is done (and keeps its mask).
        ws.chi.clear();
        let differences = cfg.noise == NoiseEstimate::ChannelDifferences && cols > 1;
        for l in 0..lanes {
            let mut chi = f64::INFINITY;
            if !ws.done[l] {
                ws.free.clear();
                if differences {
                    for row in 0..rows {
                        for i in (row * cols..(row + 1) * cols - 1).map(|i| i * lanes + l) {
                            if !ws.current[i] && !ws.current[i + lanes] {
                                ws.free.push(ws.resid[i + lanes] - ws.resid[i]);
                            }
                        }
                    }
                } else {
                    let own = ws.resid[l..].iter().step_by(lanes).zip(ws.current[l..].iter().step_by(lanes));
                    ws.free.extend(own.filter(|(_, &m)| !m).map(|(v, _)| *v));
                }
                let sigma = match ws.free.len() {
                    0..4 => 0.0,
                    _ if differences => mad_sigma(&mut ws.free) * std::f64::consts::FRAC_1_SQRT_2,
                    _ => mad_sigma(&mut ws.free),
                };
                if sigma <= 0.0 {
                    ws.done[l] = true;
                } else {
                    chi = cfg.base_threshold * sigma * s;
                }
            }
            ws.chi.push(chi);
        }
        mask.copy_from_slice(&ws.entry);
        let st = &mut ws.sum_threshold;
        sumthreshold::sum_threshold_lanes(&ws.resid, mask, rows, &ws.chi, cfg.rule(cfg.max_window_time), st);
        let (line, along_freq) = (cols * lanes, cfg.rule(cfg.max_window_freq));
        for r in 0..rows {
            let (v, f) = (&ws.resid[r * line..(r + 1) * line], &mut mask[r * line..(r + 1) * line]);
            sumthreshold::sum_threshold_lanes(v, f, cols, &ws.chi, along_freq, st);
        }
        ws.changed.clear();
        ws.changed.resize(lanes, false);
        for (crow, mrow) in ws.current.chunks_mut(lanes).zip(mask.chunks(lanes)) {
            for (l, (c, &m)) in crow.iter_mut().zip(mrow).enumerate() {
                if !ws.done[l] {
                    ws.changed[l] |= *c != m;
                    *c = m;
                }
            }
        }
    }
    mask.copy_from_slice(&ws.current);
}

/// `1.4826 × MAD`; `v` is reused for the deviations.
#[inline(always)]
fn mad_sigma(v: &mut [f64]) -> f64 {
    let Some(med) = crate::validate::timegrid::median(v) else { return 0.0 };
    for x in v.iter_mut() {
        *x = (*x - med).abs();
    }
    1.4826 * crate::validate::timegrid::median(v).unwrap_or(0.0)
}

/// Masked separable Gaussian filter of a stack of planes into `ws.background`: the smooth
/// background of each plane, ignoring its flagged samples (`ws.current`).
///
/// Each pass adds one kernel tap to a whole row of the stack at a time (so it vectorises); per
/// sample the taps are still added in the kernel's order, and a flagged sample adds exactly
/// zero, so the result is the same as the sample-by-sample sum over unflagged neighbours.
#[inline(always)]
fn smooth(p: &[f64], rows: usize, cols: usize, lanes: usize, ws: &mut Workspace) {
    let n = p.len();
    let line = cols * lanes;
    ws.masked.clear();
    ws.masked.extend(p.iter().zip(&ws.current).map(|(v, &m)| if m { 0.0 } else { *v }));
    ws.weight.clear();
    ws.weight.extend(ws.current.iter().map(|&m| if m { 0.0 } else { 1.0 }));
    // Pass 1 along frequency: weighted sums and weights.
    ws.num.clear();
    ws.num.resize(n, 0.0);
    ws.den.clear();
    ws.den.resize(n, 0.0);
    let hf = ws.kernel_freq.len() / 2;
    for r in 0..rows {
        let (v, w) = (&ws.masked[r * line..(r + 1) * line], &ws.weight[r * line..(r + 1) * line]);
        let (num, den) = (&mut ws.num[r * line..(r + 1) * line], &mut ws.den[r * line..(r + 1) * line]);
        for (k, &kv) in ws.kernel_freq.iter().enumerate() {
            // Output channel c reads channel c + k − hf: c from lo to hi keeps that inside the plane.
            let lo = hf.saturating_sub(k);
            let hi = (cols + hf).saturating_sub(k).min(cols);
            if lo >= hi {
                continue;
            }
            let (out, src) = (lo * lanes..hi * lanes, (lo + k - hf) * lanes..(hi + k - hf) * lanes);
            add_tap(kv, &mut num[out.clone()], &mut den[out], &v[src.clone()], &w[src]);
        }
    }
    // Pass 2 along time on both, then divide.
    ws.background.clear();
    ws.background.resize(n, 0.0);
    ws.masked.clear();
    ws.masked.resize(line, 0.0);
    ws.weight.clear();
    ws.weight.resize(line, 0.0);
    let ht = ws.kernel_time.len() / 2;
    for r in 0..rows {
        let (s, w) = (&mut ws.masked[..], &mut ws.weight[..]);
        s.fill(0.0);
        w.fill(0.0);
        for (k, &kv) in ws.kernel_time.iter().enumerate() {
            let Some(rr) = (r + k).checked_sub(ht).filter(|&rr| rr < rows) else { continue };
            add_tap(kv, s, w, &ws.num[rr * line..(rr + 1) * line], &ws.den[rr * line..(rr + 1) * line]);
        }
        for ((o, s), w) in ws.background[r * line..(r + 1) * line].iter_mut().zip(&*s).zip(&*w) {
            *o = if *w > 0.0 { s / w } else { 0.0 };
        }
    }
}

/// One filter tap on a row of weighted sums and its row of weights: `num += kv·x`, `den += kv·y`.
#[inline(always)]
fn add_tap(kv: f64, num: &mut [f64], den: &mut [f64], x: &[f64], y: &[f64]) {
    for ((o, d), (x, y)) in num.iter_mut().zip(den.iter_mut()).zip(x.iter().zip(y)) {
        *o += kv * x;
        *d += kv * y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The filter's definition, sample by sample.
    fn reference_smooth(p: &Plane, mask: &[bool], kt: &[f64], kf: &[f64]) -> Vec<f64> {
        let (ht, hf) = ((kt.len() / 2) as i64, (kf.len() / 2) as i64);
        let (rows, cols) = (p.rows as i64, p.cols as i64);
        let (mut num, mut den) = (vec![0.0; p.data.len()], vec![0.0; p.data.len()]);
        for r in 0..rows {
            for c in 0..cols {
                let (mut s, mut w) = (0.0, 0.0);
                for (k, kv) in kf.iter().enumerate() {
                    let cc = c + k as i64 - hf;
                    if (0..cols).contains(&cc) && !mask[(r * cols + cc) as usize] {
                        s += kv * p.data[(r * cols + cc) as usize];
                        w += kv;
                    }
                }
                num[(r * cols + c) as usize] = s;
                den[(r * cols + c) as usize] = w;
            }
        }
        let mut out = vec![0.0; p.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                let (mut s, mut w) = (0.0, 0.0);
                for (k, kv) in kt.iter().enumerate() {
                    let rr = r + k as i64 - ht;
                    if (0..rows).contains(&rr) {
                        s += kv * num[(rr * cols + c) as usize];
                        w += kv * den[(rr * cols + c) as usize];
                    }
                }
                out[(r * cols + c) as usize] = if w > 0.0 { s / w } else { 0.0 };
            }
        }
        out
    }

    /// The flagger's definition, plane by plane: [`flag_plane`] as first written.
    fn reference_flag_plane(amp: &Plane, mask: &mut [bool], cfg: &RfiConfig, kt: &[f64], kf: &[f64]) {
        let entry = mask.to_vec();
        let mut current = entry.clone();
        for s in cfg.schedule() {
            let background = reference_smooth(amp, &current, kt, kf);
            let data: Vec<f64> = amp.data.iter().zip(&background).map(|(a, b)| a - b).collect();
            let resid = Plane { rows: amp.rows, cols: amp.cols, data };
            let differences = cfg.noise == NoiseEstimate::ChannelDifferences && amp.cols > 1;
            let mut free: Vec<f64> = if differences {
                let (r, c) = (&resid.data, &current);
                (0..r.len() - 1)
                    .filter(|i| (i + 1) % amp.cols != 0 && !c[*i] && !c[i + 1])
                    .map(|i| r[i + 1] - r[i])
                    .collect()
            } else {
                resid.data.iter().zip(&current).filter(|(_, &m)| !m).map(|(v, _)| *v).collect()
            };
            if free.len() < 4 {
                break;
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                let n = v.len();
                if n % 2 == 1 {
                    v[n / 2]
                } else {
                    0.5 * (v[n / 2 - 1] + v[n / 2])
                }
            };
            let med = median(&mut free);
            let mut dev: Vec<f64> = free.iter().map(|x| (x - med).abs()).collect();
            let mut sigma = 1.4826 * median(&mut dev);
            if differences {
                sigma *= std::f64::consts::FRAC_1_SQRT_2;
            }
            if sigma <= 0.0 {
                break;
            }
            let chi1 = cfg.base_threshold * sigma * s;
            let mut next = entry.clone();
            sumthreshold::tests::reference(&resid, &mut next, chi1, cfg.rule(cfg.max_window_time), true);
            sumthreshold::tests::reference(&resid, &mut next, chi1, cfg.rule(cfg.max_window_freq), false);
            current = next;
        }
        mask.copy_from_slice(&current);
    }

    /// [`flag`] as first written: one baseline and polarisation at a time.
    fn reference_flag(blocks: &mut [VisBlock], cfg: &RfiConfig) -> RfiReport {
        let ws = Workspace::new(cfg);
        let mut report = RfiReport::default();
        let mut idx: Vec<usize> = (0..blocks.len()).collect();
        idx.sort_by_key(|&i| blocks[i].integration);
        let first = &blocks[idx[0]];
        let (rows, cols, npol) = (idx.len(), first.n_chan, first.pols.len());
        for bi in 0..first.baselines.len() {
            let mut mask = vec![false; rows * cols];
            let mut any_free = false;
            for (r, &k) in idx.iter().enumerate() {
                let b = &blocks[k];
                for c in 0..cols {
                    let all = (0..npol).all(|p| b.flags[b.idx(bi, c, p)]);
                    mask[r * cols + c] = all;
                    any_free |= !all;
                }
            }
            report.samples += rows * cols * npol;
            report.flagged_before += mask.iter().filter(|&&f| f).count() * npol;
            if !any_free {
                continue;
            }
            report.baselines_processed += 1;
            let mut combined = mask.clone();
            for p in 0..npol {
                let mut amp = Plane::new(rows, cols);
                let mut pmask = vec![false; rows * cols];
                for (r, &k) in idx.iter().enumerate() {
                    let b = &blocks[k];
                    for c in 0..cols {
                        let i = b.idx(bi, c, p);
                        amp.data[r * cols + c] = b.vis[i].norm() as f64;
                        pmask[r * cols + c] = b.flags[i];
                    }
                }
                reference_flag_plane(&amp, &mut pmask, cfg, &ws.kernel_time, &ws.kernel_freq);
                for (m, f) in combined.iter_mut().zip(&pmask) {
                    *m |= *f;
                }
            }
            sumthreshold::sir_plane(&mut combined, rows, cols, cfg.eta_time, cfg.eta_freq);
            for (r, &k) in idx.iter().enumerate() {
                let b = &mut blocks[k];
                for c in 0..cols {
                    if combined[r * cols + c] {
                        for p in 0..npol {
                            let i = b.idx(bi, c, p);
                            if !b.flags[i] {
                                b.flags[i] = true;
                                report.flagged_new += 1;
                            }
                        }
                    }
                }
            }
        }
        report
    }

    /// The simulator's blocks of `n_ant` antennas, `n_chan` × `n_int`, with flags already
    /// there: scattered samples, one baseline entirely, one channel.
    pub(super) fn simulated_with_flags(
        n_ant: usize,
        n_chan: usize,
        n_int: usize,
        rng: &mut rand::rngs::StdRng,
    ) -> Vec<VisBlock> {
        use crate::sim::{SimConfig, Simulator};
        let sim = Simulator::new(SimConfig { n_ant, n_chan, n_int, seed: n_ant as u64, ..Default::default() });
        let mut blocks: Vec<VisBlock> = (0..n_int).map(|k| sim.block(k).0).collect();
        for b in &mut blocks {
            b.flags.iter_mut().for_each(|f| *f |= rng.gen_bool(0.03));
            let s = b.per_baseline();
            b.flags[2 * s..3 * s].iter_mut().for_each(|f| *f = true);
            for bl in 0..b.baselines.len() {
                let i = b.idx(bl, 1, 0);
                b.flags[i..i + b.pols.len()].iter_mut().for_each(|f| *f = true);
            }
        }
        blocks
    }

    #[test]
    fn stacks_of_baselines_flag_exactly_what_one_baseline_at_a_time_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for (n_ant, n_chan, n_int) in [(12, 16, 6), (7, 40, 3), (5, 3, 20)] {
            let blocks = simulated_with_flags(n_ant, n_chan, n_int, &mut rng);
            let cfg = RfiConfig::each();
            let mut want = blocks.clone();
            let want_report = reference_flag(&mut want, &cfg);
            assert!(want_report.flagged_new > 0, "the simulated RFI is flagged");
            let plane = n_chan * n_int;
            for stack in [1, plane * 5, STACK_SAMPLES] {
                let mut got = blocks.clone();
                let report = flag_in_stacks(&mut got, &cfg, stack).unwrap();
                assert_eq!(report, want_report, "{n_ant} antennas, stacks of {stack}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(g.flags == w.flags, "{n_ant} antennas, stacks of {stack}: flags differ");
                }
            }
        }
    }

    #[test]
    fn flag_and_alert_raises_what_block_alerts_raises_after_flag() {
        use crate::sim::{SimConfig, Simulator};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for (n_ant, n_chan, n_int) in [(12, 16, 6), (30, 8, 4)] {
            let sim = Simulator::new(SimConfig { n_ant, n_chan, n_int, seed: 5, ..Default::default() });
            let mut blocks: Vec<VisBlock> = (0..n_int).map(|k| sim.block(k).0).collect();
            for b in &mut blocks {
                b.flags.iter_mut().for_each(|f| *f |= rng.gen_bool(0.02));
                // A hot baseline, and one with its cross hands flagged.
                let s = b.per_baseline();
                b.vis[3 * s..4 * s].iter_mut().for_each(|v| *v *= 30.0);
                for c in 0..b.n_chan {
                    let (i, j) = (b.idx(5, c, 1), b.idx(5, c, 2));
                    (b.flags[i], b.flags[j]) = (true, true);
                }
            }
            for cfg in [RfiConfig::default(), RfiConfig::each()] {
                let mut want = blocks.clone();
                let want_report = flag(&mut want, &cfg).unwrap();
                let want_alerts = alerts::all(&want, 6.0, 0.5);
                let mut got = blocks.clone();
                let (report, got_alerts) = flag_and_alert(&mut got, &cfg, 6.0, 0.5).unwrap();
                assert_eq!(report, want_report);
                assert!(got.iter().zip(&want).all(|(g, w)| g.flags == w.flags));
                assert!(want_alerts.iter().any(|a| a.baseline == Some(blocks[0].baselines[3])), "{want_alerts:?}");
                assert_eq!(got_alerts, want_alerts, "{n_ant} antennas, {:?}", cfg.polarisations);
            }
        }
    }

    #[test]
    fn a_burst_over_half_of_a_short_plane_is_flagged_with_sigma_from_channel_differences() {
        // 4 integrations × 16 channels of noise (σ = 1) on a flat sky of 10, and a broadband
        // burst of 12 σ in integrations 1 and 2. Along time the background is the burst's half,
        // so the residual is ±6 everywhere and its MAD says σ ≈ 8.9: nothing is flagged. The
        // channel differences cancel the burst and say σ ≈ 1.
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let (rows, cols) = (4, 16);
        let mut amp = Plane::new(rows, cols);
        for (i, v) in amp.data.iter_mut().enumerate() {
            let burst = if (1..3).contains(&(i / cols)) { 12.0 } else { 0.0 };
            *v = 10.0 + burst + rng.gen_range(-1.7..1.7);
        }
        let burst_flagged = |noise| {
            let mut mask = vec![false; rows * cols];
            flag_plane(&amp, &mut mask, &RfiConfig { noise, ..RfiConfig::each() });
            let (burst, rest) = mask.split_at(cols).1.split_at(2 * cols);
            let quiet = mask[..cols].iter().chain(rest).filter(|&&f| f).count();
            (burst.iter().filter(|&&f| f).count(), quiet)
        };
        assert_eq!(burst_flagged(NoiseEstimate::ChannelDifferences), (2 * cols, 0));
        assert_eq!(burst_flagged(NoiseEstimate::Residual), (0, 0));
    }

    #[test]
    fn the_portable_build_flags_what_the_dispatched_one_does() {
        // On a CPU with AVX2 the dispatched build is the other one: both must agree.
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let cfg = RfiConfig::each();
        let (rows, cols, lanes) = (9, 33, 7);
        let amp: Vec<f64> = (0..rows * cols * lanes)
            .map(|_| rng.gen_range(0.0..1.0) + if rng.gen_bool(0.03) { rng.gen_range(3.0..20.0) } else { 0.0 })
            .collect();
        let mask: Vec<bool> = (0..amp.len()).map(|_| rng.gen_bool(0.05)).collect();
        let mut ws = Workspace::new(&cfg);
        ws.active = vec![true; lanes];
        let mut dispatched = mask.clone();
        flag_stack(&amp, &mut dispatched, rows, cols, &cfg, &mut ws);
        ws.active = vec![true; lanes];
        let mut portable = mask.clone();
        flag_stack_portable(&amp, &mut portable, rows, cols, &cfg, &mut ws);
        assert!(dispatched != mask, "something is flagged");
        assert!(dispatched == portable);
    }

    #[test]
    fn the_row_wise_filter_equals_its_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let cfg = RfiConfig::default();
        let mut ws = Workspace::new(&cfg);
        for _ in 0..100 {
            let (rows, cols, lanes) = (rng.gen_range(1..30), rng.gen_range(1..70), rng.gen_range(1..5));
            let planes: Vec<(Plane, Vec<bool>)> = (0..lanes)
                .map(|_| {
                    let mut p = Plane::new(rows, cols);
                    p.data.iter_mut().for_each(|v| *v = rng.gen_range(0.0..3.0));
                    (p, (0..rows * cols).map(|_| rng.gen_bool(0.2)).collect())
                })
                .collect();
            // Side by side: sample i of plane l at i * lanes + l.
            let stack: Vec<f64> = (0..rows * cols).flat_map(|i| planes.iter().map(move |(p, _)| p.data[i])).collect();
            ws.current = (0..rows * cols).flat_map(|i| planes.iter().map(move |(_, m)| m[i])).collect();
            smooth(&stack, rows, cols, lanes, &mut ws);
            for (l, (p, m)) in planes.iter().enumerate() {
                let got: Vec<f64> = ws.background[l..].iter().step_by(lanes).copied().collect();
                assert_eq!(got, reference_smooth(p, m, &ws.kernel_time, &ws.kernel_freq));
            }
        }
    }
}
