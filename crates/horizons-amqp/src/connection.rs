//! The connection and its supervisor: one AMQP connection per bus, replaced after a loss.
//!
//! Users never hold a `lapin::Connection` across a failure: they ask [`Conn::live`] for the
//! current one (a [`Live`] with a generation number), open channels on it, and when an
//! operation fails they [`Conn::report`] the generation, which wakes the supervisor. The
//! supervisor (`supervise`, spawned by [`crate::AmqpBus::open`]) notices a dead connection
//! (by that report, or by polling its status every 250 ms), reconnects with exponential
//! backoff, redeclares the topology this process declared, and only then publishes the new
//! generation; publishers then resend what was not confirmed and subscriptions resume their
//! consumers on their own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use horizons_bus::BusError;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;
use crate::{AmqpError, Inner};

/// One established connection and its generation (1 for the first).
pub(crate) struct Live {
    /// The connection.
    pub conn: Connection,
    /// Incremented at every reconnect; channels of older generations are dead.
    pub gen: u64,
}

impl Live {
    /// Opens a channel, mapping the error.
    pub async fn channel(&self, what: &str) -> Result<lapin::Channel, BusError> {
        self.conn
            .create_channel()
            .await
            .map_err(|e| AmqpError::lapin(format!("opening a channel for {what}"), e).into())
    }
}

/// The current connection, shared by every publisher and subscription of a bus.
pub(crate) struct Conn {
    cfg: Arc<AmqpConfig>,
    current: watch::Sender<Option<Arc<Live>>>,
    wake: Notify,
    last_error: Mutex<Option<String>>,
    /// Cancelled by `close`.
    pub closed: CancellationToken,
}

impl Conn {
    pub fn new(cfg: Arc<AmqpConfig>) -> Self {
        Self {
            cfg,
            current: watch::Sender::new(None),
            wake: Notify::new(),
            last_error: Mutex::new(None),
            closed: CancellationToken::new(),
        }
    }

    /// The live connection, waiting up to `wait` (forever if `None`) while it is being
    /// (re)established. Fails once the bus is closed.
    pub async fn live(&self, wait: Option<Duration>) -> Result<Arc<Live>, BusError> {
        let mut rx = self.current.subscribe();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            if self.closed.is_cancelled() {
                return Err(BusError::Unavailable("the amqp backend is closed".into()));
            }
            if let Some(live) = rx.borrow_and_update().clone() {
                if live.conn.status().connected() {
                    return Ok(live);
                }
                self.report(live.gen);
            }
            let changed = async {
                tokio::select! {
                    r = rx.changed() => r.is_ok(),
                    _ = self.closed.cancelled() => false,
                    // Re-check now and then: a connection may die without a report.
                    _ = tokio::time::sleep(Duration::from_millis(250)) => true,
                }
            };
            let ok = match deadline {
                Some(d) => tokio::time::timeout_at(d, changed).await.map_err(|_| self.unavailable(wait))?,
                None => changed.await,
            };
            if !ok && self.closed.is_cancelled() {
                return Err(BusError::Unavailable("the amqp backend is closed".into()));
            }
        }
    }

    fn unavailable(&self, wait: Option<Duration>) -> BusError {
        let last = self.last_error.lock().clone().unwrap_or_else(|| "connection lost".into());
        BusError::Unavailable(format!(
            "no connection to {} within {:?}: {last}",
            self.cfg.url.redacted(),
            wait.unwrap_or_default()
        ))
    }

    /// Says that an operation on generation `gen` failed; the supervisor checks the connection.
    pub fn report(&self, gen: u64) {
        let current = self.current.borrow().as_ref().map(|l| l.gen);
        if current == Some(gen) {
            self.wake.notify_one();
        }
    }

    /// The generation now live, if any (without waiting).
    pub fn generation(&self) -> Option<u64> {
        self.current.borrow().as_ref().map(|l| l.gen)
    }

    /// Installs the first connection, made by the caller at start-up.
    pub fn install(&self, conn: Connection) {
        self.current.send_replace(Some(Arc::new(Live { conn, gen: 1 })));
    }

    /// Closes the connection for good.
    pub async fn close(&self) {
        self.closed.cancel();
        let live = self.current.send_replace(None);
        if let Some(live) = live {
            let _ = tokio::time::timeout(Duration::from_secs(5), live.conn.close(200, "closing".into())).await;
        }
    }
}

/// Opens one connection, bounded by `connect_timeout`. Errors name the URL without password.
pub(crate) async fn connect_once(cfg: &AmqpConfig) -> Result<Connection, AmqpError> {
    let url = cfg.url.redacted();
    let props = ConnectionProperties::default().with_connection_name(cfg.connection_name.clone().into());
    let tls =
        OwnedTLSConfig { identity: None, cert_chain: cfg.tls_ca_pem().map_err(|e| AmqpError::Tls(e.to_string()))? };
    let runtime = lapin::runtime::default_runtime().map_err(|e| AmqpError::Connect { url: url.clone(), source: e })?;
    let connect = Connection::connect_with_config(cfg.url.expose(), props, tls, runtime);
    match tokio::time::timeout(cfg.connect_timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(AmqpError::Connect { url, source: e }),
        Err(_) => Err(AmqpError::ConnectTimeout { url, timeout: cfg.connect_timeout }),
    }
}

/// Keeps the bus connected until it is closed or dropped. See the module docs.
pub(crate) async fn supervise(bus: Weak<Inner>) {
    let mut backoff: Option<Duration> = None;
    let mut gen = bus.upgrade().and_then(|i| i.conn.generation()).unwrap_or(0);
    loop {
        let Some(inner) = bus.upgrade() else { return };
        let conn = &inner.conn;
        if conn.closed.is_cancelled() {
            return;
        }
        let current = conn.current.borrow().clone();
        if let Some(live) = current {
            if live.conn.status().connected() {
                tokio::select! {
                    _ = conn.closed.cancelled() => return,
                    _ = conn.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                continue;
            }
            tracing::warn!(url = %inner.cfg.url, generation = live.gen, "amqp connection lost; reconnecting");
            *conn.last_error.lock() = Some("connection lost".into());
            conn.current.send_replace(None);
            continue;
        }
        if let Some(b) = backoff {
            tokio::select! {
                _ = conn.closed.cancelled() => return,
                _ = tokio::time::sleep(b) => {}
            }
        }
        let result = match connect_once(&inner.cfg).await {
            Ok(c) => {
                gen += 1;
                let live = Arc::new(Live { conn: c, gen });
                match inner.redeclare(&live).await {
                    Ok(()) => Ok(live),
                    Err(e) => {
                        let _ = live.conn.close(200, "redeclaring failed".into()).await;
                        Err(format!("redeclaring the topology after connecting: {e}"))
                    }
                }
            }
            Err(e) => Err(crate::error_chain(&e)),
        };
        match result {
            Ok(live) => {
                tracing::info!(url = %inner.cfg.url, generation = live.gen, "amqp connected");
                *conn.last_error.lock() = None;
                backoff = None;
                conn.current.send_replace(Some(live));
            }
            Err(e) => {
                tracing::warn!(url = %inner.cfg.url, error = %e, "amqp connection attempt failed");
                *conn.last_error.lock() = Some(e);
                let next = backoff.map_or(inner.cfg.reconnect_backoff_min, |b| b * 2);
                backoff = Some(next.min(inner.cfg.reconnect_backoff_max));
            }
        }
    }
}
