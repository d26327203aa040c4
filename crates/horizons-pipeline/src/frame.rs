//! Frames: how a run travels on a stage topic (see the crate docs). Building envelopes, reading
//! and checking their headers, cutting blocks and artifacts into pieces and gluing them back.

use std::collections::BTreeMap;

use horizons_bus::envelope::HEADER_CORRELATION_ID;
use horizons_bus::{Envelope, Topic};
use horizons_ngvla::model::VisBlock;
use horizons_ngvla::proto;
use serde::{Deserialize, Serialize};

use crate::context::RunContext;
use crate::{PipelineError, Result};

/// Header: `block`, `part` or `end`.
pub const H_FRAME: &str = "ngvla-frame";
/// Header: the run id.
pub const H_RUN: &str = "ngvla-run";
/// Header: the observation id.
pub const H_OBSERVATION: &str = "ngvla-observation";
/// Header: the block's index in the run, or the part's index in its artifact.
pub const H_SEQ: &str = "ngvla-seq";
/// Header: `i/n`, piece `i` of a block cut into `n` for the wire.
pub const H_PIECE: &str = "ngvla-piece";
/// Header: the artifact a part belongs to.
pub const H_ARTIFACT: &str = "ngvla-artifact";

/// Largest part of an artifact, bytes.
pub const MAX_PART_BYTES: usize = 1 << 20;

/// The kind of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// A visibility block (or a piece of one).
    Block,
    /// A chunk of an artifact.
    Part,
    /// The end marker of one key.
    End,
}

impl FrameKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Block => "block",
            FrameKind::Part => "part",
            FrameKind::End => "end",
        }
    }
}

/// What a frame's headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// Its kind.
    pub kind: FrameKind,
    /// The run.
    pub run: String,
    /// The observation.
    pub observation: String,
    /// The bus key (`spw-N`, or `products`).
    pub key: String,
    /// Block index in the run / part index in the artifact (0 for end markers).
    pub seq: u64,
    /// For blocks: `(piece, pieces)`.
    pub piece: (u32, u32),
    /// For parts: the artifact.
    pub artifact: Option<String>,
}

/// Names that become file names in the spool: `[A-Za-z0-9_-]`, 1–100 characters.
pub fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 100 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(PipelineError::Frame(format!("{what} {s:?} must be 1-100 characters of A-Z a-z 0-9 _ -")));
    }
    Ok(())
}

impl FrameHead {
    /// Reads and checks the headers of `env`; every problem is named.
    pub fn parse(env: &Envelope) -> Result<FrameHead> {
        let get = |h: &str| {
            env.headers.get(h).map(String::as_str).ok_or_else(|| PipelineError::Frame(format!("missing header {h}")))
        };
        let kind = match get(H_FRAME)? {
            "block" => FrameKind::Block,
            "part" => FrameKind::Part,
            "end" => FrameKind::End,
            other => return Err(PipelineError::Frame(format!("unknown {H_FRAME} {other:?}"))),
        };
        let run = get(H_RUN)?.to_string();
        check_name("run id", &run)?;
        let key = env.key.clone().ok_or_else(|| PipelineError::Frame("message has no key".into()))?;
        check_name("key", &key)?;
        let seq = match kind {
            FrameKind::End => 0,
            _ => get(H_SEQ)?.parse().map_err(|e| PipelineError::Frame(format!("{H_SEQ}: {e}")))?,
        };
        let piece = match env.headers.get(H_PIECE) {
            None => (0, 1),
            Some(p) => {
                parse_piece(p).ok_or_else(|| PipelineError::Frame(format!("{H_PIECE} {p:?} is not i/n with i < n")))?
            }
        };
        let artifact = match kind {
            FrameKind::Part => {
                let a = get(H_ARTIFACT)?.to_string();
                check_name("artifact", &a)?;
                Some(a)
            }
            _ => None,
        };
        Ok(FrameHead { kind, run, observation: get(H_OBSERVATION)?.to_string(), key, seq, piece, artifact })
    }
}

fn parse_piece(p: &str) -> Option<(u32, u32)> {
    let (i, n) = p.split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (i < n).then_some((i, n))
}

/// The end marker of one key of a run on one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndMarker {
    /// Blocks (logical blocks, not pieces) this key carried.
    pub blocks: u64,
    /// Artifacts this key carried, with their part counts.
    pub artifacts: BTreeMap<String, u64>,
    /// Every key of the run on this topic: the run is complete once each has ended.
    pub keys: Vec<String>,
    /// The run so far.
    pub context: RunContext,
}

