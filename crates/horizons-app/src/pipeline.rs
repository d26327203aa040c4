//! `horizons pipeline run FILE --out DIR`: the ngVLA chain in one process on a uvfits file
//! (read → validate → flag → calibrate → image → archive), a progress bar over the stages, the
//! products written to `DIR` (see `horizons_ngvla::archive`), and a one-line summary.
//!
//! `horizons pipeline ingest FILE`: the same file onto the bus as one run for the stage workers
//! (`horizons worker --role pipeline:<stage>`, see `horizons_pipeline`), with the same options;
//! `horizons pipeline simulate`: the correlator simulator onto the bus the same way ([`simulate`]);
//! `horizons pipeline audit`: the stages' audit records.
//!
//! The science is `horizons_ngvla`, the bus wiring `horizons_pipeline`; this module only maps
//! flags to their options and reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_bus::{Backend, ReplayFrom, Router, SubscribeOptions, Topology};
use horizons_comments::catalog::ProductRow;
use horizons_pipeline::catalog::CatalogError;
use horizons_pipeline::{Archived, Catalog, Service, ServiceConfig, Stage as StreamStage, Topics};
use tokio_util::sync::CancellationToken;

use horizons_ngvla::image::Weighting;
use horizons_ngvla::pipeline::{self, Options, Stage};
use horizons_ngvla::rfi::{NoiseEstimate, Polarisations, RfiConfig};

use crate::backend::BackendKind;
use crate::config::{Config, Overrides};
use crate::error::AppError;

pub mod simulate;

/// `horizons pipeline …`.
#[derive(Debug, clap::Subcommand)]
pub enum PipelineCommand {
    /// Run every stage on a uvfits file and write the products into a directory.
    Run(RunArgs),
    /// Publish a uvfits file onto the bus (`<namespace>ngvla.raw`) as one run for the stage
    /// workers; prints a JSON summary (run id, blocks, sizes).
    Ingest(IngestArgs),
    /// Publish a simulated ngVLA-like observation onto the bus as one run for the stage workers,
    /// at a chosen rate, with its truth (sky, gains, RFI) written for scoring; prints a JSON
    /// summary. With --score DIR, run the pipeline on it in this process instead and score the
    /// products against the truth.
    Simulate(simulate::SimulateArgs),
    /// Publish again, as new runs, the runs whose raw blocks were stored in a time range (the
    /// stage workers then rebuild their products under the new run ids); prints a JSON summary
    /// (the new runs, with the original each replays, and the runs only partly in the range).
    Replay(ReplayArgs),
    /// Print the stages' audit records (JSON lines), oldest first, until the topic is idle.
    Audit(AuditArgs),
}

/// Arguments of `pipeline replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Start of the range: RFC 3339 in UTC (`2025-01-31T12:00:00Z`) or milliseconds since the epoch.
    #[arg(long, value_parser = crate::bus::admin::parse_time)]
    pub from_time: horizons_bus::Millis,
    /// End of the range (not included; same formats); default: now.
    #[arg(long, value_parser = crate::bus::admin::parse_time)]
    pub to_time: Option<horizons_bus::Millis>,
    /// Backend; defaults to `bus.backend` from the configuration.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Stop reading the raw topic once no frame came for this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub until_idle: Duration,
}

/// Arguments of `pipeline run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The uvfits file.
    pub file: PathBuf,
    /// Output directory (created): dirty.fits, image.fits, psf.fits, gains.json,
    /// flags-summary.json, report.json, …
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Science options.
    #[command(flatten)]
    pub science: ScienceArgs,
}

/// Arguments of `pipeline ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The uvfits file.
    pub file: PathBuf,
    /// Backend to publish to; defaults to `bus.backend` from the configuration.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Science options, carried with the run to every stage.
    #[command(flatten)]
    pub science: ScienceArgs,
}

/// Arguments of `pipeline audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Backend to read from; defaults to `bus.backend` from the configuration.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Stop once no record arrived for this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub until_idle: Duration,
}

