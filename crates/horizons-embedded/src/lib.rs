//! The `embedded` backend: the bus contract on the [`horizons_log`] engine, for zero set-up.
//!
//! Same layout as every adapter: [`config`], [`publisher`], [`consumer`], [`topology`] and the
//! conformance suite in `tests/`. Errors are the engine's [`horizons_log::LogError`], converted
//! to [`horizons_bus::BusError`] at the trait boundary.
//!
//! The backend owns each group's delivery channel, not the engine, so [`EmbeddedBus::restart`]
//! can close the engine and open it again from its directory while publishers and
//! subscriptions stay as they are: they wait while it is down and resume on their own.

pub mod config;
pub mod consumer;
pub mod publisher;
pub mod topology;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use horizons_bus::{Backend, BusError, Capabilities, Replay, Topic};
use horizons_log::{Engine, GroupChannel, LogError};
use parking_lot::{Mutex, RwLock};

pub use config::EmbeddedConfig;

/// How long an operation waits for a restarting engine before giving up.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Inner {
    cfg: EmbeddedConfig,
    engine: RwLock<Option<Arc<Engine>>>,
    channels: Mutex<HashMap<(Topic, String), GroupChannel>>,
    restarting: tokio::sync::Mutex<()>,
}

/// The embedded bus. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct EmbeddedBus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus").field("dir", &self.inner.cfg.data_dir).finish()
    }
}

impl EmbeddedBus {
    /// Opens the engine in `cfg.data_dir`. Must run inside a Tokio runtime.
    pub fn open(cfg: EmbeddedConfig) -> Result<EmbeddedBus, BusError> {
        cfg.validate()?;
        let engine = Engine::open(&cfg.data_dir, cfg.engine())?;
        Ok(EmbeddedBus {
            inner: Arc::new(Inner {
                cfg,
                engine: RwLock::new(Some(engine)),
                channels: Mutex::new(HashMap::new()),
                restarting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The engine, waiting while it restarts.
    pub(crate) async fn engine(&self) -> Result<Arc<Engine>, BusError> {
        let deadline = Instant::now() + UNAVAILABLE_WAIT;
        loop {
            if let Some(e) = self.inner.engine.read().clone() {
                return Ok(e);
            }
            if Instant::now() > deadline {
                return Err(BusError::Unavailable("embedded engine did not come back within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `op` against the engine, retrying while the engine restarts under it.
    pub(crate) async fn with_engine<T, F, Fut>(&self, op: F) -> Result<T, BusError>
    where
        F: Fn(Arc<Engine>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LogError>>,
    {
        let deadline = Instant::now() + UNAVAILABLE_WAIT;
        loop {
            let e = self.engine().await?;
            match op(e).await {
                Err(LogError::Closed) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => return other.map_err(BusError::from),
            }
        }
    }

    /// Closes the engine and opens it again from its directory, as a process restart would,
    /// keeping every publisher and subscription of this bus working.
    pub async fn restart(&self) -> Result<(), BusError> {
        let _one_at_a_time = self.inner.restarting.lock().await;
        let old = self.inner.engine.write().take();
        if let Some(old) = old {
            old.close().await;
        }
        let engine = Engine::open(&self.inner.cfg.data_dir, self.inner.cfg.engine())?;
        let channels: Vec<_> = self.inner.channels.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for ((topic, group), chan) in channels {
            engine.attach(&topic, &group, chan)?;
        }
        *self.inner.engine.write() = Some(engine);
        tracing::info!(dir = %self.inner.cfg.data_dir.display(), "embedded engine restarted");
        Ok(())
    }

    /// Runs retention now (normally it runs every minute).
    pub async fn enforce_retention(&self) -> Result<(), BusError> {
        self.engine().await?.enforce_retention();
        Ok(())
    }
}

#[async_trait]
impl Backend for EmbeddedBus {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            priorities: true,
            delays: true,
            replay_offset: true,
            replay_time: true,
            block_key_ordering: true,
            duplicates_without_failure: false,
        }
    }

    fn replay(&self) -> Option<&dyn Replay> {
        Some(self)
    }

    async fn close(&self) -> Result<(), BusError> {
        let _one_at_a_time = self.inner.restarting.lock().await;
        let old = self.inner.engine.write().take();
        if let Some(old) = old {
            old.close().await;
        }
        Ok(())
    }
}
