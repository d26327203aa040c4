//! The bus conformance suite against the embedded backend. The restart case closes the engine
//! and reopens it from its directory while the suite's publishers and subscriptions keep going.

use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::conformance::Harness;
use horizons_bus::Backend;
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};
use parking_lot::Mutex;

struct Embedded {
    bus: Mutex<Option<(tempfile::TempDir, EmbeddedBus)>>,
}

fn harness() -> Embedded {
    Embedded { bus: Mutex::new(None) }
}

#[async_trait]
impl Harness for Embedded {
    async fn backend(&self) -> Arc<dyn Backend> {
        let mut slot = self.bus.lock();
        if slot.is_none() {
            let dir = tempfile::tempdir().expect("temp dir");
            let bus = EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path())).expect("open embedded bus");
            *slot = Some((dir, bus));
        }
        Arc::new(slot.as_ref().expect("set above").1.clone())
    }

    async fn restart(&self, _backend: &Arc<dyn Backend>) {
        let bus = self.bus.lock().as_ref().expect("backend() first").1.clone();
        bus.restart().await.expect("restart the embedded engine");
    }
}

horizons_bus::conformance_suite!(harness);
