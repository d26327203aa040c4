//! The stage consumers: one bus [`Handler`] per stage that spools frames, and when a run is
//! complete runs the stage, publishes its output run, alerts and audit record, and marks the
//! run done — in that order, so the completing delivery is acked only after all of it is
//! durable (see the crate docs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::envelope::HEADER_CORRELATION_ID;
use horizons_bus::{now_millis, Backend, Context, Envelope, Handler, HandlerError, Millis, Router, Topic};
use horizons_ngvla::archive::srdp::{self, Manifest};
use horizons_ngvla::{proto, validate};
use serde::{Deserialize, Serialize};

use crate::catalog::{Archived, Catalog};
use crate::context::RunContext;
use crate::frame::{FrameHead, FrameKind, RunWriter, H_OBSERVATION, H_RUN};
use crate::spool::{Complete, InputRecord, Spool};
use crate::stages::{self, PRODUCTS_KEY};
use crate::topology::{Stage, Topics};
use crate::{PipelineError, Result};

/// Where the stages keep their state and write their products.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Root of the stages' spools (`<spool_dir>/<stage>/`).
    pub spool_dir: PathBuf,
    /// Root of the archive's products (`<products_dir>/<observation>/run-<run>/`).
    pub products_dir: PathBuf,
    /// Largest block message a stage publishes, bytes.
    pub max_block_bytes: usize,
}

/// What a stage did with one run: published on the audit topic as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `ingest`, `validate`, `flag`, `calibrate`, `image`, `archive` or `srdp`.
    pub stage: String,
    /// The run.
    pub run: String,
    /// The observation.
    pub observation: String,
    /// Software and version.
    pub software: String,
    /// `ok`, or `failed: <error>`.
    pub outcome: String,
    /// The parameters the stage ran with.
    pub parameters: serde_json::Value,
    /// Frames consumed (message id, position, kind, key, sequence), in arrival order.
    pub inputs: Vec<InputRecord>,
    /// Per key: whether its blocks arrived in sequence order.
    pub in_order: BTreeMap<String, bool>,
    /// Blocks dead-lettered on arrival, with their reasons.
    pub rejected: Vec<String>,
    /// The topic the output run went to.
    pub output_topic: Option<String>,
    /// Frames published, by message id (publishing returns no offsets; the next stage's audit
    /// record ties each id to its offset).
    pub outputs: Vec<OutputRecord>,
    /// Where products were written (archive).
    pub products_dir: Option<String>,
    /// When the stage started on the complete run, ms since the epoch.
    pub started_ms: Millis,
    /// When it finished.
    pub finished_ms: Millis,
}

/// A delivered product, published on [`Topics::srdp`] (JSON, keyed by observation) once its
/// thumbnail and manifest are written and the catalog marks it delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductReady {
    /// The run.
    pub run: String,
    /// The observation.
    pub observation: String,
    /// The field (source name).
    pub object: String,
    /// The products directory on the archive host.
    pub products_dir: String,
    /// When it was delivered, ms since the Unix epoch.
    pub delivered_ms: Millis,
    /// Every file with its size and SHA-256 (as in its `manifest.json`).
    pub files: Vec<srdp::ProductFile>,
    /// Where the portal serves it: `detail`, `quicklook`, `thumbnail`, `manifest`.
    pub links: BTreeMap<String, String>,
}

impl ProductReady {
    fn new(ctx: &RunContext, dir: &std::path::Path, manifest: &Manifest, delivered_ms: Millis) -> Self {
        let api = format!("/api/products/{}", ctx.run);
        let file = |name: &str| format!("{api}/files/{name}");
        let links = BTreeMap::from([
            ("detail".to_string(), api.clone()),
            ("quicklook".to_string(), file("image.png")),
            ("thumbnail".to_string(), file(srdp::THUMBNAIL)),
            ("manifest".to_string(), file(srdp::MANIFEST)),
        ]);
        ProductReady {
            run: ctx.run.clone(),
            observation: ctx.observation.id.clone(),
            object: ctx.observation.object.clone(),
            products_dir: dir.display().to_string(),
            delivered_ms,
            files: manifest.files.clone(),
            links,
        }
    }
}

/// One frame a stage published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Message id.
    pub id: String,
    /// Frame kind.
    pub kind: String,
    /// Bus key.
    pub key: String,
    /// Sequence number, if any.
    pub seq: Option<u64>,
}

impl OutputRecord {
    pub(crate) fn of(env: &Envelope) -> OutputRecord {
        OutputRecord {
            id: env.id.to_string(),
            kind: env.headers.get(crate::frame::H_FRAME).cloned().unwrap_or_default(),
            key: env.key.clone().unwrap_or_default(),
            seq: env.headers.get(crate::frame::H_SEQ).and_then(|s| s.parse().ok()),
        }
    }
}

