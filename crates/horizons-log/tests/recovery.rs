//! Recovery and bad-input tests of the engine, on real files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use horizons_bus::{Envelope, GroupSpec, ReplayFrom, Topic, TopicSpec, Topology};
use horizons_log::log::{Cursor, TopicLog};
use horizons_log::{Engine, EngineConfig, LogError};

fn topic() -> Topic {
    Topic::new("t").unwrap()
}

fn env(i: u64, size: usize) -> Envelope {
    let mut p = i.to_be_bytes().to_vec();
    p.resize(size.max(8), (i % 251) as u8);
    Envelope::new(topic(), Bytes::from(p))
}

fn small_segments() -> EngineConfig {
    EngineConfig { segment_bytes: 8 * 1024, ..EngineConfig::default() }
}

async fn open_with(dir: &Path, cfg: EngineConfig) -> std::sync::Arc<Engine> {
    let e = Engine::open(dir, cfg).unwrap();
    e.declare(&Topology::new().topic(TopicSpec::new(topic()).max_message_bytes(1 << 20).group(GroupSpec::new("g"))))
        .unwrap();
    e
}

fn read_all(dir: &Path) -> Vec<u64> {
    let log = TopicLog::open(&dir.join("topics/t"), topic(), 8 * 1024).unwrap();
    let mut c = Cursor::at(0);
    let mut out = Vec::new();
    loop {
        let b = log.read(&mut c, 64 * 1024).unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend(b.iter().map(|r| u64::from_be_bytes(r.envelope.payload[..8].try_into().unwrap())));
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("topics/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

async fn fill(dir: &Path, n: u64) {
    let e = open_with(dir, small_segments()).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        e.publish(chunk.iter().map(|&i| env(i, 100)).collect()).await.unwrap();
    }
    e.close().await;
}

#[tokio::test]
async fn reopen_reads_everything_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 500).await;
    assert!(segments(dir.path()).len() > 3, "small segments roll");
    assert_eq!(read_all(dir.path()), (0..500).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200).await;
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Cut the last record in half, then add garbage: both are what a crash mid-write leaves.
    let f = fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xAB; 17]);
    fs::write(&last, bytes).unwrap();
    assert_eq!(read_all(dir.path()), (0..199).collect::<Vec<_>>());
    let e = open_with(dir.path(), small_segments()).await;
    e.publish(vec![env(199, 100)]).await.unwrap();
    e.close().await;
    assert_eq!(read_all(dir.path()), (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn corrupt_sealed_segment_is_an_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300).await;
    let first = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[200] ^= 0x40;
    fs::write(&first, bytes).unwrap();
    let err = Engine::open(dir.path(), small_segments()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("00000000000000000000.log") && msg.contains("checksum"), "{msg}");
}

#[tokio::test]
async fn unknown_version_and_bad_magic_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10).await;
    let seg = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    let crc = crc32c_of(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    let msg = Engine::open(dir.path(), small_segments()).unwrap_err().to_string();
    assert!(msg.contains("version 7") && msg.contains("reads version 1"), "{msg}");
    bytes[0] = b'X';
    fs::write(&seg, &bytes).unwrap();
    let msg = Engine::open(dir.path(), small_segments()).unwrap_err().to_string();
    assert!(msg.contains("bad magic"), "{msg}");
    fs::write(&seg, b"short").unwrap();
    let msg = Engine::open(dir.path(), small_segments()).unwrap_err().to_string();
    assert!(msg.contains("shorter than"), "{msg}");
}

fn crc32c_of(b: &[u8]) -> u32 {
    // Same checksum as the engine (CRC-32C), computed bit by bit so the test does not share code.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test]
async fn oversize_message_and_unknown_topic_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_with(dir.path(), small_segments()).await;
    let err = e.publish(vec![env(0, (1 << 20) + 1)]).await.unwrap_err().to_string();
    assert!(err.contains("exceeds the maximum"), "{err}");
    let other = Envelope::new(Topic::new("nope").unwrap(), "x");
    let err = e.publish(vec![other]).await.unwrap_err().to_string();
    assert!(err.contains("unknown topic \"nope\""), "{err}");
    e.close().await;
}

#[tokio::test]
async fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_with(dir.path(), small_segments()).await;
    let err = Engine::open(dir.path(), small_segments()).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    e.close().await;
    Engine::open(dir.path(), small_segments()).unwrap().close().await;
}

#[tokio::test]
async fn size_retention_drops_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1000).await;
    let before = segments(dir.path()).len();
    let e = Engine::open(dir.path(), small_segments()).unwrap();
    let mut spec = e.spec(&topic()).unwrap();
    spec.retention_bytes = Some(32 * 1024);
    // Retention is a topic setting: a changed value is a conflict, so test through the log.
    let log = TopicLog::open(&dir.path().join("topics/t"), topic(), 8 * 1024).unwrap();
    e.close().await;
    let removed = log.enforce_retention(horizons_bus::now_millis(), spec.retention, spec.retention_bytes).unwrap();
    assert!(removed > 0 && segments(dir.path()).len() == before - removed);
    assert!(log.start() > 0);
    let all = read_all(dir.path());
    assert_eq!(*all.last().unwrap(), 999);
    assert_eq!(all[0], log.start());
    let removed = log
        .enforce_retention(
            horizons_bus::now_millis() + 31 * 24 * 3600 * 1000,
            Duration::from_secs(30 * 24 * 3600),
            None,
        )
        .unwrap();
    assert!(removed > 0);
}

#[tokio::test]
async fn replay_by_time_finds_the_first_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_with(dir.path(), small_segments()).await;
    e.publish((0..20).map(|i| env(i, 100)).collect()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = horizons_bus::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.publish((20..40).map(|i| env(i, 100)).collect()).await.unwrap();
    assert_eq!(e.replay(&topic(), "g", ReplayFrom::Time(t)).await.unwrap(), 20);
    assert_eq!(e.replay(&topic(), "g", ReplayFrom::Offset(3)).await.unwrap(), 3);
    assert_eq!(e.replay(&topic(), "g", ReplayFrom::Time(t + 60_000)).await.unwrap(), 40);
    e.close().await;
}
