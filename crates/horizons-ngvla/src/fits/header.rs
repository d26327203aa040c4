//! FITS header cards: parsing 2880-byte header blocks into typed values, and writing them back.
//!
//! A header is a run of 80-character ASCII cards ending with `END`, padded to a multiple of 2880
//! bytes. Only fixed-format value cards are interpreted (`KEYWORD = value / comment`); `HISTORY`,
//! `COMMENT` and blank cards are kept as commentary. Values are logical (`T`/`F`), integers, reals
//! (with `E` or `D` exponents) or quoted strings (`''` escapes a quote, trailing blanks dropped).

use crate::error::{NgvlaError, Result};

/// The FITS block size: headers and data are padded to multiples of it.
pub const BLOCK: usize = 2880;
const CARD: usize = 80;

/// A header value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `T` or `F`.
    Logical(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A quoted string, trailing blanks removed.
    Str(String),
}

/// One card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// The keyword (trimmed).
    pub key: String,
    /// The value, `None` for commentary cards.
    pub value: Option<Value>,
}

/// A parsed header: its cards in order.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The value cards and commentary, in file order (without `END`).
    pub cards: Vec<Card>,
}

impl Header {
    /// The first card with this keyword.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.cards.iter().find(|c| c.key == key).and_then(|c| c.value.as_ref())
    }

    /// An integer value (reals with no fraction are accepted).
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    /// A real value (integers are accepted).
    pub fn float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A logical value.
    pub fn logical(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Logical(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer that must be present.
    pub fn require_int(&self, hdu: &str, key: &str) -> Result<i64> {
        self.int(key).ok_or_else(|| NgvlaError::header(hdu, format!("missing or non-integer {key}")))
    }
}

/// Parses the header starting at `offset`; returns it and the offset of its data (next block).
pub fn parse(bytes: &[u8], offset: usize, hdu: &str) -> Result<(Header, usize)> {
    let mut header = Header::default();
    let mut pos = offset;
    loop {
        NgvlaError::ensure_len(bytes, pos, BLOCK, || format!("{hdu} header (no END card)"))?;
        for card in bytes[pos..pos + BLOCK].chunks_exact(CARD) {
            if !card.iter().all(|b| (0x20..0x7f).contains(b)) {
                return Err(NgvlaError::header(hdu, "header holds non-ASCII bytes (not a FITS header)"));
            }
            // Safe: checked to be printable ASCII just above.
            let text = std::str::from_utf8(card).map_err(|e| NgvlaError::header(hdu, e.to_string()))?;
            let key = text[..8].trim_end();
            if key == "END" {
                return Ok((header, pos + BLOCK));
            }
            if &text[8..10] == "= " && !key.is_empty() {
                let value = parse_value(&text[10..]).map_err(|r| NgvlaError::header(hdu, format!("{key}: {r}")))?;
                header.cards.push(Card { key: key.to_string(), value: Some(value) });
            } else if !key.is_empty() {
                header.cards.push(Card { key: key.to_string(), value: None });
            }
        }
        pos += BLOCK;
    }
}

fn parse_value(field: &str) -> Result<Value, String> {
    let field = field.trim_start();
    if let Some(rest) = field.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Ok(Value::Str(out.trim_end().to_string()));
                }
            } else {
                out.push(c);
            }
        }
        return Err("unterminated string".into());
    }
    let raw = field.split('/').next().unwrap_or("").trim();
    match raw {
        "T" => return Ok(Value::Logical(true)),
        "F" => return Ok(Value::Logical(false)),
        "" => return Err("empty value".into()),
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    raw.replace(['D', 'd'], "E").parse::<f64>().map(Value::Float).map_err(|_| format!("unparsable value {raw:?}"))
}

/// Builds a header card by card; [`HeaderWriter::finish`] appends `END` and pads to a block.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    out: Vec<u8>,
}

impl HeaderWriter {
    /// An empty header.
    pub fn new() -> Self {
        Self::default()
    }

    fn card(&mut self, key: &str, value: &str, comment: &str) -> &mut Self {
        let mut text = format!("{key:<8}= {value}");
        if !comment.is_empty() {
            text.push_str(" / ");
            text.push_str(comment);
        }
        let mut text: String = text.chars().filter(|c| (' '..='~').contains(c)).take(CARD).collect();
        while text.len() < CARD {
            text.push(' ');
        }
        self.out.extend_from_slice(text.as_bytes());
        self
    }

