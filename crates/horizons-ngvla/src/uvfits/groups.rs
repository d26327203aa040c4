//! The random-groups array: axis description (`CTYPEn`/`NAXISn`/`CRVALn`/`CDELTn`/`CRPIXn`),
//! parameter decoding (`PTYPEn`/`PSCALn`/`PZEROn`) and the bounds-checked read of every group.

use super::Group;
use crate::error::{NgvlaError, Result};
use crate::fits::Header;
use crate::model::Baseline;

/// One described axis of the group array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// Length (`NAXISn`).
    pub len: usize,
    /// Distance between consecutive elements, in values.
    pub stride: usize,
    /// `CRVALn`.
    pub crval: f64,
    /// `CDELTn`.
    pub cdelt: f64,
    /// `CRPIXn` (1-based).
    pub crpix: f64,
}

impl Axis {
    /// World coordinate of 0-based element `i`.
    pub fn world(&self, i: usize) -> f64 {
        self.crval + (i as f64 + 1.0 - self.crpix) * self.cdelt
    }
}

/// The axes of the group array that uv data need; `RA`/`DEC` must have length 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Axes {
    /// `COMPLEX`: 3 (re, im, weight) or 2 (re, im; weight 1).
    pub complex: Axis,
    /// `STOKES`.
    pub stokes: Axis,
    /// `FREQ`.
    pub freq: Axis,
    /// `IF` (length 1 when the file has no such axis).
    pub spw: Axis,
    /// `CRVAL` of the `RA` axis, degrees (phase centre).
    pub ra_deg: Option<f64>,
    /// `CRVAL` of the `DEC` axis, degrees.
    pub dec_deg: Option<f64>,
    group_len: usize,
}

impl Axes {
    /// Values per group (without parameters).
    pub fn group_len(&self) -> usize {
        self.group_len
    }

    /// Reads the axes from the primary header.
    pub fn from_header(h: &Header) -> Result<Axes> {
        let bad = |r: String| NgvlaError::header("primary", r);
        let naxis = h.require_int("primary", "NAXIS")?;
        if !(2..=16).contains(&naxis) {
            return Err(bad(format!("NAXIS = {naxis}")));
        }
        let mut stride = 1usize;
        let (mut complex, mut stokes, mut freq, mut spw) = (None, None, None, None);
        let (mut ra, mut dec) = (None, None);
        for n in 2..=naxis {
            let len = h.require_int("primary", &format!("NAXIS{n}"))?;
            if !(1..=1 << 24).contains(&len) {
                return Err(bad(format!("NAXIS{n} = {len}")));
            }
            let len = len as usize;
            let axis = Axis {
                len,
                stride,
                crval: h.float(&format!("CRVAL{n}")).unwrap_or(1.0),
                cdelt: h.float(&format!("CDELT{n}")).unwrap_or(1.0),
                crpix: h.float(&format!("CRPIX{n}")).unwrap_or(1.0),
            };
            let ctype = h.string(&format!("CTYPE{n}")).unwrap_or("").trim().to_string();
            match ctype.as_str() {
                "COMPLEX" => complex = Some(axis),
                "STOKES" => stokes = Some(axis),
                "FREQ" => freq = Some(axis),
                "IF" => spw = Some(axis),
                t if t.starts_with("RA") => ra = Some(axis),
                t if t.starts_with("DEC") => dec = Some(axis),
                t if len != 1 => return Err(bad(format!("unsupported axis {t:?} of length {len}"))),
                _ => {}
            }
            stride = stride.checked_mul(len).ok_or_else(|| bad("group size overflows".into()))?;
        }
        let complex = complex.ok_or_else(|| NgvlaError::NotUvfits("no COMPLEX axis".into()))?;
        if !(2..=3).contains(&complex.len) {
            return Err(bad(format!("COMPLEX axis has length {}", complex.len)));
        }
        let stokes = stokes.ok_or_else(|| NgvlaError::NotUvfits("no STOKES axis".into()))?;
        let freq = freq.ok_or_else(|| NgvlaError::NotUvfits("no FREQ axis".into()))?;
        let spw = spw.unwrap_or(Axis { len: 1, stride, crval: 1.0, cdelt: 1.0, crpix: 1.0 });
        for (name, a) in [("RA", ra), ("DEC", dec)] {
            if a.is_some_and(|a| a.len != 1) {
                return Err(bad(format!("{name} axis must have length 1")));
            }
        }
        Ok(Axes {
            complex,
            stokes,
            freq,
            spw,
            ra_deg: ra.map(|a| a.crval),
            dec_deg: dec.map(|a| a.crval),
            group_len: stride,
        })
    }

    /// Offset of (channel, stokes, IF) within a group; add 0/1/2 for re/im/weight.
    #[inline]
    pub fn offset(&self, chan: usize, stokes: usize, spw: usize) -> usize {
        chan * self.freq.stride + stokes * self.stokes.stride + spw * self.spw.stride
    }
}

/// Which parameter holds what.
struct ParamMap {
    uu: usize,
    vv: usize,
    ww: usize,
    dates: Vec<usize>,
    baseline: Option<usize>,
    ant1: Option<usize>,
    ant2: Option<usize>,
    freqsel: Option<usize>,
    subarray: Option<usize>,
}

