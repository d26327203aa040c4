//! Fuzzes the record decoder: the input is the bytes at a record position.
//!
//! - `record::decode` must never panic, whatever the bytes.
//! - `Incomplete` only when the input is shorter than the length prefix says.
//! - A decoded record re-encodes (`record::encode` at the same offset and append_ms) to exactly
//!   the bytes it was decoded from (the consumed prefix): the encoding is canonical, so what a
//!   reader serves is what the checksum covers.
#![no_main]

use bytes::Bytes;
use horizons_bus::Topic;
use horizons_log::record::{decode, encode, Decoded, RECORD_HEADER};
use libfuzzer_sys::fuzz_target;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let topic = Topic::new("t").expect("valid topic");
    let buf = Bytes::from(data.to_vec());
    match decode(&buf, &topic) {
        Decoded::Record(r, n) => {
            assert!(n >= RECORD_HEADER && n <= data.len(), "consumed {n} of {} bytes", data.len());
            let mut out = Vec::new();
            encode(&mut out, r.offset, r.append_ms, &r.envelope);
            if out != data[..n] {
                let at = out.iter().zip(&data[..n]).position(|(a, b)| a != b).unwrap_or(out.len().min(n));
                panic!(
                    "re-encoding a decoded record differs from its bytes (first difference at byte {at}; \
                     decoded {n} bytes, re-encoded {}):\n  input:     {}\n  re-encoded: {}\n  record: {r:?}",
                    out.len(),
                    hex(&data[..n]),
                    hex(&out)
                );
            }
        }
        Decoded::Incomplete => {
            let short = data.len() < RECORD_HEADER
                || data.len() < RECORD_HEADER + u32::from_le_bytes(data[0..4].try_into().expect("4")) as usize;
            assert!(short, "Incomplete for a buffer that holds the whole record");
        }
        Decoded::Corrupt(_) => {}
    }
});
