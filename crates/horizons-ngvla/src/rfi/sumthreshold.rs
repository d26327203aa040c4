//! SumThreshold (Offringa et al. 2010) and the scale-invariant rank operator (SIR, Offringa et
//! al. 2012) on one time × frequency plane.
//!
//! SumThreshold flags every run of `M` consecutive samples (M = 1, 2, 4, … along time and along
//! frequency) whose mean exceeds `χ_M = χ_1 / ρ^{log₂ M}`; already-flagged samples are left out
//! of the mean. Sign matters: the mean is of the signed residuals (a mean of absolute values
//! would flag long runs of pure noise), and by default only runs above `+χ_M` are flagged: RFI
//! adds power to amplitudes, while a run below `−χ_M` is mostly where the background was pulled
//! up by RFI next to it. [`Rule::dips`] also flags runs below `−χ_M`, as AOFlagger does.
//!
//! SIR dilates a mask: a sample is flagged if some interval containing it is at least
//! `(1 − η)` flagged. With prefix sums of `f − (1 − η)` that is one pass each way (O(N)).

/// A dense `rows × cols` plane (rows = time, cols = frequency).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plane {
    /// Time steps.
    pub rows: usize,
    /// Channels.
    pub cols: usize,
    /// Values, row-major.
    pub data: Vec<f64>,
}

impl Plane {
    /// A plane of zeros.
    pub fn new(rows: usize, cols: usize) -> Plane {
        Plane { rows, cols, data: vec![0.0; rows * cols] }
    }
}

/// How the threshold follows the window: `χ_M = χ_1 / ρ^{log₂ M}` for `M` = 1, 2, 4, … up to
/// `max_window`; with `dips`, runs below `−χ_M` are flagged too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Threshold decrease per doubling of the window.
    pub rho: f64,
    /// Longest window.
    pub max_window: usize,
    /// Also flag runs whose mean is below `−χ_M`.
    pub dips: bool,
}

/// One SumThreshold pass over `values` with mask `flags` (updated in place), along rows
/// (`along_time = false`: runs over channels) or along columns (runs over time).
pub fn sum_threshold(values: &Plane, flags: &mut [bool], chi1: f64, rule: Rule, along_time: bool) {
    let mut s = Scratch::default();
    let (rows, cols) = (values.rows, values.cols);
    if along_time {
        return sum_threshold_lanes(&values.data, flags, rows, &[chi1], rule, &mut s);
    }
    for r in 0..rows {
        let line = r * cols..(r + 1) * cols;
        sum_threshold_lanes(&values.data[line.clone()], &mut flags[line], cols, &[chi1], rule, &mut s);
    }
}

/// Buffers reused from one call to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    detected: Vec<bool>,
    sum: Vec<f64>,
    count: Vec<u32>,
    run: Vec<u32>,
    chi: Vec<f64>,
}

/// SumThreshold along the first axis of a `len × lanes` array (sample `k` of every line in one
/// contiguous row, so each step of the sliding window updates all lines at once and
/// vectorises): window sizes 1, 2, 4, … up to `max_window`, each one's detections joining
/// `flags` before the next size runs. Lane `j` uses threshold `chi1[j % chi1.len()]`; an
/// infinite threshold detects nothing.
#[inline(always)]
pub fn sum_threshold_lanes(values: &[f64], flags: &mut [bool], len: usize, chi1: &[f64], rule: Rule, s: &mut Scratch) {
    let Rule { rho, max_window, dips } = rule;
    let lanes = values.len() / len.max(1);
    debug_assert!(values.len() == len * lanes && flags.len() == values.len() && lanes.is_multiple_of(chi1.len()));
    s.detected.clear();
    s.detected.resize(len * lanes, false);
    let mut m = 1usize;
    while m <= max_window.min(len) {
        let drop = rho.powf((m as f64).log2());
        s.chi.clear();
        s.chi.extend(chi1.iter().cycle().take(lanes).map(|c| c / drop));
        // Sliding sums of the unflagged values of each line, and their count.
        let (sum, count) = (&mut s.sum, &mut s.count);
        sum.clear();
        sum.resize(lanes, 0.0);
        count.clear();
        count.resize(lanes, 0);
        for k in 0..len {
            let (row, frow) = (&values[k * lanes..(k + 1) * lanes], &flags[k * lanes..(k + 1) * lanes]);
            for ((s, n), (&v, &f)) in sum.iter_mut().zip(count.iter_mut()).zip(row.iter().zip(frow)) {
                *s += if f { 0.0 } else { v };
                *n += u32::from(!f);
            }
            if k >= m {
                let o = k - m;
                let (row, frow) = (&values[o * lanes..(o + 1) * lanes], &flags[o * lanes..(o + 1) * lanes]);
                for ((s, n), (&v, &f)) in sum.iter_mut().zip(count.iter_mut()).zip(row.iter().zip(frow)) {
                    *s -= if f { 0.0 } else { v };
                    *n -= u32::from(!f);
                }
            }
            let det = &mut s.detected[k * lanes..(k + 1) * lanes];
            if k + 1 >= m {
                for ((d, &chi), (&s, &n)) in det.iter_mut().zip(&s.chi).zip(sum.iter().zip(count.iter())) {
                    let limit = chi * n as f64;
                    *d = n > 0 && (s > limit || dips && s < -limit);
                }
            } else {
                det.fill(false);
            }
        }
        // A window detected at k flags samples k + 1 − m ..= k: walk back, carrying the run.
        s.run.clear();
        s.run.resize(lanes, 0);
        for k in (0..len).rev() {
            let (det, frow) = (&s.detected[k * lanes..(k + 1) * lanes], &mut flags[k * lanes..(k + 1) * lanes]);
            for (run, (&d, f)) in s.run.iter_mut().zip(det.iter().zip(frow.iter_mut())) {
                if d {
                    *run = m as u32;
                }
                *f |= *run > 0;
                *run = run.saturating_sub(1);
            }
        }
        m *= 2;
    }
}

