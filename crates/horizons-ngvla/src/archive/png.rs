//! PNG quick-look of an image: 8-bit greyscale, north up and east left, an asinh stretch from
//! −3σ (σ the MAD rms) to the peak so both the source and the noise floor are visible.

use std::io::BufWriter;
use std::path::Path;

use crate::error::{NgvlaError, Result};
use crate::image::{stats, Image};

/// Writes `img` as a greyscale PNG.
pub fn write_png(path: &Path, img: &Image) -> Result<()> {
    let sigma = stats::robust_rms(&img.data).max(1e-30);
    let lo = -3.0 * sigma;
    let hi = img.data.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-30);
    // asinh stretch with the knee at ~5σ above the floor.
    let soft = 5.0 * sigma;
    let norm = ((hi - lo) / soft).asinh();
    let mut pixels = Vec::with_capacity(img.nx * img.ny);
    for j in (0..img.ny).rev() {
        for i in 0..img.nx {
            let v = ((img.get(i, j) - lo).max(0.0) / soft).asinh() / norm;
            pixels.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let file = std::fs::File::create(path).map_err(|e| NgvlaError::io("creating", path, e))?;
    encode_grey(BufWriter::new(file), img.nx, img.ny, &pixels)
}

/// Encodes `pixels` (8-bit greyscale, `w` × `h`, top row first) as PNG into `out`.
pub(crate) fn encode_grey(out: impl std::io::Write, w: usize, h: usize, pixels: &[u8]) -> Result<()> {
    let mut enc = png::Encoder::new(out, w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(())
}