/// The science options `run` and `ingest` share.
#[derive(Debug, clap::Args)]
pub struct ScienceArgs {
    /// Pixel size, arcseconds.
    #[arg(long, default_value_t = 0.25)]
    pub cell_arcsec: f64,
    /// Image side, pixels (even).
    #[arg(long, default_value_t = 512)]
    pub npix: usize,
    /// Weighting: natural, uniform or briggs:<robust>.
    #[arg(long, default_value = "natural")]
    pub weighting: String,
    /// Calibration solution interval, seconds (0 = whole observation).
    #[arg(long, default_value_t = 0.0)]
    pub solint: f64,
    /// Channels per calibration solution (0 = whole band).
    #[arg(long, default_value_t = 0)]
    pub chans_per_solution: usize,
    /// Most CLEAN iterations.
    #[arg(long, default_value_t = 10_000)]
    pub niter: usize,
    /// Skip the RFI flagger.
    #[arg(long)]
    pub no_flag: bool,
    /// The flagger's options.
    #[command(flatten)]
    pub rfi: RfiArgs,
}

/// The flagger's options, for every command that runs it (`pipeline run|ingest|simulate`,
/// `bench pipeline`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RfiArgs {
    /// Flagger iterations after the sensitivity schedule, at its last sensitivity, each with the
    /// background refitted without what the one before found (0–8).
    #[arg(long, default_value_t = 0)]
    pub rfi_refits: usize,
    /// Also flag runs of residuals below −χ (AOFlagger's two-sided SumThreshold).
    #[arg(long)]
    pub rfi_flag_dips: bool,
    /// How the flagger estimates each plane's noise σ: `differences` (MAD of the residual's
    /// channel-to-channel differences) or `residual` (MAD of the residual).
    #[arg(long, default_value = "differences")]
    pub rfi_noise: NoiseEstimate,
    /// `combined` (one plane per baseline summing the products' amplitudes, f32, χ₁ = 8 σ) or
    /// `each` (one plane per product, f64, χ₁ = 6 σ, the flags OR-ed).
    #[arg(long, default_value = "combined")]
    pub rfi_polarisations: Polarisations,
}

impl RfiArgs {
    /// Sets these options on `cfg`; `--rfi-refits` must be 0..=8.
    pub fn apply(&self, cfg: &mut RfiConfig) -> Result<(), AppError> {
        if self.rfi_refits > 8 {
            return Err(AppError::Usage(format!("--rfi-refits must be 0..=8, got {}", self.rfi_refits)));
        }
        if self.rfi_polarisations == Polarisations::Each {
            let each = RfiConfig::each();
            (cfg.polarisations, cfg.base_threshold) = (each.polarisations, each.base_threshold);
        }
        cfg.refits = self.rfi_refits;
        cfg.flag_dips = self.rfi_flag_dips;
        cfg.noise = self.rfi_noise;
        Ok(())
    }
}

impl ScienceArgs {
    /// The pipeline options these flags select.
    pub fn options(&self) -> Result<Options, AppError> {
        let mut opts = Options { flag_rfi: !self.no_flag, ..Options::default() };
        self.rfi.apply(&mut opts.rfi)?;
        opts.imaging.npix = self.npix;
        opts.imaging.cell_arcsec = self.cell_arcsec;
        opts.imaging.weighting = self.weighting.parse::<Weighting>().map_err(AppError::Usage)?;
        opts.imaging.clean.niter = self.niter;
        opts.calibration.solution_interval_s = self.solint;
        opts.calibration.chans_per_solution = self.chans_per_solution;
        Ok(opts)
    }
}

