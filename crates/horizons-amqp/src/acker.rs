//! Settling a delivery: ack, retry, or dead-letter, each acked at the broker only after any
//! copy it needs (the retry, the dead letter) was confirmed. A crash in between duplicates
//! the message; it never loses it.
//!
//! The ack itself is the member's task's to send ([`crate::acks`]: settles of a burst leave in
//! one `basic.ack` with `multiple`), so a settle returns once the task has it; a channel lost
//! before the frame left delivers the message again.
//!
//! - `Ack`: `basic.ack`, without waiting ([`horizons_bus::Acker::settle_now`]).
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
            env: e.env.clone(),
            attempt: e.attempt,
            trail: e.trail.clone(),
            queue: e.queue,
            tag: e.tag,
        }
    }

    /// Hands the ack to the member's task; `LeaseExpired` if the subscription is gone.
    fn ack(&self) -> Result<(), BusError> {
        self.finish(Cmd::Settled { token: self.token })
    }

    /// Marks the delivery done and hands `cmd` to the member's task; `LeaseExpired` if the
    /// subscription is gone.
    fn finish(&self, cmd: Cmd) -> Result<(), BusError> {
        self.state.store(DONE, std::sync::atomic::Ordering::Release);
        self.ctx.cmd.send(cmd).map_err(|_| BusError::LeaseExpired)
    }

    /// Publishes the copy a settle needs; the ack follows once it is confirmed.
    async fn copy(&self, s: Settlement) -> Result<(), BusError> {
        let layout = &self.ctx.layout;
        let copy = match s {
            Settlement::Ack => return Ok(()),
            Settlement::RetryAfter { delay, error } => {
                let trail = Trail {
                    attempts: self.attempt,
                    first_error: self.trail.first_error.clone().or_else(|| Some(error.clone())),
                    last_error: Some(error),
                };
                Outgoing::to_queue(&self.env, &trail, layout.target(&self.env), delay)
            }
            Settlement::DeadLetter { reason, error } => {
                let failures = FailureRecord {
                    attempts: self.attempt,
                    first_error: self.trail.first_error.clone().or_else(|| error.clone()),
                    last_error: error.or_else(|| self.trail.last_error.clone()),
                };
                let position = format!("{}#{}", layout.queues[self.queue], self.tag);
                let dead = DeadLetter::encode(&self.env, &layout.group, &reason, &failures, &position);
                Outgoing::to_queue(&dead, &Trail::default(), &layout.dlq, Duration::ZERO)
            }
        };
        self.ctx.inner.send(vec![copy]).await
    }
}

#[async_trait]
impl horizons_bus::Acker for AmqpAcker {
    async fn settle(self: Box<Self>, s: Settlement) -> Result<(), BusError> {
        if !transition(&self.state, HANDED, SETTLING) {
            return Err(BusError::LeaseExpired);
        }
        if let (OrderingMode::BlockKey, Settlement::RetryAfter { delay, error }) = (self.ctx.layout.ordering, &s) {
            return self.finish(Cmd::RetryInPlace { token: self.token, delay: *delay, error: error.clone() });
        }
        match self.copy(s).await {
            Ok(()) => self.ack(),
            Err(e) => {
                // Not settled: the lease (or the channel's loss) gives the message back.
                transition(&self.state, SETTLING, HANDED);
                Err(e)
            }
        }
    }

    fn settle_now(&mut self, s: &Settlement) -> Option<Result<(), BusError>> {
        if !matches!(s, Settlement::Ack) {
            return None;
        }
        if !transition(&self.state, HANDED, SETTLING) {
            return Some(Err(BusError::LeaseExpired));
        }
        Some(self.ack())
    }

    fn release(self: Box<Self>) {
        if transition(&self.state, HANDED, DONE) {
            let _ = self.ctx.cmd.send(Cmd::Release { token: self.token });
        }
    }
}
