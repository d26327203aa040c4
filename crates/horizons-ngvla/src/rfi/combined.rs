//! The flagger on one polarisation-combined plane per baseline, in `f32`: the default
//! ([`super::Polarisations::Combined`]).
//!
//! Per baseline the plane holds `Σ_p |V_p|` over the polarisation products, so RFI in any product
//! raises it; a sample with any product flagged on entry is left out of every estimate. The steps
//! are those of the per-product flagger ([`super::flag_stack`]) with three cheaper parts:
//!
//! - **background:** a masked moving average (a box of `2·round(σ·√3) + 1` samples, the box with
//!   the Gaussian's σ) along frequency, then along time, by running sums: O(1) per sample
//!   instead of a 25 + 13 tap Gaussian;
//! - **σ:** `1.4826 × median |d| / √2` of the residual's channel differences `d` (both samples
//!   unflagged), the median found per plane by bisection on counts (12 halvings of
//!   `[0, 2·mean |d|]`, which holds the median by Markov's inequality), sixteen planes at a
//!   time with their counts in registers;
//! - **SumThreshold** runs each window length in one pass, sixteen planes at a time with their
//!   running sums in registers ([`window_pass`]); **SIR** runs over the stack's planes side by
//!   side.
//!
//! A stack's whole pass (gather, flagging, scatter) is built twice, plain and with AVX2 + FMA,
//! and the second is called where the CPU has them (the crate's second `unsafe` site; a test
//! compares the two). The pass also adds up what the anomaly alerts need (each baseline's
//! unflagged parallel-hand amplitudes, each block's flagged count), so
//! [`super::flag_and_alert`] does not read the blocks again.
//!
//! One plane per baseline instead of four, and `f32` instead of `f64`, are what make it about
//! fourteen times faster (README, "Benchmarks"); its flags are scored against the simulator's
//! injected RFI like the per-product flagger's (`tests/simulator.rs`).

use super::{NoiseEstimate, RfiConfig, RfiReport};
use crate::error::Result;
use crate::hint::{prefetch, AHEAD};
use crate::model::VisBlock;
use num_complex::Complex32;

/// Runs `$body` over lanes `0 .. $n` in groups: `$g` the first lane, `$w` (a constant) the
/// group's width, [`GROUP`] wide, then 8, 4 and 1 for what is left.
macro_rules! in_groups {
    ($n:expr, |$g:ident, $w:ident| $body:expr) => {{
        let n = $n;
        let mut $g = 0usize;
        while $g + GROUP <= n {
            const $w: usize = GROUP;
            $body;
            $g += GROUP;
        }
        if $g + 8 <= n {
            const $w: usize = 8;
            $body;
            $g += 8;
        }
        if $g + 4 <= n {
            const $w: usize = 4;
            $body;
            $g += 4;
        }
        while $g < n {
            const $w: usize = 1;
            $body;
            $g += 1;
        }
    }};
}

/// Planes of a stack, side by side: `[row][col][lane]`, one lane per baseline.
#[derive(Debug, Default)]
pub(super) struct Stack {
    rows: usize,
    cols: usize,
    lanes: usize,
    /// `Σ_p |V_p|` per sample.
    amp: Vec<f32>,
    /// 1 where any product was flagged on entry.
    entry: Vec<f32>,
    /// Which products are parallel hands.
    parallel: Vec<bool>,
    /// `Σ |V_p|` over the parallel hands, per sample (for [`super::alerts`]).
    par: Vec<f32>,
    /// The mask the current iteration's estimates leave out (entry + last iteration's flags).
    current: Vec<f32>,
    /// The iteration's SumThreshold flags.
    mask: Vec<f32>,
    num: Vec<f32>,
    den: Vec<f32>,
    resid: Vec<f32>,
    diff: Vec<f32>,
    active: Vec<bool>,
    /// Lanes with a sample whose products are only partly flagged on entry.
    partial: Vec<bool>,
    /// 1 for lanes whose flags are final (0.0 / 1.0, so the mask update vectorises).
    done: Vec<f32>,
    /// 1 for lanes whose mask the last iteration changed.
    changed: Vec<f32>,
    chi: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    count: Vec<f32>,
    valid: Vec<f32>,
    scratch: Scratch,
}

/// Buffers of the gather (amplitudes, a tile), the background (two rows of box sums),
/// SumThreshold (thresholds), SIR, and the scatter (alert sums, a row mask).
#[derive(Debug, Default)]
struct Scratch {
    amps: Vec<f32>,
    tile: Vec<f32>,
    chi: Vec<f32>,
    prefix: Vec<f32>,
    low: Vec<f32>,
    high: Vec<f32>,
    sir: Vec<f32>,
    box_a: Vec<f32>,
    box_b: Vec<f32>,
    mask: Vec<bool>,
}

/// What [`super::alerts`] needs of one block after flagging, from the flagger's own pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct AlertSums {
    /// Per baseline, `(Σ |V|, count)` over the parallel-hand samples left unflagged.
    pub baselines: Vec<(f32, f32)>,
    /// Flagged visibilities (every product of a sample is flagged or none is, after flagging).
    pub flagged: usize,
}