    /// `KEY = T|F`.
    pub fn logical(&mut self, key: &str, v: bool, comment: &str) -> &mut Self {
        self.card(key, &format!("{:>20}", if v { "T" } else { "F" }), comment)
    }

    /// `KEY = integer`.
    pub fn int(&mut self, key: &str, v: i64, comment: &str) -> &mut Self {
        self.card(key, &format!("{v:>20}"), comment)
    }

    /// `KEY = real`, written with 15 significant digits.
    pub fn float(&mut self, key: &str, v: f64, comment: &str) -> &mut Self {
        self.card(key, &format!("{:>20}", format_real(v)), comment)
    }

    /// `KEY = 'string'`.
    pub fn string(&mut self, key: &str, v: &str, comment: &str) -> &mut Self {
        let quoted = format!("'{:<8}'", v.replace('\'', "''"));
        self.card(key, &format!("{quoted:<20}"), comment)
    }

    /// A `HISTORY` or `COMMENT` card.
    pub fn commentary(&mut self, key: &str, text: &str) -> &mut Self {
        let mut line = format!("{key:<8}{text}");
        line.truncate(CARD);
        let line: String =
            format!("{line:<80}").chars().map(|c| if (' '..='~').contains(&c) { c } else { ' ' }).collect();
        self.out.extend_from_slice(line.as_bytes());
        self
    }

    /// Appends `END` and pads with blanks to a whole block.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(format!("{:<80}", "END").as_bytes());
        let padded = self.out.len().div_ceil(BLOCK) * BLOCK;
        self.out.resize(padded, b' ');
        self.out
    }
}

/// `1.234567890123450E+02` style: fixed width, exponent with sign and two digits.
fn format_real(v: f64) -> String {
    let s = format!("{v:.14E}");
    match s.split_once('E') {
        Some((mantissa, exp)) => {
            let e: i32 = exp.parse().unwrap_or(0);
            format!("{mantissa}E{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(card_value: &str, expected: Value) {
        assert_eq!(parse_value(card_value).unwrap(), expected, "{card_value:?}");
    }

    #[test]
    fn values_parse() {
        check("                   T /Standard", Value::Logical(true));
        check("                 -32 /Floating", Value::Int(-32));
        check("  3.630854195242E+10", Value::Float(3.630854195242e10));
        check("  1.5D-03 / AIPS style", Value::Float(1.5e-3));
        check("'J1008+0730'", Value::Str("J1008+0730".into()));
        check("'O''HARA  ' / quote", Value::Str("O'HARA".into()));
        assert!(parse_value("'open").is_err());
        assert!(parse_value("  / nothing").is_err());
        assert!(parse_value(" abc").is_err());
    }

    #[test]
    fn written_header_parses_back() {
        let mut w = HeaderWriter::new();
        w.logical("SIMPLE", true, "")
            .int("NAXIS", 2, "axes")
            .float("CDELT1", -6.944444e-5, "")
            .string("CTYPE1", "RA---SIN", "");
        w.commentary("HISTORY", "made by a test");
        let bytes = w.finish();
        assert_eq!(bytes.len(), BLOCK);
        let (h, data) = parse(&bytes, 0, "primary").unwrap();
        assert_eq!(data, BLOCK);
        assert_eq!(h.logical("SIMPLE"), Some(true));
        assert_eq!(h.int("NAXIS"), Some(2));
        assert!((h.float("CDELT1").unwrap() + 6.944444e-5).abs() < 1e-18);
        assert_eq!(h.string("CTYPE1"), Some("RA---SIN"));
    }

    #[test]
    fn missing_end_is_truncation() {
        let bytes = vec![b' '; BLOCK];
        assert!(matches!(parse(&bytes, 0, "primary"), Err(NgvlaError::Truncated { .. })));
    }

    #[test]
    fn binary_is_rejected() {
        let mut bytes = vec![b' '; BLOCK];
        bytes[3] = 0;
        assert!(matches!(parse(&bytes, 0, "primary"), Err(NgvlaError::BadHeader { .. })));
    }
}