fn param_map(h: &Header, pcount: usize) -> Result<ParamMap> {
    let mut uu = None;
    let mut vv = None;
    let mut ww = None;
    let mut map = ParamMap {
        uu: 0,
        vv: 0,
        ww: 0,
        dates: vec![],
        baseline: None,
        ant1: None,
        ant2: None,
        freqsel: None,
        subarray: None,
    };
    for i in 0..pcount {
        let name = h.string(&format!("PTYPE{}", i + 1)).unwrap_or("").trim().to_uppercase();
        match name.as_str() {
            n if n.starts_with("UU") => uu = uu.or(Some(i)),
            n if n.starts_with("VV") => vv = vv.or(Some(i)),
            n if n.starts_with("WW") => ww = ww.or(Some(i)),
            "DATE" | "_DATE" => map.dates.push(i),
            "BASELINE" => map.baseline = Some(i),
            "ANTENNA1" => map.ant1 = Some(i),
            "ANTENNA2" => map.ant2 = Some(i),
            "FREQSEL" => map.freqsel = Some(i),
            "SUBARRAY" => map.subarray = Some(i),
            _ => {}
        }
    }
    let missing = |p: &str| NgvlaError::NotUvfits(format!("no {p} random parameter"));
    map.uu = uu.ok_or_else(|| missing("UU"))?;
    map.vv = vv.ok_or_else(|| missing("VV"))?;
    map.ww = ww.ok_or_else(|| missing("WW"))?;
    if map.dates.is_empty() {
        return Err(missing("DATE"));
    }
    if map.baseline.is_none() && (map.ant1.is_none() || map.ant2.is_none()) {
        return Err(missing("BASELINE (or ANTENNA1/ANTENNA2)"));
    }
    Ok(map)
}

/// Decodes the AIPS baseline code `256·a1 + a2 + (subarray−1)/100` (or the `2048·a1 + a2 + 65536`
/// form used for more than 255 antennas).
pub fn decode_baseline(code: f64) -> (Baseline, u32) {
    let whole = code.floor();
    let subarray = ((code - whole) * 100.0).round() as u32 + 1;
    let whole = whole as i64;
    let (a1, a2) = if whole > 65_536 {
        let b = whole - 65_536;
        (b / 2048, b % 2048)
    } else {
        (whole / 256, whole % 256)
    };
    (Baseline::new(a1.max(0) as u32, a2.max(0) as u32), subarray)
}

/// Reads every group; returns parameters, data and the offset just past the (padded) data.
pub fn read(bytes: &[u8], start: usize, h: &Header, axes: &Axes) -> Result<(Vec<Group>, Vec<f32>, usize)> {
    let bitpix = h.require_int("primary", "BITPIX")?;
    let width: usize = match bitpix {
        8 => 1,
        16 => 2,
        32 | -32 => 4,
        -64 => 8,
        b => return Err(NgvlaError::header("primary", format!("unsupported BITPIX {b}"))),
    };
    let pcount = h.require_int("primary", "PCOUNT")?;
    let gcount = h.require_int("primary", "GCOUNT")?;
    if !(0..=1 << 16).contains(&pcount) || !(0..=1 << 40).contains(&gcount) {
        return Err(NgvlaError::header("primary", format!("PCOUNT {pcount} / GCOUNT {gcount} out of range")));
    }
    let (pcount, gcount) = (pcount as usize, gcount as usize);
    let per_group = pcount + axes.group_len();
    let needed = gcount
        .checked_mul(per_group)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| NgvlaError::header("primary", "data size overflows"))?;
    NgvlaError::ensure_len(bytes, start, needed, || format!("{gcount} random groups"))?;
    let map = param_map(h, pcount)?;
    let pscal: Vec<f64> = (1..=pcount).map(|i| h.float(&format!("PSCAL{i}")).unwrap_or(1.0)).collect();
    let pzero: Vec<f64> = (1..=pcount).map(|i| h.float(&format!("PZERO{i}")).unwrap_or(0.0)).collect();
    let bscale = h.float("BSCALE").unwrap_or(1.0);
    let bzero = h.float("BZERO").unwrap_or(0.0);
    let raw = |off: usize| -> f64 {
        let b = &bytes[start + off * width..start + (off + 1) * width];
        match bitpix {
            8 => b[0] as f64,
            16 => i16::from_be_bytes([b[0], b[1]]) as f64,
            32 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            -32 => f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            _ => f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    };
    let mut groups = Vec::with_capacity(gcount);
    let mut data = Vec::with_capacity(gcount * axes.group_len());
    let mut params = vec![0.0f64; pcount];
    for g in 0..gcount {
        let base = g * per_group;
        for (i, p) in params.iter_mut().enumerate() {
            *p = raw(base + i) * pscal[i] + pzero[i];
        }
        let (baseline, subarray) = match map.baseline {
            Some(b) => decode_baseline(params[b]),
            None => {
                let (a1, a2) = (map.ant1.unwrap_or(0), map.ant2.unwrap_or(0));
                let sub = map.subarray.map_or(1, |s| params[s].max(1.0) as u32);
                (Baseline::new(params[a1] as u32, params[a2] as u32), sub)
            }
        };
        groups.push(Group {
            uvw_s: [params[map.uu], params[map.vv], params[map.ww]],
            jd: map.dates.iter().map(|&d| params[d]).sum(),
            baseline,
            subarray,
            freqsel: map.freqsel.map_or(1, |f| params[f].max(1.0) as u32),
        });
        for k in 0..axes.group_len() {
            data.push((raw(base + pcount + k) * bscale + bzero) as f32);
        }
    }
    let end = start + needed.div_ceil(crate::fits::BLOCK) * crate::fits::BLOCK;
    Ok((groups, data, end.min(bytes.len().max(start + needed))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_codes_decode() {
        assert_eq!(decode_baseline(258.0), (Baseline::new(1, 2), 1));
        assert_eq!(decode_baseline(7.0 * 256.0 + 28.01), (Baseline::new(7, 28), 2));
        assert_eq!(decode_baseline(65_536.0 + 2048.0 * 300.0 + 5.0), (Baseline::new(300, 5), 1));
    }
}
