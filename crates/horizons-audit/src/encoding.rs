//! Length-prefixed binary encoding shared by the record hash and the associated data of sealed
//! fields. Every variable-length item carries its length, so no two different field lists
//! encode to the same bytes (unlike string concatenation, where `("ab", "c")` and `("a", "bc")`
//! collide).

/// Builds an unambiguous byte string: fixed-width big-endian integers, length-prefixed bytes.
#[derive(Debug, Default)]
pub(crate) struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A length (u64, big-endian) then the bytes.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::Enc;

    #[test]
    fn length_prefix_separates_fields() {
        let mut a = Enc::new();
        a.str("ab").str("c");
        let mut b = Enc::new();
        b.str("a").str("bc");
        assert_ne!(a.finish(), b.finish());
    }
}
