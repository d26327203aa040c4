//! StEFCal (Salvini & Wijnholds 2014): direction-independent complex gains per antenna from
//! `V_pq ≈ g_p · conj(g_q) · M_pq`, by alternating least squares where each antenna's update
//! holds the others fixed, with every second iterate averaged with the previous one (the step
//! that makes the iteration converge robustly).
//!
//! Because the gains are constant over a solution cell, the data enter only through two sums per
//! baseline: `A_pq = Σ w·conj(M)·V` and `B_pq = Σ w·|M|²` over the cell's samples, so an
//! iteration costs O(baselines) whatever the cell size.

use num_complex::Complex64;

/// Per-baseline sufficient statistics over one solution cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineSums {
    /// Index of the first antenna (0-based, into the solver's antenna list).
    pub p: usize,
    /// Index of the second antenna.
    pub q: usize,
    /// `Σ w·conj(M)·V`.
    pub a: Complex64,
    /// `Σ w·|M|²`.
    pub b: f64,
}

/// The solver's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Solved {
    /// One gain per antenna (0 where not solvable).
    pub gains: Vec<Complex64>,
    /// Whether each antenna had enough baselines to be solved.
    pub valid: Vec<bool>,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the relative update fell below the tolerance.
    pub converged: bool,
}

/// Solves for `n_ant` gains. Antennas with fewer than `min_baselines` usable baselines are left
/// out (repeatedly, since dropping one can starve another) and reported invalid.
pub fn solve(n_ant: usize, sums: &[BaselineSums], min_baselines: usize, max_iter: usize, tol: f64) -> Solved {
    let usable: Vec<&BaselineSums> =
        sums.iter().filter(|s| s.b > 0.0 && s.p != s.q && s.p < n_ant && s.q < n_ant).collect();
    let mut valid = vec![true; n_ant];
    loop {
        let mut count = vec![0usize; n_ant];
        for s in usable.iter().filter(|s| valid[s.p] && valid[s.q]) {
            count[s.p] += 1;
            count[s.q] += 1;
        }
        let mut changed = false;
        for a in 0..n_ant {
            if valid[a] && count[a] < min_baselines.max(1) {
                valid[a] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let live: Vec<&BaselineSums> = usable.into_iter().filter(|s| valid[s.p] && valid[s.q]).collect();
    let (sum_a, sum_b) = live.iter().fold((0.0, 0.0), |(x, y), s| (x + s.a.norm(), y + s.b));
    let start = if sum_b > 0.0 && sum_a > 0.0 { (sum_a / sum_b).sqrt() } else { 1.0 };
    let mut g: Vec<Complex64> =
        valid.iter().map(|&v| if v { Complex64::new(start, 0.0) } else { Complex64::new(0.0, 0.0) }).collect();
    let mut iterations = 0;
    let mut converged = false;
    let mut num = vec![Complex64::new(0.0, 0.0); n_ant];
    let mut den = vec![0.0f64; n_ant];
    for it in 1..=max_iter.max(1) {
        iterations = it;
        num.iter_mut().for_each(|x| *x = Complex64::new(0.0, 0.0));
        den.iter_mut().for_each(|x| *x = 0.0);
        for s in &live {
            num[s.p] += g[s.q] * s.a;
            den[s.p] += g[s.q].norm_sqr() * s.b;
            num[s.q] += g[s.p] * s.a.conj();
            den[s.q] += g[s.p].norm_sqr() * s.b;
        }
        let mut diff = 0.0;
        let mut norm = 0.0;
        for a in 0..n_ant {
            if !valid[a] || den[a] <= 0.0 {
                continue;
            }
            let mut new = num[a] / den[a];
            if it % 2 == 0 {
                new = 0.5 * (new + g[a]);
            }
            diff += (new - g[a]).norm_sqr();
            norm += new.norm_sqr();
            g[a] = new;
        }
        if norm > 0.0 && (diff / norm).sqrt() < tol {
            converged = true;
            break;
        }
    }
    Solved { gains: g, valid, iterations, converged }
}

/// Rotates all gains so that antenna `reference` has zero phase (the usual convention: gains are
/// only defined up to one common phase).
pub fn reference_phase(gains: &mut [Complex64], reference: usize) {
    let Some(r) = gains.get(reference).copied() else { return };
    if r.norm() == 0.0 {
        return;
    }
    let rot = r.conj() / r.norm();
    for g in gains.iter_mut() {
        *g *= rot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_gains() {
        let n = 6;
        let truth: Vec<Complex64> =
            (0..n).map(|a| Complex64::from_polar(1.0 + 0.1 * a as f64, 0.3 * a as f64 - 0.7)).collect();
        let mut sums = vec![];
        for p in 0..n {
            for q in p + 1..n {
                let m = Complex64::new(2.0, 0.0);
                let v = truth[p] * truth[q].conj() * m;
                sums.push(BaselineSums { p, q, a: m.conj() * v, b: m.norm_sqr() });
            }
        }
        let mut s = solve(n, &sums, 2, 200, 1e-12);
        assert!(s.converged);
        reference_phase(&mut s.gains, 0);
        let mut t = truth.clone();
        reference_phase(&mut t, 0);
        for (a, b) in s.gains.iter().zip(&t) {
            assert!((a - b).norm() < 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn starved_antennas_are_invalid() {
        let sums = [BaselineSums { p: 0, q: 1, a: Complex64::new(1.0, 0.0), b: 1.0 }];
        let s = solve(3, &sums, 2, 10, 1e-9);
        assert_eq!(s.valid, vec![false, false, false]);
    }
}