/// Flags RFI over regular blocks with one combined plane per baseline, in stacks of at most
/// `stack_samples` samples but at least `min_lanes` baselines ([`GROUP`] for speed, 1 in a
/// test). Same contract as [`super::flag`]; also returns, per block, what the alerts need
/// ([`AlertSums`]).
pub(super) fn flag(
    blocks: &mut [VisBlock],
    cfg: &RfiConfig,
    stack_samples: usize,
    min_lanes: usize,
) -> Result<(RfiReport, Vec<AlertSums>)> {
    let mut report = RfiReport::default();
    let mut st = Stack::default();
    let mut sums: Vec<AlertSums> =
        blocks.iter().map(|b| AlertSums { baselines: vec![(0.0, 0.0); b.baselines.len()], flagged: 0 }).collect();
    for idx in super::checked_planes(blocks)? {
        let first = &blocks[idx[0]];
        let (rows, cols, nbl) = (idx.len(), first.n_chan, first.baselines.len());
        st.parallel.clear();
        st.parallel.extend(first.pols.iter().map(|p| p.is_parallel_hand()));
        let width = (stack_samples / (rows * cols).max(1)).max(min_lanes).clamp(1, nbl.max(1));
        for b0 in (0..nbl).step_by(width) {
            let lanes = width.min(nbl - b0);
            st.reset(rows, cols, lanes);
            flag_stack(&mut st, blocks, &idx, b0, cfg, &mut report, &mut sums);
        }
    }
    Ok((report, sums))
}

/// Gathers baselines `b0 .. b0 + st.lanes` of the blocks `idx` into the stack, flags it and
/// scatters the flags back, adding to `sums`; with AVX2 + FMA where the CPU has them.
fn flag_stack(
    st: &mut Stack,
    blocks: &mut [VisBlock],
    idx: &[usize],
    b0: usize,
    cfg: &RfiConfig,
    report: &mut RfiReport,
    sums: &mut [AlertSums],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: `flag_stack_avx2` needs only the CPU features checked just above.
        #[allow(unsafe_code)]
        return unsafe { flag_stack_avx2(st, blocks, idx, b0, cfg, report, sums) };
    }
    flag_stack_portable(st, blocks, idx, b0, cfg, report, sums)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn flag_stack_avx2(
    st: &mut Stack,
    blocks: &mut [VisBlock],
    idx: &[usize],
    b0: usize,
    cfg: &RfiConfig,
    report: &mut RfiReport,
    sums: &mut [AlertSums],
) {
    flag_stack_portable(st, blocks, idx, b0, cfg, report, sums)
}

/// [`flag_stack`]'s body, inlined into both builds.
#[inline(always)]
fn flag_stack_portable(
    st: &mut Stack,
    blocks: &mut [VisBlock],
    idx: &[usize],
    b0: usize,
    cfg: &RfiConfig,
    report: &mut RfiReport,
    sums: &mut [AlertSums],
) {
    let npol = blocks[idx[0]].pols.len();
    match npol {
        4 => gather::<4>(st, blocks, idx, b0, report),
        2 => gather::<2>(st, blocks, idx, b0, report),
        1 => gather::<1>(st, blocks, idx, b0, report),
        _ => gather_any(st, blocks, idx, b0, npol, report),
    }
    let (rows, cols, lanes) = (st.rows, st.cols, st.lanes);
    report.samples += rows * cols * lanes * npol;
    report.baselines_processed += st.active.iter().filter(|&&a| a).count();
    run(st, cfg);
    scatter(st, blocks, idx, b0, report, sums);
}

/// Writes the stack's flags back into the blocks and adds its baselines to `sums`.
///
/// A sample's products are all flagged once `current` is 1 (it only ever adds to `entry`); in
/// lanes without a partly flagged sample on entry the entry-flagged samples already have every
/// product flagged, so each sample's products are OR-ed with `current`. Lanes with a sample
/// only partly flagged on entry (rare) are written one product at a time. Samples left
/// unflagged have `current` 0 (so no product was flagged on entry either): the alert sums add
/// their parallel-hand amplitudes, and every product of the others is flagged.
#[inline(always)]
fn scatter(
    st: &mut Stack,
    blocks: &mut [VisBlock],
    idx: &[usize],
    b0: usize,
    report: &mut RfiReport,
    sums: &mut [AlertSums],
) {
    let (cols, lanes) = (st.cols, st.lanes);
    let npol = st.parallel.len();
    let per = cols * npol;
    let k_parallel = st.parallel.iter().filter(|&&p| p).count() as f32;
    for (r, &k) in idx.iter().enumerate() {
        let line = r * cols * lanes..(r + 1) * cols * lanes;
        let (cur, ent, par) = (&st.current[line.clone()], &st.entry[line.clone()], &st.par[line]);
        let (s, n) = (&mut st.scratch.low, &mut st.scratch.high);
        s.clear();
        s.resize(lanes, 0.0);
        n.clear();
        n.resize(lanes, 0.0);
        let (mut flagged, mut new) = (0usize, 0usize);
        for ((cur, ent), par) in cur.chunks_exact(lanes).zip(ent.chunks_exact(lanes)).zip(par.chunks_exact(lanes)) {
            for (((s, n), (&cu, &e)), (&x, &p)) in
                s.iter_mut().zip(n.iter_mut()).zip(cur.iter().zip(ent)).zip(par.iter().zip(&st.partial))
            {
                *s += if cu == 0.0 { x } else { 0.0 };
                *n += if cu == 0.0 { k_parallel } else { 0.0 };
                flagged += usize::from(cu != 0.0);
                new += usize::from((cu != e) & !p);
            }
        }
        report.flagged_new += new * npol;
        let out = &mut sums[k];
        out.flagged += flagged * npol;
        for (out, (&s, &n)) in out.baselines[b0..b0 + lanes].iter_mut().zip(s.iter().zip(n.iter())) {
            *out = (s, n);
        }
        let flags = &mut blocks[k].flags[b0 * per..(b0 + lanes) * per];
        // The usual product counts as constants, so the per-sample loops unroll.
        let mask = &mut st.scratch.mask;
        match npol {
            4 => or_flags(flags, cur, &st.partial, 4, mask),
            2 => or_flags(flags, cur, &st.partial, 2, mask),
            1 => or_flags(flags, cur, &st.partial, 1, mask),
            _ => or_flags(flags, cur, &st.partial, npol, mask),
        }
        for (l, row) in flags.chunks_exact_mut(per).enumerate().filter(|&(l, _)| st.partial[l]) {
            for (c, f) in row.chunks_exact_mut(npol).enumerate() {
                if cur[c * lanes + l] != 0.0 {
                    report.flagged_new += f.iter().filter(|&&f| !f).count();
                    f.fill(true);
                }
            }
        }
    }
}

