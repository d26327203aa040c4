//! Writes the committed seed inputs by driving the real engine (run from `fuzz/`):
//!
//! ```sh
//! cargo run --example gen_seeds
//! ```
//!
//! `seeds/segment_reader/` gets first segments (base 0, as the target names its file):
//! - `plain.log`: a few small records with only the required fields;
//! - `rich.log`: keys, headers, priorities, delays, empty and binary payloads;
//! - `torn_tail.log`: `rich.log` with its last record cut in half, as a crash mid-write leaves.
//!
//! `seeds/record_decode/` gets single records cut out of `rich.log`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use horizons_bus::{Envelope, Priority, Topic, TopicSpec, Topology};
use horizons_log::record::{decode, Decoded};
use horizons_log::segment::{file_name, HEADER_LEN};
use horizons_log::{Engine, EngineConfig};

fn topic() -> Topic {
    Topic::new("t").unwrap()
}

/// Publishes `envs` in batches into a fresh engine and returns its first segment file.
async fn first_segment(batches: Vec<Vec<Envelope>>) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = EngineConfig { segment_bytes: 16 * 1024, ..EngineConfig::default() };
    let engine = Engine::open(tmp.path(), cfg).unwrap();
    engine.declare(&Topology::new().topic(TopicSpec::new(topic()))).unwrap();
    for b in batches {
        engine.publish(b).await.unwrap();
    }
    engine.close().await;
    fs::read(tmp.path().join("topics").join("t").join(file_name(0))).unwrap()
}

/// (start, len) of each record in a segment file.
fn records(seg: &[u8]) -> Vec<(usize, usize)> {
    let b = Bytes::copy_from_slice(seg);
    let mut pos = HEADER_LEN as usize;
    let mut out = Vec::new();
    while let Decoded::Record(_, n) = decode(&b.slice(pos..), &topic()) {
        out.push((pos, n));
        pos += n;
    }
    assert_eq!(pos, seg.len(), "engine wrote a segment that does not decode to its end");
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
    println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
}

#[tokio::main]
async fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");

    let plain = first_segment(vec![
        (0..3).map(|i| Envelope::new(topic(), Bytes::from(format!("message {i}")))).collect(),
        (3..5).map(|i| Envelope::new(topic(), Bytes::from(format!("message {i}")))).collect(),
    ])
    .await;

    let rich_env = |i: u8| {
        let payload: Vec<u8> = match i % 3 {
            0 => Vec::new(),
            1 => (0..=i).map(|b| b.wrapping_mul(37)).collect(),
            _ => format!("{{\"n\":{i},\"text\":\"ünïcode ✓\"}}").into_bytes(),
        };
        let mut e = Envelope::new(topic(), Bytes::from(payload)).with_priority(Priority::new(i % 10).unwrap());
        if i.is_multiple_of(2) {
            e = e.with_key(format!("key-{}", i % 4));
        }
        if i % 3 != 1 {
            e = e.with_header("correlation-id", format!("c{i}")).with_header("a", "");
        }
        if i % 4 == 3 {
            e = e.with_delay(Duration::from_secs(u64::from(i)));
        }
        e
    };
    let rich = first_segment(vec![(0..6).map(rich_env).collect(), (6..12).map(rich_env).collect()]).await;

    let recs = records(&rich);
    let (last_start, last_len) = *recs.last().unwrap();
    let torn = &rich[..last_start + last_len / 2];

    let dir = seeds.join("segment_reader");
    write(&dir, "plain.log", &plain);
    write(&dir, "rich.log", &rich);
    write(&dir, "torn_tail.log", torn);

    let dir = seeds.join("record_decode");
    for (name, i) in [("plain.rec", 0), ("rich.rec", recs.len() - 1)] {
        let src = if name == "plain.rec" { &plain } else { &rich };
        let (s, n) = records(src)[i];
        write(&dir, name, &src[s..s + n]);
    }
    let (s, n) = recs[3];
    write(&dir, "delayed.rec", &rich[s..s + n]);
}
