//! The engine: a data directory of topic logs, consumer groups and dead-letter queues.
//!
//! ```text
//! DIR/LOCK                                  flock: one process per directory
//! DIR/topology.json                         declared topics and groups
//! DIR/topics/T/NNNNNNNNNNNNNNNNNNNN.log     segments of topic T
//! DIR/topics/T/groups/G.state               position of group G
//! DIR/topics/T/dlq/G/*.log, redrive.state   dead letters of group G
//! ```

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use horizons_bus::{
    now_millis, BusError, DeadLetter, Envelope, GroupInfo, Millis, ReplayFrom, Topic, TopicInfo, TopicSpec, Topology,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::group::{Cmd, DispatchConfig, Dispatcher, DlqSink, GroupChannel};
use crate::log::{Cursor, TopicLog};
use crate::state::GroupState;
use crate::writer::{Append, Writer, WriterMsg};

/// Engine tunables.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Roll a segment after this many bytes.
    pub segment_bytes: u64,
    /// Unsettled messages a group keeps in memory (priorities and key blocking act within it).
    pub window: usize,
    /// How often group positions are saved.
    pub flush_interval: Duration,
    /// A ready message waiting longer than this goes before higher priorities.
    pub max_priority_wait: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 << 20,
            window: 65_536,
            flush_interval: Duration::from_millis(100),
            max_priority_wait: Duration::from_secs(2),
            retention_interval: Duration::from_secs(60),
        }
    }
}

struct TopicState {
    spec: RwLock<TopicSpec>,
    log: Arc<TopicLog>,
    dlqs: Mutex<HashMap<String, Arc<Dlq>>>,
}

struct Dlq {
    log: Arc<TopicLog>,
    path: PathBuf,
    state: tokio::sync::Mutex<GroupState>,
}

struct Running {
    cmd: flume::Sender<Cmd>,
    join: tokio::task::JoinHandle<()>,
}

