//! Bad input gets a clear error, never a panic: truncated, non-uvfits and table-less files made
//! from the real file's bytes, random header corruption, malformed blocks and payloads.

mod common;

use horizons_ngvla::model::VisBlock;
use horizons_ngvla::uvfits::UvFits;
use horizons_ngvla::validate::{self, ValidationConfig};
use horizons_ngvla::{proto, NgvlaError};
use num_complex::Complex32;
use rand::{Rng, SeedableRng};

fn real_bytes() -> Vec<u8> {
    std::fs::read(common::vla_file()).unwrap()
}

fn parse(bytes: &[u8]) -> Result<UvFits, NgvlaError> {
    UvFits::parse(bytes, "test")
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let bytes = real_bytes();
    for cut in [1_000, 2_880, 100_000, 4_000_000, 4_230_000] {
        let err = parse(&bytes[..cut]).unwrap_err();
        assert!(matches!(err, NgvlaError::Truncated { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn non_uvfits_input_is_refused() {
    let err = parse(b"this is a text file, not FITS at all").unwrap_err();
    assert!(matches!(err, NgvlaError::NotUvfits(_)), "{err}");
    assert!(matches!(parse(&[]).unwrap_err(), NgvlaError::NotUvfits(_)));
    // A FITS image is FITS but not random groups.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.fits");
    let meta = horizons_ngvla::fits::ImageMeta {
        ra_deg: 0.0,
        dec_deg: 0.0,
        cell_deg: 1e-4,
        freq_hz: 1e9,
        bandwidth_hz: 1e6,
        beam_deg: None,
        bunit: "JY/BEAM".into(),
        object: "X".into(),
        telescope: "T".into(),
        date_obs: String::new(),
    };
    horizons_ngvla::fits::write_image(&path, 4, 4, &[0.0; 16], &meta).unwrap();
    let err = UvFits::open(&path).unwrap_err();
    assert!(matches!(err, NgvlaError::NotUvfits(_)), "{err}");
    let err = UvFits::open(&dir.path().join("missing.uvfits")).unwrap_err();
    assert!(matches!(err, NgvlaError::Io { .. }), "{err}");
}

#[test]
fn a_file_without_antenna_table_is_refused() {
    let bytes = real_bytes();
    // Cut after the FQ table, before the AN table (both start on 2880-byte boundaries).
    let an = find(&bytes, b"EXTNAME = 'AIPS AN '").unwrap() / 2880 * 2880;
    let err = parse(&bytes[..an]).unwrap_err();
    assert!(matches!(err, NgvlaError::MissingTable(_)), "{err}");
    // Or keep the bytes and rename the table.
    let mut renamed = bytes.clone();
    let at = find(&renamed, b"'AIPS AN '").unwrap();
    renamed[at..at + 10].copy_from_slice(b"'AIPS XX '");
    let err = parse(&renamed).unwrap_err();
    assert!(err.to_string().contains("no AIPS AN"), "{err}");
}

#[test]
fn corrupted_headers_never_panic() {
    let bytes = real_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut errors = 0;
    for _ in 0..60 {
        let mut b = bytes.clone();
        for _ in 0..rng.gen_range(1..20) {
            let i = rng.gen_range(0..8640);
            b[i] = rng.gen_range(0x20..0x7f);
        }
        errors += parse(&b).is_err() as usize;
    }
    // Header surgery on the meaningful cards: absurd sizes must be errors, not allocations.
    for (card, value) in [("NAXIS4", "99999999"), ("GCOUNT", "-5"), ("PCOUNT", "70000"), ("NAXIS", "99")] {
        let mut b = bytes.clone();
        let at = find(&b, format!("{card:<8}= ").as_bytes()).unwrap();
        let text = format!("{value:>20}");
        b[at + 10..at + 30].copy_from_slice(text.as_bytes());
        let err = parse(&b).unwrap_err();
        eprintln!("{card} = {value}: {err}");
    }
    eprintln!("{errors} of 60 randomly corrupted headers were refused");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn small_block() -> VisBlock {
    let uv = UvFits::open(&common::vla_file()).unwrap();
    uv.to_blocks().into_iter().find(|b| b.baselines.len() == 153).unwrap()
}

#[test]
fn malformed_blocks_are_rejected_with_a_reason_and_nans_flagged() {
    let good = small_block();
    let mut short = good.clone();
    short.vis.truncate(10);
    let mut bad_uvw = good.clone();
    bad_uvw.uvw_m[3][1] = f64::NAN;
    let mut nans = good.clone();
    nans.vis[5] = Complex32::new(f32::NAN, 0.0);
    nans.weights[9] = f32::INFINITY;
    let (out, report) = validate::validate(vec![short, bad_uvw, nans], &ValidationConfig::default()).unwrap();
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    assert!(report.rejected[0].reason.contains("vis has 10 entries"), "{}", report.rejected[0].reason);
    assert!(report.rejected[1].reason.contains("uvw"), "{}", report.rejected[1].reason);
    assert_eq!(report.non_finite_samples, 2);
    assert_eq!(out.len(), 1);
    assert!(out[0].flags[5] && out[0].flags[9]);
    assert!(out[0].vis.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
    // Nothing valid at all is an error, not a panic.
    let mut empty = good;
    empty.vis.clear();
    assert!(validate::validate(vec![empty], &ValidationConfig::default()).is_err());
}

#[test]
fn protobuf_blocks_round_trip_and_garbage_is_an_error() {
    let b = small_block();
    let bytes = proto::encode(&b);
    assert_eq!(proto::decode(&bytes).unwrap(), b);
    assert!(proto::decode(b"\xff\xff\xff garbage").is_err());
    assert!(proto::decode(&bytes[..bytes.len() / 2]).is_err());
    // A well-formed message whose arrays disagree.
    let mut m = b.clone();
    m.weights.pop();
    assert!(matches!(proto::decode(&proto::encode(&m)), Err(NgvlaError::Shape(_))));
    // Splitting for the wire keeps every sample and respects the budget.
    let parts = proto::split_for_wire(&b, 64 << 10);
    assert!(parts.len() > 1);
    assert!(parts.iter().all(|p| proto::encode(p).len() <= 64 << 10));
    assert_eq!(parts.iter().map(|p| p.baselines.len()).sum::<usize>(), b.baselines.len());
    let joined: Vec<Complex32> = parts.iter().flat_map(|p| p.vis.clone()).collect();
    assert_eq!(joined, b.vis);
}
