//! The bus conformance suite against a real RabbitMQ (`bash scripts/services up rabbitmq`,
//! `HORIZONS_AMQP_URL`, default `amqp://horizons:horizons@127.0.0.1:5672/%2f`). A missing broker
//! fails the suite. The restart case stops and starts the RabbitMQ application with
//! `scripts/services rabbitmq-stop-app` / `rabbitmq-start-app` in the middle of the stream.
//!
//! The cases share one broker, and the restart case takes it away from everyone, so they run
//! one at a time: each harness holds a process-wide turn until its case ends.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use horizons_amqp::{AmqpBus, AmqpConfig};
use horizons_bus::conformance::Harness;
use horizons_bus::Backend;

/// Whether a case is running, and the condition the next one waits on.
static TURN: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// A case's turn on the broker; the next case starts when it is dropped.
struct Turn;

impl Turn {
    fn take() -> Self {
        let (busy, free) = &TURN;
        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = free.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (busy, free) = &TURN;
        *busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        free.notify_one();
    }
}

struct Rabbit {
    bus: Mutex<Option<AmqpBus>>,
    _turn: Turn,
}

fn harness() -> Rabbit {
    Rabbit { bus: Mutex::new(None), _turn: Turn::take() }
}

/// Deletes what the case declared, from a thread of its own (the case's runtime is blocked
/// in this drop), so the broker does not fill up with test queues.
impl Drop for Rabbit {
    fn drop(&mut self) {
        let Some(bus) = self.bus.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let topics = bus.declared();
        let cfg = bus.config().clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            rt.block_on(async {
                let bus = AmqpBus::connect(cfg).await?;
                let deleted = tokio::time::timeout(Duration::from_secs(60), bus.delete(&topics)).await;
                bus.close().await?;
                deleted.map_err(|_| anyhow::anyhow!("deleting the case's topics took over 60 s"))??;
                Ok::<(), anyhow::Error>(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("conformance: cleaning up the case's topics failed: {e}");
        }
    }
}

/// The test configuration: the environment's broker.
pub fn config() -> AmqpConfig {
    AmqpConfig::from_env()
}

fn services(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(command)
        .status()
        .unwrap_or_else(|e| panic!("running {script} {command}: {e}"));
    assert!(status.success(), "{script} {command} failed: {status}");
}

#[async_trait]
impl Harness for Rabbit {
    async fn backend(&self) -> Arc<dyn Backend> {
        let cfg = config();
        let url = cfg.url.clone();
        match AmqpBus::connect(cfg).await {
            Ok(bus) => {
                *self.bus.lock().unwrap_or_else(|e| e.into_inner()) = Some(bus.clone());
                Arc::new(bus)
            }
            Err(e) => panic!("no RabbitMQ at {url} (start it with `bash scripts/services up rabbitmq`): {e}"),
        }
    }

    async fn restart(&self, _backend: &Arc<dyn Backend>) {
        tokio::task::spawn_blocking(|| {
            services("rabbitmq-stop-app");
            std::thread::sleep(Duration::from_secs(2));
            services("rabbitmq-start-app");
        })
        .await
        .expect("restart task");
    }

    fn restart_stream_len(&self) -> usize {
        50_000
    }
}

horizons_bus::conformance_suite!(harness);