/// The embedded durable log engine.
pub struct Engine {
    dir: PathBuf,
    cfg: EngineConfig,
    lock: Mutex<Option<fs::File>>,
    writer_tx: flume::Sender<WriterMsg>,
    writer: Mutex<Option<Writer>>,
    topics: RwLock<HashMap<Topic, Arc<TopicState>>>,
    groups: Mutex<HashMap<(Topic, String), Running>>,
    retention: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set while declared topology is not yet in `topology.json`.
    topology_unsaved: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

fn topics_dir(dir: &Path) -> PathBuf {
    dir.join("topics")
}

impl Engine {
    /// Opens (recovering) or creates the engine in `dir`. Must run inside a Tokio runtime.
    pub fn open(dir: &Path, cfg: EngineConfig) -> Result<Arc<Engine>, LogError> {
        use fs4::fs_std::FileExt;
        fs::create_dir_all(topics_dir(dir)).map_err(LogError::io("creating data directory", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LogError::io("opening", &lock_path))?;
        if let Err(e) = lock.try_lock_exclusive() {
            return Err(match e.kind() {
                std::io::ErrorKind::WouldBlock => LogError::Locked { path: dir.to_path_buf() },
                _ if e.raw_os_error() == Some(11) => LogError::Locked { path: dir.to_path_buf() },
                _ => LogError::io("locking", &lock_path)(e),
            });
        }
        let mut writer = Writer::start();
        let writer_tx = writer.tx.clone();
        let engine = Arc::new(Engine {
            dir: dir.to_path_buf(),
            cfg,
            lock: Mutex::new(Some(lock)),
            writer_tx,
            writer: Mutex::new(None),
            topics: RwLock::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            retention: Mutex::new(None),
            topology_unsaved: std::sync::atomic::AtomicBool::new(false),
        });
        let topo_path = dir.join("topology.json");
        let topology: Topology = match fs::read(&topo_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LogError::Corrupt {
                path: topo_path.clone(),
                position: 0,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Topology::default(),
            Err(e) => return Err(LogError::io("reading", &topo_path)(e)),
        };
        for spec in topology.topics {
            if let Err(e) = engine.open_topic(spec) {
                let _ = writer.tx.send(WriterMsg::Stop);
                if let Some(t) = writer.thread.take() {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        *engine.writer.lock() = Some(writer);
        let weak = Arc::downgrade(&engine);
        let every = engine.cfg.retention_interval;
        *engine.retention.lock() = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(e) = weak.upgrade() else { break };
                e.enforce_retention();
            }
        }));
        Ok(engine)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_topic(&self, spec: TopicSpec) -> Result<Arc<TopicState>, LogError> {
        let tdir = topics_dir(&self.dir).join(spec.name.as_str());
        let log = Arc::new(TopicLog::open(&tdir, spec.name.clone(), self.cfg.segment_bytes)?);
        fs::create_dir_all(tdir.join("groups")).map_err(LogError::io("creating", &tdir))?;
        let ts = Arc::new(TopicState { spec: RwLock::new(spec.clone()), log, dlqs: Mutex::new(HashMap::new()) });
        for g in &spec.groups {
            self.open_group(&ts, &g.name)?;
        }
        self.topics.write().insert(spec.name.clone(), ts.clone());
        Ok(ts)
    }

    fn open_group(&self, ts: &TopicState, group: &str) -> Result<(), LogError> {
        let tdir = topics_dir(&self.dir).join(ts.log.topic.as_str());
        let state_path = tdir.join("groups").join(format!("{group}.state"));
        if GroupState::load(&state_path)?.is_none() {
            // A new group starts at the end: it gets what is published from now on.
            GroupState { low_water: ts.log.end(), ..Default::default() }.save(&state_path)?;
        }
        let ddir = tdir.join("dlq").join(group);
        let dlog = Arc::new(TopicLog::open(&ddir, ts.log.topic.clone(), self.cfg.segment_bytes)?);
        let path = ddir.join("redrive.state");
        let state = GroupState::load(&path)?.unwrap_or_default();
        ts.dlqs
            .lock()
            .insert(group.to_string(), Arc::new(Dlq { log: dlog, path, state: tokio::sync::Mutex::new(state) }));
        Ok(())
    }

    fn topic(&self, t: &Topic) -> Result<Arc<TopicState>, BusError> {
        self.topics.read().get(t).cloned().ok_or_else(|| BusError::UnknownTopic(t.to_string()))
    }

    /// Applies `topology` idempotently and saves it.
    pub fn declare(&self, topology: &Topology) -> Result<(), LogError> {
        topology.validate()?;
        let mut changed = false;
        for spec in &topology.topics {
            let existing = self.topics.read().get(&spec.name).cloned();
            match existing {
                Some(ts) => {
                    spec.check_compatible(&ts.spec.read())?;
                    for g in &spec.groups {
                        if ts.spec.read().find_group(&g.name).is_none() {
                            self.open_group(&ts, &g.name)?;
                            ts.spec.write().groups.push(g.clone());
                            changed = true;
                        }
                    }
                }
                None => {
                    self.open_topic(spec.clone())?;
                    changed = true;
                }
            }
        }
        // A redeclaration that matches (every start-up, every CLI call) costs no I/O; a save
        // that failed before is tried again.
        if !changed && !self.topology_unsaved.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.topology_unsaved.store(true, std::sync::atomic::Ordering::Release);
        let all = Topology { topics: self.topics.read().values().map(|t| t.spec.read().clone()).collect() };
        let path = self.dir.join("topology.json");
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&all).expect("topology serialises");
        fs::write(&tmp, bytes).map_err(LogError::io("writing", &tmp))?;
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(LogError::io("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(LogError::io("renaming", &path))?;
        self.topology_unsaved.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The declared spec of `topic`.
    pub fn spec(&self, topic: &Topic) -> Result<TopicSpec, BusError> {
        Ok(self.topic(topic)?.spec.read().clone())
    }

    /// Appends `envs` (any topics) durably; returns once the fsync covering them returned.
    pub async fn publish(&self, envs: Vec<Envelope>) -> Result<(), LogError> {
        self.publish_shared(envs.into()).await
    }

    /// Like [`Engine::publish`], for a batch the caller keeps (to retry it without copying).
    pub async fn publish_shared(&self, envs: Arc<[Envelope]>) -> Result<(), LogError> {
        let Some(first) = envs.first() else { return Ok(()) };
        let mut topics: Vec<Arc<TopicState>> = vec![self.topic(&first.topic)?];
        for env in envs.iter() {
            let ts = match topics.iter().find(|t| t.log.topic == env.topic) {
                Some(t) => t,
                None => {
                    topics.push(self.topic(&env.topic)?);
                    topics.last().expect("just pushed")
                }
            };
            let max = ts.spec.read().max_message_bytes;
            let size = env.wire_size();
            if size > max {
                return Err(BusError::TooLarge { topic: env.topic.to_string(), size, max }.into());
            }
        }
        // The common case, one topic, hands the caller's batch to the writer as it is.
        let batches: Vec<(Arc<TopicState>, Arc<[Envelope]>)> = if topics.len() == 1 {
            vec![(topics.remove(0), envs)]
        } else {
            topics
                .into_iter()
                .map(|ts| {
                    let mine: Arc<[Envelope]> = envs.iter().filter(|e| e.topic == ts.log.topic).cloned().collect();
                    (ts, mine)
                })
                .collect()
        };
        let mut waits = Vec::with_capacity(batches.len());
        for (ts, envs) in batches {
            let n = envs.len() as u64;
            let (reply, rx) = oneshot::channel();
            self.writer_tx
                .send(WriterMsg::Append(Append { log: ts.log.clone(), envs, reply }))
                .map_err(|_| LogError::Closed)?;
            waits.push((ts, n, rx));
        }
        for (ts, n, rx) in waits {
            rx.await.map_err(|_| LogError::Closed)??;
            metrics::counter!("horizons_bus_published_total", "topic" => ts.log.topic.to_string()).increment(n);
        }
        Ok(())
    }

    /// Starts the dispatcher of `group` on `topic` feeding `chan`, unless it runs already.
    pub fn attach(&self, topic: &Topic, group: &str, chan: GroupChannel) -> Result<(), LogError> {
        let ts = self.topic(topic)?;
        let spec = ts
            .spec
            .read()
            .find_group(group)
            .cloned()
            .ok_or_else(|| BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() })?;
        let mut groups = self.groups.lock();
        let key = (topic.clone(), group.to_string());
        if groups.contains_key(&key) {
            return Ok(());
        }
        let state_path = topics_dir(&self.dir).join(topic.as_str()).join("groups").join(format!("{group}.state"));
        let state = GroupState::load(&state_path)?.unwrap_or_default();
        let dlq = ts.dlqs.lock().get(group).cloned().expect("declared groups have a DLQ");
        let (cmd_tx, cmd_rx) = flume::unbounded();
        let d = Dispatcher::new(
            ts.log.clone(),
            spec,
            chan,
            (cmd_tx.clone(), cmd_rx),
            DlqSink { writer: self.writer_tx.clone(), log: dlq.log.clone() },
            state_path,
            DispatchConfig {
                window: self.cfg.window,
                flush_interval: self.cfg.flush_interval,
                max_priority_wait: self.cfg.max_priority_wait,
            },
            state,
        );
        groups.insert(key, Running { cmd: cmd_tx, join: tokio::spawn(d.run()) });
        Ok(())
    }

    /// Nudges a group's dispatcher (members joined or left).
    pub fn wake(&self, topic: &Topic, group: &str) {
        if let Some(r) = self.groups.lock().get(&(topic.clone(), group.to_string())) {
            let _ = r.cmd.send(Cmd::Wake);
        }
    }

    /// Moves `group` to `from`; returns the offset it now starts at.
    pub async fn replay(&self, topic: &Topic, group: &str, from: ReplayFrom) -> Result<u64, LogError> {
        self.rewind(topic, group, from, None).await.map(|(start, _)| start)
    }

    /// Delivers again to `group` what was stored from `from` up to (not including) the first
    /// message stored at or after `to`; messages after that keep their state. Returns the range
    /// of offsets `[start, end)` (empty if `to` is not after `from`).
    pub async fn replay_range(
        &self,
        topic: &Topic,
        group: &str,
        from: ReplayFrom,
        to: Millis,
    ) -> Result<(u64, u64), LogError> {
        self.rewind(topic, group, from, Some(to)).await.map(|(start, end)| (start, end.unwrap_or(start)))
    }

    async fn rewind(
        &self,
        topic: &Topic,
        group: &str,
        from: ReplayFrom,
        to: Option<Millis>,
    ) -> Result<(u64, Option<u64>), LogError> {
        let ts = self.topic(topic)?;
        if ts.spec.read().find_group(group).is_none() {
            return Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() }.into());
        }
        let start = match from {
            ReplayFrom::Offset(o) => o.clamp(ts.log.start(), ts.log.end()),
            ReplayFrom::Time(ms) => ts.log.offset_for_time(ms)?,
        };
        let end = match to {
            Some(ms) => Some(ts.log.offset_for_time(ms)?.max(start)),
            None => None,
        };
        if end == Some(start) {
            return Ok((start, end));
        }
        let running = self.groups.lock().get(&(topic.clone(), group.to_string())).map(|r| r.cmd.clone());
        match running {
            Some(cmd) => {
                let (reply, rx) = oneshot::channel();
                cmd.send(Cmd::Replay { start, end, reply }).map_err(|_| LogError::Closed)?;
                rx.await.map_err(|_| LogError::Closed)?;
            }
            None => {
                let path = topics_dir(&self.dir).join(topic.as_str()).join("groups").join(format!("{group}.state"));
                let now = GroupState::load(&path)?.unwrap_or_default();
                let mut next = now.rewound(start, end);
                next.skip_to(ts.log.start());
                next.save(&path)?;
            }
        }
        Ok((start, end))
    }

    fn dlq(&self, topic: &Topic, group: &str) -> Result<Arc<Dlq>, BusError> {
        self.topic(topic)?
            .dlqs
            .lock()
            .get(group)
            .cloned()
            .ok_or_else(|| BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() })
    }