/// The SIR operator along one line: `mask[i]` becomes true if an interval containing `i` is at
/// least `1 − eta` flagged.
pub fn sir_line(mask: &mut [bool], eta: f64) {
    let n = mask.len();
    if n == 0 {
        return;
    }
    // P[k] = Σ_{i<k} (f_i − (1 − η)); i is flagged iff max_{y2>i} P[y2] − min_{y1≤i} P[y1] ≥ 0.
    let mut p = vec![0.0f64; n + 1];
    for i in 0..n {
        p[i + 1] = p[i] + if mask[i] { eta } else { eta - 1.0 };
    }
    let mut min_left = vec![0.0f64; n];
    let mut cur = f64::INFINITY;
    for i in 0..n {
        cur = cur.min(p[i]);
        min_left[i] = cur;
    }
    let mut max_right = f64::NEG_INFINITY;
    for i in (0..n).rev() {
        max_right = max_right.max(p[i + 1]);
        // Small tolerance: exact ties (interval exactly 1 − η flagged) count as flagged.
        mask[i] = max_right - min_left[i] >= -1e-12;
    }
}

/// SIR along time (for each channel) and along frequency (for each time step), combined.
pub fn sir_plane(flags: &mut [bool], rows: usize, cols: usize, eta_time: f64, eta_freq: f64) {
    let orig = flags.to_vec();
    let mut out = orig.clone();
    let mut line = Vec::with_capacity(rows.max(cols));
    for c in 0..cols {
        line.clear();
        line.extend((0..rows).map(|r| orig[r * cols + c]));
        sir_line(&mut line, eta_time);
        for r in 0..rows {
            out[r * cols + c] |= line[r];
        }
    }
    for r in 0..rows {
        line.clear();
        line.extend_from_slice(&orig[r * cols..(r + 1) * cols]);
        sir_line(&mut line, eta_freq);
        for c in 0..cols {
            out[r * cols + c] |= line[c];
        }
    }
    flags.copy_from_slice(&out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn check_sir(input: &str, eta: f64, expected: &str) {
        let mut m: Vec<bool> = input.chars().map(|c| c == 'x').collect();
        sir_line(&mut m, eta);
        let got: String = m.iter().map(|&f| if f { 'x' } else { '.' }).collect();
        assert_eq!(got, expected, "SIR({input}, η={eta})");
    }

    #[test]
    fn sir_dilates_scale_invariantly() {
        check_sir("..........", 0.2, "..........");
        check_sir("....x.....", 0.2, "....x.....");
        check_sir("...xxxx...", 0.2, "..xxxxxx..");
        check_sir("...xxxx...", 0.5, "xxxxxxxxxx");
        check_sir("xxxx.xxxx.", 0.2, "xxxxxxxxxx");
        check_sir("x.x.x.x.x.", 0.5, "xxxxxxxxxx");
    }

    #[test]
    fn sir_matches_its_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let n = rng.gen_range(1..24);
            let eta = rng.gen_range(0.05..0.6);
            let mask: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.3)).collect();
            let brute: Vec<bool> = (0..n)
                .map(|i| {
                    (0..=i).any(|a| {
                        (i + 1..=n).any(|b| {
                            let k = mask[a..b].iter().filter(|&&f| f).count() as f64;
                            k >= (1.0 - eta) * (b - a) as f64 - 1e-12
                        })
                    })
                })
                .collect();
            let mut fast = mask.clone();
            sir_line(&mut fast, eta);
            assert_eq!(fast, brute, "{mask:?} eta {eta}");
        }
    }

    /// The definition, line by line: what the lane layout must reproduce exactly.
    pub(crate) fn reference(values: &Plane, flags: &mut [bool], chi1: f64, rule: Rule, along_time: bool) {
        let Rule { rho, max_window, .. } = rule;
        let (n_lines, len) = if along_time { (values.cols, values.rows) } else { (values.rows, values.cols) };
        let at = |line: usize, k: usize| if along_time { k * values.cols + line } else { line * values.cols + k };
        let mut m = 1usize;
        while m <= max_window.min(len) {
            let chi = chi1 / rho.powf((m as f64).log2());
            let mut newly = vec![false; flags.len()];
            for line in 0..n_lines {
                let (mut sum, mut cnt) = (0.0, 0usize);
                for k in 0..len {
                    let i = at(line, k);
                    if !flags[i] {
                        sum += values.data[i];
                        cnt += 1;
                    }
                    if k >= m {
                        let o = at(line, k - m);
                        if !flags[o] {
                            sum -= values.data[o];
                            cnt -= 1;
                        }
                    }
                    let limit = chi * cnt as f64;
                    if k + 1 >= m && cnt > 0 && (sum > limit || rule.dips && sum < -limit) {
                        for j in k + 1 - m..=k {
                            newly[at(line, j)] = true;
                        }
                    }
                }
            }
            for (f, n) in flags.iter_mut().zip(&newly) {
                *f |= *n;
            }
            m *= 2;
        }
    }

    #[test]
    fn the_lane_layout_flags_exactly_what_the_definition_does() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let (rows, cols) = (rng.gen_range(1..20), rng.gen_range(1..40));
            let mut p = Plane::new(rows, cols);
            for v in &mut p.data {
                // Noise with a few bright samples and short bright runs.
                *v = rng.gen_range(-1.0..1.0) + if rng.gen_bool(0.05) { rng.gen_range(2.0..9.0) } else { 0.0 };
            }
            let flags: Vec<bool> = (0..rows * cols).map(|_| rng.gen_bool(0.1)).collect();
            let (chi1, window, along_time) = (rng.gen_range(1.0..6.0), rng.gen_range(1..70), rng.gen_bool(0.5));
            let rule = Rule { rho: 1.5, max_window: window, dips: rng.gen_bool(0.5) };
            let mut want = flags.clone();
            reference(&p, &mut want, chi1, rule, along_time);
            let mut got = flags.clone();
            sum_threshold(&p, &mut got, chi1, rule, along_time);
            assert_eq!(got, want, "{rows}x{cols} {rule:?} along_time {along_time}");
        }
    }

    #[test]
    fn sum_threshold_finds_weak_long_runs_but_not_noise() {
        let mut p = Plane::new(8, 64);
        // Alternating ±1 noise-like pattern: no window mean exceeds 1.
        for (i, v) in p.data.iter_mut().enumerate() {
            *v = if (i / 64 + i % 64) % 2 == 0 { 1.0 } else { -1.0 };
        }
        // A narrowband line at 2.5 in channel 10 over all times: each sample below χ1 = 6.
        for r in 0..8 {
            p.data[r * 64 + 10] = 2.5;
        }
        let mut flags = vec![false; p.data.len()];
        let rule = Rule { rho: 1.5, max_window: 64, dips: false };
        sum_threshold(&p, &mut flags, 6.0, rule, true);
        sum_threshold(&p, &mut flags, 6.0, rule, false);
        for r in 0..8 {
            assert!(flags[r * 64 + 10]);
        }
        assert_eq!(flags.iter().filter(|&&f| f).count(), 8);
    }

    #[test]
    fn dips_are_flagged_only_when_asked() {
        let mut p = Plane::new(1, 32);
        p.data[5] = 9.0;
        p.data[20] = -9.0;
        for dips in [false, true] {
            let mut flags = vec![false; 32];
            sum_threshold(&p, &mut flags, 6.0, Rule { rho: 1.5, max_window: 8, dips }, false);
            let flagged: Vec<usize> = (0..32).filter(|&i| flags[i]).collect();
            assert_eq!(flagged, if dips { vec![5, 20] } else { vec![5] }, "dips {dips}");
        }
    }
}
