//! The side-by-side gridding comparison of `horizons bench pipeline` against ducc0's
//! `wgridder.vis2dirty` (the reference CPU gridder BRIEF names).
//!
//! The bench writes the very samples our dirty image was made from (u, v in wavelengths,
//! visibilities, imaging weights) and the grid parameters (npix, pixel size, epsilon) into a
//! temporary directory, runs `scripts/ducc0-grid.py` (compiled into the binary, written next to
//! the data) with the configured Python, and reads back ducc0's timings and images. Both images
//! are normalised by the sum of weights (ours already is; ducc0's is an unnormalised sum), and
//! the differences are given relative to our image's peak, so it is visible that both computed
//! the same dirty image. Our time is `grid` + `fft` of the same run (one thread); the ratio is
//! ducc0's time over ours, i.e. our speed as a fraction of ducc0's (≥ 0.5 is issue 7's target).
//!
//! ducc0 is optional: in `auto` mode a missing venv or a failing import is reported as
//! `"available": false` with the reason, so CI needs no Python; `require` makes it an error.

use horizons_ngvla::image::{Geometry, Image};
use num_complex::Complex32;
use serde::{Deserialize, Serialize};

use super::pipeline::BenchPipelineArgs;
use super::reference::Reference;
use crate::error::AppError;

/// ducc0 through `scripts/ducc0-grid.py`, compiled in so that the bench runs from any directory.
const DUCC0: Reference = Reference {
    name: "ducc0",
    flag: "ducc0",
    script: "ducc0-grid.py",
    text: include_str!("../../../../scripts/ducc0-grid.py"),
};

/// Our side of the comparison.
#[derive(Debug)]
pub struct Ours<'a> {
    /// u, wavelengths.
    pub u: &'a [f64],
    /// v, wavelengths.
    pub v: &'a [f64],
    /// Stokes I visibilities.
    pub vis: &'a [Complex32],
    /// Imaging weights.
    pub weights: &'a [f32],
    /// Image grid.
    pub geometry: Geometry,
    /// Our dirty image (normalised by the gridded weight).
    pub dirty: &'a Image,
    /// Our gridding + FFT time, seconds.
    pub seconds: f64,
    /// Sum of the weights our gridder put on the grid.
    pub gridded_weight: f64,
}

/// One ducc0 run.
#[derive(Debug, Serialize)]
pub struct Ducc0Run {
    /// ducc0 threads.
    pub nthreads: usize,
    /// ducc0's fastest call, seconds.
    pub seconds: f64,
    /// ducc0 seconds / our seconds: our speed as a fraction of ducc0's.
    pub ratio: f64,
    /// max |ours − ducc0| / max |ours|.
    pub max_diff_rel: f64,
    /// rms(ours − ducc0) / max |ours|.
    pub rms_diff_rel: f64,
}

/// The comparison's outcome.
#[derive(Debug, Serialize)]
pub struct Ducc0Report {
    /// Whether ducc0 ran.
    pub available: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ducc0's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Requested accuracy.
    pub epsilon: f64,
    /// Our gridding + FFT seconds (one thread).
    pub ours_seconds: f64,
    /// Fraction of the weight our gridder dropped as off the grid (ducc0 drops none).
    pub off_grid_weight_fraction: f64,
    /// One entry per thread count.
    pub runs: Vec<Ducc0Run>,
}

#[derive(Debug, Deserialize)]
struct ScriptOutput {
    version: String,
    weight_sum: f64,
    runs: Vec<ScriptRun>,
}

#[derive(Debug, Deserialize)]
struct ScriptRun {
    nthreads: usize,
    seconds: f64,
}

