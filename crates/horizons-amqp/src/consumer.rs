//! Subscribing: one channel per queue of the group for each member, `basic.qos` = the
//! member's prefetch on each, manual acks; a task drives the member's [`Member`] state and hands
//! deliveries to the subscription one at a time, so the choice of what goes next (priority,
//! key blocking) is made as late as possible. Settles come back to the task, which acks them
//! in batches ([`crate::acks`]).
//!
//! The task outlives outages: when the channel or connection dies it drops what the dead
//! channel delivered (the broker requeues it, counting a return), waits for the supervisor's
//! next connection and consumes again. A subscription ends only when it is dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{SelectAll, StreamExt};
use futures::{FutureExt, Stream};
use horizons_bus::{
    BusError, Delivery, GroupSpec, OrderingMode, Position, SubscribeOptions, Subscriber, Subscription, Topic,
};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acker::{AmqpAcker, GroupCtx};
use crate::acks::Acks;
use crate::codec;
use crate::member::{Action, Entry, Member};
use crate::topology::{self, Layout};
use crate::{AmqpBus, AmqpError, Inner};

/// How long a new member waits for levels the broker says are non-empty before handing out
/// a lower one.
const STARTUP_GRACE: Duration = Duration::from_millis(300);

type Deliveries =
    SelectAll<std::pin::Pin<Box<dyn Stream<Item = (usize, lapin::Result<lapin::message::Delivery>)> + Send>>>;

/// The consuming channels of one member: one per queue, so each queue's delivery tags run on
/// their own and a multiple ack of one level never waits on another level's buffered messages.
/// The driver keeps the channels while the session runs ([`Driver::chans`]).
struct Session {
    chans: Vec<lapin::Channel>,
    gen: u64,
    deliveries: Deliveries,
}

/// Closes `chans` together, waiting up to `within`.
async fn close(chans: &[lapin::Channel], why: &str, within: Duration) {
    let _ =
        tokio::time::timeout(within, futures::future::join_all(chans.iter().map(|ch| ch.close(200, why.into())))).await;
}

/// Why a session could not start.
struct OpenError {
    err: BusError,
    /// The connection failed under it (not the broker refusing a queue): worth another try.
    transient: bool,
    gen: u64,
}

/// Opens a channel per queue of `layout` and consumes it; tells `member` what waits.
async fn open_session(
    inner: &Inner,
    layout: &Layout,
    prefetch: usize,
    member: &mut Member,
) -> Result<Session, OpenError> {
    let live = inner.conn.live(None).await.map_err(|err| OpenError { err, transient: false, gen: 0 })?;
    let mut chans = Vec::with_capacity(layout.queues.len());
    let mut deliveries = SelectAll::new();
    let mut result = Ok(());
    for (i, q) in layout.queues.iter().enumerate() {
        let ch = match live.channel("consuming").await {
            Ok(ch) => ch,
            Err(err) => {
                result = Err(OpenError { err, transient: true, gen: live.gen });
                break;
            }
        };
        chans.push(ch.clone());
        let consumed = async {
            let qos = prefetch.clamp(1, usize::from(u16::MAX)) as u16;
            ch.basic_qos(qos, BasicQosOptions { global: false }).await?;
            if layout.ordering == OrderingMode::Requeue {
                let passive = QueueDeclareOptions::durable().passive();
                let info = ch.queue_declare(q.as_str().into(), passive, FieldTable::default()).await?;
                if info.message_count() > 0 {
                    member.expect(i, Instant::now() + STARTUP_GRACE);
                }
            }
            ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await
        }
        .await;
        match consumed {
            Ok(consumer) => {
                let s: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = Box::pin(consumer.map(move |d| (i, d)));
                deliveries.push(s);
            }
            Err(e) => {
                let transient = AmqpError::soft_code(&e).is_none();
                let err = AmqpError::lapin(format!("consuming {}/{}", layout.topic, layout.group), e).into();
                result = Err(OpenError { err, transient, gen: live.gen });
                break;
            }
        }
    }
    match result {
        Ok(()) => Ok(Session { chans, gen: live.gen, deliveries }),
        Err(e) => {
            close(&chans, "consume failed", Duration::from_secs(1)).await;
            Err(e)
        }
    }
}

fn entry(layout: &Layout, queue: usize, d: lapin::message::Delivery) -> Entry {
    let (env, meta) = codec::decode(&layout.topic, &d.properties, d.data);
    Entry { env, queue, tag: d.delivery_tag, attempt: meta.trail.attempts + meta.returns + 1, trail: meta.trail }
}

/// Why a session ended.
enum End {
    Cancelled,
    Lost(String),
}