/// Builds the frames of a run on one topic: blocks (cut to `max_bytes`), artifacts, end markers.
/// The frames can be taken as they are made ([`RunWriter::take`]), so a source can publish a run
/// block by block; the end markers carry the context as it is at [`RunWriter::finish`].
#[derive(Debug)]
pub struct RunWriter {
    topic: Topic,
    context: RunContext,
    max_bytes: usize,
    out: Vec<Envelope>,
    blocks: BTreeMap<String, u64>,
    artifacts: BTreeMap<String, BTreeMap<String, u64>>,
    seq: u64,
}

impl RunWriter {
    /// Frames for `topic`, blocks cut to at most `max_bytes` each.
    pub fn new(topic: Topic, context: RunContext, max_bytes: usize) -> Self {
        Self { topic, context, max_bytes, out: vec![], blocks: BTreeMap::new(), artifacts: BTreeMap::new(), seq: 0 }
    }

    fn envelope(&self, kind: FrameKind, key: &str, payload: Vec<u8>) -> Envelope {
        Envelope::new(self.topic.clone(), payload)
            .with_key(key)
            .with_header(H_FRAME, kind.as_str())
            .with_header(H_RUN, &self.context.run)
            .with_header(H_OBSERVATION, &self.context.observation.id)
            .with_header(HEADER_CORRELATION_ID, &self.context.run)
    }

    /// Adds a block (its key is its spectral window), cut into pieces for the wire that the
    /// receiver glues back into this one block.
    pub fn block(&mut self, b: &VisBlock) {
        let pieces = proto::split_for_wire(b, self.max_bytes);
        let n = pieces.len();
        for (i, p) in pieces.iter().enumerate() {
            let mut env =
                self.envelope(FrameKind::Block, &b.key(), proto::encode(p)).with_header(H_SEQ, self.seq.to_string());
            if n > 1 {
                env = env.with_header(H_PIECE, format!("{i}/{n}"));
            }
            self.out.push(env);
        }
        *self.blocks.entry(b.key()).or_default() += 1;
        self.seq += 1;
    }

    /// Adds a block already cut for the wire by the caller: each piece is a block of its own
    /// (what `pipeline run`'s wire round trip hands to validation).
    pub fn blocks_as_cut(&mut self, b: &VisBlock) {
        for p in proto::split_for_wire(b, self.max_bytes) {
            let env =
                self.envelope(FrameKind::Block, &p.key(), proto::encode(&p)).with_header(H_SEQ, self.seq.to_string());
            self.out.push(env);
            *self.blocks.entry(p.key()).or_default() += 1;
            self.seq += 1;
        }
    }

    /// Adds an artifact under `key`, in parts of at most [`MAX_PART_BYTES`].
    pub fn artifact(&mut self, key: &str, name: &str, bytes: &[u8]) {
        let mut n = 0;
        for (i, chunk) in bytes.chunks(MAX_PART_BYTES).enumerate() {
            let env = self
                .envelope(FrameKind::Part, key, chunk.to_vec())
                .with_header(H_SEQ, i.to_string())
                .with_header(H_ARTIFACT, name);
            self.out.push(env);
            n += 1;
        }
        self.artifacts.entry(key.to_string()).or_default().insert(name.to_string(), n);
    }

    /// The frames made since the last call, in order (the writer keeps its counts).
    pub fn take(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.out)
    }

    /// The context the end markers will carry.
    pub fn context(&self) -> &RunContext {
        &self.context
    }

    /// The context, to amend before [`RunWriter::finish`] (e.g. with sizes known only at the
    /// end). The run id and observation id must stay as they are: frames already made carry them.
    pub fn context_mut(&mut self) -> &mut RunContext {
        &mut self.context
    }

    /// Appends the end markers (one per key, keys sorted) and returns every frame not yet taken,
    /// in order.
    pub fn finish(mut self) -> Result<Vec<Envelope>> {
        let mut keys: Vec<String> = self.blocks.keys().chain(self.artifacts.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(PipelineError::Inconsistent("a run with no blocks and no artifacts".into()));
        }
        for key in &keys {
            let end = EndMarker {
                blocks: self.blocks.get(key).copied().unwrap_or(0),
                artifacts: self.artifacts.get(key).cloned().unwrap_or_default(),
                keys: keys.clone(),
                context: self.context.clone(),
            };
            let env = self.envelope(FrameKind::End, key, serde_json::to_vec(&end)?);
            self.out.push(env);
        }
        Ok(self.out)
    }
}

