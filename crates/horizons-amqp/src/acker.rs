//! Settling a delivery: ack, retry, or dead-letter, each acked at the broker only after any
//! copy it needs (the retry, the dead letter) was confirmed. A crash in between duplicates
//! the message; it never loses it.
//!
//! - `Ack`: `basic.ack`.
//! - `RetryAfter` in a `requeue` group: a copy with the attempt count and errors in its
//!   headers goes through the delay ladder back to the same queue, then the original is acked.
//!   In a `block-key` group the member keeps the message (still unacked) and hands it out again
//!   after the delay, so the key's later messages wait (see [`crate::member`]).
//! - `DeadLetter`: [`DeadLetter::encode`] with reason, attempts, first and last error, published
//!   to the group's DLQ, then the original is acked.
//!
//! A settle after the lease ran out, or after the channel died, answers
//! [`BusError::LeaseExpired`]: the broker already made the message available again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{BusError, DeadLetter, Envelope, FailureRecord, OrderingMode, Settlement};
use lapin::options::BasicAckOptions;

use crate::codec::Trail;
use crate::member::{transition, Cmd, Entry, SlotState, DONE, HANDED, SETTLING};
use crate::publisher::Outgoing;
use crate::topology::Layout;
use crate::Inner;

/// What every delivery of one subscription shares.
pub(crate) struct GroupCtx {
    pub inner: Arc<Inner>,
    pub layout: Layout,
    pub cmd: flume::Sender<Cmd>,
}

/// The bus's [`horizons_bus::Acker`] for one delivery.
pub(crate) struct AmqpAcker {
    pub ctx: Arc<GroupCtx>,
    pub token: u64,
    pub state: SlotState,
    pub lapin: lapin::Acker,
    pub env: Envelope,
    pub attempt: u32,
    pub trail: Trail,
    queue: usize,
    tag: u64,
}

impl AmqpAcker {
    /// The acker for `e`, offered with `token`.
    pub fn new(ctx: Arc<GroupCtx>, e: &Entry, token: u64, state: SlotState) -> Self {
        Self {
            ctx,
            token,
            state,
            lapin: e.lapin.clone(),
            env: e.env.clone(),
            attempt: e.attempt,
            trail: e.trail.clone(),
            queue: e.queue,
            tag: e.tag,
        }
    }

    async fn ack(&self) -> Result<(), BusError> {
        match self.lapin.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            // The channel is gone, so the broker requeued the message.
            Ok(false) | Err(_) => Err(BusError::LeaseExpired),
        }
    }

    async fn copy_then_ack(&self, copy: Outgoing) -> Result<(), BusError> {
        self.ctx.inner.send(vec![copy]).await?;
        self.ack().await
    }

    async fn apply(&self, s: Settlement) -> Result<(), BusError> {
        let layout = &self.ctx.layout;
        match s {
            Settlement::Ack => self.ack().await,
            Settlement::RetryAfter { delay, error } => {
                let trail = Trail {
                    attempts: self.attempt,
                    first_error: self.trail.first_error.clone().or_else(|| Some(error.clone())),
                    last_error: Some(error),
                };
                self.copy_then_ack(Outgoing::to_queue(&self.env, &trail, layout.target(&self.env), delay)).await
            }
            Settlement::DeadLetter { reason, error } => {
                let failures = FailureRecord {
                    attempts: self.attempt,
                    first_error: self.trail.first_error.clone().or_else(|| error.clone()),
                    last_error: error.or_else(|| self.trail.last_error.clone()),
                };
                let position = format!("{}#{}", layout.queues[self.queue], self.tag);
                let dead = DeadLetter::encode(&self.env, &layout.group, &reason, &failures, &position);
                self.copy_then_ack(Outgoing::to_queue(&dead, &Trail::default(), &layout.dlq, Duration::ZERO)).await
            }
        }
    }
}

#[async_trait]
impl horizons_bus::Acker for AmqpAcker {
    async fn settle(self: Box<Self>, s: Settlement) -> Result<(), BusError> {
        if !transition(&self.state, HANDED, SETTLING) {
            return Err(BusError::LeaseExpired);
        }
        if let (OrderingMode::BlockKey, Settlement::RetryAfter { delay, error }) = (self.ctx.layout.ordering, &s) {
            self.state.store(DONE, std::sync::atomic::Ordering::Release);
            let cmd = Cmd::RetryInPlace { token: self.token, delay: *delay, error: error.clone() };
            return self.ctx.cmd.send(cmd).map_err(|_| BusError::LeaseExpired);
        }
        match self.apply(s).await {
            Ok(()) => {
                self.state.store(DONE, std::sync::atomic::Ordering::Release);
                let _ = self.ctx.cmd.send(Cmd::Settled { token: self.token });
                Ok(())
            }
            Err(e) => {
                // Not settled: the lease (or the channel's loss) gives the message back.
                transition(&self.state, SETTLING, HANDED);
                Err(e)
            }
        }
    }

    fn release(self: Box<Self>) {
        if transition(&self.state, HANDED, DONE) {
            let _ = self.ctx.cmd.send(Cmd::Release { token: self.token });
        }
    }
}
