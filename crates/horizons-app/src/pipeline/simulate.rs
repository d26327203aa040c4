//! `horizons pipeline simulate`: the correlator simulator (`horizons_ngvla::sim`) as a source of
//! runs. It publishes one simulated observation onto the raw topic exactly as `pipeline ingest`
//! publishes a file (the same [`RunPublisher`]), one integration at a time at a chosen rate, and
//! writes what the stages are meant to find — the sky, the true gains, the injected RFI — into a
//! truth directory, so their flags, gains and images can be scored.
//!
//! The run's calibration model is the simulated sky: the simulation plays a calibrator field
//! whose model is known (with the default sky, a 1 Jy point at the phase centre, that is the
//! pipeline's default model anyway).
//!
//! With `--score DIR` it publishes nothing: the pipeline runs in this process on the simulated
//! observation (what `pipeline run` does with a file), writes the products into `DIR`, and scores
//! them against the truth ([`horizons_ngvla::sim::score`]): flag precision and recall against the
//! injected RFI, gain errors against the true gains, each point source's recovered position and
//! flux. The scores go to stdout and `DIR/score.json`, with the targets checked; a target
//! missed makes the command fail after printing.
//!
//! Truth files (`--truth DIR`, created):
//! - `simulation.json`: the settings, the run and observation ids, the array's size.
//! - `sky.json`: the point sources, as offsets, direction cosines and `(ra, dec)`.
//! - `gains.json`: the true gains in the schema of the calibration's `gains.json`
//!   (`horizons.gains/1`), one solution interval per integration, not phase-referenced.
//! - `rfi.json`: the injected events (antenna pairs, integrations, channels, amplitude in units of
//!   the per-sample noise rms, fading wings) and the mask they make: cells of
//!   `(integration, baseline, channel)` in all, per integration and per antenna.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_ngvla::calibrate::gains_json::GainsJson;
use horizons_ngvla::calibrate::{GainTable, Solution};
use horizons_ngvla::model::VisBlock;
use horizons_ngvla::sim::score::{self, FlagScore, GainScore, SourceScore};
use horizons_ngvla::sim::{RfiInjection, SimConfig, Simulator};
use horizons_ngvla::sky::{self, PointSource, SkyModel};
use horizons_pipeline::ingest::{IngestSummary, RunPublisher};
use serde::Serialize;

use super::ScienceArgs;
use crate::backend::BackendKind;
use crate::error::AppError;

/// Arguments of `pipeline simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Antennas (the ngVLA main array has 214).
    #[arg(long, default_value_t = 214)]
    pub antennas: usize,
    /// Channels of the one spectral window.
    #[arg(long, default_value_t = 32)]
    pub channels: usize,
    /// Integrations (one block each, before cutting for the wire).
    #[arg(long, default_value_t = 8)]
    pub integrations: usize,
    /// Integration time, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub interval_s: f64,
    /// Distance of the outermost station from the array centre, metres (ngVLA: ~30 km).
    #[arg(long, default_value_t = 30_000.0)]
    pub max_radius_m: f64,
    /// Frequency of channel 0, GHz.
    #[arg(long, default_value_t = 27.0)]
    pub freq_ghz: f64,
    /// Channel width, MHz.
    #[arg(long, default_value_t = 1.0)]
    pub chan_width_mhz: f64,
    /// Thermal noise σ per real and imaginary part of a visibility, Jy.
    #[arg(long, default_value_t = 0.1)]
    pub noise_jy: f64,
    /// Gain amplitude scatter: amplitudes are 1 + N(0, σ).
    #[arg(long, default_value_t = 0.1)]
    pub gain_scatter: f64,
    /// Largest gain phase drift per integration, degrees.
    #[arg(long, default_value_t = 2.0)]
    pub phase_drift_deg: f64,
    /// Inject no RFI.
    #[arg(long)]
    pub no_rfi: bool,
    /// Seed of every random draw (array, gains, RFI, noise).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A point source RA_OFFSET_ARCSEC,DEC_OFFSET_ARCSEC,FLUX_JY: offsets east and north of the
    /// phase centre (direction cosines l, m in arcseconds). Repeat for more sources; default one
    /// 1 Jy source at the phase centre.
    #[arg(long = "source", value_name = "RA_OFFSET_ARCSEC,DEC_OFFSET_ARCSEC,FLUX_JY", allow_hyphen_values = true)]
    pub sources: Vec<String>,
    /// Integrations published per second (0 = as fast as they are made).
    #[arg(long, value_name = "BLOCKS_PER_SEC", default_value_t = 0.0)]
    pub rate: f64,
    /// Write the truth (simulation.json, sky.json, gains.json, rfi.json) into this directory.
    #[arg(long, value_name = "DIR")]
    pub truth: Option<PathBuf>,
    /// Backend to publish to; defaults to `bus.backend` from the configuration.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Publish nothing: run the pipeline in this process, write its products into DIR and score
    /// them against the truth (DIR/score.json, and stdout); fails if a target is missed.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["backend", "rate"])]
    pub score: Option<PathBuf>,
    /// Science options, carried with the run to every stage.
    #[command(flatten)]
    pub science: ScienceArgs,
}

