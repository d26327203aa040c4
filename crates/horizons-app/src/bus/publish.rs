//! `bus publish`: sends `--count` self-checking payloads (see [`crate::payload`]) in batches,
//! several batches in flight, and prints `acked <total>` as batches become durable.
//!
//! Batches may complete out of order; totals are printed only for the contiguous prefix of
//! acknowledged batches, so every printed number is a true lower bound of what is durable
//! (messages `0..total` are all stored). A failure stops the command; what was printed stands.

use futures::StreamExt;
use horizons_bus::{Backend, Envelope, Priority};

use crate::bus::{ensure_topic, println_flush, topic, DEFAULT_GROUP};
use crate::error::AppError;
use crate::payload;

/// `bus publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Topic to publish to; declared with the group `cli` if missing.
    #[arg(long)]
    pub topic: String,
    /// Messages to send; their sequence numbers are 0..count.
    #[arg(long)]
    pub count: u64,
    /// Payload size in bytes, at least 8 (the sequence number).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per publish call (one durability wait each).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Key set on every message.
    #[arg(long)]
    pub key: Option<String>,
    /// Priority 0–9 set on every message.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
}

/// Runs `bus publish`.
pub async fn run(backend: &dyn Backend, args: PublishArgs) -> Result<(), AppError> {
    if args.size < payload::SEQ_LEN {
        return Err(AppError::Usage(format!("--size must be at least {} (the sequence number)", payload::SEQ_LEN)));
    }
    if args.batch == 0 || args.in_flight == 0 {
        return Err(AppError::Usage("--batch and --in-flight must be at least 1".into()));
    }
    let topic = topic(&args.topic)?;
    let priority = args.priority.map(Priority::new).transpose().map_err(AppError::bus("invalid --priority"))?;
    ensure_topic(backend, &topic, DEFAULT_GROUP).await?;

    let batch = args.batch as u64;
    let starts = (0..args.count.div_ceil(batch)).map(|i| i * batch);
    let make = |start: u64| {
        let end = (start + batch).min(args.count);
        let envs: Vec<Envelope> = (start..end)
            .map(|seq| {
                let mut p = vec![0u8; args.size];
                payload::fill(seq, &mut p);
                let mut env = Envelope::new(topic.clone(), p);
                env.key.clone_from(&args.key);
                if let Some(pr) = priority {
                    env.priority = pr;
                }
                env
            })
            .collect();
        async move { backend.publish_batch(envs).await.map(|()| (start, end)) }
    };
    // `buffered` runs up to `in_flight` batches at once and yields them in order: the
    // contiguous acknowledged prefix.
    let mut acks = futures::stream::iter(starts).map(make).buffered(args.in_flight);
    let mut acked = 0u64;
    while let Some(r) = acks.next().await {
        let (_, end) = r.map_err(|e| {
            AppError::bus(format!("publishing to {topic} failed after {acked} acknowledged messages"))(e)
        })?;
        acked = end;
        println_flush(format_args!("acked {acked}"))?;
    }
    tracing::info!(%topic, acked, "publish finished");
    Ok(())
}