/// Runs the comparison as `args.ducc0` says.
pub fn compare(args: &BenchPipelineArgs, ours: &Ours<'_>) -> Result<Ducc0Report, AppError> {
    let total_weight: f64 = ours.weights.iter().map(|&w| w.max(0.0) as f64).sum();
    let mut report = Ducc0Report {
        available: false,
        reason: None,
        version: None,
        epsilon: args.ducc0_epsilon,
        ours_seconds: ours.seconds,
        off_grid_weight_fraction: if total_weight > 0.0 { 1.0 - ours.gridded_weight / total_weight } else { 0.0 },
        runs: Vec::new(),
    };
    match DUCC0.decide(args.ducc0, || run_ducc0(args, ours))? {
        Ok((out, images)) => {
            report.available = true;
            report.version = Some(out.version);
            let peak = ours.dirty.data.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
            for (run, img) in out.runs.iter().zip(images) {
                let norm = if out.weight_sum > 0.0 { 1.0 / out.weight_sum } else { 0.0 };
                let (mut max, mut sq) = (0.0f64, 0.0f64);
                for (a, b) in ours.dirty.data.iter().zip(&img) {
                    let d = a - b * norm;
                    max = max.max(d.abs());
                    sq += d * d;
                }
                report.runs.push(Ducc0Run {
                    nthreads: run.nthreads,
                    seconds: run.seconds,
                    ratio: run.seconds / ours.seconds.max(1e-12),
                    max_diff_rel: max / peak,
                    rms_diff_rel: (sq / img.len().max(1) as f64).sqrt() / peak,
                });
            }
        }
        Err(reason) => report.reason = Some(reason),
    }
    Ok(report)
}

/// Writes the inputs, runs the script, reads its images; the error says what failed.
fn run_ducc0(args: &BenchPipelineArgs, ours: &Ours<'_>) -> Result<(ScriptOutput, Vec<Vec<f64>>), String> {
    let threads = if args.ducc0_threads.is_empty() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 {
            vec![1, cores]
        } else {
            vec![1]
        }
    } else {
        args.ducc0_threads.clone()
    };
    let params = serde_json::json!({
        "npix": ours.geometry.npix,
        "cell_rad": ours.geometry.cell_rad,
        "epsilon": args.ducc0_epsilon,
        "threads": threads,
        "repeats": args.repeats,
    });
    let inputs = vec![
        ("params.json", params.to_string().into_bytes()),
        ("u.f64", ours.u.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("v.f64", ours.v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("vis.c64", ours.vis.iter().flat_map(|c| [c.re.to_le_bytes(), c.im.to_le_bytes()].concat()).collect()),
        ("w.f32", ours.weights.iter().flat_map(|x| x.to_le_bytes()).collect()),
    ];
    let (dir, parsed): (_, ScriptOutput) = DUCC0.run_script(&args.ducc0_python, inputs)?;
    let d = dir.path();
    let n = ours.geometry.npix * ours.geometry.npix;
    let mut images = Vec::new();
    for run in &parsed.runs {
        let name = format!("dirty-{}.f64", run.nthreads);
        let bytes = std::fs::read(d.join(&name)).map_err(|e| format!("reading ducc0's {name}: {e}"))?;
        if bytes.len() != n * 8 {
            return Err(format!("ducc0's {name} has {} bytes, expected {}", bytes.len(), n * 8));
        }
        images.push(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect());
    }
    Ok((parsed, images))
}

/// The comparison as text.
pub fn text(r: &Ducc0Report) -> String {
    if !r.available {
        return format!("ducc0: {}\n", r.reason.as_deref().unwrap_or("not run"));
    }
    let mut t = format!(
        "dirty image, ours (grid + fft, 1 thread) {:.4} s vs ducc0 {} vis2dirty (epsilon {:e}, same samples, weights, npix, cell; w ignored by both):\n",
        r.ours_seconds,
        r.version.as_deref().unwrap_or("?"),
        r.epsilon
    );
    for run in &r.runs {
        t += &format!(
            "  ducc0 nthreads={:<3} {:.4} s  ratio ours/ducc0 speed {:.3}  max|diff|/peak {:.2e}  rms diff/peak {:.2e}\n",
            run.nthreads, run.seconds, run.ratio, run.max_diff_rel, run.rms_diff_rel
        );
    }
    if r.off_grid_weight_fraction > 0.0 {
        t += &format!("  (our gridder dropped {:.2e} of the weight as off the grid)\n", r.off_grid_weight_fraction);
    }
    t
}