fn usage<T>(msg: String) -> Result<T, AppError> {
    Err(AppError::Usage(msg))
}

/// Parses `RA_OFFSET_ARCSEC,DEC_OFFSET_ARCSEC,FLUX_JY`.
fn parse_source(s: &str) -> Result<PointSource, AppError> {
    let bad = |why: &str| {
        AppError::Usage(format!("--source {s:?}: {why} (expected RA_OFFSET_ARCSEC,DEC_OFFSET_ARCSEC,FLUX_JY)"))
    };
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [ra, dec, flux] = parts[..] else { return Err(bad("three numbers needed")) };
    let num = |x: &str| x.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| bad("not a number"));
    let (ra, dec, flux) = (num(ra)?, num(dec)?, num(flux)?);
    if ra.hypot(dec) > 3600.0 {
        return Err(bad("offsets beyond one degree"));
    }
    if flux <= 0.0 {
        return Err(bad("the flux must be positive"));
    }
    let arcsec = (1.0f64 / 3600.0).to_radians();
    Ok(PointSource { l: ra * arcsec, m: dec * arcsec, flux_jy: flux })
}

impl SimulateArgs {
    /// The simulator settings these flags select, or a usage error naming the flag.
    pub fn config(&self) -> Result<SimConfig, AppError> {
        let positive = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                usage(format!("{name} must be a positive number, got {v}"))
            }
        };
        if !(5..=1000).contains(&self.antennas) {
            return usage(format!(
                "--antennas must be 5..=1000 (calibration needs 4 baselines per antenna), got {}",
                self.antennas
            ));
        }
        if !(1..=65_536).contains(&self.channels) {
            return usage(format!("--channels must be 1..=65536, got {}", self.channels));
        }
        if !(1..=1_000_000).contains(&self.integrations) {
            return usage(format!("--integrations must be 1..=1000000, got {}", self.integrations));
        }
        positive("--interval-s", self.interval_s)?;
        positive("--freq-ghz", self.freq_ghz)?;
        positive("--chan-width-mhz", self.chan_width_mhz)?;
        let defaults = SimConfig::default();
        if !(self.max_radius_m > 2.0 * defaults.core_radius_m && self.max_radius_m <= 10_000_000.0) {
            return usage(format!(
                "--max-radius-m must be over {} (twice the core radius) and at most 1e7, got {}",
                2.0 * defaults.core_radius_m,
                self.max_radius_m
            ));
        }
        if !(self.noise_jy >= 0.0 && self.noise_jy.is_finite()) {
            return usage(format!("--noise-jy must be a number >= 0, got {}", self.noise_jy));
        }
        if !(0.0..0.5).contains(&self.gain_scatter) {
            return usage(format!("--gain-scatter must be in [0, 0.5), got {}", self.gain_scatter));
        }
        if !(0.0..=180.0).contains(&self.phase_drift_deg) {
            return usage(format!("--phase-drift-deg must be in [0, 180], got {}", self.phase_drift_deg));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return usage(format!("--rate must be a number >= 0 (0 = as fast as possible), got {}", self.rate));
        }
        let sources = self.sources.iter().map(|s| parse_source(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(SimConfig {
            n_ant: self.antennas,
            max_radius_m: self.max_radius_m,
            first_freq_hz: self.freq_ghz * 1e9,
            chan_width_hz: self.chan_width_mhz * 1e6,
            n_chan: self.channels,
            n_int: self.integrations,
            interval_s: self.interval_s,
            sky: if sources.is_empty() { SkyModel::point_at_centre(1.0) } else { SkyModel { sources } },
            noise_jy: self.noise_jy,
            gain_amp_sigma: self.gain_scatter,
            phase_drift_deg: self.phase_drift_deg,
            rfi: (!self.no_rfi).then(RfiInjection::default),
            seed: self.seed,
            ..defaults
        })
    }
}

