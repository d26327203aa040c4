//! What each stage does to a complete run: the same `horizons-ngvla` calls, in the same order
//! and on the same blocks, as [`horizons_ngvla::pipeline::run_blocks`] — no science of its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use horizons_ngvla::archive::srdp::{self, Manifest};
use horizons_ngvla::image::{self, CleanOutput, Image, ImagingProducts};
use horizons_ngvla::model::VisBlock;
use horizons_ngvla::pipeline::{self, build_report, Products};
use horizons_ngvla::rfi::alerts::Alert;
use horizons_ngvla::validate::{self, Rejection, Verdict};
use horizons_ngvla::{calibrate, flagstats, proto, NgvlaError};

use crate::context::{ImagingMeta, RunContext};
use crate::frame::{glue, image_bytes, image_from_bytes};
use crate::spool::Complete;
use crate::topology::Stage;
use crate::{PipelineError, Result};

/// The key image artifacts travel under on the images topic, and the manifest on the archive
/// topic.
pub const PRODUCTS_KEY: &str = "products";

/// The artifact that carries the archive's manifest ([`srdp::manifest`], JSON) to delivery.
pub const MANIFEST_ARTIFACT: &str = "manifest";

/// What a stage made of a run.
#[derive(Debug)]
pub struct StageOutput {
    /// The run context, with this stage's report added.
    pub context: RunContext,
    /// Blocks for the next stage.
    pub blocks: Vec<VisBlock>,
    /// Artifacts for the next stage.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// Alerts raised (flag stage).
    pub alerts: Vec<Alert>,
    /// Where the products were written (archive stage) or delivered from (delivery).
    pub products_dir: Option<PathBuf>,
    /// What was delivered (delivery stage): the manifest written with the products.
    pub delivered: Option<Manifest>,
    /// The parameters the stage ran with, for the audit record.
    pub parameters: serde_json::Value,
}

fn science(stage: Stage) -> impl FnOnce(NgvlaError) -> PipelineError {
    let stage = stage.name();
    move |source| PipelineError::Science { stage, source }
}

