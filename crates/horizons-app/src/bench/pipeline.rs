//! `horizons bench pipeline`: each stage function of `horizons_ngvla` timed on the same data —
//! a uvfits file (`--source`) or the correlator simulator (`--simulate`) — and, side by side in
//! the same run, our dirty-image gridder against ducc0's `wgridder` ([`super::ducc0`]) and our
//! flag stage against AOFlagger ([`super::aoflagger`]).
//!
//! **MB** is the size of the observation's raw visibilities: every complex sample of every
//! baseline, channel, polarisation product and integration (flagged ones included) at 8 bytes
//! (a `Complex32`), MB = 10^6 bytes. Every stage's `mb_per_sec` divides that same figure by the
//! stage's wall time, so the stages compare directly and each says how much of a raw
//! visibility stream one instance of it keeps up with. Every stage function is single-threaded
//! (nothing in `horizons_ngvla` spawns threads; `rustfft` does not), so per core = MB/s.
//!
//! Each stage gets the previous stage's output, prepared before the clock starts (clones are
//! not timed); with `--repeats N` a stage runs N times on fresh copies and the fastest run
//! counts. The stages: `wire` (Protobuf encode + decode), `validate`, `flag` (SumThreshold
//! flagging + MAD alerts), `calibrate` (StEFCal solve + apply), `image` (the whole imaging stage
//! as `pipeline run` calls it: dirty image, PSF, double-size PSF, beam fit, CLEAN, restore),
//! and three steps inside it timed alone: `grid` (convolutional gridding of the dirty image's
//! Stokes I samples), `fft` (inverse FFT of the padded grid + grid correction) and `clean`
//! (Högbom minor cycles and the major cycles' degrid/grid).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use horizons_ngvla::calibrate;
use horizons_ngvla::image::{self, clean, weighting, EsGridder, Geometry, Gridder};
use horizons_ngvla::model::{VisBlock, C_M_PER_S};
use horizons_ngvla::pipeline::{self, Options};
use horizons_ngvla::rfi::{self, NoiseEstimate, Polarisations};
use horizons_ngvla::sim::{SimConfig, Simulator};
use horizons_ngvla::uvfits::UvFits;
use horizons_ngvla::validate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use num_complex::Complex32;
use serde::Serialize;

use super::aoflagger::{self, AoflaggerReport};
use super::ducc0::{self, Ducc0Report};
use super::reference::CompareMode;
use crate::error::AppError;

