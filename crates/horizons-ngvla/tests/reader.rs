//! The uvfits reader on the real EVLA file: header, axes, tables, groups.

mod common;

use horizons_ngvla::model::Polarization;
use horizons_ngvla::uvfits::UvFits;

#[test]
fn real_file_parses_with_expected_structure() {
    let uv = UvFits::open(&common::vla_file()).unwrap();
    let obs = &uv.observation;
    assert_eq!(obs.object, "J1008+0730");
    assert_eq!(obs.telescope, "EVLA");
    assert_eq!(uv.groups.len(), 1360);
    assert_eq!(obs.pols, vec![Polarization::RR, Polarization::LL, Polarization::RL, Polarization::LR]);
    assert_eq!(obs.spws.len(), 1);
    let spw = &obs.spws[0];
    assert_eq!(spw.n_chan, 64);
    assert!((spw.chan_width_hz - 125e3).abs() < 1e-6);
    // Channel 33 (1-based) is the reference pixel at 36.30854195242 GHz.
    assert!((spw.freq(32) - 3.630854195242e10).abs() < 1.0, "{}", spw.freq(32));
    assert!((obs.ra_deg - 152.0000666676).abs() < 1e-9);
    assert!((obs.dec_deg - 7.504597780065).abs() < 1e-9);
    assert_eq!(obs.antennas.len(), 19);
    let a7 = obs.antenna(7).unwrap();
    assert_eq!(a7.name, "N06");
    assert!((a7.position_m[2] - 3555095.8905).abs() < 1e-3);
    // 18 antennas carry data; every baseline refers to an antenna of the table.
    let mut used: Vec<u32> = uv.groups.iter().flat_map(|g| [g.baseline.ant1, g.baseline.ant2]).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 18);
    assert!(used.iter().all(|a| obs.antenna(*a).is_some()));
    // uvw in metres: D configuration, longest baseline ~1 km.
    let blocks = uv.to_blocks();
    let max_uv = blocks.iter().flat_map(|b| &b.uvw_m).map(|u| (u[0] * u[0] + u[1] * u[1]).sqrt()).fold(0.0, f64::max);
    assert!((900.0..1100.0).contains(&max_uv), "{max_uv}");
    // The raw file's FLAG is all false: every weight positive.
    assert!(blocks.iter().all(|b| b.flags.iter().all(|f| !f)));
    assert_eq!(blocks.len(), 15, "15 distinct raw timestamps");
}
