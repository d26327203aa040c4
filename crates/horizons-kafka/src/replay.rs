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

use crate::topology::names;
use crate::{KafkaBus, KafkaConfig, KafkaError};

/// Where each partition of `topic` starts for `from`, clamped to what is stored, and where it
/// ends now: (partition, start, high watermark).
pub fn resolve(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: u32,
    from: ReplayFrom,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let c: BaseConsumer = cfg.reader("horizons.replay-resolver").create()?;
    let mut out = Vec::new();
    let times = match from {
        ReplayFrom::Time(t) => Some(offsets_at(&c, topic, partitions, t, cfg.admin_timeout)?),
        ReplayFrom::Offset(_) => None,
    };
    for p in 0..partitions as i32 {
        let (low, high) = crate::topology::watermarks(&c, topic, p, cfg.admin_timeout)?;
        let start = match (&times, from) {
            (Some(t), _) => t.get(p as usize).copied().flatten().unwrap_or(high),
            (None, ReplayFrom::Offset(o)) => (o.min(i64::MAX as u64) as i64).clamp(low, high),
            (None, ReplayFrom::Time(_)) => unreachable!("times resolved above"),
        };
        out.push((p, start.clamp(low, high), high));
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
        self.check_open()?;
        let spec = self.spec(topic).await?;
        if spec.find_group(group).is_none() {
            return Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() });
        }
        let (cfg, name, parts) = (self.inner.cfg.clone(), topic.to_string(), spec.partitions);
        let targets = tokio::task::spawn_blocking(move || resolve(&cfg, &name, parts, from))
            .await
            .map_err(|e| BusError::backend("resolving a replay position", e))??;
        let offsets: Vec<(i32, i64)> = targets.iter().map(|(p, o, _)| (*p, *o)).collect();
        let members = self.inner.members.lock().get(&(topic.clone(), group.to_string())).cloned().unwrap_or_default();
        let mut covered = Vec::new();
        for m in members {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if m.tx.send(crate::consumer::Cmd::Seek { offsets: offsets.clone(), reply: tx }).is_ok() {
                if let Ok(Ok(done)) = tokio::time::timeout(self.inner.cfg.admin_timeout, rx).await {
                    covered.extend(done);
                }
            }
        }
        let rest: Vec<(i32, i64)> = offsets.into_iter().filter(|(p, _)| !covered.contains(p)).collect();
        if rest.is_empty() {
            return Ok(());
        }
        let (cfg, name, group_id) = (self.inner.cfg.clone(), topic.to_string(), names::group_id(topic, group));
        tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            let c: BaseConsumer = cfg.reader(&group_id).create()?;
            let mut tpl = TopicPartitionList::new();
            for (p, o) in rest {
                tpl.add_partition_offset(&name, p, Offset::Offset(o))?;
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
        Ok(())
    }
}