/// ORs each sample's `npol` products' flags with `cur` (`[col][lane]`), in the lanes that are
/// not `partial`; `mask` is scratch.
#[inline(always)]
fn or_flags(flags: &mut [bool], cur: &[f32], partial: &[bool], npol: usize, mask: &mut Vec<bool>) {
    let lanes = partial.len();
    let per = cur.len() / lanes * npol;
    mask.resize(per, false);
    for (l, row) in flags.chunks_exact_mut(per).enumerate().filter(|&(l, _)| !partial[l]) {
        // The lane's samples spread over their products, then one OR over the row.
        for (c, m) in mask.chunks_exact_mut(npol).enumerate() {
            m.fill(cur[c * lanes + l] != 0.0);
        }
        for (f, &m) in row.iter_mut().zip(mask.iter()) {
            *f |= m;
        }
    }
}

/// Fills `st.amp`, `st.entry`, `st.par` and the lane flags from blocks of `N` polarisation
/// products, in tiles of lanes ([`gather_tile`]).
#[inline(always)]
fn gather<const N: usize>(st: &mut Stack, blocks: &[VisBlock], idx: &[usize], b0: usize, report: &mut RfiReport) {
    let (cols, lanes) = (st.cols, st.lanes);
    let per = cols * N;
    // 1.0 for parallel hands: x + 1·a and x + 0·a are exact (amplitudes are finite, ≥ 0).
    let weight: [f32; N] = std::array::from_fn(|p| if st.parallel[p] { 1.0 } else { 0.0 });
    let mut all_flagged = 0usize;
    for (r, &k) in idx.iter().enumerate() {
        let b = &blocks[k];
        let (vis, flags) = (&b.vis[b0 * per..(b0 + lanes) * per], &b.flags[b0 * per..(b0 + lanes) * per]);
        in_groups!(lanes, |g, W| {
            let ahead = (&b.vis[(b0 + g) * per..], &b.flags[(b0 + g) * per..]);
            let (vis, flags) = (&vis[g * per..(g + W) * per], &flags[g * per..(g + W) * per]);
            all_flagged += gather_tile::<N, W>(st, (vis, flags), ahead, r, g, &weight);
        });
    }
    report.flagged_before += all_flagged * N;
}

/// [`gather`] for lanes `g .. g + W` of row `r`: each baseline's samples into a small tile,
/// `[col][lane]`, then the tile's rows into the stack, `W` lanes at a time (the stack's rows are
/// `lanes` apart: written one sample at a time, each baseline would touch every row's cache
/// line). Returns the samples with every product flagged.
#[inline(always)]
fn gather_tile<const N: usize, const W: usize>(
    st: &mut Stack,
    (vis, flags): (&[Complex32], &[bool]),
    ahead: (&[Complex32], &[bool]),
    r: usize,
    g: usize,
    weight: &[f32; N],
) -> usize {
    let (cols, lanes) = (st.cols, st.lanes);
    let per = cols * N;
    let sc = &mut st.scratch;
    sc.amps.resize(per, 0.0);
    sc.tile.resize(3 * cols * W, 0.0);
    let (amp, rest) = sc.tile.split_at_mut(cols * W);
    let (par, entry) = rest.split_at_mut(cols * W);
    let mut all_flagged = 0usize;
    for (j, (v, f)) in vis.chunks_exact(per).zip(flags.chunks_exact(per)).enumerate() {
        let next = (j + AHEAD) * per..(j + AHEAD + 1) * per;
        if let (Some(v), Some(f)) = (ahead.0.get(next.clone()), ahead.1.get(next)) {
            prefetch(v);
            prefetch(f);
        }
        for (a, v) in sc.amps.iter_mut().zip(v) {
            *a = (v.re * v.re + v.im * v.im).sqrt();
        }
        let (mut live, mut part) = (0usize, 0usize);
        for (c, (v, f)) in sc.amps.chunks_exact(N).zip(f.chunks_exact(N)).enumerate() {
            let (mut a, mut x, mut n) = (0.0f32, 0.0f32, 0usize);
            for p in 0..N {
                a += v[p];
                x += weight[p] * v[p];
                n += usize::from(f[p]);
            }
            amp[c * W + j] = a;
            par[c * W + j] = x;
            entry[c * W + j] = if n > 0 { 1.0 } else { 0.0 };
            all_flagged += usize::from(n == N);
            live += usize::from(n < N);
            part += usize::from(n > 0 && n < N);
        }
        st.active[g + j] |= live > 0;
        st.partial[g + j] |= part > 0;
    }
    for c in 0..cols {
        let (at, t) = ((r * cols + c) * lanes + g, c * W..(c + 1) * W);
        st.amp[at..at + W].copy_from_slice(&amp[t.clone()]);
        st.par[at..at + W].copy_from_slice(&par[t.clone()]);
        st.entry[at..at + W].copy_from_slice(&entry[t]);
    }
    all_flagged
}