    fn dlq_entries(dlq: &Dlq, state: &GroupState, limit: usize) -> Result<Vec<(u64, Envelope)>, LogError> {
        let mut out = Vec::new();
        let mut cursor = Cursor::at(state.low_water);
        while out.len() < limit {
            let batch = dlq.log.read(&mut cursor, 1 << 20)?;
            if batch.is_empty() {
                break;
            }
            out.extend(batch.into_iter().filter(|r| !state.is_settled(r.offset)).map(|r| (r.offset, r.envelope)));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Lists dead letters of `group` on `topic`, oldest first.
    pub async fn dlq_list(&self, topic: &Topic, group: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let dlq = self.dlq(topic, group)?;
        let state = dlq.state.lock().await;
        Ok(Self::dlq_entries(&dlq, &state, limit)?.into_iter().map(|(_, e)| DeadLetter::decode(e)).collect())
    }

    /// Republishes dead letters to their topic and removes them from the DLQ.
    pub async fn dlq_redrive(&self, topic: &Topic, group: &str, limit: Option<usize>) -> Result<usize, LogError> {
        let dlq = self.dlq(topic, group)?;
        let mut state = dlq.state.lock().await;
        let mut moved = 0;
        loop {
            let want = limit.map_or(10_000, |l| (l - moved).min(10_000));
            if want == 0 {
                break;
            }
            let batch = Self::dlq_entries(&dlq, &state, want)?;
            if batch.is_empty() {
                break;
            }
            let offsets: Vec<u64> = batch.iter().map(|(o, _)| *o).collect();
            let envs: Vec<Envelope> = batch.into_iter().map(|(_, e)| DeadLetter::decode(e).envelope).collect();
            moved += envs.len();
            self.publish(envs).await?;
            for o in offsets {
                state.settle(o);
            }
            state.save(&dlq.path)?;
        }
        Ok(moved)
    }

    /// Topics with message counts and per-group pending and dead counts.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let all: Vec<Arc<TopicState>> = self.topics.read().values().cloned().collect();
        let mut out = Vec::new();
        for ts in all {
            let spec = ts.spec.read().clone();
            let mut groups = Vec::new();
            for g in &spec.groups {
                let running = self.groups.lock().get(&(spec.name.clone(), g.name.clone())).map(|r| r.cmd.clone());
                let pending = match running {
                    Some(cmd) => {
                        let (reply, rx) = oneshot::channel();
                        let _ = cmd.send(Cmd::Stats { reply });
                        rx.await.ok()
                    }
                    None => {
                        let path = topics_dir(&self.dir)
                            .join(spec.name.as_str())
                            .join("groups")
                            .join(format!("{}.state", g.name));
                        GroupState::load(&path)?.map(|s| {
                            ts.log
                                .end()
                                .saturating_sub(s.low_water.max(ts.log.start()))
                                .saturating_sub(s.settled_above())
                        })
                    }
                };
                let dlq = ts.dlqs.lock().get(&g.name).cloned();
                let dead = match dlq {
                    Some(d) => {
                        let st = d.state.lock().await;
                        Some(
                            d.log
                                .end()
                                .saturating_sub(st.low_water.max(d.log.start()))
                                .saturating_sub(st.done.len() as u64),
                        )
                    }
                    None => None,
                };
                groups.push(GroupInfo { name: g.name.clone(), pending, dead });
            }
            out.push(TopicInfo { name: spec.name.to_string(), messages: Some(ts.log.end() - ts.log.start()), groups });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Runs retention on every topic now.
    pub fn enforce_retention(&self) {
        let now: Millis = now_millis();
        let all: Vec<Arc<TopicState>> = self.topics.read().values().cloned().collect();
        for ts in all {
            let spec = ts.spec.read().clone();
            let logs = std::iter::once(ts.log.clone())
                .chain(ts.dlqs.lock().values().map(|d| d.log.clone()))
                .collect::<Vec<_>>();
            for log in logs {
                if let Err(e) = log.enforce_retention(now, spec.retention, spec.retention_bytes) {
                    tracing::error!(topic = %spec.name, error = %e, "retention failed");
                }
            }
        }
    }

    /// Stops dispatchers (saving positions), finishes queued appends, and releases the
    /// directory. Later calls fail with `Closed`.
    pub async fn close(&self) {
        let groups: Vec<Running> = self.groups.lock().drain().map(|(_, r)| r).collect();
        for r in groups {
            let _ = r.cmd.send(Cmd::Shutdown);
            let _ = r.join.await;
        }
        if let Some(t) = self.retention.lock().take() {
            t.abort();
        }
        let _ = self.writer_tx.send(WriterMsg::Stop);
        let thread = self.writer.lock().as_mut().and_then(|w| w.thread.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.lock.lock().take();
    }
}