/// Runs a pipeline command.
pub async fn run(mut flags: Overrides, cmd: PipelineCommand) -> Result<(), AppError> {
    match cmd {
        // CPU-bound and self-contained: run it off the async workers.
        PipelineCommand::Run(a) => tokio::task::spawn_blocking(move || run_file(a))
            .await
            .map_err(|e| AppError::Task(format!("pipeline: {e}")))?,
        PipelineCommand::Ingest(a) => {
            flags.backend = a.backend;
            let opts = a.science.options()?;
            let cfg = Config::load(&flags)?;
            on_the_bus(&cfg, |service| async move {
                horizons_pipeline::ingest::ingest(&service, &a.file, opts).await.map_err(AppError::Stages)
            })
            .await
        }
        PipelineCommand::Simulate(a) => {
            flags.backend = a.backend;
            let mut opts = a.science.options()?;
            let sim_cfg = a.config()?;
            // The simulated field is a calibrator with a known model: calibrate against it.
            opts.calibration.model = sim_cfg.sky.clone();
            let cfg = Config::load(&flags)?;
            let sim = tokio::task::spawn_blocking(move || horizons_ngvla::sim::Simulator::new(sim_cfg))
                .await
                .map_err(|e| AppError::Task(format!("laying out the array: {e}")))?;
            if let Some(dir) = a.score.clone() {
                let summary = tokio::task::spawn_blocking(move || simulate::score_run(&a, &sim, &opts, &dir))
                    .await
                    .map_err(|e| AppError::Task(format!("scoring: {e}")))??;
                crate::bus::println_flush(serde_json::to_string(&summary).expect("scores serialise"))?;
                let missed: Vec<String> = summary
                    .checks
                    .iter()
                    .filter(|(_, c)| !c.pass)
                    .map(|(name, c)| format!("{name} {} (target {})", c.value, c.target))
                    .collect();
                return match missed.is_empty() {
                    true => Ok(()),
                    false => Err(AppError::Check(format!("targets missed: {}", missed.join(", ")))),
                };
            }
            let sim = Arc::new(sim);
            on_the_bus(&cfg, |service| async move {
                let c = sim.config();
                let source = format!(
                    "simulated: {} antennas, {} channels, {} integrations, seed {}",
                    c.n_ant, c.n_chan, c.n_int, c.seed
                );
                let publisher =
                    horizons_pipeline::ingest::RunPublisher::new(&service, source, sim.observation().clone(), opts)
                        .with_parameter("simulation", simulation_parameters(c));
                simulate::simulate(&a, sim.clone(), publisher).await
            })
            .await
        }
        PipelineCommand::Replay(a) => {
            if a.to_time.is_some_and(|t| t <= a.from_time) {
                return Err(AppError::Usage("--to-time must be after --from-time".into()));
            }
            flags.backend = a.backend;
            let cfg = Config::load(&flags)?;
            on_the_bus(&cfg, |service| async move {
                horizons_pipeline::replay::replay_range(&service, a.from_time, a.to_time, a.until_idle)
                    .await
                    .map_err(AppError::Stages)
            })
            .await
        }
        PipelineCommand::Audit(a) => {
            flags.backend = a.backend;
            let cfg = Config::load(&flags)?;
            let backend = crate::backend::open(&cfg)?;
            let result = print_audit(&cfg, backend.as_ref(), a.until_idle).await;
            let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
            result.and(closed)
        }
    }
}

/// Opens the bus of `cfg`, declares the pipeline's topics, runs `work` on the pipeline service,
/// closes the bus (after a failure too) and prints what `work` returned as one JSON line.
async fn on_the_bus<T, F, Fut>(cfg: &Config, work: F) -> Result<(), AppError>
where
    T: serde::Serialize,
    F: FnOnce(Service) -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    let backend = crate::backend::open(cfg)?;
    let result = async {
        let service = service(cfg, backend.clone())?;
        service.declare().await.map_err(AppError::Stages)?;
        work(service).await
    }
    .await;
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    let summary = result?;
    closed?;
    println!("{}", serde_json::to_string(&summary).expect("the summary serialises"));
    Ok(())
}

/// The simulator's settings for the ingest audit record.
fn simulation_parameters(c: &horizons_ngvla::sim::SimConfig) -> serde_json::Value {
    serde_json::json!({
        "antennas": c.n_ant, "channels": c.n_chan, "integrations": c.n_int, "interval_s": c.interval_s,
        "first_freq_hz": c.first_freq_hz, "chan_width_hz": c.chan_width_hz, "max_radius_m": c.max_radius_m,
        "noise_jy": c.noise_jy, "gain_amp_sigma": c.gain_amp_sigma, "phase_drift_deg": c.phase_drift_deg,
        "sky": c.sky, "rfi": c.rfi, "seed": c.seed,
    })
}

/// The topics of this deployment.
pub fn topics(cfg: &Config) -> Result<Topics, AppError> {
    Topics::new(&cfg.portal.namespace).map_err(AppError::bus("naming the pipeline's topics"))
}

