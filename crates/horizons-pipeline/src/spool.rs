//! A stage's durable buffer: the frames of unfinished runs on disk, so a delivery can be acked
//! as soon as its frame is stored, and a crash loses nothing.
//!
//! Layout under the stage's spool directory:
//! - `runs/<run>/b.<key>.<seq>.<piece>.<pieces>`: a block piece (Protobuf, as received);
//! - `runs/<run>/r.<key>.<seq>`: a rejected block, the file holding the reason;
//! - `runs/<run>/p.<key>.<artifact>.<index>`: an artifact part;
//! - `runs/<run>/e.<key>`: an end marker (JSON);
//! - `runs/<run>/inputs.jsonl`: one line per frame received, in arrival order (for the audit);
//! - `done/<run>`: the run is finished (holds the outcome); its frames are dropped from then on.
//!
//! Every file is written to a temporary name, fsynced and renamed, so a file that exists is
//! whole. The names come from the frame's sequence numbers, so a duplicate delivery rewrites the
//! same file: storing is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::frame::{EndMarker, FrameHead, FrameKind};
use crate::{PipelineError, Result};

/// One frame as received, for the audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// Message id.
    pub id: String,
    /// Position in the topic (offset, or partition/offset).
    pub position: String,
    /// Frame kind.
    pub kind: FrameKind,
    /// Bus key.
    pub key: String,
    /// Sequence number.
    pub seq: u64,
}

/// A run with every frame its end markers announce.
#[derive(Debug)]
pub struct Complete {
    /// The end marker of the first key (all carry the same context).
    pub end: EndMarker,
    /// Block pieces by sequence number, each in piece order.
    pub blocks: BTreeMap<u64, Vec<Vec<u8>>>,
    /// Rejected blocks: (key, seq, reason).
    pub rejected: Vec<(String, u64, String)>,
    /// Artifacts, parts concatenated.
    pub artifacts: BTreeMap<String, Vec<u8>>,
    /// Frames in arrival order, duplicates removed.
    pub inputs: Vec<InputRecord>,
}

impl Complete {
    /// Per key: whether its blocks arrived in sequence order.
    pub fn in_order(&self) -> BTreeMap<String, bool> {
        let mut last: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        for i in self.inputs.iter().filter(|i| i.kind == FrameKind::Block) {
            let e = last.entry(i.key.clone()).or_insert((i.seq, true));
            if i.seq < e.0 {
                e.1 = false;
            }
            e.0 = e.0.max(i.seq);
        }
        last.into_iter().map(|(k, (_, ok))| (k, ok)).collect()
    }
}

/// A stage's spool directory.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

