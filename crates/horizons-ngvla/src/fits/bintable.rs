//! FITS binary table extensions (`XTENSION = 'BINTABLE'`): column layout from `TFORMn`/`TTYPEn`
//! and typed, bounds-checked access to cells.
//!
//! Supported cell types are those AIPS tables use: `A` (characters), `L`, `B`, `I`, `J`, `K`,
//! `E`, `D`, and `X` (bits, skipped). Heap data (`P`/`Q` descriptors) is not needed for uvfits and
//! is refused with a clear error.

use super::header::{self, Header, BLOCK};
use crate::error::{NgvlaError, Result};

/// One column: its name, element type, repeat count and byte offset in the row.
#[derive(Debug, Clone)]
pub struct Column {
    /// `TTYPEn`, trimmed.
    pub name: String,
    /// The type letter of `TFORMn`.
    pub kind: char,
    /// The repeat count of `TFORMn`.
    pub repeat: usize,
    /// Offset of the column in a row, in bytes.
    pub offset: usize,
}

/// A parsed binary table: header, columns and the raw row bytes.
#[derive(Debug, Clone)]
pub struct BinTable {
    /// `EXTNAME`, trimmed.
    pub name: String,
    /// The extension header (for keywords such as `ARRAYX` or `NO_IF`).
    pub header: Header,
    /// The columns in order.
    pub columns: Vec<Column>,
    row_len: usize,
    rows: usize,
    data: Vec<u8>,
}

fn element_size(kind: char) -> Option<usize> {
    Some(match kind {
        'A' | 'L' | 'B' => 1,
        'I' => 2,
        'J' | 'E' => 4,
        'K' | 'D' | 'C' => 8,
        'M' => 16,
        _ => return None,
    })
}

impl BinTable {
    /// Parses the extension whose header starts at `offset`; returns it and the next HDU's offset.
    pub fn parse(bytes: &[u8], offset: usize) -> Result<(BinTable, usize)> {
        let (header, data_start) = header::parse(bytes, offset, "extension")?;
        let name = header.string("EXTNAME").unwrap_or("").trim().to_string();
        let hdu = if name.is_empty() { "extension".to_string() } else { name.clone() };
        let xt = header.string("XTENSION").unwrap_or("");
        let row_len = header.require_int(&hdu, "NAXIS1")?;
        let rows = header.require_int(&hdu, "NAXIS2")?;
        let pcount = header.int("PCOUNT").unwrap_or(0);
        if row_len < 0 || rows < 0 || pcount < 0 {
            return Err(NgvlaError::header(&hdu, "negative NAXIS1, NAXIS2 or PCOUNT"));
        }
        let (row_len, rows) = (row_len as usize, rows as usize);
        let size = row_len
            .checked_mul(rows)
            .and_then(|n| n.checked_add(pcount as usize))
            .ok_or_else(|| NgvlaError::header(&hdu, "table size overflows"))?;
        NgvlaError::ensure_len(bytes, data_start, size, || format!("{hdu} table data"))?;
        let next = data_start + size.div_ceil(BLOCK) * BLOCK;
        let mut columns = Vec::new();
        if xt.trim() == "BINTABLE" {
            let n = header.require_int(&hdu, "TFIELDS")?;
            let mut off = 0usize;
            for i in 1..=n {
                let form = header
                    .string(&format!("TFORM{i}"))
                    .ok_or_else(|| NgvlaError::header(&hdu, format!("missing TFORM{i}")))?
                    .trim()
                    .to_string();
                let digits: String = form.chars().take_while(|c| c.is_ascii_digit()).collect();
                let repeat: usize = if digits.is_empty() { 1 } else { digits.parse().unwrap_or(1) };
                let kind = form[digits.len()..].chars().next().unwrap_or(' ');
                let width = match kind {
                    'X' => repeat.div_ceil(8),
                    k => {
                        repeat * element_size(k).ok_or_else(|| NgvlaError::header(&hdu, format!("TFORM{i} {form}")))?
                    }
                };
                let name = header.string(&format!("TTYPE{i}")).unwrap_or("").trim().to_string();
                columns.push(Column { name, kind, repeat, offset: off });
                off += width;
            }
            if off > row_len {
                return Err(NgvlaError::header(&hdu, format!("columns need {off} bytes, rows have {row_len}")));
            }
        }
        let data = bytes[data_start..data_start + row_len * rows].to_vec();
        Ok((BinTable { name, header, columns, row_len, rows, data }, next))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| NgvlaError::header(&self.name, format!("no column {name}")))
    }

    fn cell(&self, row: usize, col: &Column, idx: usize, size: usize) -> Result<&[u8]> {
        if row >= self.rows || idx >= col.repeat {
            return Err(NgvlaError::header(&self.name, format!("cell {}[{row}][{idx}] out of range", col.name)));
        }
        let start = row * self.row_len + col.offset + idx * size;
        Ok(&self.data[start..start + size])
    }

    /// A numeric cell as `f64` (any numeric type).
    pub fn f64(&self, row: usize, name: &str, idx: usize) -> Result<f64> {
        let col = self.column(name)?;
        let size = element_size(col.kind).unwrap_or(0);
        let b = self.cell(row, col, idx, size)?;
        Ok(match col.kind {
            'B' => b[0] as f64,
            'I' => i16::from_be_bytes([b[0], b[1]]) as f64,
            'J' => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            'K' => i64::from_be_bytes(b.try_into().unwrap_or([0; 8])) as f64,
            'E' => f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            'D' => f64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            k => return Err(NgvlaError::header(&self.name, format!("column {name} of type {k} is not numeric"))),
        })
    }

    /// A numeric cell as `i64` (fractions truncated).
    pub fn i64(&self, row: usize, name: &str, idx: usize) -> Result<i64> {
        self.f64(row, name, idx).map(|v| v as i64)
    }

    /// A character column as a string (stops at NUL, trailing blanks removed).
    pub fn string(&self, row: usize, name: &str) -> Result<String> {
        let col = self.column(name)?;
        if col.kind != 'A' {
            return Err(NgvlaError::header(&self.name, format!("column {name} is not a string")));
        }
        let b = self.cell(row, col, 0, col.repeat)?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).trim_end().to_string())
    }
}
