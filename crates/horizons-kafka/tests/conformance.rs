//! The bus conformance suite against a real Apache Kafka broker (`scripts/services up kafka`).
//!
//! The restart case SIGKILLs the broker process (`scripts/services kafka-kill`) mid-stream and
//! starts it again (`kafka-start`) while the suite's producers and members keep going. Because
//! every case shares that one broker, the restart case runs alone: it takes a process-wide lock
//! exclusively, every other case shares it. Topics left by earlier runs (`conf-*`) are deleted
//! once, before the first case, so the broker's data stays small.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::conformance::Harness;
use horizons_bus::Backend;
use horizons_kafka::KafkaBus;
use tokio::sync::{OnceCell, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

static BROKER: std::sync::OnceLock<Arc<RwLock<()>>> = std::sync::OnceLock::new();
static CLEANED: OnceCell<()> = OnceCell::const_new();

#[allow(dead_code)] // held for their drop
enum Hold {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

struct Kafka {
    state: tokio::sync::Mutex<Option<(Hold, KafkaBus)>>,
}

fn harness() -> Kafka {
    Kafka { state: tokio::sync::Mutex::new(None) }
}

#[async_trait]
impl Harness for Kafka {
    async fn backend(&self) -> Arc<dyn Backend> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            CLEANED
                .get_or_init(|| async {
                    let bus = common::connect().await;
                    let n = bus.delete_topics_with_prefix("conf-").await.expect("delete old conformance topics");
                    println!("deleted {n} topics of earlier runs");
                })
                .await;
            let lock = BROKER.get_or_init(|| Arc::new(RwLock::new(()))).clone();
            // The test thread is named after the case.
            let restarting = std::thread::current().name().is_some_and(|n| n.ends_with("restart_mid_stream"));
            let hold = if restarting {
                Hold::Exclusive(lock.write_owned().await)
            } else {
                Hold::Shared(lock.read_owned().await)
            };
            *state = Some((hold, common::connect().await));
        }
        Arc::new(state.as_ref().expect("set above").1.clone())
    }

    async fn restart(&self, _backend: &Arc<dyn Backend>) {
        tokio::task::spawn_blocking(|| {
            common::services_cmd("kafka-kill");
            common::services_cmd("kafka-start");
        })
        .await
        .expect("restart task");
    }
}

horizons_bus::conformance_suite!(harness);