/// What `pipeline simulate` prints.
#[derive(Debug, Serialize)]
pub struct SimulateSummary {
    /// What was published, as `pipeline ingest` reports it.
    #[serde(flatten)]
    pub ingest: IngestSummary,
    /// The simulation.
    pub simulation: SimFigures,
    /// Seconds from the first integration made to the end marker published.
    pub seconds: f64,
    /// Integrations published per second.
    pub blocks_per_sec: f64,
    /// Encoded block bytes published per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Where the truth went.
    pub truth: Option<String>,
}

/// The simulation's size and its RFI.
#[derive(Debug, Clone, Serialize)]
pub struct SimFigures {
    /// Antennas.
    pub antennas: usize,
    /// Baselines (cross-correlations only).
    pub baselines: usize,
    /// Channels.
    pub channels: usize,
    /// Integrations.
    pub integrations: usize,
    /// Point sources.
    pub sources: usize,
    /// `(integration, baseline, channel)` cells with injected RFI.
    pub rfi_cells: usize,
    /// Their fraction of all cells.
    pub rfi_fraction: f64,
}

impl SimFigures {
    fn of(sim: &Simulator, tally: &RfiTally) -> SimFigures {
        let cfg = sim.config();
        SimFigures {
            antennas: cfg.n_ant,
            baselines: sim.baselines().len(),
            channels: cfg.n_chan,
            integrations: cfg.n_int,
            sources: cfg.sky.sources.len(),
            rfi_cells: tally.flagged,
            rfi_fraction: tally.flagged as f64 / tally.cells.max(1) as f64,
        }
    }
}

/// The RFI mask as it was made, counted.
#[derive(Debug, Clone, Default, Serialize)]
struct RfiTally {
    cells: usize,
    flagged: usize,
    by_integration: Vec<usize>,
    /// Per antenna label: RFI cells on its baselines.
    by_antenna: BTreeMap<String, usize>,
}

impl RfiTally {
    fn add(&mut self, sim: &Simulator, truth: &[bool]) {
        let n_chan = sim.config().n_chan;
        self.cells += truth.len();
        let mut here = 0;
        for (bi, bl) in sim.baselines().iter().enumerate() {
            let n = truth[bi * n_chan..(bi + 1) * n_chan].iter().filter(|&&t| t).count();
            if n > 0 {
                here += n;
                *self.by_antenna.entry(bl.ant1.to_string()).or_default() += n;
                *self.by_antenna.entry(bl.ant2.to_string()).or_default() += n;
            }
        }
        self.flagged += here;
        self.by_integration.push(here);
    }
}