/// `horizons bench pipeline`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["source", "simulate"])))]
pub struct BenchPipelineArgs {
    /// A uvfits file to measure on (e.g. the EVLA file of `scripts/fetch-vla-data`).
    #[arg(long, value_name = "FILE")]
    pub source: Option<PathBuf>,
    /// Measure on simulated ngVLA-like data instead (see --antennas, --channels, --integrations).
    #[arg(long)]
    pub simulate: bool,
    /// Simulated antennas (the ngVLA main array has 214); default 64.
    #[arg(long)]
    pub antennas: Option<usize>,
    /// Simulated channels (one spectral window); default 32.
    #[arg(long)]
    pub channels: Option<usize>,
    /// Simulated integrations (10 s each); default 8.
    #[arg(long)]
    pub integrations: Option<usize>,
    /// Seed of the simulation; default 42.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Image side, pixels (even).
    #[arg(long, default_value_t = 512)]
    pub npix: usize,
    /// Pixel size, arcseconds; default 0.25 for a file (as `pipeline run`), and for simulated
    /// data the size that fits the longest baseline onto the grid.
    #[arg(long)]
    pub cell_arcsec: Option<f64>,
    /// Runs of each stage; the fastest counts.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// The flagger's options, as for `pipeline run`.
    #[command(flatten)]
    pub rfi: crate::pipeline::RfiArgs,
    /// The ducc0 comparison: `auto` runs it if the venv works and reports why not otherwise,
    /// `require` fails without it, `off` skips it.
    #[arg(long, value_enum, default_value = "auto")]
    pub ducc0: CompareMode,
    /// Python with ducc0 installed (`bash scripts/ducc0-venv` makes this one).
    #[arg(long, value_name = "PATH", default_value = ".cache/venv-ducc0/bin/python")]
    pub ducc0_python: PathBuf,
    /// ducc0 thread counts to measure; default 1 and the machine's cores.
    #[arg(long, value_delimiter = ',')]
    pub ducc0_threads: Vec<usize>,
    /// ducc0's requested accuracy (our kernel: support 8, ~1e-6).
    #[arg(long, default_value_t = 1e-6)]
    pub ducc0_epsilon: f64,
    /// The AOFlagger comparison: `auto` runs it if the venv works and reports why not
    /// otherwise, `require` fails without it, `off` skips it.
    #[arg(long, value_enum, default_value = "auto")]
    pub aoflagger: CompareMode,
    /// Python with AOFlagger installed (`bash scripts/aoflagger-venv` makes this one).
    #[arg(long, value_name = "PATH", default_value = ".cache/venv-aoflagger/bin/python")]
    pub aoflagger_python: PathBuf,
    /// AOFlagger's strategy: `generic`, `jvla` or a .lua file; default `jvla` for a file (the
    /// EVLA data), `generic` for simulated data.
    #[arg(long, value_name = "NAME|FILE")]
    pub aoflagger_strategy: Option<String>,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What was measured on.
#[derive(Debug, Serialize)]
pub struct InputReport {
    /// `file` or `simulated`.
    pub kind: &'static str,
    /// The file, or the simulation's parameters.
    pub source: String,
    /// Antennas in the observation.
    pub antennas: usize,
    /// Baselines per integration (largest block).
    pub baselines: usize,
    /// Channels per block (largest block).
    pub channels: usize,
    /// Polarisation products.
    pub polarisations: usize,
    /// Blocks (integrations × spectral windows).
    pub blocks: usize,
    /// Complex visibilities (all products, flagged included).
    pub visibilities: usize,
    /// Their size, MB (8 bytes each, 10^6).
    pub mb: f64,
    /// Stokes I samples the imaging stage grids.
    pub stokes_i_samples: usize,
    /// Image side.
    pub npix: usize,
    /// Pixel size, arcseconds.
    pub cell_arcsec: f64,
}

/// One stage's figures.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// The stage (see the module docs).
    pub stage: &'static str,
    /// Wall time of the fastest run, seconds.
    pub seconds: f64,
    /// Raw visibility MB per second.
    pub mb_per_sec: f64,
    /// Threads the stage uses.
    pub threads: usize,
    /// `mb_per_sec / threads`.
    pub mb_per_sec_per_core: f64,
    /// Items per second where a stage has a natural item (gridded samples for `grid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_per_sec: Option<f64>,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct PipelineBenchReport {
    /// How MB is counted.
    pub mb_definition: &'static str,
    /// The machine's CPU model (from /proc/cpuinfo).
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Runs per stage (fastest counts).
    pub repeats: usize,
    /// The flagger's iterations after its sensitivity schedule.
    pub rfi_refits: usize,
    /// Whether the flagger's SumThreshold is two-sided.
    pub rfi_flag_dips: bool,
    /// How the flagger estimates its noise σ.
    pub rfi_noise: NoiseEstimate,
    /// Whether the flagger runs on one combined plane per baseline or one per product.
    pub rfi_polarisations: Polarisations,
    /// The flagger's χ₁ in σ.
    pub rfi_base_threshold: f64,
    /// The data.
    pub input: InputReport,
    /// Per-stage figures, in chain order.
    pub stages: Vec<StageReport>,
    /// Validation and flagging one after the other on one core: MB over the sum of their
    /// seconds (the brief's target is 1 000).
    pub validate_and_flag_mb_per_sec_per_core: f64,
    /// The side-by-side gridding comparison.
    pub ducc0: Ducc0Report,
    /// The side-by-side flagging comparison.
    pub aoflagger: AoflaggerReport,
}

const MB_DEFINITION: &str = "raw visibilities of the input (all baselines, channels, polarisation products, \
integrations, flagged included) x 8 bytes (Complex32), 10^6 bytes; the same MB for every stage";

const DEFAULT_ANTENNAS: usize = 64;

const STAGES: [&str; 8] = ["wire", "validate", "flag", "calibrate", "image", "grid", "fft", "clean"];
/// Steps of the progress bar besides the stages: the AOFlagger and ducc0 comparisons.
const COMPARISONS: u64 = 2;

/// Runs the benchmark.
pub async fn run(args: BenchPipelineArgs) -> Result<(), AppError> {
    check(&args)?;
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .map_err(|e| AppError::Task(format!("bench pipeline: {e}")))?
}