/// [`gather`] for any number of polarisation products.
fn gather_any(st: &mut Stack, blocks: &[VisBlock], idx: &[usize], b0: usize, npol: usize, report: &mut RfiReport) {
    let (cols, lanes) = (st.cols, st.lanes);
    let per = cols * npol;
    for (r, &k) in idx.iter().enumerate() {
        let b = &blocks[k];
        for l in 0..lanes {
            for c in 0..cols {
                let s = (b0 + l) * per + c * npol;
                let (v, f) = (&b.vis[s..s + npol], &b.flags[s..s + npol]);
                let at = (r * cols + c) * lanes + l;
                st.amp[at] = v.iter().map(|v| (v.re * v.re + v.im * v.im).sqrt()).sum();
                st.par[at] = v
                    .iter()
                    .zip(&st.parallel)
                    .filter(|(_, &p)| p)
                    .fold(0.0, |x, (v, _)| x + (v.re * v.re + v.im * v.im).sqrt());
                st.entry[at] = if f.iter().any(|&f| f) { 1.0 } else { 0.0 };
                report.flagged_before += if f.iter().all(|&f| f) { npol } else { 0 };
                st.active[l] |= !f.iter().all(|&f| f);
                st.partial[l] |= f.iter().any(|&f| f) && !f.iter().all(|&f| f);
            }
        }
    }
}

impl Stack {
    /// Sizes every buffer for `rows × cols × lanes` and clears the per-lane state.
    fn reset(&mut self, rows: usize, cols: usize, lanes: usize) {
        (self.rows, self.cols, self.lanes) = (rows, cols, lanes);
        let n = rows * cols * lanes;
        for v in [&mut self.amp, &mut self.entry, &mut self.par, &mut self.current, &mut self.mask] {
            v.clear();
            v.resize(n, 0.0);
        }
        for v in [&mut self.active, &mut self.partial] {
            v.clear();
            v.resize(lanes, false);
        }
    }
}

/// The iterated SumThreshold and SIR over a filled stack; the result is `st.current`.
#[inline(always)]
fn run(st: &mut Stack, cfg: &RfiConfig) {
    let (rows, cols, lanes) = (st.rows, st.cols, st.lanes);
    st.current.copy_from_slice(&st.entry);
    st.done.clear();
    st.done.extend(st.active.iter().map(|&a| if a { 0.0 } else { 1.0 }));
    st.changed.clear();
    st.changed.resize(lanes, 0.0);
    let mut previous = None;
    for s in cfg.schedule() {
        if previous == Some(s) {
            for (d, &c) in st.done.iter_mut().zip(&st.changed) {
                *d = if c == 0.0 { 1.0 } else { *d };
            }
        }
        previous = Some(s);
        if st.done.iter().all(|&d| d != 0.0) {
            break;
        }
        background(st, cfg);
        noise(st, cfg, s as f32);
        st.mask.copy_from_slice(&st.entry);
        let sc = &mut st.scratch;
        let rule = (cfg.rho as f32, cfg.flag_dips);
        sum_threshold(&st.resid, &mut st.mask, rows, &st.chi, rule, 1..=cfg.max_window_time, sc);
        // Along frequency the single-sample test is the one along time just ran (same χ₁):
        // it would flag nothing more.
        let first = if cfg.max_window_time >= 1 { 2 } else { 1 };
        let line = cols * lanes;
        for r in 0..rows {
            let (v, f) = (&st.resid[r * line..(r + 1) * line], &mut st.mask[r * line..(r + 1) * line]);
            sum_threshold(v, f, cols, &st.chi, rule, first..=cfg.max_window_freq, sc);
        }
        // Lanes not done take the new mask, and mark whether it changed.
        st.changed.iter_mut().for_each(|c| *c = 0.0);
        for (crow, mrow) in st.current.chunks_mut(lanes).zip(st.mask.chunks(lanes)) {
            for (((c, &m), &d), ch) in crow.iter_mut().zip(mrow).zip(&st.done).zip(st.changed.iter_mut()) {
                let take = d == 0.0;
                *ch = if take && *c != m { 1.0 } else { *ch };
                *c = if take { m } else { *c };
            }
        }
    }
    sir(st, cfg.eta_time as f32, cfg.eta_freq as f32);
}

/// Half-width of the box with the Gaussian's σ (`σ² = ((2h + 1)² − 1) / 12`).
fn box_half_width(sigma: f64) -> usize {
    (sigma * 3f64.sqrt()).round().max(0.0) as usize
}