struct Driver {
    ctx: Arc<GroupCtx>,
    member: Member,
    /// The current session's channels, one per queue.
    chans: Vec<lapin::Channel>,
    /// Per queue (channel).
    acks: Vec<Acks>,
    cmd_rx: flume::Receiver<crate::member::Cmd>,
    tx: flume::Sender<Delivery>,
    cancel: CancellationToken,
    prefetch: usize,
}

impl Driver {
    async fn run(mut self, mut session: Option<Session>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut s = match session.take() {
                Some(s) => s,
                None => match open_session(&self.ctx.inner, &self.ctx.layout, self.prefetch, &mut self.member).await {
                    Ok(s) => s,
                    Err(OpenError { err: e, .. }) => {
                        tracing::warn!(topic = %self.ctx.layout.topic, group = %self.ctx.layout.group, error = %e, "cannot consume; retrying");
                        tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(50);
            let gen = s.gen;
            self.chans = std::mem::take(&mut s.chans);
            let end = self.session(s).await;
            self.member.lost();
            self.acks.iter_mut().for_each(Acks::clear);
            match end {
                End::Cancelled => {
                    close(&self.chans, "unsubscribed", Duration::from_secs(5)).await;
                    return;
                }
                End::Lost(why) => {
                    tracing::warn!(topic = %self.ctx.layout.topic, group = %self.ctx.layout.group, why, "consumer channel lost; resubscribing");
                    close(&self.chans, "lost", Duration::from_secs(1)).await;
                    self.ctx.inner.conn.report(gen);
                }
            }
        }
    }

    /// Takes a delivery from the broker; one over the size limit goes straight to the DLQ.
    fn push(&mut self, e: Entry) {
        self.acks[e.queue].delivered(e.tag);
        let size = e.env.wire_size();
        let max = self.ctx.layout.max_bytes;
        self.member.push(e);
        if size <= max {
            return;
        }
        // Taken out of the buffer before anyone sees it, and dead-lettered like a handler would.
        if let Some(e) = self.member.remove_oversize(max) {
            let (token, state) = self.member.offer(e.clone());
            let acker = Box::new(AmqpAcker::new(self.ctx.clone(), &e, token, state));
            let reason =
                format!("oversize message: {size} bytes, the limit of topic {} is {max}", self.ctx.layout.topic);
            tracing::warn!(message_id = %e.env.id, reason, "dead-lettering unhandled");
            tokio::spawn(async move {
                let s = horizons_bus::Settlement::DeadLetter { reason, error: None };
                if let Err(e) = horizons_bus::Acker::settle(acker, s).await {
                    tracing::warn!(error = %e, "dead-lettering an oversize message failed; it will come back");
                }
            });
        }
    }

    /// Sends rejects at once and keeps acks for the next [`Driver::flush`].
    fn act(&mut self, actions: impl IntoIterator<Item = Action>, now: Instant) {
        for action in actions {
            match action {
                Action::Requeue { queue, tag } => {
                    self.acks[queue].forget(tag);
                    send(self.chans[queue].basic_reject(tag, BasicRejectOptions { requeue: true }));
                }
                Action::Ack { queue, tag } => self.acks[queue].settled(tag, now),
            }
        }
    }

    /// Sends the acks that are due.
    fn flush(&mut self, now: Instant) {
        for (a, ch) in self.acks.iter_mut().zip(&self.chans) {
            for f in a.flush(now) {
                send(ch.basic_ack(f.tag, BasicAckOptions { multiple: f.multiple }));
            }
        }
    }

    async fn session(&mut self, mut s: Session) -> End {
        let mut slot: Option<std::pin::Pin<Box<flume::r#async::SendFut<'static, Delivery>>>> = None;
        let mut slot_token = 0;
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let expired = self.member.expire(now);
            self.act(expired, now);
            self.flush(now);
            let mut wake = self
                .member
                .next_due()
                .into_iter()
                .chain(self.acks.iter().filter_map(Acks::due))
                .filter(|t| *t > now)
                .min();
            if slot.is_none() {
                match self.member.next_ready(now) {
                    Ok(e) => {
                        let (token, state) = self.member.offer(e.clone());
                        let acker = AmqpAcker::new(self.ctx.clone(), &e, token, state);
                        let position = Position { partition: Some(e.queue as u32), offset: e.tag };
                        let d = Delivery::new(e.env, e.attempt, position, Box::new(acker));
                        slot = Some(Box::pin(self.tx.clone().into_send_async(d)));
                        slot_token = token;
                    }
                    Err(t) => wake = wake.into_iter().chain(t).min(),
                }
            }
            if let Some(t) = wake {
                if sleep.deadline() != t {
                    sleep.as_mut().reset(t);
                }
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return End::Cancelled,
                r = async { slot.as_mut().expect("guarded").await }, if slot.is_some() => {
                    slot = None;
                    if r.is_err() {
                        return End::Cancelled;
                    }
                    self.member.taken(slot_token, Instant::now());
                }
                cmd = self.cmd_rx.recv_async() => {
                    let now = Instant::now();
                    // Settles come in bursts: take every one that is waiting.
                    let mut next = cmd.ok();
                    while let Some(cmd) = next {
                        let action = self.member.command(cmd, now);
                        self.act(action, now);
                        next = self.cmd_rx.try_recv().ok();
                    }
                }
                d = s.deliveries.next() => {
                    let mut next = Some(d);
                    while let Some(d) = next {
                        match d {
                            Some((i, Ok(d))) => self.push(entry(&self.ctx.layout, i, d)),
                            Some((_, Err(e))) => return End::Lost(e.to_string()),
                            None => return End::Lost("consumers cancelled".into()),
                        }
                        next = s.deliveries.next().now_or_never();
                    }
                }
                _ = &mut sleep, if wake.is_some() => {}
            }
        }
    }
}

/// Sends an ack or reject on its channel without waiting for it. The first poll queues the
/// frame on the channel, so frames leave in call order (a multiple ack never overtakes an
/// earlier single ack or reject of a tag it covers, which the broker would answer by closing
/// the channel). `lapin::Acker` is no use here: it hands each frame to a task of its own, and
/// those run in any order. Waiting gains nothing: a frame that never reaches the broker leaves
/// the message unacked there, to be delivered again.
fn send(frame: impl std::future::Future<Output = lapin::Result<()>>) {
    let _ = frame.now_or_never();
}

/// Unsubscribes when the subscription is dropped.
struct Guard(CancellationToken);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl AmqpBus {
    /// The group's layout: from what this process declared, else from the queues that exist.
    pub(crate) async fn layout(&self, topic: &Topic, group: &str) -> Result<Layout, BusError> {
        let inner = &self.inner;
        let spec = inner.topics.read().get(topic).cloned();
        if let Some(t) = spec {
            return match t.find_group(group) {
                Some(g) => Ok(Layout { max_bytes: t.max_message_bytes, ..Layout::new(&inner.cfg, topic, g) }),
                None => Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.into() }),
            };
        }
        let live = inner.conn.live(Some(inner.cfg.unavailable_wait)).await?;
        let probe = |ordering: OrderingMode| Layout::new(&inner.cfg, topic, &GroupSpec::new(group).ordering(ordering));
        for ordering in [OrderingMode::Requeue, OrderingMode::BlockKey] {
            let layout = probe(ordering);
            if topology::probe(&live, &layout.queues[0]).await?.is_some() {
                return Ok(layout);
            }
        }
        Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.into() })
    }
}