fn check(a: &BenchPipelineArgs) -> Result<(), AppError> {
    let usage = |m: String| Err(AppError::Usage(m));
    if !a.simulate && (a.antennas.is_some() || a.channels.is_some() || a.integrations.is_some() || a.seed.is_some()) {
        return usage(
            "--antennas, --channels, --integrations and --seed describe a simulation: they need --simulate".into(),
        );
    }
    let antennas = a.antennas.unwrap_or(DEFAULT_ANTENNAS);
    if !(4..=1000).contains(&antennas) {
        return usage(format!("--antennas must be 4..=1000, got {antennas}"));
    }
    if a.channels == Some(0) || a.integrations == Some(0) {
        return usage("--channels and --integrations must be at least 1".into());
    }
    if a.npix < 32 || !a.npix.is_multiple_of(2) || a.npix > 16_384 {
        return usage(format!("--npix must be even and 32..=16384 (ducc0 needs at least 32), got {}", a.npix));
    }
    if let Some(c) = a.cell_arcsec.filter(|c| !(*c > 0.0 && c.is_finite())) {
        return usage(format!("--cell-arcsec must be a positive number, got {c}"));
    }
    a.rfi.apply(&mut rfi::RfiConfig::default())?; // a bad value fails before the input is loaded
    if a.repeats == 0 || a.repeats > 100 {
        return usage(format!("--repeats must be 1..=100, got {}", a.repeats));
    }
    if let Some(t) = a.ducc0_threads.iter().find(|&&t| t == 0 || t > 1024) {
        return usage(format!("--ducc0-threads must be 1..=1024, got {t}"));
    }
    if !(a.ducc0_epsilon > 2e-13 && a.ducc0_epsilon < 0.1) {
        return usage(format!("--ducc0-epsilon must be in (2e-13, 0.1), got {}", a.ducc0_epsilon));
    }
    Ok(())
}