/// Masked moving average of `st.amp` (leaving out `st.current`) along frequency, then time;
/// `st.resid` = amplitude − background. The masked values and weights are formed as the box
/// sums read them, and the residual as the time sums reach each row.
#[inline(always)]
fn background(st: &mut Stack, cfg: &RfiConfig) {
    let (rows, cols, lanes) = (st.rows, st.cols, st.lanes);
    let (n, line) = (rows * cols * lanes, cols * lanes);
    for v in [&mut st.num, &mut st.den, &mut st.resid] {
        v.resize(n, 0.0); // every entry is written below
    }
    let sc = &mut st.scratch;
    for v in [&mut sc.box_a, &mut sc.box_b] {
        v.resize(line, 0.0);
    }
    // Along frequency, row by row: weighted values into num, weights into den.
    let hf = box_half_width(cfg.smooth_freq);
    for r in 0..rows {
        let at = r * line..(r + 1) * line;
        let (amp, cur) = (&st.amp[at.clone()], &st.current[at.clone()]);
        let (num, den) = (&mut st.num[at.clone()], &mut st.den[at]);
        let (a, b) = (&mut sc.box_a[..lanes], &mut sc.box_b[..lanes]);
        box_rows(
            cols,
            hf,
            (a, b),
            |j, take, a, b| {
                let (amp, cur) = (&amp[j * lanes..(j + 1) * lanes], &cur[j * lanes..(j + 1) * lanes]);
                for (((a, b), &x), &m) in a.iter_mut().zip(b.iter_mut()).zip(amp).zip(cur) {
                    let (x, w) = (if m != 0.0 { 0.0 } else { x }, 1.0 - m);
                    (*a, *b) = if take { (*a - x, *b - w) } else { (*a + x, *b + w) };
                }
            },
            |k, a, b| {
                num[k * lanes..(k + 1) * lanes].copy_from_slice(a);
                den[k * lanes..(k + 1) * lanes].copy_from_slice(b);
            },
        );
    }
    // Along time: rows of cols × lanes; each row's residual as soon as its sums are known.
    let ht = box_half_width(cfg.smooth_time);
    let (num, den, amp, resid) = (&st.num, &st.den, &st.amp, &mut st.resid);
    box_rows(
        rows,
        ht,
        (&mut sc.box_a, &mut sc.box_b),
        |j, take, a, b| {
            let (num, den) = (&num[j * line..(j + 1) * line], &den[j * line..(j + 1) * line]);
            for (((a, b), &x), &w) in a.iter_mut().zip(b.iter_mut()).zip(num).zip(den) {
                (*a, *b) = if take { (*a - x, *b - w) } else { (*a + x, *b + w) };
            }
        },
        |k, a, b| {
            let (amp, resid) = (&amp[k * line..(k + 1) * line], &mut resid[k * line..(k + 1) * line]);
            for (((r, &x), &s), &w) in resid.iter_mut().zip(amp).zip(a).zip(b) {
                *r = if w > 0.0 { x - s / w } else { x };
            }
        },
    );
}

/// Running box sums of two quantities along `len` rows, `h` rows either side (clipped to the
/// line): `a` and `b` hold one row of each; `add(j, take, ..)` adds row `j`'s values to them (or
/// takes them off, `take`), and `emit(k, ..)` is handed row `k`'s sums, rows in order.
#[inline(always)]
fn box_rows(
    len: usize,
    h: usize,
    (a, b): (&mut [f32], &mut [f32]),
    mut add: impl FnMut(usize, bool, &mut [f32], &mut [f32]),
    mut emit: impl FnMut(usize, &[f32], &[f32]),
) {
    a.fill(0.0);
    b.fill(0.0);
    for j in 0..=h.min(len - 1) {
        add(j, false, a, b);
    }
    emit(0, a, b);
    // Row k's sums are row k − 1's, plus row k + h, minus row k − h − 1.
    for k in 1..len {
        if k + h < len {
            add(k + h, false, a, b);
        }
        if k > h {
            add(k - h - 1, true, a, b);
        }
        emit(k, a, b);
    }
}