/// Publishes a simulated run through `publisher`; returns what was published and the RFI tally.
pub async fn simulate(
    args: &SimulateArgs,
    sim: Arc<Simulator>,
    mut publisher: RunPublisher<'_>,
) -> Result<SimulateSummary, AppError> {
    let cfg = sim.config().clone();
    let run = publisher.run();
    let bar = progress_bar(cfg.n_int as u64);
    let make = |k: usize| {
        let sim = sim.clone();
        tokio::task::spawn_blocking(move || sim.block(k))
    };
    let started = Instant::now();
    let mut tally = RfiTally::default();
    let mut bytes = 0usize;
    // The next integration is made while the current one is published.
    let mut next = Some(make(0));
    for k in 0..cfg.n_int {
        let (block, truth): (VisBlock, Vec<bool>) = match next.take() {
            Some(h) => h.await.map_err(|e| AppError::Task(format!("simulating integration {k}: {e}")))?,
            None => unreachable!("one integration is always in the making"),
        };
        if k + 1 < cfg.n_int {
            next = Some(make(k + 1));
        }
        if args.rate > 0.0 {
            tokio::time::sleep_until((started + Duration::from_secs_f64(k as f64 / args.rate)).into()).await;
        }
        bytes += publisher.publish(&block).await.map_err(AppError::Stages)?;
        tally.add(&sim, &truth);
        bar.inc(1);
        bar.set_message(format!("{:.1} MB/s", bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)));
    }
    if let Some(dir) = &args.truth {
        write_truth(dir, &sim, &run, &tally)?;
    }
    let ingest = publisher.finish().await.map_err(AppError::Stages)?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    Ok(SimulateSummary {
        ingest,
        simulation: SimFigures::of(&sim, &tally),
        seconds,
        blocks_per_sec: cfg.n_int as f64 / seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        truth: args.truth.as_ref().map(|d| d.display().to_string()),
    })
}

/// What `pipeline simulate --score DIR` prints and writes as `DIR/score.json`.
#[derive(Debug, Serialize)]
pub struct ScoreSummary {
    /// The simulation.
    pub simulation: SimFigures,
    /// Where the products went.
    pub products: String,
    /// Per-visibility signal-to-noise of the brightest source: its flux over the noise σ.
    pub snr: f64,
    /// Flags after validation and flagging against the injected RFI.
    pub flags: FlagScore,
    /// Gain solutions against the true gains (`null` without a reference antenna).
    pub gains: Option<GainScore>,
    /// Each true point source and the restored image's peak matched to it.
    pub sources: Vec<SourceScore>,
    /// The targets checked, by name.
    pub checks: BTreeMap<&'static str, Check>,
    /// Targets not checked, and why.
    pub not_checked: BTreeMap<&'static str, &'static str>,
    /// Whether every check passed.
    pub pass: bool,
    /// Seconds to simulate, process and score.
    pub seconds: f64,
}

/// One target.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The figure.
    pub value: f64,
    /// The target, as text (`>= 0.9`).
    pub target: &'static str,
    /// Whether the figure meets it.
    pub pass: bool,
}

/// The targets for a simulated run: flag precision and recall ≥ 0.9 (when RFI is
/// injected); gains within 1 % and 1° at a per-visibility SNR ≥ 50; every point source
/// recovered within half a pixel of its position.
fn checks(
    flags: &FlagScore,
    gains: Option<&GainScore>,
    sources: &[SourceScore],
    snr: f64,
    cell_arcsec: f64,
) -> (BTreeMap<&'static str, Check>, BTreeMap<&'static str, &'static str>) {
    let (mut c, mut skipped) = (BTreeMap::new(), BTreeMap::new());
    let mut check = |name, value: f64, target, pass| {
        c.insert(name, Check { value, target, pass });
    };
    if flags.rfi_cells > 0 {
        check("flag_precision", flags.precision, ">= 0.9", flags.precision >= 0.9);
        check("flag_recall", flags.recall, ">= 0.9", flags.recall >= 0.9);
    } else {
        skipped.insert("flag_precision_and_recall", "no RFI injected (--no-rfi)");
    }
    match gains {
        Some(g) if snr >= 50.0 => {
            check("gain_amplitude_error", g.worst_amplitude, "<= 0.01", g.worst_amplitude <= 0.01);
            check("gain_phase_error_deg", g.worst_phase_deg, "<= 1", g.worst_phase_deg <= 1.0);
        }
        Some(_) => {
            skipped.insert("gains", "per-visibility SNR below 50 (the target holds from SNR 50)");
        }
        None => {
            skipped.insert("gains", "no reference antenna in the solutions");
        }
    }
    let worst = sources.iter().map(|x| x.position_error_arcsec.unwrap_or(f64::INFINITY)).fold(0.0, f64::max);
    check("source_position_error_arcsec", worst, "<= half a pixel", worst <= 0.5 * cell_arcsec);
    (c, skipped)
}

