//! Replaying a time range of the raw topic: `horizons pipeline replay --from-time A --to-time B`.
//!
//! The stages keep a `done` marker per run, so the raw frames of a finished run delivered again
//! to the `validate` group (`horizons bus replay` on the raw topic) are taken for late
//! duplicates and dropped — that is what keeps a crash from producing a run twice. Replaying a
//! time range *into the products* therefore goes through a reader group of its own: the raw
//! topic's `replay` group is rewound to `A` with the bus's bounded replay (the same primitive as
//! `bus replay --to-time`), its deliveries are read until the topic is idle, the frames stored
//! in `[A, B)` are put back together per run, and every run found whole in the range is
//! published again as a **new run** (a fresh id; `replay_of` in its ingest audit record names
//! the original) with the original's observation and options, its blocks in their original
//! order. The stages then process it like any run, and the archive writes its products under the
//! new run's id, next to the original's. A run only partly inside the range is reported and
//! left out: its products need all of its blocks.

use std::collections::BTreeMap;
use std::time::Duration;

use horizons_bus::{GroupSpec, Millis, ReplayFrom, SubscribeOptions, TopicSpec, Topology};
use horizons_ngvla::model::VisBlock;
use horizons_ngvla::proto;
use serde::Serialize;

use crate::frame::{glue, EndMarker, FrameHead, FrameKind};
use crate::ingest::{IngestSummary, RunPublisher};
use crate::service::Service;
use crate::{PipelineError, Result};

/// The raw topic's reader group for replays.
pub const REPLAY_GROUP: &str = "replay";

/// What a replay found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// Runs published again: the original's id and the new run.
    pub replayed: Vec<Replayed>,
    /// Runs with frames in the range that were not whole there, with what was missing.
    pub partial: Vec<Partial>,
    /// Raw frames stored in the range.
    pub frames: usize,
}

/// One run published again.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The original run.
    pub replay_of: String,
    /// The new run, as `pipeline ingest` reports it.
    pub run: IngestSummary,
}

/// A run left out.
#[derive(Debug, Clone, Serialize)]
pub struct Partial {
    /// The run.
    pub run: String,
    /// Why it was left out.
    pub reason: String,
}

/// The frames of one run seen in the range.
#[derive(Default)]
struct Gathered {
    /// Pieces by block seq.
    blocks: BTreeMap<u64, Vec<VisBlock>>,
    /// End markers by key.
    ends: BTreeMap<String, EndMarker>,
    /// Blocks seen per key.
    per_key: BTreeMap<String, u64>,
}

/// Publishes again, as new runs, the runs whose raw frames were all stored in `[from, to)`
/// (no end when `to` is `None`); reads the raw topic until no frame came for `idle`.
pub async fn replay_range(
    service: &Service,
    from: Millis,
    to: Option<Millis>,
    idle: Duration,
) -> Result<ReplaySummary> {
    let backend = service.backend();
    let topic = service.topics().raw.clone();
    let to = to.unwrap_or(Millis::MAX);
    if to <= from {
        return Err(PipelineError::Frame(format!("the range ends ({to}) before it starts ({from})")));
    }
    backend
        .declare(&Topology::new().topic(TopicSpec::new(topic.clone()).group(GroupSpec::new(REPLAY_GROUP))))
        .await
        .map_err(PipelineError::bus(format!("declaring the {REPLAY_GROUP} group on {topic}")))?;
    let replay = backend.replay().ok_or_else(|| {
        PipelineError::Frame(format!(
            "the {} backend cannot replay, so the raw topic cannot be read again",
            backend.name()
        ))
    })?;
    replay
        .replay_range(&topic, REPLAY_GROUP, ReplayFrom::Time(from), to)
        .await
        .map_err(PipelineError::bus(format!("rewinding {REPLAY_GROUP} on {topic}")))?;
    let sub = backend
        .subscribe(&topic, REPLAY_GROUP, SubscribeOptions::default())
        .await
        .map_err(PipelineError::bus(format!("subscribing to {topic}")))?;
    let mut runs: BTreeMap<String, Gathered> = BTreeMap::new();
    let mut frames = 0;
    while let Some(d) = sub.next_timeout(idle).await {
        let env = &d.envelope;
        // The group also holds what came after the range (it had never settled it): skip it.
        if (from..to).contains(&env.timestamp) {
            if let Ok(head) = FrameHead::parse(env) {
                frames += 1;
                let g = runs.entry(head.run.clone()).or_default();
                match head.kind {
                    FrameKind::Block => {
                        let b = proto::decode(&env.payload)
                            .map_err(|e| PipelineError::Frame(format!("run {}: block {}: {e}", head.run, head.seq)))?;
                        let pieces = g.blocks.entry(head.seq).or_default();
                        if pieces.is_empty() {
                            *g.per_key.entry(head.key.clone()).or_default() += 1;
                        }
                        // A duplicate piece (an at-least-once publish) is kept once.
                        if pieces.len() < head.piece.1 as usize {
                            pieces.push(b);
                        }
                    }
                    FrameKind::End => {
                        g.ends.insert(head.key.clone(), serde_json::from_slice(&env.payload)?);
                    }
                    FrameKind::Part => {}
                }
            }
        }
        d.ack().await.map_err(PipelineError::bus("acking a replayed frame"))?;
    }
    drop(sub);
    let mut summary = ReplaySummary { replayed: vec![], partial: vec![], frames };
    for (run, g) in runs {
        match whole(&g) {
            Err(reason) => summary.partial.push(Partial { run, reason }),
            Ok(end) => {
                let ctx = &end.context;
                let mut p = RunPublisher::new(
                    service,
                    format!("replay of run {run} ({})", ctx.source),
                    ctx.observation.clone(),
                    ctx.options.clone(),
                )
                .with_parameter("replay_of", serde_json::json!({ "run": run, "from_ms": from, "to_ms": to }));
                for (_, pieces) in g.blocks {
                    p.publish(&glue(pieces)?).await?;
                }
                summary.replayed.push(Replayed { replay_of: run, run: p.finish().await? });
            }
        }
    }
    Ok(summary)
}

/// The end marker of a run whose every key ended and every block came, or what is missing.
fn whole(g: &Gathered) -> std::result::Result<&EndMarker, String> {
    let Some(first) = g.ends.values().next() else { return Err("no end marker in the range".into()) };
    for key in &first.keys {
        let Some(end) = g.ends.get(key) else { return Err(format!("no end marker for {key} in the range")) };
        let seen = g.per_key.get(key).copied().unwrap_or(0);
        if seen != end.blocks {
            return Err(format!("{seen} of {key}'s {} blocks in the range", end.blocks));
        }
    }
    Ok(first)
}