/// Glues the pieces of one block (in piece order) back into the block that was cut.
pub fn glue(mut pieces: Vec<VisBlock>) -> Result<VisBlock> {
    if pieces.len() == 1 {
        return pieces.pop().ok_or_else(|| PipelineError::Inconsistent("no pieces".into()));
    }
    let mut it = pieces.into_iter();
    let mut out = it.next().ok_or_else(|| PipelineError::Inconsistent("a block with no pieces".into()))?;
    for p in it {
        let same = p.observation_id == out.observation_id
            && p.spw == out.spw
            && p.integration == out.integration
            && p.time_mjd_s.to_bits() == out.time_mjd_s.to_bits()
            && p.n_chan == out.n_chan
            && p.pols == out.pols;
        if !same {
            return Err(PipelineError::Frame(format!(
                "pieces of one block disagree (spw {} integration {} vs spw {} integration {})",
                out.spw, out.integration, p.spw, p.integration
            )));
        }
        out.baselines.extend(p.baselines);
        out.uvw_m.extend(p.uvw_m);
        out.vis.extend(p.vis);
        out.weights.extend(p.weights);
        out.flags.extend(p.flags);
    }
    out.check_shape().map_err(|e| PipelineError::Frame(format!("glued block: {e}")))?;
    Ok(out)
}

