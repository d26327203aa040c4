//! Delivery of a run's products as science-ready data products (SRDP): what the portal serves
//! without computing anything per request, and the check that what is delivered is what was
//! archived.
//!
//! [`render`] adds two files to a products directory:
//! - `thumbnail.png`: the quick-look (`image.png`) averaged down to at most
//!   [`THUMBNAIL_MAX_SIDE`] pixels a side, for product listings;
//! - `manifest.json`: every file of the directory (the thumbnail included, the manifest itself
//!   not) with its size and SHA-256, for downloads and integrity checks.
//!
//! [`manifest`] lists a directory the same way without writing anything; the archive stage sends
//! that list downstream, and [`deliver`] checks the directory against it ([`verify`]) before it
//! renders.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{NgvlaError, Result};

/// The thumbnail's file name.
pub const THUMBNAIL: &str = "thumbnail.png";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The thumbnail's longest side, pixels.
pub const THUMBNAIL_MAX_SIDE: usize = 128;

/// One file of a products directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductFile {
    /// File name (no directories).
    pub name: String,
    /// Size, bytes.
    pub bytes: u64,
    /// SHA-256 of the contents, lower-case hex.
    pub sha256: String,
}

/// The files of a products directory, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The files.
    pub files: Vec<ProductFile>,
}

fn digest(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| NgvlaError::io("opening", path, e))?;
    let (mut hash, mut buf, mut bytes) = (Sha256::new(), vec![0u8; 1 << 16], 0u64);
    loop {
        let n = f.read(&mut buf).map_err(|e| NgvlaError::io("reading", path, e))?;
        if n == 0 {
            return Ok((bytes, hex::encode(hash.finalize())));
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// The regular files of `dir` (not the manifest, not temporary `*.tmp` files), hashed.
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| NgvlaError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| NgvlaError::io("listing", dir, e))?;
        let is_file = entry.file_type().map_err(|e| NgvlaError::io("reading", entry.path(), e))?.is_file();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !is_file || name == MANIFEST || name.ends_with(".tmp") {
            continue;
        }
        let (bytes, sha256) = digest(&entry.path())?;
        files.push(ProductFile { name, bytes, sha256 });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest { files })
}