/// The streaming pipeline on `backend` as `cfg` places it.
pub fn service(cfg: &Config, backend: Arc<dyn Backend>) -> Result<Service, AppError> {
    let scfg = ServiceConfig {
        spool_dir: cfg.pipeline_spool_dir(),
        products_dir: cfg.pipeline_products_dir(),
        max_block_bytes: Options::default().max_block_bytes,
    };
    Ok(Service::new(backend, topics(cfg)?, scfg))
}

/// Parses worker roles `pipeline:<stage>` (or `pipeline:all`); other roles are left in the
/// returned list for the portal's workers.
pub fn split_roles(list: &str) -> Result<(Vec<StreamStage>, Vec<String>), AppError> {
    let (mut stages, mut others) = (Vec::new(), Vec::new());
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name.strip_prefix("pipeline:") {
            Some("all") => stages.extend(StreamStage::ALL),
            Some(stage) => stages.push(StreamStage::parse(stage).ok_or_else(|| {
                AppError::Usage(format!(
                    "unknown pipeline stage {stage:?} (pipeline:validate, pipeline:flag, pipeline:calibrate, \
                     pipeline:image, pipeline:archive, pipeline:srdp, pipeline:all)"
                ))
            })?),
            None => others.push(name.to_string()),
        }
    }
    stages.sort();
    stages.dedup();
    Ok((stages, others))
}

/// The portal's store as the archive's catalog: one `products` row per archived run, marked
/// when delivered.
#[derive(Debug, Clone)]
pub struct StoreCatalog(pub horizons_comments::Store);

#[async_trait::async_trait]
impl Catalog for StoreCatalog {
    async fn record(&self, a: Archived<'_>) -> Result<(), CatalogError> {
        let r = a.report;
        let row = ProductRow {
            run: a.run.to_string(),
            observation: a.observation.id.clone(),
            object: r.object.clone(),
            telescope: r.telescope.clone(),
            time_start_mjd_s: r.time_range_mjd_s.0,
            time_end_mjd_s: r.time_range_mjd_s.1,
            freq_min_hz: r.freq_range_hz.0,
            freq_max_hz: r.freq_range_hz.1,
            ra_deg: r.phase_centre.ra_deg,
            dec_deg: r.phase_centre.dec_deg,
            bmaj_arcsec: r.beam.bmaj_arcsec,
            bmin_arcsec: r.beam.bmin_arcsec,
            bpa_deg: r.beam.bpa_deg,
            rms: r.rms,
            peak: r.peak.value,
            peak_ra_deg: r.peak.ra_deg,
            peak_dec_deg: r.peak.dec_deg,
            flag_fraction: r.flag_fraction,
            products_dir: a.products_dir.display().to_string(),
            created_at: horizons_comments::now_ms(),
            delivered_at: None,
        };
        let inserted = horizons_comments::catalog::insert(&self.0, &row).await?;
        tracing::info!(run = a.run, inserted, "catalog row");
        Ok(())
    }

    async fn delivered(&self, run: &str, at_ms: i64) -> Result<(), CatalogError> {
        horizons_comments::catalog::mark_delivered(&self.0, run, at_ms).await?;
        tracing::info!(run, "catalog row delivered");
        Ok(())
    }
}

/// Declares the topics and runs `stages` until `cancel` fires; the archive records its runs in
/// `catalog` when there is one.
pub async fn run_stages(
    cfg: &Config,
    backend: Arc<dyn Backend>,
    stages: &[StreamStage],
    catalog: Option<Arc<dyn Catalog>>,
    cancel: CancellationToken,
) -> Result<(), AppError> {
    let mut service = service(cfg, backend.clone())?;
    if let Some(c) = catalog {
        service = service.with_catalog(c);
    }
    service.declare().await.map_err(AppError::Stages)?;
    let router = service.routes(Router::new(backend), stages).map_err(AppError::Stages)?;
    let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
    tracing::info!(stages = ?names, products = %cfg.pipeline_products_dir().display(), "pipeline stages running");
    router.run(cancel).await.map_err(AppError::bus("running the pipeline stages"))
}

