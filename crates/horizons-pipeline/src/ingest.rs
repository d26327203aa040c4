//! Sources of runs: the raw topic's side of the pipeline. A [`RunPublisher`] puts one run on the
//! raw topic block by block — each block cut to the wire size as `pipeline run` cuts it, each
//! piece a block of its own, keyed by spectral window and numbered in the order given — then one
//! end marker per spectral window and an audit record. `pipeline ingest` feeds it a uvfits file
//! ([`ingest`]); `pipeline simulate` feeds it the correlator simulator's integrations as they are
//! made, at a chosen rate.

use std::path::Path;

use horizons_bus::{now_millis, MessageId, Millis};
use horizons_ngvla::model::{Observation, VisBlock};
use horizons_ngvla::pipeline::{Options, WireStats};
use horizons_ngvla::uvfits::UvFits;
use serde::Serialize;

use crate::context::RunContext;
use crate::frame::{FrameKind, RunWriter, H_FRAME};
use crate::service::{AuditRecord, OutputRecord, Service};
use crate::{PipelineError, Result};

/// What an ingest published.
#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    /// The run id.
    pub run: String,
    /// The observation id.
    pub observation: String,
    /// The topic.
    pub topic: String,
    /// Block messages (sizes in `wire`).
    pub wire: WireStats,
    /// Messages in all (blocks and end markers).
    pub messages: usize,
    /// The keys (spectral windows).
    pub keys: Vec<String>,
}

/// One run being published on the raw topic. Each [`publish`](RunPublisher::publish) returns
/// once that block's messages are durable; [`finish`](RunPublisher::finish) publishes the end
/// markers (the run exists for the stages only from then on) and the ingest audit record.
/// Dropped without `finish`, the run stays incomplete: the stages spool its blocks and wait.
#[derive(Debug)]
pub struct RunPublisher<'s> {
    service: &'s Service,
    writer: RunWriter,
    wire: WireStats,
    outputs: Vec<OutputRecord>,
    parameters: serde_json::Value,
    started_ms: Millis,
}

impl<'s> RunPublisher<'s> {
    /// A new run (a fresh UUIDv7 id) of `observation` from `source` (a name for the audit trail),
    /// with `options` for every stage.
    pub fn new(service: &'s Service, source: String, observation: Observation, options: Options) -> Self {
        let max_bytes = options.max_block_bytes;
        let parameters = serde_json::json!({ "source": source, "options": options });
        let ctx = RunContext::new(MessageId::new().to_string(), source, observation, options, WireStats::default());
        RunPublisher {
            service,
            writer: RunWriter::new(service.topics().raw.clone(), ctx, max_bytes),
            wire: WireStats { min_bytes: usize::MAX, ..Default::default() },
            outputs: vec![],
            parameters,
            started_ms: now_millis(),
        }
    }

    /// Adds `key: value` to the parameters of the ingest audit record (e.g. the simulation).
    pub fn with_parameter(mut self, key: &str, value: serde_json::Value) -> Self {
        self.parameters[key] = value;
        self
    }

    /// The run id.
    pub fn run(&self) -> String {
        self.writer.context().run.clone()
    }

    /// Publishes one block (cut for the wire); returns the bytes it took on the wire.
    pub async fn publish(&mut self, block: &VisBlock) -> Result<usize> {
        self.writer.blocks_as_cut(block);
        let frames = self.writer.take();
        let mut bytes = 0;
        for f in &frames {
            if f.headers.get(H_FRAME).map(String::as_str) == Some(FrameKind::Block.as_str()) {
                let n = f.payload.len();
                self.wire.blocks += 1;
                self.wire.min_bytes = self.wire.min_bytes.min(n);
                self.wire.max_bytes = self.wire.max_bytes.max(n);
                self.wire.total_bytes += n;
                bytes += n;
            }
        }
        self.outputs.extend(frames.iter().map(OutputRecord::of));
        let what = format!("run {} to {}", self.writer.context().run, self.service.topics().raw);
        self.service.publish_all(frames, &what).await?;
        Ok(bytes)
    }

    /// Publishes the end markers, carrying the run's wire sizes, and the audit record.
    pub async fn finish(mut self) -> Result<IngestSummary> {
        if self.wire.blocks == 0 {
            return Err(PipelineError::Science {
                stage: "ingest",
                source: horizons_ngvla::NgvlaError::NoData(format!(
                    "{} has no visibilities",
                    self.writer.context().source
                )),
            });
        }
        self.writer.context_mut().wire = self.wire;
        let ctx = self.writer.context().clone();
        let topic = self.service.topics().raw.clone();
        let ends = self.writer.finish()?;
        self.outputs.extend(ends.iter().map(OutputRecord::of));
        self.service.publish_all(ends, &format!("the end of run {} to {topic}", ctx.run)).await?;
        let mut keys: Vec<String> = self.outputs.iter().map(|o| o.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let messages = self.outputs.len();
        self.service
            .audit(&AuditRecord {
                stage: "ingest".into(),
                run: ctx.run.clone(),
                observation: ctx.observation.id.clone(),
                software: crate::software(),
                outcome: "ok".into(),
                parameters: self.parameters,
                inputs: vec![],
                in_order: Default::default(),
                rejected: vec![],
                output_topic: Some(topic.to_string()),
                outputs: self.outputs,
                products_dir: None,
                started_ms: self.started_ms,
                finished_ms: now_millis(),
            })
            .await?;
        Ok(IngestSummary {
            run: ctx.run,
            observation: ctx.observation.id,
            topic: topic.to_string(),
            wire: self.wire,
            messages,
            keys,
        })
    }
}

/// Reads `path` and publishes it as one run on the raw topic with `options` for every stage.
pub async fn ingest(service: &Service, path: &Path, options: Options) -> Result<IngestSummary> {
    let p = path.to_path_buf();
    let uv = tokio::task::spawn_blocking(move || UvFits::open(&p))
        .await
        .map_err(|e| PipelineError::Inconsistent(format!("reading task failed: {e}")))?
        .map_err(|source| PipelineError::Science { stage: "ingest", source })?;
    let raw = uv.to_blocks();
    if raw.is_empty() {
        return Err(PipelineError::Science {
            stage: "ingest",
            source: horizons_ngvla::NgvlaError::NoData(format!("{} has no visibilities", path.display())),
        });
    }
    let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut run = RunPublisher::new(service, source, uv.observation.clone(), options);
    for b in &raw {
        run.publish(b).await?;
    }
    run.finish().await
}
