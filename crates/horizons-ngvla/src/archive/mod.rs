//! The archive stage: the products of a run on disk — FITS images with a SIN WCS and the
//! restoring beam, a PNG quick-look, `gains.json`, `flags-summary.json` and `report.json`.
//!
//! Files written by [`write_products`] into the output directory:
//! `dirty.fits`, `psf.fits`, `image.fits` (restored), `residual.fits`, `model.fits`,
//! `image.png`, `gains.json`, `flags-summary.json`, `alerts.json`, `report.json`.
//! Delivery ([`srdp::render`]) adds `thumbnail.png` and `manifest.json`.

pub mod png;
pub mod report;
pub mod srdp;

use std::path::Path;

use crate::calibrate::gains_json::GainsJson;
use crate::error::{NgvlaError, Result};
use crate::fits::{write_image, ImageMeta};
use crate::image::Image;
use crate::pipeline::Products;
pub use report::Report;

/// The FITS metadata of a product image.
pub fn image_meta(p: &Products, with_beam: bool, bunit: &str) -> ImageMeta {
    let b = &p.imaging.beam;
    let spw = p.observation.spws.first();
    ImageMeta {
        ra_deg: p.observation.ra_deg,
        dec_deg: p.observation.dec_deg,
        cell_deg: p.options.imaging.cell_arcsec / 3600.0,
        freq_hz: p.imaging.mean_freq_hz,
        bandwidth_hz: spw.map_or(0.0, |s| (s.chan_width_hz * s.n_chan as f64).abs()),
        beam_deg: with_beam.then(|| (b.bmaj_arcsec / 3600.0, b.bmin_arcsec / 3600.0, b.bpa_deg)),
        bunit: bunit.into(),
        object: p.observation.object.clone(),
        telescope: p.observation.telescope.clone(),
        date_obs: p.observation.date_obs.clone(),
    }
}

fn json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| NgvlaError::io("writing", path, e))
}

/// [`write_products`], then what delivery adds ([`srdp::render`]): a run's directory as
/// `pipeline run` leaves it.
pub fn write_delivered(p: &Products, dir: &Path) -> Result<srdp::Manifest> {
    write_products(p, dir)?;
    srdp::render(dir)
}

/// Writes every product of a run into `dir` (created if missing).
pub fn write_products(p: &Products, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| NgvlaError::io("creating", dir, e))?;
    let img = |name: &str, image: &Image, beam: bool, unit: &str| -> Result<()> {
        write_image(&dir.join(name), image.nx, image.ny, &image.data, &image_meta(p, beam, unit))
    };
    let im = &p.imaging;
    img("dirty.fits", &im.dirty, true, "JY/BEAM")?;
    img("psf.fits", &im.psf, true, "JY/BEAM")?;
    img("image.fits", &im.restored, true, "JY/BEAM")?;
    img("residual.fits", &im.clean.residual, true, "JY/BEAM")?;
    img("model.fits", &im.clean.model, false, "JY/PIXEL")?;
    png::write_png(&dir.join("image.png"), &im.restored)?;
    GainsJson::from_table(&p.gains, Some(&p.observation)).write(&dir.join("gains.json"))?;
    json(&dir.join("flags-summary.json"), &p.flags)?;
    json(&dir.join("alerts.json"), &p.alerts)?;
    json(&dir.join("report.json"), &p.report)
}