#[async_trait]
impl Subscriber for AmqpBus {
    async fn subscribe(&self, topic: &Topic, group: &str, opts: SubscribeOptions) -> Result<Subscription, BusError> {
        let layout = self.layout(topic, group).await?;
        let cfg = &self.inner.cfg;
        let prefetch = opts.prefetch.max(1);
        let mut member =
            Member::new(layout.ordering, layout.queues.len(), prefetch, cfg.priority_grace, layout.visibility);
        // A connection failing under the first session is waited out, as a publish waits
        // (`unavailable_wait`); a refusal by the broker (no such queue, …) fails at once.
        let deadline = Instant::now() + cfg.unavailable_wait;
        let session = loop {
            match open_session(&self.inner, &layout, prefetch, &mut member).await {
                Ok(s) => break s,
                Err(OpenError { err, transient: true, gen }) if Instant::now() < deadline => {
                    tracing::warn!(%topic, group, error = %err, "cannot consume yet; retrying");
                    self.inner.conn.report(gen);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.err),
            }
        };
        let (cmd_tx, cmd_rx) = flume::unbounded();
        // Small prefetches hand over one at a time, so priority and key order are decided as
        // late as possible; large ones keep a few ready, saving a task switch per delivery.
        let (tx, rx) = flume::bounded(prefetch / 16);
        let cancel = CancellationToken::new();
        let acks = layout.queues.iter().map(|_| Acks::new(prefetch)).collect();
        let ctx = Arc::new(GroupCtx { inner: self.inner.clone(), layout, cmd: cmd_tx });
        let driver = Driver { ctx, member, chans: Vec::new(), acks, cmd_rx, tx, cancel: cancel.clone(), prefetch };
        tokio::spawn(driver.run(Some(session)));
        Ok(Subscription::new(rx, Box::new(Guard(cancel))))
    }
}
