//! The uvfits reader: FITS random groups as AIPS and CASA write them, parsed here.
//!
//! A file is a primary HDU with `GROUPS = T`, `NAXIS1 = 0`, `PCOUNT` random parameters
//! (`UU`, `VV`, `WW` in seconds, `DATE` as one or two Julian-date parts, `BASELINE`, `FREQSEL`, …)
//! and a regular array per group (`COMPLEX` × `STOKES` × `FREQ` × `IF` × `RA` × `DEC`), followed by
//! binary tables: `AIPS AN` (antennas, required) and `AIPS FQ` (frequencies, optional).
//!
//! [`UvFits::open`] reads a file; [`UvFits::to_blocks`] turns its groups into raw
//! [`VisBlock`](crate::model::VisBlock)s, one per distinct timestamp and IF, in file order —
//! quirks such as near-duplicate stamps are left for the validation stage to see and fix.

mod blocks;
mod groups;
mod tables;

use std::path::Path;

use crate::error::{NgvlaError, Result};
use crate::fits::{header, BinTable, Header};
use crate::model::{Baseline, Observation};

pub use groups::Axes;

/// One random group: its parameters, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    /// u, v, w in seconds (light travel time).
    pub uvw_s: [f64; 3],
    /// Julian date (sum of the `DATE` parameters).
    pub jd: f64,
    /// The baseline.
    pub baseline: Baseline,
    /// Subarray (1-based), from the fraction of `BASELINE`.
    pub subarray: u32,
    /// `FREQSEL` (1 when absent).
    pub freqsel: u32,
}

/// A parsed uvfits file.
#[derive(Debug, Clone)]
pub struct UvFits {
    /// The primary header.
    pub header: Header,
    /// Axes of the group array.
    pub axes: Axes,
    /// Antennas, frequencies, polarisations, phase centre.
    pub observation: Observation,
    /// The groups' parameters, in file order.
    pub groups: Vec<Group>,
    /// Group data: `groups.len() × axes.group_len()` values (re, im, weight interleaved).
    pub data: Vec<f32>,
}

impl UvFits {
    /// Reads and parses a file.
    pub fn open(path: &Path) -> Result<UvFits> {
        let bytes = std::fs::read(path).map_err(|e| NgvlaError::io("reading", path, e))?;
        let id_hint = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::parse(&bytes, &id_hint)
    }

    /// Parses a file held in memory; `id_hint` names the observation when the header does not.
    pub fn parse(bytes: &[u8], id_hint: &str) -> Result<UvFits> {
        if bytes.len() < 30 || !bytes.starts_with(b"SIMPLE  =") {
            return Err(NgvlaError::NotUvfits("does not start with a FITS SIMPLE card".into()));
        }
        let (header, data_start) = header::parse(bytes, 0, "primary")?;
        if header.logical("GROUPS") != Some(true) || header.int("NAXIS1") != Some(0) {
            return Err(NgvlaError::NotUvfits("primary HDU is not random groups (GROUPS = T, NAXIS1 = 0)".into()));
        }
        let axes = Axes::from_header(&header)?;
        let (groups, data, data_end) = groups::read(bytes, data_start, &header, &axes)?;

        let mut an = None;
        let mut fq = None;
        let mut offset = data_end;
        while offset + header::BLOCK <= bytes.len() {
            let (table, next) = BinTable::parse(bytes, offset)?;
            match table.name.as_str() {
                "AIPS AN" if an.is_none() => an = Some(table),
                "AIPS FQ" if fq.is_none() => fq = Some(table),
                _ => {}
            }
            offset = next;
        }
        // FITS files are whole 2880-byte blocks: a partial block at the end is a cut-off HDU.
        if offset < bytes.len() && bytes[offset..].iter().any(|&b| b != 0 && b != b' ') {
            return Err(NgvlaError::Truncated {
                what: "extension header".into(),
                offset: offset as u64,
                needed: header::BLOCK as u64,
                len: bytes.len() as u64,
            });
        }
        let an = match an {
            Some(an) => an,
            // A file that is not whole blocks was cut short; say so rather than "no table".
            None if !bytes.len().is_multiple_of(header::BLOCK) => {
                return Err(NgvlaError::Truncated {
                    what: "file (not whole 2880-byte blocks, no antenna table before the end)".into(),
                    offset: offset as u64,
                    needed: header::BLOCK as u64,
                    len: bytes.len() as u64,
                })
            }
            None => return Err(NgvlaError::MissingTable("AIPS AN (antenna)")),
        };
        let observation = tables::observation(&header, &axes, &an, fq.as_ref(), id_hint)?;
        Ok(UvFits { header, axes, observation, groups, data })
    }

    /// The data of group `g`: `axes.group_len()` values.
    pub fn group_data(&self, g: usize) -> &[f32] {
        let n = self.axes.group_len();
        &self.data[g * n..(g + 1) * n]
    }
}
