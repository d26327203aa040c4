//! Subscribing: members of a group share one channel fed by the group's dispatcher.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::{BusError, Millis, Replay, ReplayFrom, SubscribeOptions, Subscriber, Subscription, Topic};
use horizons_log::GroupChannel;

use crate::{EmbeddedBus, Inner};

/// Leaves the group when the subscription is dropped.
struct Member {
    inner: Arc<Inner>,
    topic: Topic,
    group: String,
    prefetch: usize,
    chan: GroupChannel,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.chan.max_in_flight.fetch_sub(self.prefetch, Ordering::Relaxed);
        if let Some(e) = self.inner.engine.read().as_ref() {
            e.wake(&self.topic, &self.group);
        }
    }
}

#[async_trait]
impl Subscriber for EmbeddedBus {
    async fn subscribe(&self, topic: &Topic, group: &str, opts: SubscribeOptions) -> Result<Subscription, BusError> {
        let engine = self.engine().await?;
        let spec = engine.spec(topic)?;
        if spec.find_group(group).is_none() {
            return Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() });
        }
        let chan = self.inner.channels.lock().entry((topic.clone(), group.to_string())).or_default().clone();
        let prefetch = opts.prefetch.max(1);
        chan.max_in_flight.fetch_add(prefetch, Ordering::Relaxed);
        let rx = chan.rx.clone();
        let member = Member {
            inner: self.inner.clone(),
            topic: topic.clone(),
            group: group.to_string(),
            prefetch,
            chan: chan.clone(),
        };
        engine.attach(topic, group, chan)?;
        engine.wake(topic, group);
        Ok(Subscription::batched(rx, Box::new(member)))
    }
}

#[async_trait]
impl Replay for EmbeddedBus {
    async fn replay(&self, topic: &Topic, group: &str, from: ReplayFrom) -> Result<(), BusError> {
        self.with_engine(|e| async move { e.replay(topic, group, from).await.map(|_| ()) }).await
    }

    async fn replay_range(&self, topic: &Topic, group: &str, from: ReplayFrom, to: Millis) -> Result<u64, BusError> {
        self.with_engine(|e| async move { e.replay_range(topic, group, from, to).await.map(|(s, e)| e - s) }).await
    }
}