/// Each plane's σ from its residual's channel differences (or, with one channel or
/// [`NoiseEstimate::Residual`], from the residual itself), and `st.chi` = base · σ · `s`;
/// a plane with fewer than 4 usable values or no spread is done.
#[inline(always)]
fn noise(st: &mut Stack, cfg: &RfiConfig, s: f32) {
    let (rows, cols, lanes) = (st.rows, st.cols, st.lanes);
    let differences = cfg.noise == NoiseEstimate::ChannelDifferences && cols > 1;
    // |d| where usable, +∞ where not.
    st.diff.clear();
    if differences {
        for r in 0..rows {
            let at = r * cols * lanes;
            let (x, m) = (&st.resid[at..at + cols * lanes], &st.current[at..at + cols * lanes]);
            st.diff.extend(x[lanes..].iter().zip(x).zip(m[lanes..].iter().zip(m)).map(|((a, b), (ma, mb))| {
                if ma + mb == 0.0 {
                    (a - b).abs()
                } else {
                    f32::INFINITY
                }
            }));
        }
    } else {
        st.diff.extend(st.resid.iter().zip(&st.current).map(|(x, &m)| if m == 0.0 { x.abs() } else { f32::INFINITY }));
    }
    for v in [&mut st.count, &mut st.hi, &mut st.lo] {
        v.clear();
        v.resize(lanes, 0.0);
    }
    for row in st.diff.chunks(lanes) {
        for ((n, sum), &d) in st.count.iter_mut().zip(st.hi.iter_mut()).zip(row) {
            let ok = d != f32::INFINITY;
            *n += if ok { 1.0 } else { 0.0 };
            *sum += if ok { d } else { 0.0 };
        }
    }
    st.valid.clear();
    st.valid.extend_from_slice(&st.count);
    // hi = 2 × mean: at least half the values are below it.
    for (h, &n) in st.hi.iter_mut().zip(&st.valid) {
        *h = if n > 0.0 { 2.0 * *h / n } else { 0.0 };
    }
    in_groups!(lanes, |g, W| bisect::<W>(&st.diff, lanes, g, &mut st.lo, &mut st.hi, &st.valid));
    let scale = if differences { 1.4826 * std::f32::consts::FRAC_1_SQRT_2 } else { 1.4826 };
    st.chi.clear();
    for l in 0..lanes {
        let sigma = scale * 0.5 * (st.lo[l] + st.hi[l]);
        if st.done[l] != 0.0 || st.valid[l] < 4.0 || sigma <= 0.0 {
            st.done[l] = 1.0;
            st.chi.push(f32::INFINITY);
        } else {
            st.chi.push(cfg.base_threshold as f32 * sigma * s);
        }
    }
}

/// Twelve halvings of `[lo, hi]` towards the median of each lane's values in `diff` (rows of
/// `lanes`, +∞ for unusable), for lanes `at .. at + W`, their counts in registers; `valid` is
/// each lane's number of usable values.
#[inline(always)]
fn bisect<const W: usize>(diff: &[f32], lanes: usize, at: usize, lo: &mut [f32], hi: &mut [f32], valid: &[f32]) {
    let (mut l, mut h): ([f32; W], [f32; W]) =
        (lo[at..at + W].try_into().expect("W"), hi[at..at + W].try_into().expect("W"));
    let n: [f32; W] = valid[at..at + W].try_into().expect("W");
    for _ in 0..12 {
        let mid: [f32; W] = std::array::from_fn(|i| 0.5 * (l[i] + h[i]));
        // Integer counts: one-cycle adds, and exact.
        let mut below = [0u32; W];
        for row in diff.chunks_exact(lanes) {
            let d: &[f32; W] = row[at..at + W].try_into().expect("W");
            for i in 0..W {
                below[i] += u32::from(d[i] < mid[i]);
            }
        }
        for i in 0..W {
            let upper = 2.0 * below[i] as f32 >= n[i];
            h[i] = if upper { mid[i] } else { h[i] };
            l[i] = if upper { l[i] } else { mid[i] };
        }
    }
    lo[at..at + W].copy_from_slice(&l);
    hi[at..at + W].copy_from_slice(&h);
}

/// SumThreshold along the first axis of a `len × lanes` array (f32 twin of
/// [`super::sumthreshold::sum_threshold_lanes`]; `flags` are 0.0 / 1.0), window lengths the
/// powers of two in `windows` (and at most `len`). Lane `j` uses `chi1[j % chi1.len()]`.
///
/// Each window length runs in one pass per tile of [`TILE`] lanes: the window starting at row
/// `k` is summed by adding row `k + m − 1` and taking off row `k − 1` (as it was before this
/// window length flagged it, kept aside), and a detection flags rows `k ..= k + m − 1` by
/// carrying a run forward, so row `k` is final when the window moves past it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sum_threshold(
    values: &[f32],
    flags: &mut [f32],
    len: usize,
    chi1: &[f32],
    (rho, dips): (f32, bool),
    windows: std::ops::RangeInclusive<usize>,
    s: &mut Scratch,
) {
    let lanes = values.len() / len.max(1);
    let mut m = (*windows.start()).max(1).next_power_of_two();
    while m <= (*windows.end()).min(len) {
        let drop = rho.powf((m as f32).log2());
        for t0 in (0..lanes).step_by(TILE) {
            let w = TILE.min(lanes - t0);
            s.chi.clear();
            let mut j = t0;
            while j < t0 + w {
                let from = j % chi1.len();
                let take = (chi1.len() - from).min(t0 + w - j);
                s.chi.extend(chi1[from..from + take].iter().map(|c| c / drop));
                j += take;
            }
            let row = |k: usize| k * lanes + t0..k * lanes + t0 + w;
            if m == 1 {
                for k in 0..len {
                    let (v, f) = (&values[row(k)], &mut flags[row(k)]);
                    for ((f, &v), &chi) in f.iter_mut().zip(v).zip(&s.chi) {
                        let hit = *f == 0.0 && (v > chi || dips && v < -chi);
                        *f = if hit { 1.0 } else { *f };
                    }
                }
                continue;
            }
            in_groups!(w, |g, W| if dips {
                window_pass::<W, true>(values, flags, len, lanes, t0 + g, m, &s.chi[g..g + W])
            } else {
                window_pass::<W, false>(values, flags, len, lanes, t0 + g, m, &s.chi[g..g + W])
            });
        }
        m *= 2;
    }
}

/// Lanes per tile of [`sum_threshold`]: its half-dozen row buffers stay in L1.
const TILE: usize = 512;

