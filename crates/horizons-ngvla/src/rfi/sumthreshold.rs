//! SumThreshold (Offringa et al. 2010) and the scale-invariant rank operator (SIR, Offringa et
//! al. 2012) on one time × frequency plane.
//!
//! SumThreshold flags every run of `M` consecutive samples (M = 1, 2, 4, … along time and along
//! frequency) whose mean exceeds `χ_M = χ_1 / ρ^{log₂ M}`; already-flagged samples are left out
//! of the mean. Sign matters: RFI adds power, so runs above `+χ_M` and below `−χ_M` are tested
//! separately — a mean of absolute values would flag long runs of pure noise.
//!
//! SIR dilates a mask: a sample is flagged if some interval containing it is at least
//! `(1 − η)` flagged. With prefix sums of `f − (1 − η)` that is one pass each way (O(N)).

/// A dense `rows × cols` plane (rows = time, cols = frequency).
#[derive(Debug, Clone, PartialEq)]
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

/// One SumThreshold pass over `values` with mask `flags` (updated in place), along rows
/// (`along_time = false`: runs over channels) or along columns (runs over time).
pub fn sum_threshold(values: &Plane, flags: &mut [bool], chi1: f64, rho: f64, max_window: usize, along_time: bool) {
    let (n_lines, len) = if along_time { (values.cols, values.rows) } else { (values.rows, values.cols) };
    let at = |line: usize, k: usize| if along_time { k * values.cols + line } else { line * values.cols + k };
    let mut m = 1usize;
    let mut newly = vec![false; flags.len()];
    while m <= max_window.min(len) {
        let chi = chi1 / rho.powf((m as f64).log2());
        newly.iter_mut().for_each(|f| *f = false);
        for line in 0..n_lines {
            // Sliding window sums of unflagged values and their count.
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
                if k + 1 >= m && cnt > 0 && (sum > chi * cnt as f64 || sum < -chi * cnt as f64) {
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
mod tests {
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
        sum_threshold(&p, &mut flags, 6.0, 1.5, 64, true);
        sum_threshold(&p, &mut flags, 6.0, 1.5, 64, false);
        for r in 0..8 {
            assert!(flags[r * 64 + 10]);
        }
        assert_eq!(flags.iter().filter(|&&f| f).count(), 8);
    }
}
