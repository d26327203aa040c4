//! Test helper for the SIGKILL test: joins a group, prints `received <id> <attempt>` for the
//! first delivery and then hangs without settling it, waiting to be killed.
//!
//! Usage: `horizons-amqp-crash-consumer TOPIC GROUP` with `HORIZONS_AMQP_URL` set.

use std::io::Write;

use horizons_amqp::{AmqpBus, AmqpConfig};
use horizons_bus::{SubscribeOptions, Subscriber, Topic};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, topic, group] = args.as_slice() else {
        eprintln!("usage: horizons-amqp-crash-consumer TOPIC GROUP");
        return std::process::ExitCode::from(2);
    };
    let result = async {
        let topic = Topic::new(topic.as_str())?;
        let bus = AmqpBus::connect(AmqpConfig::from_env()).await?;
        let sub = bus.subscribe(&topic, group, SubscribeOptions { prefetch: 1 }).await?;
        let Some(d) = sub.next().await else { return Ok::<_, horizons_bus::BusError>(()) };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "received {} {}", d.envelope.id, d.attempt).and_then(|_| out.flush());
        drop(out);
        // Never settles: the test kills this process while it holds the delivery.
        std::future::pending::<()>().await;
        drop(d);
        Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("horizons-amqp-crash-consumer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
