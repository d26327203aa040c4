//! Fuzzes segment recovery and reads: the input is the whole content of a segment file.
//!
//! The bytes are written as `T/00000000000000000000.log` in a fresh scratch directory, then:
//!
//! 1. `Segment::open(last = false)` (strict: any invalid byte is an error) must not panic and
//!    must not modify the file.
//! 2. `Segment::open(last = true)` (recovery: a torn tail is truncated) must not panic. If it
//!    opens, the invariants of a recovered segment are checked:
//!    - the file was only truncated (what is left is a prefix of the input) and its length is
//!      the state's `size`;
//!    - every byte after the header decodes as a record, offsets are consecutive from the base,
//!      and the last one is `end_offset - 1`;
//!    - every sparse index entry points at the start of the record with that offset;
//!    - if the strict open succeeded too, both agree and nothing was truncated;
//!    - recovery is idempotent: the recovered file reopens strictly, with the same end.
//! 3. The input is written again and `TopicLog::open(dir, topic, 4096)` recovers it itself; it
//!    must open (its single segment is the last one, so it recovers like step 2) with the same
//!    end, and reading with a `Cursor` from offset 0 and from a few offsets derived from the
//!    input, with several `max_bytes`, must return exactly the records of step 2, in order, with
//!    no error and no infinite loop. `offset_for_time` must not fail either.
#![no_main]

use std::fs;
use std::path::Path;

use bytes::Bytes;
use horizons_bus::Topic;
use horizons_log::log::{Cursor, TopicLog};
use horizons_log::record::{decode, Decoded, Record};
use horizons_log::segment::{self, Segment, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// A scratch directory, on tmpfs when there is one: `Segment::open` fsyncs.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("hz-fuzz-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::Builder::new().prefix("hz-fuzz-").tempdir().expect("creating a temp dir")
}

/// Decodes a whole recovered segment file, asserting it is header + consecutive records.
fn decode_all(bytes: &[u8], base: u64, topic: &Topic) -> Vec<Record> {
    let bytes = Bytes::copy_from_slice(bytes);
    let mut pos = HEADER_LEN as usize;
    let mut expected = base;
    let mut out = Vec::new();
    while pos < bytes.len() {
        match decode(&bytes.slice(pos..), topic) {
            Decoded::Record(r, n) => {
                assert_eq!(r.offset, expected, "recovered segment: record at byte {pos} has the wrong offset");
                expected += 1;
                pos += n;
                out.push(r);
            }
            other => panic!("recovered segment: bytes at {pos} of {} do not decode: {other:?}", bytes.len()),
        }
    }
    out
}

/// Reads from `from` to the end with `max_bytes` per call; checks the records against `all`.
fn read_from(log: &TopicLog, from: u64, max_bytes: usize, all: &[Record]) {
    let end = all.len() as u64;
    let mut cursor = Cursor::at(from);
    let mut next = from;
    let mut calls = 0u64;
    loop {
        let batch = match log.read(&mut cursor, max_bytes) {
            Ok(b) => b,
            Err(e) => panic!("read from {from} (max_bytes {max_bytes}) of a recovered log failed at {next}: {e}"),
        };
        if batch.is_empty() {
            break;
        }
        calls += 1;
        assert!(calls <= end + 1, "read from {from}: more non-empty batches than records");
        for r in &batch {
            assert_eq!(r.offset, next, "read from {from} (max_bytes {max_bytes}): offsets not consecutive");
            assert!(r == &all[next as usize], "read from {from}: record {next} differs from the file's");
            next += 1;
        }
        assert_eq!(cursor.offset, next, "cursor not advanced past the batch");
    }
    assert_eq!(next, from.max(end), "read from {from} (max_bytes {max_bytes}) stopped early");
}

fuzz_target!(|data: &[u8]| {
    let topic = Topic::new("t").expect("valid topic");
    let tmp = scratch();
    let dir = tmp.path().join("t");
    fs::create_dir(&dir).expect("creating the topic dir");
    let path = dir.join(segment::file_name(0));
    fs::write(&path, data).expect("writing the segment");

    // 1. Strict open.
    let strict = Segment::open(&path, &topic, false);
    let strict_state = strict.as_ref().ok().map(|s| s.state.lock().clone());
    drop(strict);
    assert!(fs::read(&path).expect("reading back") == data, "a strict open modified the file");

    // 2. Recovering open.
    let recovered = match Segment::open(&path, &topic, true) {
        Ok(s) => s,
        Err(e) => {
            assert!(strict_state.is_none(), "strict open succeeded but recovery failed: {e}");
            return;
        }
    };
    let base = recovered.base;
    assert_eq!(base, 0, "the file name says base 0");
    let st = recovered.state.lock().clone();
    drop(recovered);
    let on_disk = fs::read(&path).expect("reading back");
    assert_eq!(on_disk.len() as u64, st.size, "file length differs from the recovered state's size");
    assert!(data.starts_with(&on_disk), "recovery did more than truncate the file");
    let records = decode_all(&on_disk, base, &topic);
    assert_eq!(base + records.len() as u64, st.end_offset, "end_offset differs from the records in the file");
    assert_eq!(st.first_ms, records.first().map(|r| r.append_ms));
    assert_eq!(st.last_ms, records.last().map(|r| r.append_ms));
    let file = Bytes::from(on_disk);
    for &(off, pos) in &st.index {
        match decode(&file.slice(pos as usize..), &topic) {
            Decoded::Record(r, _) => assert_eq!(r.offset, off, "index entry ({off}, {pos}) points at another record"),
            other => panic!("index entry ({off}, {pos}) points at no record: {other:?}"),
        }
    }
    if let Some(s) = &strict_state {
        assert_eq!(s.end_offset, st.end_offset, "strict and recovering opens disagree on the end");
        assert_eq!(s.size, data.len() as u64, "strict open accepted a file it did not read to the end");
    }
    match Segment::open(&path, &topic, false) {
        Ok(again) => assert_eq!(again.state.lock().end_offset, st.end_offset, "reopened segment has another end"),
        Err(e) => panic!("a recovered segment does not reopen strictly: {e}"),
    }

    // 3. The topic log recovers the original bytes itself, then reads.
    fs::write(&path, data).expect("rewriting the segment");
    let log = match TopicLog::open(&dir, topic.clone(), 4096) {
        Ok(l) => l,
        Err(e) => panic!("Segment::open(last) succeeded but TopicLog::open failed: {e}"),
    };
    let end = records.len() as u64;
    assert_eq!(log.end(), end, "TopicLog recovered another end");
    assert_eq!(log.start(), 0);

    let tail = |i: usize| data.get(data.len().wrapping_sub(i)).copied().unwrap_or(0);
    let x = u64::from_le_bytes(std::array::from_fn(|i| tail(i + 1)));
    let max_bytes = [1usize, 4096, 1 << 20][usize::from(tail(9)) % 3];
    for mb in [1usize, 4096, 1 << 20] {
        read_from(&log, 0, mb, &records);
    }
    for from in [x % (end + 1), end / 2, end.saturating_sub(1), end, end + 1, x] {
        read_from(&log, from, max_bytes, &records);
    }
    let ms = records.get((x % (end + 1)) as usize).map_or(x as i64, |r| r.append_ms);
    match log.offset_for_time(ms) {
        Ok(o) => assert!(o <= end, "offset_for_time returned {o} past the end {end}"),
        Err(e) => panic!("offset_for_time({ms}) on a recovered log failed: {e}"),
    }
});
