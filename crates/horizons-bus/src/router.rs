//! The router: runs handlers on subscriptions, through middleware, and settles every delivery
//! according to the group's retry policy.
//!
//! The retry decision lives in one place, [`RetryPolicy::decide`]; middleware only shapes the
//! handler's outcome (a timeout becomes retryable, a panic becomes retryable, a duplicate
//! becomes success). Settlement happens after the handler returned, so an ack is sent only
//! after the handler's work is done.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{Backend, SubscribeOptions};
use crate::envelope::{Envelope, Topic};
use crate::error::BusError;
use crate::inbox::Inbox;
use crate::retry::{HandlerError, RetryPolicy, Settlement};

/// What a handler learns about a delivery besides the message.
#[derive(Clone, Debug)]
pub struct Context {
    /// The group consuming.
    pub group: String,
    /// 1-based delivery attempt.
    pub attempt: u32,
    /// Position in the source.
    pub position: crate::delivery::Position,
}

/// Processes one message.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Does the work. `Ok` means done and durable.
    async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError>;
}

/// A handler from an async function taking owned arguments.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Envelope, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    struct FnHandler<F>(F);
    #[async_trait]
    impl<F, Fut> Handler for FnHandler<F>
    where
        F: Fn(Envelope, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
            (self.0)(msg.clone(), cx.clone()).await
        }
    }
    Arc::new(FnHandler(f))
}

/// A handler for JSON payloads: a body that does not parse is a permanent failure ("malformed
/// payload"), so it goes straight to the dead-letter queue with the parser's message.
pub fn json_handler<T, F, Fut>(f: F) -> Arc<dyn Handler>
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(T, Envelope, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let f = Arc::new(f);
    handler_fn(move |env: Envelope, cx: Context| {
        let f = f.clone();
        async move {
            let value: T = serde_json::from_slice(&env.payload)
                .map_err(|e| HandlerError::Permanent(format!("malformed payload: {e}")))?;
            f(value, env, cx).await
        }
    })
}

/// Wraps a handler.
pub trait Layer: Send + Sync {
    /// Returns `inner` wrapped.
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler>;
}

/// Fails an attempt that runs longer than the limit, as retryable.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer(pub Duration);

impl Layer for TimeoutLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        struct H(Arc<dyn Handler>, Duration);
        #[async_trait]
        impl Handler for H {
            async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
                match tokio::time::timeout(self.1, self.0.handle(msg, cx)).await {
                    Ok(r) => r,
                    Err(_) => Err(HandlerError::Retryable(format!("handler timed out after {:?}", self.1))),
                }
            }
        }
        Arc::new(H(inner, self.0))
    }
}

/// Turns a panicking handler into a retryable failure, so one bad message cannot kill a worker.
#[derive(Debug, Clone, Copy)]
pub struct CatchPanicLayer;

impl Layer for CatchPanicLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        struct H(Arc<dyn Handler>);
        #[async_trait]
        impl Handler for H {
            async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
                match std::panic::AssertUnwindSafe(self.0.handle(msg, cx)).catch_unwind().await {
                    Ok(r) => r,
                    Err(p) => {
                        let what = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic".into());
                        Err(HandlerError::Retryable(format!("handler panicked: {what}")))
                    }
                }
            }
        }
        Arc::new(H(inner))
    }
}

/// Skips messages the inbox has seen for this consumer and records the ones that succeed.
pub struct DedupeLayer {
    inbox: Arc<dyn Inbox>,
    consumer: String,
}

impl std::fmt::Debug for DedupeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupeLayer").field("consumer", &self.consumer).finish()
    }
}

impl DedupeLayer {
    /// Dedupes for `consumer` through `inbox`.
    pub fn new(inbox: Arc<dyn Inbox>, consumer: impl Into<String>) -> Self {
        Self { inbox, consumer: consumer.into() }
    }
}

impl Layer for DedupeLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        struct H(Arc<dyn Handler>, Arc<dyn Inbox>, String);
        #[async_trait]
        impl Handler for H {
            async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
                if self.1.seen(&self.2, msg.id).await {
                    metrics::counter!("horizons_bus_duplicates_total", "topic" => msg.topic.to_string()).increment(1);
                    tracing::debug!(message_id = %msg.id, "duplicate skipped");
                    return Ok(());
                }
                self.0.handle(msg, cx).await?;
                self.1.record(&self.2, msg.id).await;
                Ok(())
            }
        }
        Arc::new(H(inner, self.inbox.clone(), self.consumer.clone()))
    }
}

/// Counts outcomes and times handlers, per topic and group.
#[derive(Debug, Clone, Copy)]
pub struct MetricsLayer;