/// Lanes [`window_pass`] and [`bisect`] keep in registers at once: two AVX2 registers per
/// quantity, two independent chains (8 measured 5 % slower, 32 7 %). Stacks hold at least
/// this many baselines where there are as many ([`flag`]).
pub(super) const GROUP: usize = 16;

/// One window length `m ≥ 2` of [`sum_threshold`] over lanes `at .. at + W` of a
/// `len × lanes` array, its running sums in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn window_pass<const W: usize, const DIPS: bool>(
    values: &[f32],
    flags: &mut [f32],
    len: usize,
    lanes: usize,
    at: usize,
    m: usize,
    chi: &[f32],
) {
    let chi: [f32; W] = chi.try_into().expect("W thresholds");
    let (mut sum, mut n, mut run, mut pv, mut pn) = ([0f32; W], [0f32; W], [0f32; W], [0f32; W], [0f32; W]);
    let row = |k: usize| k * lanes + at..k * lanes + at + W;
    // Rows as arrays of W: no bounds checks in the loops over lanes, which then vectorise.
    let get = |x: &[f32], k: usize| -> [f32; W] { x[row(k)].try_into().expect("W lanes") };
    for j in 0..m {
        let (v, f) = (get(values, j), get(flags, j));
        for i in 0..W {
            sum[i] += if f[i] != 0.0 { 0.0 } else { v[i] };
            n[i] += 1.0 - f[i];
        }
    }
    let mf = m as f32;
    // The windows: the one starting at row k adds row k + m − 1 and takes off row k − 1 as it was.
    for k in 0..=len - m {
        if k > 0 {
            let (v, f) = (get(values, k + m - 1), get(flags, k + m - 1));
            for i in 0..W {
                sum[i] = sum[i] + if f[i] != 0.0 { 0.0 } else { v[i] } - pv[i];
                n[i] = n[i] + (1.0 - f[i]) - pn[i];
            }
        }
        let v = get(values, k);
        let f: &mut [f32; W] = (&mut flags[row(k)]).try_into().expect("W lanes");
        for i in 0..W {
            let limit = chi[i] * n[i];
            // `&` and `|`, not `&&` and `||`: no branches, so the lanes vectorise. (`n > 0`
            // matters: the running sum of an all-flagged window need not be exactly 0.)
            let hit = (n[i] > 0.5) & ((sum[i] > limit) | (DIPS & (sum[i] < -limit)));
            let r = if hit { mf } else { run[i] };
            pv[i] = if f[i] != 0.0 { 0.0 } else { v[i] };
            pn[i] = 1.0 - f[i];
            f[i] = if r > 0.0 { 1.0 } else { f[i] };
            run[i] = (r - 1.0).max(0.0);
        }
    }
    // Past the last window: runs still open flag the rows they cover.
    for k in len - m + 1..len {
        if run.iter().all(|&r| r == 0.0) {
            break;
        }
        let f: &mut [f32; W] = (&mut flags[row(k)]).try_into().expect("W lanes");
        for i in 0..W {
            f[i] = if run[i] > 0.0 { 1.0 } else { f[i] };
            run[i] = (run[i] - 1.0).max(0.0);
        }
    }
}

/// SIR along time and along frequency on every plane of the stack, combined with `st.current`
/// (which it replaces).
#[inline(always)]
fn sir(st: &mut Stack, eta_time: f32, eta_freq: f32) {
    let (rows, cols, lanes) = (st.rows, st.cols, st.lanes);
    let sc = &mut st.scratch;
    sc.sir.clear();
    sc.sir.extend_from_slice(&st.current);
    // Along time: lines of cols × lanes, rows long.
    sir_lines(&st.current, &mut sc.sir, rows, cols * lanes, eta_time, &mut sc.prefix, &mut sc.low, &mut sc.high);
    for r in 0..rows {
        let at = r * cols * lanes..(r + 1) * cols * lanes;
        let (x, out) = (&st.current[at.clone()], &mut sc.sir[at]);
        sir_lines(x, out, cols, lanes, eta_freq, &mut sc.prefix, &mut sc.low, &mut sc.high);
    }
    std::mem::swap(&mut st.current, &mut sc.sir);
}