/// The group `pipeline audit` reads with (rewound to the start each time where the backend can).
const AUDIT_GROUP: &str = horizons_pipeline::topology::AUDIT_READER;

async fn print_audit(cfg: &Config, backend: &dyn Backend, idle: Duration) -> Result<(), AppError> {
    let topics = topics(cfg)?;
    let topic = topics.audit.clone();
    // The pipeline's own declaration of the audit topic and its reader group.
    let spec = topics.topology().topics.into_iter().find(|t| t.name == topic).expect("the audit topic is declared");
    backend.declare(&Topology::new().topic(spec)).await.map_err(AppError::bus(format!("declaring {topic}")))?;
    match backend.replay() {
        Some(replay) => replay
            .replay(&topic, AUDIT_GROUP, ReplayFrom::Offset(0))
            .await
            .map_err(AppError::bus(format!("rewinding {topic}")))?,
        // RabbitMQ: the reader group's queue holds the records no earlier `pipeline audit` read.
        None => eprintln!("the {} backend cannot replay: printing the audit records not read before", backend.name()),
    }
    let sub = backend
        .subscribe(&topic, AUDIT_GROUP, SubscribeOptions::default())
        .await
        .map_err(AppError::bus(format!("subscribing to {topic}")))?;
    while let Some(d) = sub.next_timeout(idle).await {
        crate::bus::println_flush(String::from_utf8_lossy(&d.envelope.payload).into_owned())?;
        d.ack().await.map_err(AppError::bus("acking an audit record"))?;
    }
    Ok(())
}

fn run_file(a: RunArgs) -> Result<(), AppError> {
    let opts = a.science.options()?;

    let bar = indicatif::ProgressBar::new(Stage::ALL.len() as u64 + 1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("pipeline");
    let started = Instant::now();
    let mut last: Option<(Stage, Instant)> = None;
    let mut on_stage = |s: Stage| {
        if let Some((prev, t)) = last.take() {
            bar.println(format!("{:>9} {:?} done in {:.2?}", "", prev, t.elapsed()));
            bar.inc(1);
        }
        bar.set_message(format!("{s:?}"));
        last = Some((s, Instant::now()));
    };
    let products = pipeline::run_file_with_progress(&a.file, &opts, &mut on_stage).map_err(AppError::pipeline)?;
    if let Some((prev, t)) = last.take() {
        bar.println(format!("{:>9} {:?} done in {:.2?}", "", prev, t.elapsed()));
        bar.inc(1);
    }
    bar.set_message("Archive");
    horizons_ngvla::archive::write_delivered(&products, &a.out).map_err(AppError::pipeline)?;
    bar.inc(1);
    bar.finish_with_message(format!("done in {:.2?}", started.elapsed()));
    let r = &products.report;
    println!(
        "{}: peak {:.4} Jy/beam at {:.3}\" from the phase centre, beam {:.2}\" x {:.2}\" PA {:.1} deg, \
         rms {:.4}, clean flux {:.4} Jy, flagged {:.2}% (+ antennas {:?} by validation); products in {}",
        r.object,
        r.peak.value,
        r.peak.offset_arcsec,
        r.beam.bmaj_arcsec,
        r.beam.bmin_arcsec,
        r.beam.bpa_deg,
        r.rms,
        r.clean_flux,
        100.0 * r.flag_fraction,
        r.validation.flagged_antennas.keys().collect::<Vec<_>>(),
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &str, stages: &[&str], others: &[&str]) {
        let (s, o) = split_roles(list).unwrap();
        assert_eq!(s.iter().map(|s| s.name()).collect::<Vec<_>>(), stages, "{list}");
        assert_eq!(o, others, "{list}");
    }

    #[test]
    fn worker_roles_split_into_stages_and_the_rest() {
        check("pipeline:flag,pipeline:validate", &["validate", "flag"], &[]);
        check("pipeline:all", &["validate", "flag", "calibrate", "image", "archive", "srdp"], &[]);
        check("audit, pipeline:image", &["image"], &["audit"]);
        check("all", &[], &["all"]);
        let err = split_roles("pipeline:smooth").unwrap_err().to_string();
        assert!(err.contains("unknown pipeline stage \"smooth\""), "{err}");
    }
}