/// Checks that every file `expected` lists is in `dir` with the same size and SHA-256. Files
/// added since (a thumbnail, a manifest) are allowed.
pub fn verify(dir: &Path, expected: &Manifest) -> Result<()> {
    for f in &expected.files {
        let path = dir.join(&f.name);
        let (bytes, sha256) = match digest(&path) {
            Ok(d) => d,
            Err(NgvlaError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(NgvlaError::Changed(format!("{} is missing from {}", f.name, dir.display())));
            }
            Err(e) => return Err(e),
        };
        if (bytes, &sha256) != (f.bytes, &f.sha256) {
            return Err(NgvlaError::Changed(format!(
                "{} in {} is {bytes} bytes with SHA-256 {sha256}, archived as {} bytes with {}",
                f.name,
                dir.display(),
                f.bytes,
                f.sha256
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so the file is whole or
/// absent.
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(name));
    std::fs::write(&tmp, bytes).map_err(|e| NgvlaError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| NgvlaError::io("renaming into place", &path, e))
}

/// Averages an 8-bit greyscale image of `w` x `h` over boxes of `f` x `f` pixels (the boxes at
/// the right and bottom edges hold what is left); returns the pixels and the new size.
fn shrink(pixels: &[u8], w: usize, h: usize, f: usize) -> (Vec<u8>, usize, usize) {
    let (tw, th) = (w.div_ceil(f), h.div_ceil(f));
    let mut out = Vec::with_capacity(tw * th);
    for ty in 0..th {
        for tx in 0..tw {
            let (ys, xs) = (ty * f..((ty + 1) * f).min(h), tx * f..((tx + 1) * f).min(w));
            let n = ys.len() * xs.len();
            let sum: usize = ys.flat_map(|y| xs.clone().map(move |x| usize::from(pixels[y * w + x]))).sum();
            out.push(((sum + n / 2) / n) as u8);
        }
    }
    (out, tw, th)
}

/// The quick-look `image.png` of `dir` shrunk to at most [`THUMBNAIL_MAX_SIDE`] a side, as PNG.
fn thumbnail(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("image.png");
    let file = std::fs::File::open(&path).map_err(|e| NgvlaError::io("opening", &path, e))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info()?;
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels)?;
    if (info.color_type, info.bit_depth) != (png::ColorType::Grayscale, png::BitDepth::Eight) {
        return Err(NgvlaError::Invalid {
            name: "image.png",
            reason: format!("{:?} {:?}, not the 8-bit greyscale quick-look", info.color_type, info.bit_depth),
        });
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let f = w.max(h).div_ceil(THUMBNAIL_MAX_SIDE).max(1);
    let (small, tw, th) = shrink(&pixels[..w * h], w, h, f);
    let mut out = Vec::new();
    super::png::encode_grey(&mut out, tw, th, &small)?;
    Ok(out)
}

/// Writes the thumbnail into `dir`, then the manifest: `files` (the directory's other files,
/// hashed already) with the thumbnail's entry put in; returns the manifest.
fn finish(dir: &Path, mut files: Vec<ProductFile>) -> Result<Manifest> {
    let thumb = thumbnail(dir)?;
    write_whole(dir, THUMBNAIL, &thumb)?;
    files.retain(|f| f.name != THUMBNAIL);
    let sha256 = hex::encode(Sha256::digest(&thumb));
    files.push(ProductFile { name: THUMBNAIL.into(), bytes: thumb.len() as u64, sha256 });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let m = Manifest { files };
    write_whole(dir, MANIFEST, &serde_json::to_vec_pretty(&m)?)?;
    Ok(m)
}

/// Writes the thumbnail and then the manifest into `dir` (a products directory written by
/// [`super::write_products`]) and returns the manifest. Running it again rewrites both with
/// the same contents.
pub fn render(dir: &Path) -> Result<Manifest> {
    finish(dir, manifest(dir)?.files)
}

/// [`render`] for a directory that must still hold the files `archived` lists ([`verify`]);
/// the manifest lists those files and the thumbnail, each file read once.
pub fn deliver(dir: &Path, archived: &Manifest) -> Result<Manifest> {
    verify(dir, archived)?;
    finish(dir, archived.files.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;

    fn products(dir: &Path, nx: usize, ny: usize) {
        let mut img = Image { nx, ny, data: vec![0.0; nx * ny] };
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i * 7919) % 101) as f64 * 1e-3;
        }
        img.data[ny / 2 * nx + nx / 2] = 1.0;
        super::super::png::write_png(&dir.join("image.png"), &img).unwrap();
        std::fs::write(dir.join("report.json"), b"{\"peak\": 1}").unwrap();
    }

    #[test]
    fn the_box_average_rounds_and_keeps_the_edges() {
        // 5 x 3 by boxes of 2: a 3 x 2 result whose last column and row hold what is left.
        let px = [0, 10, 20, 30, 40, 1, 11, 21, 31, 41, 100, 100, 200, 200, 255];
        let (out, w, h) = shrink(&px, 5, 3, 2);
        assert_eq!((w, h), (3, 2));
        assert_eq!(out, [6, 26, 41, 100, 200, 255]); // (0+10+1+11)/4 = 5.5 rounds to 6
    }

    #[test]
    fn render_writes_a_thumbnail_and_a_manifest_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        products(dir.path(), 300, 200);
        let m = render(dir.path()).unwrap();
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["image.png", "report.json", THUMBNAIL]);
        let on_disk: Manifest = serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(on_disk, m);
        let report = &m.files[1];
        assert_eq!(report.bytes, 11);
        // SHA-256 of `{"peak": 1}`, from `printf '{"peak": 1}' | sha256sum`.
        assert_eq!(report.sha256, "62c11543cf5fb762b24344f6bfedaa301130a408ce7356e6d4c845fe9c930210");
        let decoder = png::Decoder::new(std::fs::File::open(dir.path().join(THUMBNAIL)).unwrap());
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (100, 67), "300 x 200 by boxes of 3");
        verify(dir.path(), &m).unwrap();
        // Rendering again gives the same manifest.
        assert_eq!(render(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_changed_or_missing_file_fails_verification_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        products(dir.path(), 64, 64);
        let m = manifest(dir.path()).unwrap();
        std::fs::write(dir.path().join("report.json"), b"{\"peak\": 2}").unwrap();
        let e = verify(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("report.json") && e.contains("archived as 11 bytes"), "{e}");
        std::fs::remove_file(dir.path().join("image.png")).unwrap();
        let e = verify(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("image.png is missing"), "{e}");
    }
}
