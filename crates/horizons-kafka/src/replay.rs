//! Replay: rewinding a group to an offset, or to the first record stored at or after a time
//! (`offsets_for_times`; topics use `LogAppendTime`, so the time is when the broker stored it).
//!
//! Live members of this process rewind the partitions they own (seek, forget, commit). With no
//! live member here, the group's offsets are committed directly — Kafka accepts that only
//! while the group has no members at all, so a group consumed by other processes must be
//! stopped first; the error says so.

use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{BusError, Millis, Replay, ReplayFrom, Topic};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::Fence;
use crate::topology::names;
use crate::{KafkaBus, KafkaConfig, KafkaError};

/// Where each partition of `topic` starts for `from` and, with `to`, where the range ends (the
/// first record stored at or after `to`), clamped to what is stored: (partition, start, end).
pub fn resolve(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: u32,
    from: ReplayFrom,
    to: Option<Millis>,
) -> Result<Vec<(i32, i64, Option<i64>)>, KafkaError> {
    let c: BaseConsumer = cfg.reader("horizons.replay-resolver").create()?;
    let at = |t| offsets_at(&c, topic, partitions, t, cfg.admin_timeout);
    let times = match from {
        ReplayFrom::Time(t) => Some(at(t)?),
        ReplayFrom::Offset(_) => None,
    };
    let ends = to.map(at).transpose()?;
    let mut out = Vec::new();
    for p in 0..partitions as i32 {
        let (low, high) = crate::topology::watermarks(&c, topic, p, cfg.admin_timeout)?;
        let found = |ts: &Vec<Option<i64>>| ts.get(p as usize).copied().flatten().unwrap_or(high);
        let start = match (&times, from) {
            (Some(t), _) => found(t),
            (None, ReplayFrom::Offset(o)) => o.min(i64::MAX as u64) as i64,
            (None, ReplayFrom::Time(_)) => unreachable!("times resolved above"),
        }
        .clamp(low, high);
        let end = ends.as_ref().map(|e| found(e).clamp(low, high).max(start));
        out.push((p, start, end));
    }
    Ok(out)
}

/// Per partition, the first offset stored at or after `t` (`None`: nothing that late).
pub fn offsets_at(
    c: &BaseConsumer,
    topic: &str,
    partitions: u32,
    t: Millis,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Offset(t))?;
    }
    let found = c.offsets_for_times(tpl, timeout).map_err(|e| KafkaError::client("offsets_for_times", e))?;
    Ok((0..partitions as i32)
        .map(|p| match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

#[async_trait]
impl Replay for KafkaBus {
    async fn replay(&self, topic: &Topic, group: &str, from: ReplayFrom) -> Result<(), BusError> {
        self.rewind(topic, group, from, None).await.map(|_| ())
    }

    async fn replay_range(&self, topic: &Topic, group: &str, from: ReplayFrom, to: Millis) -> Result<u64, BusError> {
        self.rewind(topic, group, from, Some(to)).await
    }
}

impl KafkaBus {
    /// Rewinds `group` to `from` in every partition, up to the first record stored at or after
    /// `to` when given (a fence in the committed offset's metadata then passes over what the
    /// group had settled after it). Returns how many records the bounded range holds.
    async fn rewind(&self, topic: &Topic, group: &str, from: ReplayFrom, to: Option<Millis>) -> Result<u64, BusError> {
        self.check_open()?;
        let spec = self.spec(topic).await?;
        if spec.find_group(group).is_none() {
            return Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() });
        }
        let (cfg, name, parts) = (self.inner.cfg.clone(), topic.to_string(), spec.partitions);
        let targets = tokio::task::spawn_blocking(move || resolve(&cfg, &name, parts, from, to))
            .await
            .map_err(|e| BusError::backend("resolving a replay position", e))??;
        let members = self.inner.members.lock().get(&(topic.clone(), group.to_string())).cloned().unwrap_or_default();
        let mut covered: Vec<(i32, i64)> = Vec::new();
        for m in members {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if m.tx.send(crate::consumer::Cmd::Seek { offsets: targets.clone(), reply: tx }).is_ok() {
                if let Ok(Ok(done)) = tokio::time::timeout(self.inner.cfg.admin_timeout, rx).await {
                    covered.extend(done);
                }
            }
        }
        let mut count: u64 = covered.iter().map(|(_, n)| *n as u64).sum();
        let rest: Vec<(i32, i64, Option<i64>)> =
            targets.into_iter().filter(|(p, _, _)| !covered.iter().any(|(c, _)| c == p)).collect();
        if rest.is_empty() {
            return Ok(count);
        }
        count += rest.iter().map(|(_, s, e)| e.map_or(0, |e| (e - s).max(0) as u64)).sum::<u64>();
        let (cfg, name, group_id) = (self.inner.cfg.clone(), topic.to_string(), names::group_id(topic, group));
        tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            let c: BaseConsumer = cfg.reader(&group_id).create()?;
            let mut ask = TopicPartitionList::new();
            for (p, _, _) in &rest {
                ask.add_partition(&name, *p);
            }
            let now = c
                .committed_offsets(ask, cfg.admin_timeout)
                .map_err(|e| KafkaError::client(format!("reading the committed offsets of {group_id}"), e))?;
            let mut tpl = TopicPartitionList::new();
            for (p, start, end) in rest {
                let mut e = tpl.add_partition(&name, p);
                e.set_offset(Offset::Offset(start))?;
                let resume = now.find_partition(&name, p).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
                if let (Some(end), Some(resume)) = (end, resume) {
                    if resume > end {
                        e.set_metadata(Fence { end, resume }.encode());
                    }
                }
            }
            c.commit(&tpl, CommitMode::Sync).map_err(|e| {
                KafkaError::client(
                    format!("rewinding {group_id} (a group with live members in other processes cannot be rewound; stop them first)"),
                    e,
                )
            })
        })
        .await
        .map_err(|e| BusError::backend("committing a replay position", e))??;
        Ok(count)
    }
}