/// `pipeline simulate --score DIR`: simulates every integration, runs the pipeline on them in
/// this process, writes the products into `dir` and scores them against the truth.
pub fn score_run(
    args: &SimulateArgs,
    sim: &Simulator,
    opts: &horizons_ngvla::pipeline::Options,
    dir: &Path,
) -> Result<ScoreSummary, AppError> {
    let started = Instant::now();
    let cfg = sim.config();
    let bar = progress_bar(cfg.n_int as u64);
    let mut tally = RfiTally::default();
    let mut blocks = Vec::with_capacity(cfg.n_int);
    for k in 0..cfg.n_int {
        let (block, truth) = sim.block(k);
        tally.add(sim, &truth);
        blocks.push(block);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(truth) = &args.truth {
        write_truth(truth, sim, "in-process (--score)", &tally)?;
    }
    eprintln!("simulate: running the pipeline on {} integrations in this process", cfg.n_int);
    let products =
        horizons_ngvla::pipeline::run_blocks(sim.observation().clone(), blocks, opts).map_err(AppError::Pipeline)?;
    horizons_ngvla::archive::write_delivered(&products, dir).map_err(AppError::Pipeline)?;
    let im = &products.imaging;
    let brightest = cfg.sky.sources.iter().map(|s| s.flux_jy).fold(0.0, f64::max);
    let snr = if cfg.noise_jy > 0.0 { brightest / cfg.noise_jy } else { f64::INFINITY };
    let flags = score::flags(sim, &products.flagged_blocks);
    let gains = score::gains(sim, &products.gains);
    let sources = score::sources(&cfg.sky, &im.restored, &im.clean.residual, opts.imaging.cell_arcsec);
    let (checks, not_checked) = checks(&flags, gains.as_ref(), &sources, snr, opts.imaging.cell_arcsec);
    let summary = ScoreSummary {
        simulation: SimFigures::of(sim, &tally),
        products: dir.display().to_string(),
        snr,
        flags,
        gains,
        sources,
        pass: checks.values().all(|c| c.pass),
        checks,
        not_checked,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&dir.join("score.json"), &summary)?;
    Ok(summary)
}

/// A bar over the integrations on stderr (drawn only when stderr is a terminal).
fn progress_bar(n: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} integrations {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("simulate");
    bar
}

/// The true gains as a gain table: one cell per integration, every channel, no reference.
pub fn true_gains(sim: &Simulator) -> GainTable {
    let cfg = sim.config();
    let obs = sim.observation();
    let t0 = 60_000.0 * 86_400.0;
    GainTable {
        observation_id: obs.id.clone(),
        antennas: obs.antennas.iter().map(|a| a.number).collect(),
        feeds: vec!['R', 'L'],
        reference_antenna: None,
        model: cfg.sky.clone(),
        update_weights: false,
        solutions: (0..cfg.n_int)
            .map(|k| Solution {
                spw: 0,
                integration_start: k as u64,
                integration_end: k as u64 + 1,
                t_start_mjd_s: t0 + (k as f64 - 0.5) * cfg.interval_s,
                t_end_mjd_s: t0 + (k as f64 + 0.5) * cfg.interval_s,
                chan_start: 0,
                chan_end: cfg.n_chan,
                gains: (0..2).map(|f| (0..cfg.n_ant).map(|a| sim.true_gain(k, f, a)).collect()).collect(),
                flags: vec![vec![false; cfg.n_ant]; 2],
                iterations: vec![0, 0],
                converged: vec![true, true],
            })
            .collect(),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), AppError> {
    let text = serde_json::to_string_pretty(value).expect("truth serialises");
    std::fs::write(path, text).map_err(AppError::io(format!("writing {}", path.display())))
}

fn write_truth(dir: &Path, sim: &Simulator, run: &str, tally: &RfiTally) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(AppError::io(format!("creating {}", dir.display())))?;
    let cfg = sim.config();
    let obs = sim.observation();
    write_json(
        &dir.join("simulation.json"),
        &serde_json::json!({
            "schema": "horizons.sim-truth/1",
            "run": run,
            "observation_id": obs.id,
            "antennas": cfg.n_ant,
            "antenna_names": obs.antennas.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            "baselines": sim.baselines().len(),
            "channels": cfg.n_chan,
            "integrations": cfg.n_int,
            "interval_s": cfg.interval_s,
            "first_freq_hz": cfg.first_freq_hz,
            "chan_width_hz": cfg.chan_width_hz,
            "phase_centre": {"ra_deg": cfg.ra_deg, "dec_deg": cfg.dec_deg},
            "core_radius_m": cfg.core_radius_m,
            "max_radius_m": cfg.max_radius_m,
            "lat_deg": cfg.lat_deg,
            "noise_jy": cfg.noise_jy,
            "gain_amp_sigma": cfg.gain_amp_sigma,
            "phase_drift_deg": cfg.phase_drift_deg,
            "rfi": cfg.rfi,
            "seed": cfg.seed,
        }),
    )?;
    let arcsec = (1.0f64 / 3600.0).to_radians();
    let sources: Vec<serde_json::Value> = cfg
        .sky
        .sources
        .iter()
        .map(|s| {
            let (ra, dec) = sky::lm_to_radec(s.l, s.m, cfg.ra_deg, cfg.dec_deg);
            serde_json::json!({
                "ra_offset_arcsec": s.l / arcsec, "dec_offset_arcsec": s.m / arcsec,
                "l": s.l, "m": s.m, "flux_jy": s.flux_jy, "ra_deg": ra, "dec_deg": dec,
            })
        })
        .collect();
    write_json(&dir.join("sky.json"), &serde_json::json!({ "sources": sources }))?;
    GainsJson::from_table(&true_gains(sim), Some(obs)).write(&dir.join("gains.json")).map_err(AppError::Pipeline)?;
    let events: Vec<serde_json::Value> = sim
        .rfi_events()
        .iter()
        .map(|e| {
            let pairs: Vec<[u32; 2]> = e
                .baselines
                .iter()
                .map(|&bi| {
                    let b = sim.baselines()[bi];
                    [b.ant1, b.ant2]
                })
                .collect();
            serde_json::json!({
                "integrations": e.ints, "channels": e.chans, "amp": e.amp,
                "wing": e.wing, "leak": e.leak, "baselines": pairs,
            })
        })
        .collect();
    write_json(
        &dir.join("rfi.json"),
        &serde_json::json!({
            "injection": cfg.rfi,
            "events": events,
            "cells": tally.cells,
            "rfi_cells": tally.flagged,
            "fraction": tally.flagged as f64 / tally.cells.max(1) as f64,
            "by_integration": tally.by_integration,
            "by_antenna": tally.by_antenna,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_source(arg: &str, expected: Result<(f64, f64, f64), &str>) {
        let arcsec = (1.0f64 / 3600.0).to_radians();
        match (parse_source(arg), expected) {
            (Ok(s), Ok((ra, dec, flux))) => {
                assert!((s.l / arcsec - ra).abs() < 1e-9 && (s.m / arcsec - dec).abs() < 1e-9, "{arg}: {s:?}");
                assert_eq!(s.flux_jy, flux, "{arg}");
            }
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{arg}: {e}"),
            (got, want) => panic!("{arg}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn sources_parse_or_say_why_not() {
        check_source("0,0,1", Ok((0.0, 0.0, 1.0)));
        check_source(" 2.5, -1.5 ,0.3", Ok((2.5, -1.5, 0.3)));
        check_source("1,2", Err("three numbers needed"));
        check_source("1,x,2", Err("not a number"));
        check_source("1,1,-2", Err("the flux must be positive"));
        check_source("4000,0,1", Err("beyond one degree"));
        check_source("1,1,NaN", Err("not a number"));
    }

    #[test]
    fn true_gains_are_the_simulators() {
        let sim = Simulator::new(SimConfig { n_ant: 6, n_chan: 4, n_int: 3, rfi: None, ..Default::default() });
        let t = true_gains(&sim);
        assert_eq!(t.solutions.len(), 3);
        for (k, s) in t.solutions.iter().enumerate() {
            assert_eq!(t.find(0, k as u64, 3).map(|x| x.integration_start), Some(k as u64));
            assert_eq!(s.gains[1][5], sim.true_gain(k, 1, 5));
        }
    }
}
