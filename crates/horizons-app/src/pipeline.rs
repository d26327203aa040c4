//! `horizons pipeline run FILE --out DIR`: the ngVLA chain in one process on a uvfits file
//! (read → validate → flag → calibrate → image → archive), a progress bar over the stages, the
//! products written to `DIR` (see `horizons_ngvla::archive`), and a one-line summary.
//!
//! The science is `horizons_ngvla`; this module only maps flags to its options and reports.

use std::path::PathBuf;
use std::time::Instant;

use horizons_ngvla::image::Weighting;
use horizons_ngvla::pipeline::{self, Options, Stage};

use crate::error::AppError;

/// `horizons pipeline …`.
#[derive(Debug, clap::Subcommand)]
pub enum PipelineCommand {
    /// Run every stage on a uvfits file and write the products into a directory.
    Run(RunArgs),
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
}

/// Runs a pipeline command.
pub fn run(cmd: PipelineCommand) -> Result<(), AppError> {
    match cmd {
        PipelineCommand::Run(a) => run_file(a),
    }
}

fn run_file(a: RunArgs) -> Result<(), AppError> {
    let mut opts = Options { flag_rfi: !a.no_flag, ..Options::default() };
    opts.imaging.npix = a.npix;
    opts.imaging.cell_arcsec = a.cell_arcsec;
    opts.imaging.weighting = a.weighting.parse::<Weighting>().map_err(AppError::Usage)?;
    opts.imaging.clean.niter = a.niter;
    opts.calibration.solution_interval_s = a.solint;
    opts.calibration.chans_per_solution = a.chans_per_solution;

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
    horizons_ngvla::archive::write_products(&products, &a.out).map_err(AppError::pipeline)?;
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