fn run_blocking(args: BenchPipelineArgs) -> Result<(), AppError> {
    let bar = progress_bar(args.json);
    bar.set_message("loading the input");
    let (observation, raw, kind, source, sim) = load(&args)?;
    if raw.is_empty() {
        return Err(AppError::Usage(format!("{source}: the input has no visibilities")));
    }
    let mut opts = Options::default();
    args.rfi.apply(&mut opts.rfi)?;
    opts.imaging.npix = args.npix;
    opts.imaging.cell_arcsec = match (args.cell_arcsec, kind) {
        (Some(c), _) => c,
        (None, "file") => opts.imaging.cell_arcsec,
        (None, _) => fitting_cell_arcsec(&raw, args.npix, opts.imaging.kernel_support),
    };
    let visibilities: usize = raw.iter().map(|b| b.vis.len()).sum();
    let mb = visibilities as f64 * 8.0 / 1e6;
    let mut input = InputReport {
        kind,
        source,
        antennas: observation.antennas.len(),
        baselines: raw.iter().map(|b| b.baselines.len()).max().unwrap_or(0),
        channels: raw.iter().map(|b| b.n_chan).max().unwrap_or(0),
        polarisations: raw.iter().map(|b| b.pols.len()).max().unwrap_or(0),
        blocks: raw.len(),
        visibilities,
        mb,
        stokes_i_samples: 0,
        npix: args.npix,
        cell_arcsec: opts.imaging.cell_arcsec,
    };
    let mut timer = Timer { bar: &bar, repeats: args.repeats, mb, stages: Vec::new() };

    timer.time("wire", None, || raw.clone(), |r| pipeline::wire_round_trip(r, opts.max_block_bytes).map(drop))?;
    let (valid, _) = timer.time("validate", None, || raw.clone(), |r| validate::validate(r, &opts.validation))?;
    drop(raw);
    let flagged = timer.time(
        "flag",
        None,
        || valid.clone(),
        |mut blocks| {
            // The alerts are part of the flag stage's work on the bus; they are unused here.
            let alerts = pipeline::flag_stage(&mut blocks, &opts)?.1;
            std::hint::black_box(alerts);
            Ok(blocks)
        },
    )?;
    bar.set_message("aoflagger");
    let aof = aoflagger::compare(
        &args,
        &aoflagger::Ours {
            input: &valid,
            output: &flagged,
            seconds: timer.seconds("flag"),
            mb,
            sim: sim.as_ref(),
            default_strategy: if kind == "file" { "jvla" } else { "generic" },
        },
    )?;
    bar.inc(1);
    drop(valid);
    let calibrated = timer.time(
        "calibrate",
        None,
        || flagged.clone(),
        |mut blocks| {
            let gains = calibrate::solve(&blocks, &opts.calibration)?;
            calibrate::apply(&mut blocks, &gains);
            Ok(blocks)
        },
    )?;
    drop(flagged);
    timer.time("image", None, || (), |()| image::image_blocks(&calibrated, &opts.imaging).map(drop))?;

    // The imaging stage's steps alone, on the samples and weights it grids.
    let s = image::stokes_i_samples(&calibrated);
    drop(calibrated);
    input.stokes_i_samples = s.vis.len();
    let geometry = opts.imaging.geometry();
    let gridder = EsGridder::new(geometry, opts.imaging.kernel_support);
    let w = weighting::imaging_weights(&s.u, &s.v, &s.weight, opts.imaging.weighting, geometry);
    let uv = timer.time("grid", Some(s.vis.len()), || (), |()| Ok(gridder.grid_uv(&s.u, &s.v, &s.vis, &w)))?;
    let gridded_weight = uv.weight_sum;
    let dirty = timer.time("fft", None, || uv.clone(), |g| Ok(gridder.to_image(g)))?;
    drop(uv);
    let big = EsGridder::new(Geometry { npix: 2 * geometry.npix, ..geometry }, opts.imaging.kernel_support);
    let psf_big = big.grid(&s.u, &s.v, &vec![Complex32::new(1.0, 0.0); s.vis.len()], &w);
    let cleaned = timer.time(
        "clean",
        None,
        || (),
        |()| Ok(clean::clean(&gridder, &s.u, &s.v, &s.vis, &w, &psf_big, &opts.imaging.clean)),
    )?;
    drop(cleaned);
    drop(psf_big);

    bar.set_message("ducc0");
    let ours_seconds = timer.seconds("grid") + timer.seconds("fft");
    let ours = ducc0::Ours {
        u: &s.u,
        v: &s.v,
        vis: &s.vis,
        weights: &w,
        geometry,
        dirty: &dirty,
        seconds: ours_seconds,
        gridded_weight,
    };
    let ducc = ducc0::compare(&args, &ours)?;
    bar.inc(1);
    bar.finish_and_clear();

    let report = PipelineBenchReport {
        mb_definition: MB_DEFINITION,
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        repeats: args.repeats,
        rfi_refits: args.rfi.rfi_refits,
        rfi_flag_dips: args.rfi.rfi_flag_dips,
        rfi_noise: args.rfi.rfi_noise,
        rfi_polarisations: args.rfi.rfi_polarisations,
        rfi_base_threshold: opts.rfi.base_threshold,
        validate_and_flag_mb_per_sec_per_core: mb / (timer.seconds("validate") + timer.seconds("flag")).max(1e-9),
        input,
        stages: timer.stages,
        ducc0: ducc,
        aoflagger: aof,
    };
    if args.json {
        return crate::bus::println_flush(serde_json::to_string(&report).expect("report serialises"));
    }
    print!("{}", text(&report));
    Ok(())
}

fn text(r: &PipelineBenchReport) -> String {
    let i = &r.input;
    let mut t = format!(
        "input: {} ({})\n  {} antennas, {} baselines, {} channels, {} products, {} blocks: {} visibilities = {:.1} MB; \
         {} Stokes I samples; image {} px of {:.4}\"\n\
         cpu: {} ({} cores); fastest of {} run(s) per stage; MB = {}\n\
         flagger: {:?} planes, {} sigma, {} refit(s), noise {:?}{}\n\
         {:<10} {:>10} {:>12} {:>8} {:>14}\n",
        i.source,
        i.kind,
        i.antennas,
        i.baselines,
        i.channels,
        i.polarisations,
        i.blocks,
        i.visibilities,
        i.mb,
        i.stokes_i_samples,
        i.npix,
        i.cell_arcsec,
        r.cpu,
        r.cores,
        r.repeats,
        r.mb_definition,
        r.rfi_polarisations,
        r.rfi_base_threshold,
        r.rfi_refits,
        r.rfi_noise,
        if r.rfi_flag_dips { ", two-sided" } else { "" },
        "stage",
        "seconds",
        "MB/s",
        "threads",
        "MB/s per core",
    );
    for s in &r.stages {
        t += &format!(
            "{:<10} {:>10.4} {:>12.1} {:>8} {:>14.1}{}\n",
            s.stage,
            s.seconds,
            s.mb_per_sec,
            s.threads,
            s.mb_per_sec_per_core,
            s.samples_per_sec.map_or(String::new(), |n| format!("  ({:.2} M samples/s)", n / 1e6)),
        );
    }
    t += &format!("validate + flag on one core: {:.1} MB/s\n", r.validate_and_flag_mb_per_sec_per_core);
    t += &ducc0::text(&r.ducc0);
    t += &aoflagger::text(&r.aoflagger);
    t
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Times one stage: `prepare` makes its input (untimed), `f` runs it; the fastest of
/// `repeats` runs is recorded.
struct Timer<'a> {
    bar: &'a ProgressBar,
    repeats: usize,
    mb: f64,
    stages: Vec<StageReport>,
}

