//! `bus consume`: takes deliveries of one group, acks each, and either prints one JSON line
//! per message or, with `--check-sequence`, one JSON summary of the sequence numbers seen
//! (see [`crate::payload::SequenceSummary`] for what each field counts).
//!
//! Stops when `--count` deliveries were taken, when nothing arrived for `--until-idle`, or on
//! Ctrl-C. Deliveries prefetched but not processed are released when the subscription is
//! dropped and will be delivered again. An ack is sent after the message was printed or
//! counted: at-least-once, like any consumer.

use std::time::Duration;

use horizons_bus::{Backend, BusError, Delivery, ReplayFrom, SubscribeOptions};
use serde::Serialize;

use crate::bus::{ensure_topic, println_flush, topic, DEFAULT_GROUP};
use crate::error::AppError;
use crate::payload::SequenceCheck;

/// `bus consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to consume; declared (with the group) if missing, so a consumer may start first.
    #[arg(long)]
    pub topic: String,
    /// Consumer group; declared if missing (a new group starts at the end of the topic).
    #[arg(long, default_value = DEFAULT_GROUP)]
    pub group: String,
    /// Rewind the group to offset 0 before consuming (needs the replay capability).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop once no message arrived for this long, e.g. `2s` or `500ms`; without it, run until
    /// `--count`, Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub until_idle: Option<Duration>,
    /// Print one JSON summary of sequence numbers, gaps, duplicates and corrupt payloads
    /// instead of one line per message.
    #[arg(long)]
    pub check_sequence: bool,
    /// Stop after this many deliveries.
    #[arg(long)]
    pub count: Option<u64>,
    /// With `--check-sequence`: the last `acked <N>` a publisher printed; the summary then
    /// says how many of `0..N` are missing (`missing_below_acked`).
    #[arg(long, requires = "check_sequence")]
    pub acked: Option<u64>,
    /// Deliveries held unacknowledged at once.
    #[arg(long, default_value_t = 4096)]
    pub prefetch: usize,
}

/// One line per message, without `--check-sequence`.
#[derive(Debug, Serialize)]
struct MessageLine<'a> {
    position: String,
    id: String,
    key: Option<&'a str>,
    priority: u8,
    timestamp: i64,
    attempt: u32,
    size: usize,
}

/// Runs `bus consume`.
pub async fn run(backend: &dyn Backend, args: ConsumeArgs) -> Result<(), AppError> {
    let topic = topic(&args.topic)?;
    let group = args.group.as_str();
    ensure_topic(backend, &topic, group).await?;
    if args.from_beginning {
        let replay = backend
            .replay()
            .filter(|_| backend.capabilities().replay_offset)
            .ok_or(BusError::Unsupported { backend: backend.name(), what: "replay by offset (--from-beginning)" })
            .map_err(AppError::bus("rewinding the group"))?;
        replay
            .replay(&topic, group, ReplayFrom::Offset(0))
            .await
            .map_err(AppError::bus(format!("rewinding group {group} on {topic} to offset 0")))?;
    }
    let sub = backend
        .subscribe(&topic, group, SubscribeOptions { prefetch: args.prefetch.max(1) })
        .await
        .map_err(AppError::bus(format!("subscribing to {topic} as group {group}")))?;

    let mut check = args.check_sequence.then(SequenceCheck::new);
    let mut taken = 0u64;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    tokio::spawn(crate::shutdown::cancel_on_signal(stop.clone()));
    while !matches!(args.count, Some(c) if taken >= c) {
        let next = async {
            match args.until_idle {
                Some(idle) => sub.next_timeout(idle).await,
                None => sub.next().await,
            }
        };
        let d: Delivery = tokio::select! {
            d = next => match d { Some(d) => d, None => break },
            _ = stop.cancelled() => break,
        };
        taken += 1;
        match &mut check {
            Some(c) => c.observe(&d.envelope.payload),
            None => print_message(&d)?,
        }
        d.ack().await.map_err(AppError::bus("acknowledging a delivery"))?;
    }
    drop(sub);
    if let Some(c) = check {
        let mut summary = c.summary();
        summary.missing_below_acked = args.acked.map(|n| c.missing_below(n));
        let json = serde_json::to_string(&summary).expect("summary serialises");
        println_flush(json)?;
    }
    tracing::info!(%topic, group, taken, "consume finished");
    Ok(())
}

fn print_message(d: &Delivery) -> Result<(), AppError> {
    let e = &d.envelope;
    let line = MessageLine {
        position: d.position.to_string(),
        id: e.id.to_string(),
        key: e.key.as_deref(),
        priority: e.priority.get(),
        timestamp: e.timestamp,
        attempt: d.attempt,
        size: e.payload.len(),
    };
    println_flush(serde_json::to_string(&line).expect("line serialises"))
}
