//! FITS images with a celestial WCS, as radio imagers write them: four axes
//! (`RA---SIN`, `DEC--SIN`, `FREQ`, `STOKES`), 32-bit floats, the restoring beam in
//! `BMAJ`/`BMIN`/`BPA` (degrees), and a reader for the same layout (used by tests and tools).
//!
//! Pixel convention (shared with [`crate::image`]): the data are rows of `width` pixels; row 0 is
//! the southernmost (lowest Dec), and column index grows towards lower RA, hence `CDELT1 < 0`.
//! The phase centre is pixel `(width/2, height/2)` counted from 0, i.e. `CRPIX = n/2 + 1`.

use std::path::Path;

use super::header::{self, Header, HeaderWriter, BLOCK};
use crate::error::{NgvlaError, Result};

/// What a FITS image says about itself besides its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMeta {
    /// Right ascension of the reference pixel (phase centre), degrees.
    pub ra_deg: f64,
    /// Declination of the reference pixel, degrees.
    pub dec_deg: f64,
    /// Pixel size, degrees (positive; written as `CDELT1 = -cell`, `CDELT2 = +cell`).
    pub cell_deg: f64,
    /// Centre frequency, Hz.
    pub freq_hz: f64,
    /// Bandwidth, Hz.
    pub bandwidth_hz: f64,
    /// Restoring beam `(bmaj, bmin, bpa)` in degrees, if the image has one.
    pub beam_deg: Option<(f64, f64, f64)>,
    /// Pixel unit (`JY/BEAM`).
    pub bunit: String,
    /// Source name.
    pub object: String,
    /// Telescope.
    pub telescope: String,
    /// Start of the observation (ISO 8601).
    pub date_obs: String,
}

/// An image read back from FITS.
#[derive(Debug, Clone)]
pub struct FitsImage {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Row-major pixels, row 0 southernmost.
    pub data: Vec<f32>,
    /// The header.
    pub header: Header,
}

/// Writes `data` (`width × height`, row 0 southernmost) as a FITS image with a SIN projection.
pub fn write_image(path: &Path, width: usize, height: usize, data: &[f64], meta: &ImageMeta) -> Result<()> {
    if data.len() != width * height {
        return Err(NgvlaError::Shape(format!("image has {} pixels, {width}×{height} expected", data.len())));
    }
    let mut h = HeaderWriter::new();
    h.logical("SIMPLE", true, "conforms to FITS standard")
        .int("BITPIX", -32, "32-bit IEEE floats")
        .int("NAXIS", 4, "")
        .int("NAXIS1", width as i64, "")
        .int("NAXIS2", height as i64, "")
        .int("NAXIS3", 1, "")
        .int("NAXIS4", 1, "")
        .logical("EXTEND", true, "")
        .string("BUNIT", &meta.bunit, "")
        .float("EQUINOX", 2000.0, "")
        .string("RADESYS", "FK5", "")
        .float("LONPOLE", 180.0, "")
        .float("LATPOLE", meta.dec_deg, "");
    if let Some((bmaj, bmin, bpa)) = meta.beam_deg {
        h.float("BMAJ", bmaj, "restoring beam major axis FWHM, deg")
            .float("BMIN", bmin, "restoring beam minor axis FWHM, deg")
            .float("BPA", bpa, "restoring beam position angle, deg E of N");
    }
    h.string("CTYPE1", "RA---SIN", "")
        .float("CRPIX1", (width / 2 + 1) as f64, "")
        .float("CRVAL1", meta.ra_deg, "")
        .float("CDELT1", -meta.cell_deg, "")
        .string("CUNIT1", "deg", "")
        .string("CTYPE2", "DEC--SIN", "")
        .float("CRPIX2", (height / 2 + 1) as f64, "")
        .float("CRVAL2", meta.dec_deg, "")
        .float("CDELT2", meta.cell_deg, "")
        .string("CUNIT2", "deg", "")
        .string("CTYPE3", "FREQ", "")
        .float("CRPIX3", 1.0, "")
        .float("CRVAL3", meta.freq_hz, "")
        .float("CDELT3", meta.bandwidth_hz, "")
        .string("CUNIT3", "Hz", "")
        .string("CTYPE4", "STOKES", "")
        .float("CRPIX4", 1.0, "")
        .float("CRVAL4", 1.0, "Stokes I")
        .float("CDELT4", 1.0, "")
        .string("OBJECT", &meta.object, "")
        .string("TELESCOP", &meta.telescope, "")
        .string("DATE-OBS", &meta.date_obs, "")
        .string("ORIGIN", "horizons-ngvla", "");
    let mut bytes = h.finish();
    let start = bytes.len();
    bytes.reserve(data.len() * 4 + BLOCK);
    for v in data {
        bytes.extend_from_slice(&(*v as f32).to_be_bytes());
    }
    let padded = start + (bytes.len() - start).div_ceil(BLOCK) * BLOCK;
    bytes.resize(padded, 0);
    std::fs::write(path, bytes).map_err(|e| NgvlaError::io("writing", path, e))
}

/// Reads a FITS image written by [`write_image`] (any `BITPIX = -32` image whose extra axes are 1).
pub fn read_image(path: &Path) -> Result<FitsImage> {
    let bytes = std::fs::read(path).map_err(|e| NgvlaError::io("reading", path, e))?;
    let (header, data_start) = header::parse(&bytes, 0, "primary")?;
    if header.logical("SIMPLE") != Some(true) {
        return Err(NgvlaError::header("primary", "SIMPLE is not T"));
    }
    if header.int("BITPIX") != Some(-32) {
        return Err(NgvlaError::header("primary", "only BITPIX = -32 images are read"));
    }
    let width = header.require_int("primary", "NAXIS1")?.max(0) as usize;
    let height = header.require_int("primary", "NAXIS2")?.max(0) as usize;
    let n = width * height;
    NgvlaError::ensure_len(&bytes, data_start, n * 4, || "image data".into())?;
    let data = bytes[data_start..data_start + n * 4]
        .chunks_exact(4)
        .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(FitsImage { width, height, data, header })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips_with_wcs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fits");
        let data: Vec<f64> = (0..12).map(|i| i as f64 * 0.5).collect();
        let meta = ImageMeta {
            ra_deg: 152.0,
            dec_deg: 7.5,
            cell_deg: 0.25 / 3600.0,
            freq_hz: 36.3e9,
            bandwidth_hz: 8e6,
            beam_deg: Some((2.94 / 3600.0, 1.91 / 3600.0, 9.25)),
            bunit: "JY/BEAM".into(),
            object: "J1008+0730".into(),
            telescope: "EVLA".into(),
            date_obs: "2010-04-26T03:21:56".into(),
        };
        write_image(&path, 4, 3, &data, &meta).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() % BLOCK as u64, 0);
        let img = read_image(&path).unwrap();
        assert_eq!((img.width, img.height), (4, 3));
        assert_eq!(img.data[5], 2.5);
        assert_eq!(img.header.string("CTYPE1"), Some("RA---SIN"));
        assert_eq!(img.header.string("CTYPE2"), Some("DEC--SIN"));
        assert!(img.header.float("CDELT1").unwrap() < 0.0);
        assert_eq!(img.header.float("CRPIX1"), Some(3.0));
        assert!((img.header.float("BMAJ").unwrap() * 3600.0 - 2.94).abs() < 1e-9);
    }
}
