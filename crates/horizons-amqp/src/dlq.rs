//! Dead letters: list without removing, and redrive in bulk.
//!
//! `dlq_list` takes messages with `basic.get` (manual ack) and gives each back at once with
//! `basic.nack` + requeue, in order, so the queue keeps its order and nothing is removed.
//! `dlq_redrive` takes up to 256 at a time, publishes the original envelopes (same ids,
//! attempts reset) straight into the group's own work queue with confirms, and acks the dead
//! letters only then: at-least-once, as the contract says. Redriving to the group, not the
//! topic, keeps the other groups of the topic from seeing the message twice.
//!
//! A message the broker dead-lettered itself (its `x-delivery-limit` ran out, e.g. because its
//! consumers kept crashing) carries no `x-dlq-*` headers; its reason is built from
//! `x-first-death-reason`.

use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{dlq_headers, now_millis, BusError, DeadLetter, DeadLetters, Topic};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};

use crate::codec::{self, Trail};
use crate::publisher::Outgoing;
use crate::topology::Layout;
use crate::{AmqpBus, AmqpError};

/// Dead letters taken per redrive round.
const REDRIVE_BATCH: usize = 256;

/// Reads a message of `layout`'s DLQ back as the bus's [`DeadLetter`].
fn dead_letter(layout: &Layout, d: &lapin::message::Delivery) -> DeadLetter {
    let (env, meta) = codec::decode(&layout.topic, &d.properties, d.data.clone());
    if env.headers.contains_key(dlq_headers::REASON) {
        return DeadLetter::decode(env);
    }
    let why = meta.death_reason.unwrap_or_else(|| "unknown".into());
    let reason = if why == "delivery_limit" {
        format!(
            "dead-lettered by the broker: delivered more than its x-delivery-limit of {} times without being \
             settled (consumers crashed, dropped it or let its lease run out)",
            layout.delivery_limit
        )
    } else {
        format!("dead-lettered by the broker: {why}")
    };
    DeadLetter {
        envelope: env,
        reason,
        attempts: meta.trail.attempts + layout.delivery_limit + 1,
        first_error: meta.trail.first_error,
        last_error: meta.trail.last_error,
        dead_at: now_millis(),
        source_position: Some(format!("{} (x-death count {})", layout.queues.join(","), meta.deaths)),
    }
}

impl AmqpBus {
    /// Takes up to `limit` messages from the DLQ with a fresh channel; the caller settles them.
    async fn take_dead(
        &self,
        layout: &Layout,
        limit: usize,
    ) -> Result<(lapin::Channel, Vec<lapin::message::Delivery>), BusError> {
        let live = self.inner.conn.live(Some(self.inner.cfg.unavailable_wait)).await?;
        let ch = live.channel("reading dead letters").await?;
        let mut out = Vec::new();
        while out.len() < limit {
            match ch.basic_get(layout.dlq.as_str().into(), BasicGetOptions { no_ack: false }).await {
                Ok(Some(m)) => out.push(m.delivery),
                Ok(None) => break,
                Err(e) => return Err(AmqpError::lapin(format!("reading dead letters of {}", layout.dlq), e).into()),
            }
        }
        Ok((ch, out))
    }
}

#[async_trait]
impl DeadLetters for AmqpBus {
    async fn dlq_list(&self, topic: &Topic, group: &str, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let layout = self.layout(topic, group).await?;
        let (ch, taken) = self.take_dead(&layout, limit).await?;
        let listed = taken.iter().map(|d| dead_letter(&layout, d)).collect();
        for d in &taken {
            let _ = d.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), ch.close(200, "listed".into())).await;
        Ok(listed)
    }

    async fn dlq_redrive(&self, topic: &Topic, group: &str, limit: Option<usize>) -> Result<usize, BusError> {
        let layout = self.layout(topic, group).await?;
        let mut moved = 0;
        loop {
            let want = limit.map_or(REDRIVE_BATCH, |l| (l - moved).min(REDRIVE_BATCH));
            if want == 0 {
                break;
            }
            let (ch, taken) = self.take_dead(&layout, want).await?;
            if taken.is_empty() {
                let _ = ch.close(200, "redriven".into()).await;
                break;
            }
            let copies = taken
                .iter()
                .map(|d| {
                    let env = dead_letter(&layout, d).envelope;
                    Outgoing::to_queue(&env, &Trail::default(), layout.target(&env), Duration::ZERO)
                })
                .collect();
            // Closing the channel without acks gives the dead letters back if this fails.
            if let Err(e) = self.inner.send(copies).await {
                let _ = ch.close(200, "redrive failed".into()).await;
                return Err(e);
            }
            for d in &taken {
                d.acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| AmqpError::lapin("acking a redriven dead letter", e))?;
            }
            moved += taken.len();
            let _ = ch.close(200, "redriven".into()).await;
        }
        Ok(moved)
    }
}