impl Timer<'_> {
    fn time<I, O>(
        &mut self,
        stage: &'static str,
        items: Option<usize>,
        mut prepare: impl FnMut() -> I,
        mut f: impl FnMut(I) -> horizons_ngvla::Result<O>,
    ) -> Result<O, AppError> {
        self.bar.set_message(stage);
        let mut best = Duration::MAX;
        let mut out = None;
        for _ in 0..self.repeats {
            let input = prepare();
            let t = Instant::now();
            let o = f(input).map_err(AppError::Pipeline)?;
            best = best.min(t.elapsed());
            out = Some(o);
        }
        self.bar.inc(1);
        let secs = best.as_secs_f64().max(1e-9);
        self.stages.push(StageReport {
            stage,
            seconds: secs,
            mb_per_sec: self.mb / secs,
            threads: 1,
            mb_per_sec_per_core: self.mb / secs,
            samples_per_sec: items.map(|n| n as f64 / secs),
        });
        out.ok_or_else(|| AppError::Bench(format!("{stage}: no run (--repeats 0)")))
    }

    fn seconds(&self, stage: &str) -> f64 {
        self.stages.iter().find(|s| s.stage == stage).map_or(0.0, |s| s.seconds)
    }
}

/// The observation, its raw blocks, `file` or `simulated`, a description, and the simulator
/// (for its truth) when simulated.
type Loaded = (horizons_ngvla::model::Observation, Vec<VisBlock>, &'static str, String, Option<Simulator>);

fn load(args: &BenchPipelineArgs) -> Result<Loaded, AppError> {
    if let Some(path) = &args.source {
        let uv = UvFits::open(path).map_err(AppError::Pipeline)?;
        let raw = uv.to_blocks();
        return Ok((uv.observation, raw, "file", path.display().to_string(), None));
    }
    let cfg = SimConfig {
        n_ant: args.antennas.unwrap_or(DEFAULT_ANTENNAS),
        n_chan: args.channels.unwrap_or(32),
        n_int: args.integrations.unwrap_or(8),
        seed: args.seed.unwrap_or(42),
        ..SimConfig::default()
    };
    let source = format!(
        "simulated ngVLA-like array: {} antennas, {} channels, {} integrations, seed {}",
        cfg.n_ant, cfg.n_chan, cfg.n_int, cfg.seed
    );
    let sim = Simulator::new(cfg);
    let (raw, _) = sim.run();
    Ok((sim.observation().clone(), raw, "simulated", source, Some(sim)))
}

/// The pixel size that keeps the longest baseline's samples on the padded grid with a margin.
fn fitting_cell_arcsec(blocks: &[VisBlock], npix: usize, support: usize) -> f64 {
    let umax = blocks
        .iter()
        .flat_map(|b| {
            let k = b.freq(b.n_chan.saturating_sub(1)).max(b.freq(0)) / C_M_PER_S;
            b.uvw_m.iter().map(move |uvw| uvw[0].abs().max(uvw[1].abs()) * k)
        })
        .fold(0.0f64, f64::max)
        .max(1.0);
    let n = 2.0 * npix as f64;
    let fill = 0.95 * (0.5 - (support as f64 + 1.0) / n);
    (fill / umax).to_degrees() * 3600.0
}

/// A bar on stderr over the stages, hidden for `--json` or when stderr is not a terminal.
fn progress_bar(json: bool) -> ProgressBar {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(STAGES.len() as u64 + COMPARISONS), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