/// The streaming pipeline on one backend.
#[derive(Clone)]
pub struct Service {
    backend: Arc<dyn Backend>,
    topics: Topics,
    cfg: ServiceConfig,
    catalog: Option<Arc<dyn Catalog>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("backend", &self.backend.name())
            .field("topics", &self.topics)
            .field("catalog", &self.catalog.is_some())
            .finish()
    }
}

impl Service {
    /// The pipeline on `backend`, with its topics.
    pub fn new(backend: Arc<dyn Backend>, topics: Topics, cfg: ServiceConfig) -> Self {
        Self { backend, topics, cfg, catalog: None }
    }

    /// The archive stage records every archived run in `catalog` (without one it writes the
    /// products directory only).
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The bus.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Declares the pipeline's topics and groups (idempotent).
    pub async fn declare(&self) -> Result<()> {
        self.backend
            .declare(&self.topics.topology())
            .await
            .map_err(PipelineError::bus("declaring the pipeline's topics"))
    }

    /// Adds a route per stage to `router`: one delivery at a time per stage, because a stage's
    /// spool is written by one task (see the crate docs on members).
    pub fn routes(&self, mut router: Router, stages: &[Stage]) -> Result<Router> {
        for &stage in stages {
            let spool = Spool::open(self.cfg.spool_dir.join(stage.name()))?;
            let h = StageHandler { stage, spool: Arc::new(spool), service: self.clone() };
            let group = Topics::group(stage);
            router = router.route(stage.input(&self.topics).clone(), group.name, group.retry, 1, Arc::new(h));
        }
        Ok(router)
    }

    /// Publishes `frames` in batches (one durability wait per batch).
    pub(crate) async fn publish_all(&self, frames: Vec<Envelope>, what: &str) -> Result<()> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for f in frames {
            bytes += f.payload.len();
            batch.push(f);
            if bytes >= 8 << 20 || batch.len() >= 64 {
                let b = std::mem::take(&mut batch);
                bytes = 0;
                self.backend.publish_batch(b).await.map_err(PipelineError::bus(format!("publishing {what}")))?;
            }
        }
        if !batch.is_empty() {
            self.backend.publish_batch(batch).await.map_err(PipelineError::bus(format!("publishing {what}")))?;
        }
        Ok(())
    }

    /// Publishes an audit record.
    pub(crate) async fn audit(&self, rec: &AuditRecord) -> Result<()> {
        let env = Envelope::new(self.topics.audit.clone(), serde_json::to_vec(rec)?)
            .with_key(&rec.stage)
            .with_header(H_RUN, &rec.run)
            .with_header(H_OBSERVATION, &rec.observation)
            .with_header(HEADER_CORRELATION_ID, &rec.run);
        self.backend.publish(env).await.map_err(PipelineError::bus("publishing the audit record"))
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }
}

struct StageHandler {
    stage: Stage,
    spool: Arc<Spool>,
    service: Service,
}

fn handler_error(e: PipelineError) -> HandlerError {
    if e.is_transient() {
        HandlerError::Retryable(format!("{:#}", DisplayChain(&e)))
    } else {
        HandlerError::Permanent(format!("{:#}", DisplayChain(&e)))
    }
}

/// An error with its sources, `a: b: c`.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PipelineError::Inconsistent(format!("a stage task panicked or was cancelled: {e}")))?
}

#[async_trait]
impl Handler for StageHandler {
    async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
        let head = FrameHead::parse(msg).map_err(handler_error)?;
        let input = InputRecord {
            id: msg.id.to_string(),
            position: cx.position.to_string(),
            kind: head.kind,
            key: head.key.clone(),
            seq: head.seq,
        };
        // A block that cannot be used is refused here, with its reason, before it is spooled.
        let refusal = match head.kind {
            FrameKind::Block => match proto::decode(&msg.payload) {
                Err(e) => Some(format!("undecodable block: {e}")),
                Ok(b) => validate::check_block(&b).err().map(|r| format!("invalid block: {r}")),
            },
            _ => None,
        };
        let (spool, payload, h) = (self.spool.clone(), msg.payload.clone(), head.clone());
        let reason = refusal.clone();
        let complete = blocking(move || {
            match &reason {
                Some(r) => spool.reject(&h, r, &input)?,
                None => {
                    if !spool.put(&h, &payload, &input)? {
                        tracing::debug!(run = %h.run, "frame of a finished run dropped");
                        return Ok(None);
                    }
                }
            }
            spool.complete(&h.run)
        })
        .await
        .map_err(handler_error)?;
        if let Some(c) = complete {
            self.process(&head, c).await.map_err(handler_error)?;
        }
        match refusal {
            Some(r) => {
                Err(HandlerError::Permanent(format!("block {} (key {}) of run {}: {r}", head.seq, head.key, head.run)))
            }
            None => Ok(()),
        }
    }
}