/// SIR ([`super::sumthreshold::sir_line`]) along the first axis of a `len × lanes` mask `x`,
/// OR-ed into `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sir_lines(
    x: &[f32],
    out: &mut [f32],
    len: usize,
    lanes: usize,
    eta: f32,
    prefix: &mut Vec<f32>,
    low: &mut Vec<f32>,
    high: &mut Vec<f32>,
) {
    // P[k] = Σ_{i<k} (f_i − (1 − η)); i is flagged iff max_{k>i} P[k] − min_{k≤i} P[k] ≥ 0.
    prefix.clear();
    prefix.resize((len + 1) * lanes, 0.0);
    for k in 0..len {
        let (done, rest) = prefix.split_at_mut((k + 1) * lanes);
        for ((p, &q), &f) in rest[..lanes].iter_mut().zip(&done[k * lanes..]).zip(&x[k * lanes..(k + 1) * lanes]) {
            *p = q + f - (1.0 - eta);
        }
    }
    // low[k] = min_{j≤k} P[j].
    low.clear();
    low.extend_from_slice(&prefix[..len * lanes]);
    for k in 1..len {
        let (done, rest) = low.split_at_mut(k * lanes);
        for (l, &prev) in rest[..lanes].iter_mut().zip(&done[(k - 1) * lanes..]) {
            *l = l.min(prev);
        }
    }
    high.clear();
    high.resize(lanes, f32::NEG_INFINITY);
    for k in (0..len).rev() {
        let row = &mut out[k * lanes..(k + 1) * lanes];
        let (p, lo) = (&prefix[(k + 1) * lanes..(k + 2) * lanes], &low[k * lanes..(k + 1) * lanes]);
        for (((o, h), &p), &lo) in row.iter_mut().zip(high.iter_mut()).zip(p).zip(lo) {
            *h = h.max(p);
            // Ties (an interval exactly 1 − η flagged) count as flagged; f32 rounding of
            // the sums is far below the 0.1-sized steps between non-ties.
            *o = if *h - lo >= -1e-4 { 1.0 } else { *o };
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn stacks_of_any_width_flag_what_one_baseline_at_a_time_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for (n_ant, n_chan, n_int) in [(12, 16, 6), (7, 40, 3), (5, 3, 20)] {
            let blocks = super::super::tests::simulated_with_flags(n_ant, n_chan, n_int, &mut rng);
            let cfg = RfiConfig::default();
            let mut want = blocks.clone();
            let (want_report, want_sums) = flag(&mut want, &cfg, 1, 1).unwrap();
            assert!(want_report.flagged_new > 0, "the simulated RFI is flagged");
            // Stacks of 5 (groups of 4 and 1), 13 (8, 4, 1), all baselines, and at least 16.
            let plane = n_chan * n_int;
            for (stack, min_lanes) in [(plane * 5, 1), (plane * 13, 1), (super::super::STACK_SAMPLES, 1), (1, GROUP)] {
                let mut got = blocks.clone();
                assert_eq!(
                    flag(&mut got, &cfg, stack, min_lanes).unwrap(),
                    (want_report.clone(), want_sums.clone()),
                    "{n_ant} antennas, stacks of {stack}"
                );
                assert!(got.iter().zip(&want).all(|(g, w)| g.flags == w.flags), "{n_ant} antennas, stacks of {stack}");
            }
        }
    }

    #[test]
    fn the_portable_build_flags_what_the_dispatched_one_does() {
        // On a CPU with AVX2 the dispatched build is the other one: both must agree.
        use crate::sim::{SimConfig, Simulator};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let sim = Simulator::new(SimConfig { n_ant: 9, n_chan: 33, n_int: 7, seed: 3, ..Default::default() });
        let mut blocks: Vec<VisBlock> = (0..7).map(|k| sim.block(k).0).collect();
        for b in &mut blocks {
            b.flags.iter_mut().for_each(|f| *f |= rng.gen_bool(0.05));
        }
        let idx: Vec<usize> = (0..blocks.len()).collect();
        let lanes = blocks[0].baselines.len();
        let cfg = RfiConfig::default();
        let mut outs = Vec::new();
        for portable in [false, true] {
            let (mut st, mut got, mut report) = (Stack::default(), blocks.clone(), RfiReport::default());
            let mut sums = vec![AlertSums { baselines: vec![(0.0, 0.0); lanes], flagged: 0 }; blocks.len()];
            st.reset(7, 33, lanes);
            st.parallel = blocks[0].pols.iter().map(|p| p.is_parallel_hand()).collect();
            if portable {
                flag_stack_portable(&mut st, &mut got, &idx, 0, &cfg, &mut report, &mut sums);
            } else {
                flag_stack(&mut st, &mut got, &idx, 0, &cfg, &mut report, &mut sums);
            }
            outs.push((report, got, sums));
        }
        assert!(outs[0].0.flagged_new > 0, "something is flagged");
        assert_eq!(outs[0].0, outs[1].0);
        assert!(outs[0].1 == outs[1].1);
        assert_eq!(outs[0].2, outs[1].2);
    }

    #[test]
    fn box_sums_equal_their_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for _ in 0..200 {
            let (len, lanes, h) = (rng.gen_range(1..30), rng.gen_range(1..6), rng.gen_range(0..12));
            let x: Vec<f32> = (0..len * lanes).map(|_| rng.gen_range(-4..5) as f32).collect();
            let y: Vec<f32> = (0..len * lanes).map(|_| rng.gen_range(0..2) as f32).collect();
            let (mut a, mut b) = (vec![f32::NAN; lanes], vec![f32::NAN; lanes]);
            let mut out = vec![(f32::NAN, f32::NAN); len * lanes];
            box_rows(
                len,
                h,
                (&mut a, &mut b),
                |j, take, a, b| {
                    for l in 0..lanes {
                        let (x, y) = (x[j * lanes + l], y[j * lanes + l]);
                        (a[l], b[l]) = if take { (a[l] - x, b[l] - y) } else { (a[l] + x, b[l] + y) };
                    }
                },
                |k, a, b| (0..lanes).for_each(|l| out[k * lanes + l] = (a[l], b[l])),
            );
            for k in 0..len {
                for l in 0..lanes {
                    let box_ = k.saturating_sub(h)..(k + h + 1).min(len);
                    let want = (
                        box_.clone().map(|j| x[j * lanes + l]).sum::<f32>(),
                        box_.map(|j| y[j * lanes + l]).sum::<f32>(),
                    );
                    assert_eq!(out[k * lanes + l], want, "len {len}, lanes {lanes}, h {h}, row {k}");
                }
            }
        }
    }
}