/// Encodes an image as little-endian `f64`s.
pub fn image_bytes(data: &[f64]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes [`image_bytes`] into `expected` values.
pub fn image_from_bytes(bytes: &[u8], expected: usize) -> Result<Vec<f64>> {
    if bytes.len() != expected * 8 {
        return Err(PipelineError::Inconsistent(format!("image of {} bytes, {} expected", bytes.len(), expected * 8)));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::tests::context;
    use horizons_ngvla::model::{Baseline, Polarization};

    /// A block without the simulator: `n_bl` baselines × 64 channels × 4 pols.
    pub(crate) fn block(spw: u32, integration: u64, n_bl: u32) -> VisBlock {
        let bls: Vec<Baseline> = (0..n_bl).map(|k| Baseline::new(k / 30 + 1, k % 30 + 40)).collect();
        let n = bls.len() * 64 * 4;
        VisBlock {
            observation_id: "obs".into(),
            spw,
            integration,
            time_mjd_s: 1000.0 + integration as f64,
            interval_s: 10.0,
            first_freq_hz: 36e9,
            chan_width_hz: 1e6,
            n_chan: 64,
            pols: vec![Polarization::RR, Polarization::LL, Polarization::RL, Polarization::LR],
            uvw_m: bls.iter().map(|b| [b.ant1 as f64, b.ant2 as f64, 0.5]).collect(),
            baselines: bls,
            vis: (0..n).map(|i| num_complex::Complex32::new(i as f32, -(i as f32))).collect(),
            weights: (0..n).map(|i| i as f32).collect(),
            flags: (0..n).map(|i| i % 7 == 0).collect(),
        }
    }

    fn check_round_trip(blocks: &[VisBlock], max_bytes: usize, expected_frames: usize) {
        let topic = Topic::new("t").unwrap();
        let ctx = context();
        let mut w = RunWriter::new(topic, ctx.clone(), max_bytes);
        for b in blocks {
            w.block(b);
        }
        let frames = w.finish().unwrap();
        assert_eq!(frames.len(), expected_frames);
        let mut by_seq: BTreeMap<u64, Vec<VisBlock>> = BTreeMap::new();
        let mut ends = 0;
        for f in &frames {
            let head = FrameHead::parse(f).unwrap();
            assert_eq!(head.run, ctx.run);
            match head.kind {
                FrameKind::Block => by_seq.entry(head.seq).or_default().push(proto::decode(&f.payload).unwrap()),
                FrameKind::End => {
                    let end: EndMarker = serde_json::from_slice(&f.payload).unwrap();
                    assert_eq!(end.context, ctx);
                    ends += 1;
                }
                FrameKind::Part => unreachable!(),
            }
        }
        assert_eq!(ends, blocks.iter().map(|b| b.spw).collect::<std::collections::BTreeSet<_>>().len());
        let glued: Vec<VisBlock> = by_seq.into_values().map(|p| glue(p).unwrap()).collect();
        assert_eq!(glued, blocks);
    }

    #[test]
    fn blocks_survive_cutting_and_gluing() {
        // 100 baselines × 256 samples ≈ 310 KB: whole at 1 MiB, four pieces at 100 KB.
        let blocks = vec![block(0, 0, 100), block(1, 0, 100), block(0, 1, 100)];
        check_round_trip(&blocks, 1 << 20, 3 + 2);
        check_round_trip(&blocks, 100_000, 3 * 4 + 2);
    }

    #[test]
    fn frames_taken_block_by_block_are_the_frames_of_one_finish() {
        let blocks = vec![block(0, 0, 100), block(1, 0, 100), block(0, 1, 100)];
        let topic = Topic::new("t").unwrap();
        let strip = |frames: Vec<Envelope>| -> Vec<_> {
            frames.into_iter().map(|f| (f.key.clone(), f.headers.clone(), f.payload.to_vec())).collect()
        };
        let mut whole = RunWriter::new(topic.clone(), context(), 100_000);
        let mut streamed = RunWriter::new(topic, context(), 100_000);
        let mut taken = Vec::new();
        for b in &blocks {
            whole.blocks_as_cut(b);
            streamed.blocks_as_cut(b);
            let t = streamed.take();
            assert_eq!(t.len(), 4, "each block's pieces are ready as soon as it is added");
            taken.extend(t);
        }
        streamed.context_mut().source = "changed before the end".into();
        let ends = streamed.finish().unwrap();
        assert_eq!(ends.len(), 2, "only the end markers are left");
        let end: EndMarker = serde_json::from_slice(&ends[0].payload).unwrap();
        assert_eq!(end.context.source, "changed before the end");
        assert_eq!(end.blocks, 8, "the counts survive taking");
        taken.extend(ends);
        let mut whole = whole.finish().unwrap();
        for f in whole.iter_mut().filter(|f| f.headers.get(H_FRAME).map(String::as_str) == Some("end")) {
            let mut end: EndMarker = serde_json::from_slice(&f.payload).unwrap();
            end.context.source = "changed before the end".into();
            f.payload = serde_json::to_vec(&end).unwrap().into();
        }
        assert_eq!(strip(taken), strip(whole));
    }

    #[test]
    fn bad_headers_are_named() {
        let topic = Topic::new("t").unwrap();
        let check = |env: Envelope, expected: &str| {
            let err = FrameHead::parse(&env).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        };
        check(Envelope::new(topic.clone(), vec![1, 2]), "missing header ngvla-frame");
        let ok = Envelope::new(topic, vec![])
            .with_key("spw-0")
            .with_header(H_FRAME, "block")
            .with_header(H_RUN, "r1")
            .with_header(H_OBSERVATION, "o")
            .with_header(H_SEQ, "3");
        assert_eq!(FrameHead::parse(&ok).unwrap().seq, 3);
        check(ok.clone().with_header(H_FRAME, "blob"), "unknown ngvla-frame \"blob\"");
        check(ok.clone().with_header(H_RUN, "../etc"), "run id \"../etc\"");
        check(ok.clone().with_header(H_SEQ, "x"), "ngvla-seq");
        check(ok.clone().with_header(H_PIECE, "2/2"), "not i/n");
        check(ok.clone().with_key("spw/0"), "key \"spw/0\"");
        check(ok.with_header(H_FRAME, "part"), "missing header ngvla-artifact");
    }

    #[test]
    fn glue_refuses_pieces_of_different_blocks() {
        let err = glue(vec![block(0, 0, 3), block(0, 1, 3)]).unwrap_err().to_string();
        assert!(err.contains("pieces of one block disagree"), "{err}");
    }

    #[test]
    fn artifacts_are_cut_into_parts() {
        let topic = Topic::new("t").unwrap();
        let ctx = context();
        let mut w = RunWriter::new(topic, ctx, 1 << 20);
        let img: Vec<f64> = (0..300_000).map(|i| i as f64 * 0.5).collect();
        w.artifact("products", "dirty", &image_bytes(&img));
        let frames = w.finish().unwrap();
        assert_eq!(frames.len(), 3 + 1, "2.4 MB in 1 MiB parts, and one end marker");
        let bytes: Vec<u8> = frames[..3].iter().flat_map(|f| f.payload.to_vec()).collect();
        assert_eq!(image_from_bytes(&bytes, img.len()).unwrap(), img);
        assert!(image_from_bytes(&bytes[1..], img.len()).is_err());
        let end: EndMarker = serde_json::from_slice(&frames[3].payload).unwrap();
        assert_eq!(end.artifacts["dirty"], 3);
        assert_eq!(end.keys, vec!["products".to_string()]);
    }
}