impl StageHandler {
    async fn process(&self, head: &FrameHead, c: Complete) -> Result<()> {
        let started_ms = now_millis();
        let (stage, products) = (self.stage, self.service.cfg.products_dir.clone());
        let c = Arc::new(c);
        let c2 = c.clone();
        tracing::info!(stage = stage.name(), run = %head.run, blocks = c.blocks.len(), "run complete; processing");
        let result = blocking(move || stages::run(stage, &c2, &products)).await;
        let mut rec = AuditRecord {
            stage: stage.name().into(),
            run: head.run.clone(),
            observation: head.observation.clone(),
            software: crate::software(),
            outcome: "ok".into(),
            parameters: serde_json::Value::Null,
            inputs: c.inputs.clone(),
            in_order: c.in_order(),
            rejected: c.rejected.iter().map(|(k, s, r)| format!("{k} block {s}: {r}")).collect(),
            output_topic: None,
            outputs: vec![],
            products_dir: None,
            started_ms,
            finished_ms: 0,
        };
        let out = match result {
            Ok(out) => out,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                rec.outcome = format!("failed: {}", DisplayChain(&e));
                rec.finished_ms = now_millis();
                self.service.audit(&rec).await?;
                let (spool, run, outcome) = (self.spool.clone(), head.run.clone(), rec.outcome.clone());
                blocking(move || spool.finish(&run, &outcome)).await?;
                return Err(e);
            }
        };
        rec.parameters = out.parameters.clone();
        rec.products_dir = out.products_dir.as_ref().map(|d| d.display().to_string());
        if let (Stage::Archive, Some(catalog), Some(dir)) = (stage, &self.service.catalog, &out.products_dir) {
            let ctx = &out.context;
            let archived = Archived {
                run: &ctx.run,
                observation: &ctx.observation,
                report: ctx.need("the report", &ctx.report)?,
                products_dir: dir,
            };
            catalog.record(archived).await.map_err(|source| PipelineError::Catalog { run: ctx.run.clone(), source })?;
            rec.parameters["catalog"] = serde_json::Value::Bool(true);
        }
        if let Some(topic) = stage.output(&self.service.topics) {
            let frames = self.frames(topic, &out)?;
            rec.output_topic = Some(topic.to_string());
            rec.outputs = frames.iter().map(OutputRecord::of).collect();
            self.service.publish_all(frames, &format!("the {} output of run {}", stage.name(), head.run)).await?;
        }
        if let (Some(manifest), Some(dir)) = (&out.delivered, &out.products_dir) {
            let delivered_ms = now_millis();
            if let Some(catalog) = &self.service.catalog {
                catalog
                    .delivered(&head.run, delivered_ms)
                    .await
                    .map_err(|source| PipelineError::Catalog { run: head.run.clone(), source })?;
                rec.parameters["catalog"] = serde_json::Value::Bool(true);
            }
            let ready = ProductReady::new(&out.context, dir, manifest, delivered_ms);
            let env = Envelope::new(self.service.topics.srdp.clone(), serde_json::to_vec(&ready)?)
                .with_key(&ready.observation)
                .with_header(H_RUN, &head.run)
                .with_header(H_OBSERVATION, &head.observation)
                .with_header(HEADER_CORRELATION_ID, &head.run);
            rec.output_topic = Some(self.service.topics.srdp.to_string());
            rec.outputs.push(OutputRecord::of(&env));
            self.service.publish_all(vec![env], "the delivered product").await?;
        }
        if !out.alerts.is_empty() {
            let alerts = out
                .alerts
                .iter()
                .map(|a| {
                    Ok(Envelope::new(self.service.topics.alerts.clone(), serde_json::to_vec(a)?)
                        .with_key(&head.run)
                        .with_header(H_RUN, &head.run)
                        .with_header(H_OBSERVATION, &head.observation))
                })
                .collect::<Result<Vec<_>>>()?;
            rec.outputs.extend(alerts.iter().map(OutputRecord::of));
            self.service.publish_all(alerts, "alerts").await?;
        }
        rec.finished_ms = now_millis();
        self.service.audit(&rec).await?;
        let (spool, run) = (self.spool.clone(), head.run.clone());
        blocking(move || spool.finish(&run, "ok")).await?;
        tracing::info!(stage = stage.name(), run = %head.run, outputs = rec.outputs.len(), "run done");
        Ok(())
    }

    fn frames(&self, topic: &Topic, out: &stages::StageOutput) -> Result<Vec<Envelope>> {
        let mut w = RunWriter::new(topic.clone(), out.context.clone(), self.service.cfg.max_block_bytes);
        for b in &out.blocks {
            w.block(b);
        }
        for (name, bytes) in &out.artifacts {
            w.artifact(PRODUCTS_KEY, name, bytes);
        }
        w.finish()
    }
}