/// The run's blocks in sequence order, pieces glued.
pub fn blocks(c: &Complete) -> Result<Vec<VisBlock>> {
    c.blocks
        .values()
        .map(|pieces| {
            let decoded = pieces
                .iter()
                .map(|p| proto::decode(p).map_err(|e| PipelineError::Frame(e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            glue(decoded)
        })
        .collect()
}

/// Runs `stage` over a complete run. `products_root` is where the archive writes
/// (`<root>/<observation>/run-<run>/`).
pub fn run(stage: Stage, c: &Complete, products_root: &Path) -> Result<StageOutput> {
    let mut ctx = c.end.context.clone();
    let opts = ctx.options.clone();
    let out = |ctx, blocks, parameters| StageOutput {
        context: ctx,
        blocks,
        artifacts: vec![],
        alerts: vec![],
        products_dir: None,
        delivered: None,
        parameters,
    };
    match stage {
        Stage::Validate => {
            let raw = blocks(c)?;
            let (valid, mut report) = validate::validate(raw, &opts.validation).map_err(science(stage))?;
            // Blocks dead-lettered on arrival never reached `validate`: count them as its rejections.
            report.blocks_in += c.rejected.len();
            for (key, seq, reason) in &c.rejected {
                let spw = key.strip_prefix("spw-").and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
                report.rejected.push(Rejection { spw, integration: *seq, reason: format!("block {seq}: {reason}") });
            }
            ctx.validation = Some(report);
            Ok(out(ctx, valid, serde_json::to_value(&opts.validation)?))
        }
        Stage::Flag => {
            let mut blocks = blocks(c)?;
            let (rfi, alerts) = pipeline::flag_stage(&mut blocks, &opts).map_err(science(stage))?;
            let validation = ctx.need("the validation report", &ctx.validation)?;
            let dead: BTreeSet<u32> = validation
                .flagged_antennas
                .values()
                .filter(|v| v.verdict != Verdict::Healthy)
                .map(|v| v.antenna)
                .collect();
            ctx.flags = Some(flagstats::summarize(&blocks, &dead));
            ctx.rfi = Some(rfi);
            ctx.alerts = Some(alerts.clone());
            let parameters = serde_json::json!({
                "flag_rfi": opts.flag_rfi, "rfi": opts.rfi,
                "alert_threshold": opts.alert_threshold, "storm_fraction": opts.storm_fraction,
            });
            Ok(StageOutput { alerts, ..out(ctx, blocks, parameters) })
        }
        Stage::Calibrate => {
            let blocks = blocks(c)?;
            let gains = calibrate::solve(&blocks, &opts.calibration).map_err(science(stage))?;
            let mut calibrated = blocks;
            calibrate::apply(&mut calibrated, &gains);
            ctx.gains = Some(gains);
            Ok(out(ctx, calibrated, serde_json::to_value(&opts.calibration)?))
        }
        Stage::Image => {
            let blocks = blocks(c)?;
            let im = image::image_blocks(&blocks, &opts.imaging).map_err(science(stage))?;
            let (validation, flags, gains) = (
                ctx.need("the validation report", &ctx.validation)?,
                ctx.need("the flag summary", &ctx.flags)?,
                ctx.need("the gains", &ctx.gains)?,
            );
            let alerts = ctx.need("the alerts", &ctx.alerts)?.len();
            let report = build_report(&ctx.observation, &opts, validation, flags, gains, &im, &blocks, alerts);
            let images = [
                ("dirty", &im.dirty),
                ("psf", &im.psf),
                ("restored", &im.restored),
                ("residual", &im.clean.residual),
                ("model", &im.clean.model),
            ];
            ctx.imaging = Some(ImagingMeta {
                images: images.iter().map(|(n, i)| (n.to_string(), (i.nx, i.ny))).collect(),
                beam: im.beam,
                components: im.clean.components.clone(),
                iterations: im.clean.iterations,
                major_cycles: im.clean.major_cycles,
                n_samples: im.n_samples,
                mean_freq_hz: im.mean_freq_hz,
            });
            ctx.report = Some(report);
            let artifacts = images.iter().map(|(n, i)| (n.to_string(), image_bytes(&i.data))).collect();
            Ok(StageOutput { artifacts, ..out(ctx, vec![], serde_json::to_value(opts.imaging)?) })
        }
        Stage::Archive => {
            let meta = ctx.need("the imaging products", &ctx.imaging)?;
            let img = |name: &str| -> Result<Image> {
                let &(nx, ny) = meta
                    .images
                    .get(name)
                    .ok_or_else(|| PipelineError::Inconsistent(format!("no {name} image in the run")))?;
                let bytes = c
                    .artifacts
                    .get(name)
                    .ok_or_else(|| PipelineError::Inconsistent(format!("no {name} pixels in the run")))?;
                Ok(Image { nx, ny, data: image_from_bytes(bytes, nx * ny)? })
            };
            let imaging = ImagingProducts {
                dirty: img("dirty")?,
                psf: img("psf")?,
                beam: meta.beam,
                clean: CleanOutput {
                    components: meta.components.clone(),
                    model: img("model")?,
                    residual: img("residual")?,
                    iterations: meta.iterations,
                    major_cycles: meta.major_cycles,
                },
                restored: img("restored")?,
                n_samples: meta.n_samples,
                mean_freq_hz: meta.mean_freq_hz,
            };
            let products = Products {
                options: opts,
                observation: ctx.observation.clone(),
                wire: ctx.wire,
                validation: ctx.need("the validation report", &ctx.validation)?.clone(),
                // The archive writes no blocks; the visibilities stay on their topics.
                flagged_blocks: vec![],
                rfi: ctx.need("the flagger report", &ctx.rfi)?.clone(),
                alerts: ctx.need("the alerts", &ctx.alerts)?.clone(),
                flags: ctx.need("the flag summary", &ctx.flags)?.clone(),
                gains: ctx.need("the gains", &ctx.gains)?.clone(),
                calibrated_blocks: vec![],
                imaging,
                report: ctx.need("the report", &ctx.report)?.clone(),
            };
            let dir = products_dir(products_root, &ctx);
            write_whole(&products, &dir)?;
            let manifest = srdp::manifest(&dir).map_err(science(stage))?;
            ctx.products_dir = Some(dir.display().to_string());
            let parameters = serde_json::json!({ "products_dir": dir.display().to_string() });
            let artifacts = vec![(MANIFEST_ARTIFACT.to_string(), serde_json::to_vec(&manifest)?)];
            Ok(StageOutput { products_dir: Some(dir), artifacts, ..out(ctx, vec![], parameters) })
        }
        Stage::Deliver => {
            let dir = PathBuf::from(ctx.need("the products directory", &ctx.products_dir)?);
            let archived = c.artifacts.get(MANIFEST_ARTIFACT).ok_or_else(|| {
                PipelineError::Inconsistent(format!("run {} reached delivery without the archive's manifest", ctx.run))
            })?;
            let archived: Manifest = serde_json::from_slice(archived)?;
            let manifest = srdp::deliver(&dir, &archived).map_err(science(stage))?;
            let parameters = serde_json::json!({
                "products_dir": dir.display().to_string(),
                "thumbnail_max_side": srdp::THUMBNAIL_MAX_SIDE,
            });
            Ok(StageOutput { products_dir: Some(dir), delivered: Some(manifest), ..out(ctx, vec![], parameters) })
        }
    }
}

/// Writes the products into `<dir>.partial` and renames it to `dir`, so a products directory that
/// exists is complete. A run archived again (its completing delivery came back after a crash)
/// keeps the directory it has: the same run gives the same products, and delivery may have added
/// its files to it already.
fn write_whole(products: &Products, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        tracing::info!(dir = %dir.display(), "products of this run are archived already; kept");
        return Ok(());
    }
    let tmp = dir.with_extension("partial");
    match std::fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PipelineError::io("removing", &tmp)(e)),
    }
    horizons_ngvla::archive::write_products(products, &tmp).map_err(science(Stage::Archive))?;
    std::fs::rename(&tmp, dir).map_err(PipelineError::io("renaming into place", dir))
}

/// `<root>/<observation>/run-<run>`, the observation id made safe as a directory name.
pub fn products_dir(root: &Path, ctx: &RunContext) -> PathBuf {
    let obs: String = ctx
        .observation
        .id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+') { c } else { '_' })
        .collect();
    root.join(if obs.is_empty() { "observation".into() } else { obs }).join(format!("run-{}", ctx.run))
}
