//! `pipeline ingest`: a uvfits file onto the raw topic as one run — the blocks `pipeline run`
//! validates (cut to the wire size, each piece a block of its own, keyed by spectral window,
//! numbered in file order), one end marker per spectral window, and an audit record.

use std::path::Path;

use horizons_bus::{now_millis, MessageId};
use horizons_ngvla::pipeline::{Options, WireStats};
use horizons_ngvla::proto;
use horizons_ngvla::uvfits::UvFits;
use serde::Serialize;

use crate::context::RunContext;
use crate::frame::RunWriter;
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

/// Reads `path` and publishes it as one run on the raw topic with `options` for every stage.
pub async fn ingest(service: &Service, path: &Path, options: Options) -> Result<IngestSummary> {
    let started_ms = now_millis();
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
    // The same sizes `pipeline run` reports for its wire round trip.
    let mut wire = WireStats { min_bytes: usize::MAX, ..Default::default() };
    for b in &raw {
        for piece in proto::split_for_wire(b, options.max_block_bytes) {
            let n = proto::encode(&piece).len();
            wire.blocks += 1;
            wire.min_bytes = wire.min_bytes.min(n);
            wire.max_bytes = wire.max_bytes.max(n);
            wire.total_bytes += n;
        }
    }
    let ctx = RunContext::new(
        MessageId::new().to_string(),
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        uv.observation.clone(),
        options.clone(),
        wire,
    );
    let topic = service.topics().raw.clone();
    let mut w = RunWriter::new(&topic, &ctx, options.max_block_bytes);
    for b in &raw {
        w.blocks_as_cut(b);
    }
    let frames = w.finish()?;
    let mut keys: Vec<String> = frames.iter().filter_map(|f| f.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let outputs: Vec<OutputRecord> = frames.iter().map(OutputRecord::of).collect();
    let messages = frames.len();
    service.publish_all(frames, &format!("run {} to {topic}", ctx.run)).await?;
    service
        .audit(&AuditRecord {
            stage: "ingest".into(),
            run: ctx.run.clone(),
            observation: ctx.observation.id.clone(),
            software: crate::software(),
            outcome: "ok".into(),
            parameters: serde_json::json!({ "source": ctx.source, "options": options }),
            inputs: vec![],
            in_order: Default::default(),
            rejected: vec![],
            output_topic: Some(topic.to_string()),
            outputs,
            products_dir: None,
            started_ms,
            finished_ms: now_millis(),
        })
        .await?;
    Ok(IngestSummary { run: ctx.run, observation: ctx.observation.id, topic: topic.to_string(), wire, messages, keys })
}