impl Spool {
    /// Opens (creating) the spool in `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Spool> {
        let root = root.into();
        for d in [root.join("runs"), root.join("done")] {
            std::fs::create_dir_all(&d).map_err(PipelineError::io("creating spool directory", &d))?;
        }
        Ok(Spool { root, tmp_counter: AtomicU64::new(0) })
    }

    fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }

    /// Whether `run` is finished here.
    pub fn is_done(&self, run: &str) -> bool {
        self.root.join("done").join(run).exists()
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(PipelineError::io("creating spool directory", dir))?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("tmp.{}.{n}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(PipelineError::io("creating", &tmp))?;
        f.write_all(bytes).map_err(PipelineError::io("writing", &tmp))?;
        f.sync_all().map_err(PipelineError::io("syncing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(PipelineError::io("renaming into place", path))
    }

    fn log_input(&self, run: &str, input: &InputRecord) -> Result<()> {
        let path = self.run_dir(run).join("inputs.jsonl");
        let mut line = serde_json::to_vec(input)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(PipelineError::io("opening", &path))?;
        f.write_all(&line).map_err(PipelineError::io("appending to", &path))?;
        f.sync_data().map_err(PipelineError::io("syncing", &path))
    }

    /// Stores a frame. Frames of finished runs are not stored (returns `false`).
    pub fn put(&self, head: &FrameHead, payload: &[u8], input: &InputRecord) -> Result<bool> {
        if self.is_done(&head.run) {
            return Ok(false);
        }
        let dir = self.run_dir(&head.run);
        let name = match head.kind {
            FrameKind::Block => format!("b.{}.{}.{}.{}", head.key, head.seq, head.piece.0, head.piece.1),
            FrameKind::Part => {
                let artifact = head.artifact.as_deref().unwrap_or("unnamed");
                format!("p.{}.{artifact}.{}", head.key, head.seq)
            }
            FrameKind::End => format!("e.{}", head.key),
        };
        self.write_atomic(&dir.join(name), payload)?;
        self.log_input(&head.run, input)?;
        Ok(true)
    }

    /// Notes a rejected block so that its run can still complete.
    pub fn reject(&self, head: &FrameHead, reason: &str, input: &InputRecord) -> Result<()> {
        if self.is_done(&head.run) {
            return Ok(());
        }
        let path = self.run_dir(&head.run).join(format!("r.{}.{}", head.key, head.seq));
        self.write_atomic(&path, reason.as_bytes())?;
        self.log_input(&head.run, input)
    }

    /// The run, if every frame its end markers announce is here.
    pub fn complete(&self, run: &str) -> Result<Option<Complete>> {
        let dir = self.run_dir(run);
        let names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(d) => d.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PipelineError::io("listing", &dir)(e)),
        };
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(PipelineError::io("reading", p))
        };
        let mut ends: BTreeMap<String, EndMarker> = BTreeMap::new();
        // (key, seq) -> pieces: piece index -> file; and the piece count.
        let mut pieces: BTreeMap<(String, u64), (u32, BTreeMap<u32, String>)> = BTreeMap::new();
        let mut rejected: BTreeMap<(String, u64), String> = BTreeMap::new();
        let mut parts: BTreeMap<(String, String), BTreeMap<u64, String>> = BTreeMap::new();
        for name in &names {
            let f: Vec<&str> = name.split('.').collect();
            match f.as_slice() {
                ["e", key] => {
                    ends.insert(key.to_string(), serde_json::from_slice(&read(name)?)?);
                }
                ["b", key, seq, i, n] => {
                    let (Ok(seq), Ok(i), Ok(n)) = (seq.parse(), i.parse(), n.parse()) else { continue };
                    let e = pieces.entry((key.to_string(), seq)).or_insert((n, BTreeMap::new()));
                    e.1.insert(i, name.clone());
                }
                ["r", key, seq] => {
                    let Ok(seq) = seq.parse() else { continue };
                    rejected.insert((key.to_string(), seq), String::from_utf8_lossy(&read(name)?).into_owned());
                }
                ["p", key, artifact, idx] => {
                    let Ok(idx) = idx.parse() else { continue };
                    parts.entry((key.to_string(), artifact.to_string())).or_default().insert(idx, name.clone());
                }
                _ => {}
            }
        }
        let Some(first) = ends.values().next().cloned() else { return Ok(None) };
        for key in &first.keys {
            let Some(end) = ends.get(key) else { return Ok(None) };
            let whole: BTreeSet<u64> = pieces
                .iter()
                .filter(|((k, _), (n, got))| k == key && got.len() == *n as usize)
                .map(|((_, s), _)| *s)
                .chain(rejected.keys().filter(|(k, _)| k == key).map(|(_, s)| *s))
                .collect();
            if (whole.len() as u64) < end.blocks {
                return Ok(None);
            }
            for (artifact, n) in &end.artifacts {
                let have = parts.get(&(key.clone(), artifact.clone())).map_or(0, |p| p.len() as u64);
                if have < *n {
                    return Ok(None);
                }
            }
        }
        let mut blocks = BTreeMap::new();
        for ((key, seq), (_, files)) in pieces {
            if rejected.contains_key(&(key, seq)) {
                continue;
            }
            blocks.insert(seq, files.values().map(|f| read(f)).collect::<Result<Vec<_>>>()?);
        }
        let mut artifacts = BTreeMap::new();
        for ((_, artifact), files) in parts {
            let mut bytes = Vec::new();
            for f in files.values() {
                bytes.extend(read(f)?);
            }
            artifacts.insert(artifact, bytes);
        }
        let mut seen = BTreeSet::new();
        let inputs = String::from_utf8_lossy(&read("inputs.jsonl")?)
            .lines()
            .filter_map(|l| serde_json::from_str::<InputRecord>(l).ok())
            .filter(|i| seen.insert(i.id.clone()))
            .collect();
        let rejected = rejected.into_iter().map(|((k, s), r)| (k, s, r)).collect();
        Ok(Some(Complete { end: first, blocks, rejected, artifacts, inputs }))
    }

    /// Marks `run` finished with `outcome` and drops its frames.
    pub fn finish(&self, run: &str, outcome: &str) -> Result<()> {
        self.write_atomic(&self.root.join("done").join(run), outcome.as_bytes())?;
        let dir = self.run_dir(run);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PipelineError::io("removing", dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::tests::context;
    use crate::frame::tests::block;
    use crate::frame::RunWriter;
    use horizons_bus::Topic;

    fn input(env: &horizons_bus::Envelope, head: &FrameHead) -> InputRecord {
        InputRecord {
            id: env.id.to_string(),
            position: "0".into(),
            kind: head.kind,
            key: head.key.clone(),
            seq: head.seq,
        }
    }

    /// Feeds frames in `order` (indices into the run's frames) and checks after each whether
    /// the run is complete; `expected` is the index after which it must first be.
    fn check(order: &[usize], frames: &[horizons_bus::Envelope], expected: Option<usize>) -> Option<Complete> {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut done = None;
        for (n, &i) in order.iter().enumerate() {
            let head = FrameHead::parse(&frames[i]).unwrap();
            assert!(spool.put(&head, &frames[i].payload, &input(&frames[i], &head)).unwrap());
            let c = spool.complete(&head.run).unwrap();
            if c.is_some() && done.is_none() {
                done = Some((n, c));
            }
        }
        assert_eq!(done.as_ref().map(|d| d.0), expected, "completed after frame #");
        done.and_then(|d| d.1)
    }

    #[test]
    fn a_run_completes_only_with_every_announced_frame() {
        let topic = Topic::new("t").unwrap();
        let ctx = context();
        let mut w = RunWriter::new(topic.clone(), ctx.clone(), 100_000);
        // spw 0: two blocks of 4 pieces; spw 1: one block of 4 pieces. Frames 0..12, ends 12, 13.
        for b in [block(0, 0, 100), block(1, 0, 100), block(0, 1, 100)] {
            w.block(&b);
        }
        let frames = w.finish().unwrap();
        assert_eq!(frames.len(), 14);
        let in_order: Vec<usize> = (0..14).collect();
        let c = check(&in_order, &frames, Some(13)).unwrap();
        assert_eq!(c.blocks.len(), 3);
        assert!(c.blocks.values().all(|p| p.len() == 4));
        assert!(c.in_order().values().all(|&ok| ok));
        // Ends first, then blocks: complete with the last piece.
        let ends_first: Vec<usize> = [12, 13].into_iter().chain(0..12).collect();
        check(&ends_first, &frames, Some(13));
        // A missing piece: never complete.
        let missing: Vec<usize> = (0..14).filter(|&i| i != 5).collect();
        check(&missing, &frames, None);
        // Duplicates change nothing; a late block of spw 0 shows up as out of order.
        let shuffled: Vec<usize> = vec![8, 9, 10, 11, 0, 1, 2, 3, 3, 4, 5, 6, 7, 12, 13];
        let c = check(&shuffled, &frames, Some(14)).unwrap();
        assert_eq!(c.inputs.len(), 14, "the duplicate is not counted twice");
        assert!(!c.in_order()["spw-0"]);
        assert!(c.in_order()["spw-1"]);
    }

    #[test]
    fn rejections_count_towards_completion_and_finished_runs_drop_frames() {
        let topic = Topic::new("t").unwrap();
        let ctx = context();
        let mut w = RunWriter::new(topic.clone(), ctx.clone(), 1 << 20);
        w.block(&block(0, 0, 10));
        w.block(&block(0, 1, 10));
        let frames = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let heads: Vec<FrameHead> = frames.iter().map(|f| FrameHead::parse(f).unwrap()).collect();
        spool.put(&heads[0], &frames[0].payload, &input(&frames[0], &heads[0])).unwrap();
        spool.reject(&heads[1], "NaN time", &input(&frames[1], &heads[1])).unwrap();
        assert!(spool.complete(&ctx.run).unwrap().is_none());
        spool.put(&heads[2], &frames[2].payload, &input(&frames[2], &heads[2])).unwrap();
        let c = spool.complete(&ctx.run).unwrap().unwrap();
        assert_eq!(c.blocks.len(), 1);
        assert_eq!(c.rejected, vec![("spw-0".to_string(), 1, "NaN time".to_string())]);
        spool.finish(&ctx.run, "ok").unwrap();
        assert!(spool.is_done(&ctx.run));
        assert!(!spool.put(&heads[0], &frames[0].payload, &input(&frames[0], &heads[0])).unwrap());
        assert!(spool.complete(&ctx.run).unwrap().is_none());
    }
}
