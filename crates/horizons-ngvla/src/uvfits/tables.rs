//! The AIPS tables of a uvfits file — `AN` (antenna names, numbers, positions) and `FQ` (IF
//! frequency offsets and channel widths) — combined with the primary header into an
//! [`Observation`].

use super::Axes;
use crate::error::{NgvlaError, Result};
use crate::fits::{BinTable, Header};
use crate::model::{Antenna, Observation, Polarization, SpectralWindow};

/// Builds the observation description from the header, the axes and the tables.
pub fn observation(
    h: &Header,
    axes: &Axes,
    an: &BinTable,
    fq: Option<&BinTable>,
    id_hint: &str,
) -> Result<Observation> {
    let mut antennas = Vec::with_capacity(an.rows());
    for r in 0..an.rows() {
        let name = an.string(r, "ANNAME")?;
        let number = match an.column("NOSTA") {
            Ok(_) => an.i64(r, "NOSTA", 0)?,
            Err(_) => r as i64 + 1,
        };
        if number <= 0 {
            return Err(NgvlaError::header("AIPS AN", format!("row {r}: antenna number {number}")));
        }
        let mut position_m = [0.0; 3];
        for (k, p) in position_m.iter_mut().enumerate() {
            *p = an.f64(r, "STABXYZ", k)?;
        }
        antennas.push(Antenna { number: number as u32, name, position_m });
    }

    let mut pols = Vec::with_capacity(axes.stokes.len);
    for s in 0..axes.stokes.len {
        let code = axes.stokes.world(s).round() as i32;
        pols.push(
            Polarization::from_code(code)
                .ok_or_else(|| NgvlaError::header("primary", format!("unknown STOKES code {code}")))?,
        );
    }

    // Channel c of IF k: CRVAL(FREQ) + IF FREQ[k] + (c + 1 − CRPIX) × CH WIDTH[k].
    let mut spws = Vec::with_capacity(axes.spw.len);
    for k in 0..axes.spw.len {
        let (offset, width) = match fq {
            Some(t) if t.rows() > 0 => {
                let cols = t.columns.iter().find(|c| c.name == "IF FREQ").map_or(1, |c| c.repeat);
                if k >= cols {
                    return Err(NgvlaError::header("AIPS FQ", format!("IF {k} missing from FQ table")));
                }
                let w = t.f64(0, "CH WIDTH", k).unwrap_or(axes.freq.cdelt);
                let sideband = t.f64(0, "SIDEBAND", k).unwrap_or(1.0);
                (t.f64(0, "IF FREQ", k)?, if sideband < 0.0 { -w.abs() } else { w })
            }
            _ => (0.0, axes.freq.cdelt),
        };
        let first = axes.freq.crval + offset + (1.0 - axes.freq.crpix) * width;
        spws.push(SpectralWindow { id: k as u32, first_freq_hz: first, chan_width_hz: width, n_chan: axes.freq.len });
    }

    let object = h.string("OBJECT").unwrap_or("").to_string();
    let telescope = h.string("TELESCOP").unwrap_or("").to_string();
    let date_obs = h.string("DATE-OBS").unwrap_or("").to_string();
    let ra_deg =
        axes.ra_deg.or(h.float("OBSRA")).ok_or_else(|| NgvlaError::header("primary", "no RA axis or OBSRA"))?;
    let dec_deg =
        axes.dec_deg.or(h.float("OBSDEC")).ok_or_else(|| NgvlaError::header("primary", "no DEC axis or OBSDEC"))?;
    let id = if date_obs.is_empty() { id_hint.to_string() } else { format!("{telescope}:{object}:{date_obs}") };
    Ok(Observation { id, object, telescope, date_obs, ra_deg, dec_deg, antennas, spws, pols })
}
