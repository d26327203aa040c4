//! Image statistics: peaks, rms (plain and MAD-based), and sub-pixel peak positions.

use super::Image;

/// Root mean square of all values.
pub fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

/// `1.4826 × median(|x − median(x)|)`: the rms of the noise, blind to a few bright pixels.
pub fn robust_rms(v: &[f64]) -> f64 {
    let mut a: Vec<f64> = v.to_vec();
    let Some(med) = crate::validate::timegrid::median(&mut a) else { return 0.0 };
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    1.4826 * crate::validate::timegrid::median(&mut dev).unwrap_or(0.0)
}

/// The pixel of largest absolute value: `(i, j, value)`.
pub fn abs_peak(img: &Image) -> (usize, usize, f64) {
    let mut best = (0usize, 0.0f64);
    for (k, &x) in img.data.iter().enumerate() {
        if x.abs() > best.1.abs() {
            best = (k, x);
        }
    }
    (best.0 % img.nx.max(1), best.0 / img.nx.max(1), best.1)
}

/// The pixel of largest value: `(i, j, value)`.
pub fn max_peak(img: &Image) -> (usize, usize, f64) {
    let mut best = (0usize, f64::NEG_INFINITY);
    for (k, &x) in img.data.iter().enumerate() {
        if x > best.1 {
            best = (k, x);
        }
    }
    (best.0 % img.nx.max(1), best.0 / img.nx.max(1), best.1)
}

/// Sub-pixel position of a peak at `(i, j)` by a parabola through it and its neighbours along
/// each axis: `(x, y)` in fractional pixels.
pub fn refine_peak(img: &Image, i: usize, j: usize) -> (f64, f64) {
    let para = |a: f64, b: f64, c: f64| {
        let d = a - 2.0 * b + c;
        if d.abs() < 1e-300 {
            0.0
        } else {
            (0.5 * (a - c) / d).clamp(-0.5, 0.5)
        }
    };
    let x = if i > 0 && i + 1 < img.nx {
        i as f64 + para(img.get(i - 1, j), img.get(i, j), img.get(i + 1, j))
    } else {
        i as f64
    };
    let y = if j > 0 && j + 1 < img.ny {
        j as f64 + para(img.get(i, j - 1), img.get(i, j), img.get(i, j + 1))
    } else {
        j as f64
    };
    (x, y)
}

/// Local maxima above `threshold`, brightest first, at least `min_sep` pixels apart.
pub fn find_peaks(img: &Image, threshold: f64, min_sep: f64) -> Vec<(usize, usize, f64)> {
    let mut cand = Vec::new();
    for j in 1..img.ny.saturating_sub(1) {
        for i in 1..img.nx.saturating_sub(1) {
            let x = img.get(i, j);
            if x < threshold {
                continue;
            }
            let is_max = (-1i64..=1).all(|dj| {
                (-1i64..=1)
                    .all(|di| (di == 0 && dj == 0) || img.get((i as i64 + di) as usize, (j as i64 + dj) as usize) <= x)
            });
            if is_max {
                cand.push((i, j, x));
            }
        }
    }
    cand.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut out: Vec<(usize, usize, f64)> = Vec::new();
    for c in cand {
        let far = out.iter().all(|o| {
            let (dx, dy) = (o.0 as f64 - c.0 as f64, o.1 as f64 - c.1 as f64);
            (dx * dx + dy * dy).sqrt() >= min_sep
        });
        if far {
            out.push(c);
        }
    }
    out
}