impl Layer for MetricsLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        struct H(Arc<dyn Handler>);
        #[async_trait]
        impl Handler for H {
            async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
                let start = Instant::now();
                let r = self.0.handle(msg, cx).await;
                let outcome = match &r {
                    Ok(()) => "ok",
                    Err(HandlerError::Permanent(_)) => "permanent",
                    Err(_) => "retryable",
                };
                let topic = msg.topic.to_string();
                metrics::counter!("horizons_handler_total", "topic" => topic.clone(), "group" => cx.group.clone(), "outcome" => outcome).increment(1);
                metrics::histogram!("horizons_handler_seconds", "topic" => topic, "group" => cx.group.clone())
                    .record(start.elapsed().as_secs_f64());
                r
            }
        }
        Arc::new(H(inner))
    }
}

/// Runs each attempt in a span carrying the message id, correlation id and attempt.
#[derive(Debug, Clone, Copy)]
pub struct TracingLayer;

impl Layer for TracingLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        struct H(Arc<dyn Handler>);
        #[async_trait]
        impl Handler for H {
            async fn handle(&self, msg: &Envelope, cx: &Context) -> Result<(), HandlerError> {
                let span = tracing::info_span!("handle", topic = %msg.topic, group = %cx.group, message_id = %msg.id,
                    correlation_id = msg.correlation_id().unwrap_or(""), attempt = cx.attempt);
                let r = self.0.handle(msg, cx).instrument(span.clone()).await;
                if let Err(e) = &r {
                    span.in_scope(|| tracing::warn!(error = %e, "handler failed"));
                }
                r
            }
        }
        Arc::new(H(inner))
    }
}

/// One handler bound to one group on one topic.
pub struct Route {
    topic: Topic,
    group: String,
    policy: RetryPolicy,
    concurrency: usize,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("topic", &self.topic).field("group", &self.group).finish()
    }
}

/// Binds handlers to subscriptions and runs them until cancelled.
pub struct Router {
    backend: Arc<dyn Backend>,
    routes: Vec<Route>,
    layers: Vec<Arc<dyn Layer>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("backend", &self.backend.name()).field("routes", &self.routes).finish()
    }
}

impl Router {
    /// A router on `backend` with the default middleware: tracing, metrics, panic catching.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            routes: Vec::new(),
            layers: vec![Arc::new(TracingLayer), Arc::new(MetricsLayer), Arc::new(CatchPanicLayer)],
        }
    }

    /// Adds a middleware layer, innermost last (layers added later run closer to the handler).
    pub fn layer(mut self, l: impl Layer + 'static) -> Self {
        self.layers.push(Arc::new(l));
        self
    }

    /// Routes `group` on `topic` to `handler`, `concurrency` deliveries at a time, settling by
    /// `policy` (normally the group's declared policy).
    pub fn route(
        mut self,
        topic: Topic,
        group: impl Into<String>,
        policy: RetryPolicy,
        concurrency: usize,
        handler: Arc<dyn Handler>,
    ) -> Self {
        self.routes.push(Route { topic, group: group.into(), policy, concurrency: concurrency.max(1), handler });
        self
    }

    /// Subscribes every route and processes until `cancel` fires; then stops taking deliveries,
    /// lets in-flight handlers finish and settles them, and returns.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BusError> {
        let mut tasks = tokio::task::JoinSet::new();
        for route in self.routes {
            let mut handler = route.handler.clone();
            for l in self.layers.iter().rev() {
                handler = l.layer(handler);
            }
            let sub = Arc::new(
                self.backend
                    .subscribe(&route.topic, &route.group, SubscribeOptions { prefetch: route.concurrency * 2 })
                    .await?,
            );
            for _ in 0..route.concurrency {
                let (sub, handler, cancel) = (sub.clone(), handler.clone(), cancel.clone());
                let (group, policy) = (route.group.clone(), route.policy.clone());
                tasks.spawn(async move {
                    loop {
                        let d = tokio::select! {
                            _ = cancel.cancelled() => break,
                            d = sub.next() => match d { Some(d) => d, None => break },
                        };
                        let cx = Context { group: group.clone(), attempt: d.attempt, position: d.position };
                        let outcome = handler.handle(&d.envelope, &cx).await;
                        let settlement = policy.decide(d.attempt, outcome.as_ref().map(|_| ()));
                        record_settlement(&d.envelope.topic, &group, &settlement);
                        if let Err(e) = d.settle(settlement).await {
                            tracing::warn!(error = %e, "settling a delivery failed; it will be redelivered");
                        }
                    }
                });
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

fn record_settlement(topic: &Topic, group: &str, s: &Settlement) {
    let result = match s {
        Settlement::Ack => "ack",
        Settlement::RetryAfter { .. } => "retry",
        Settlement::DeadLetter { .. } => "dead_letter",
    };
    metrics::counter!("horizons_bus_settled_total", "topic" => topic.to_string(), "group" => group.to_string(), "result" => result).increment(1);
    if let Settlement::DeadLetter { reason, .. } = s {
        tracing::warn!(%topic, group, reason = %reason, "message dead-lettered");
    }
}
