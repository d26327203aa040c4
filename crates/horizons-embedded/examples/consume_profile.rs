//! Profiling aid: publish N messages, then time consuming them with one member.
//! `cargo run --release -p horizons-embedded --example consume_profile -- 1000000`

use std::time::Instant;

use horizons_bus::{
    Admin, Backend, Envelope, GroupSpec, Publisher, SubscribeOptions, Subscriber, Topic, TopicSpec, Topology,
};
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path())).unwrap();
    let t = Topic::new("p").unwrap();
    bus.declare(&Topology::new().topic(TopicSpec::new(t.clone()).group(GroupSpec::new("g")))).await.unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for chunk in 0..(n / 1000) {
        let bus = bus.clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let envs = (0..1000).map(|i| Envelope::new(t.clone(), vec![(chunk + i) as u8; 100])).collect();
            bus.publish_batch(envs).await.unwrap();
        }));
        if handles.len() >= 16 {
            handles.remove(0).await.unwrap();
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    eprintln!("publish: {:.0} msg/s", n as f64 / start.elapsed().as_secs_f64());
    let sub = bus.subscribe(&t, "g", SubscribeOptions { prefetch: 4096 }).await.unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = sub.next().await.unwrap();
        d.ack().await.unwrap();
    }
    eprintln!("consume: {:.0} msg/s", n as f64 / start.elapsed().as_secs_f64());
    drop(sub);
    bus.close().await.unwrap();
}
