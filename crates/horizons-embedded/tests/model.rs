//! Model test of the ack / retry / release / dead-letter state machine, through the bus API.
//!
//! Random operations on one group; the model tracks each message's state. Checked: a message is
//! never handed out twice at once, attempts count deliveries, settled messages never return,
//! and at the end every message is acked or in the DLQ — never both, never neither.

use std::collections::HashMap;
use std::time::Duration;

use horizons_bus::{
    Admin, DeadLetters, Delivery, Envelope, GroupSpec, MessageId, Publisher, SubscribeOptions, Subscriber, Topic,
    TopicSpec, Topology,
};
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Receive,
    Ack(usize),
    Retry(usize),
    Dead(usize),
    Drop(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..5).prop_map(Op::Publish),
        5 => Just(Op::Receive),
        3 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Dead),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    Pending,
    InFlight,
    Acked,
    Dead,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn ack_state_machine_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run(ops))?;
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path())).unwrap();
    let topic = Topic::new("sm").unwrap();
    bus.declare(&Topology::new().topic(TopicSpec::new(topic.clone()).group(GroupSpec::new("g")))).await.unwrap();
    let sub = bus.subscribe(&topic, "g", SubscribeOptions { prefetch: 1000 }).await.unwrap();
    let mut model: HashMap<MessageId, (M, u32)> = HashMap::new();
    let mut held: Vec<(Delivery, bool)> = Vec::new();
    let mut restarted = false;
    for op in ops {
        match op {
            Op::Publish(n) => {
                let envs: Vec<Envelope> = (0..n).map(|i| Envelope::new(topic.clone(), vec![i])).collect();
                for e in &envs {
                    model.insert(e.id, (M::Pending, 0));
                }
                bus.publish_batch(envs).await.unwrap();
            }
            Op::Receive => {
                if let Some(d) = sub.next_timeout(Duration::from_millis(300)).await {
                    let (st, attempts) = model.get_mut(&d.envelope.id).expect("only published messages arrive");
                    // A delivery a member had buffered when the engine restarted surfaces
                    // afterwards as a stale duplicate (at-least-once); settling it changes nothing.
                    // So is any delivery older than one already seen.
                    let stale = d.attempt < *attempts || (restarted && d.attempt <= *attempts && *st != M::InFlight);
                    if !stale {
                        prop_assert!(*st == M::Pending || *st == M::InFlight, "settled message came back: {:?}", st);
                        prop_assert!(
                            d.attempt > *attempts || *st == M::InFlight,
                            "attempt {} after {}",
                            d.attempt,
                            attempts
                        );
                        *st = M::InFlight;
                        *attempts = d.attempt;
                    }
                    held.push((d, stale));
                }
            }
            Op::Ack(i) | Op::Retry(i) | Op::Dead(i) | Op::Drop(i) if !held.is_empty() => {
                let (d, stale) = held.swap_remove(i % held.len());
                let id = d.envelope.id;
                let attempt = d.attempt;
                let ok = match op {
                    Op::Ack(_) => d.ack().await.is_ok(),
                    Op::Retry(_) => d.retry_after(Duration::ZERO, "again").await.is_ok(),
                    Op::Dead(_) => d.dead_letter("model says so").await.is_ok(),
                    _ => {
                        drop(d);
                        true
                    }
                };
                prop_assert!(!(stale && ok && !matches!(op, Op::Drop(_))), "a stale delivery was settled");
                let entry = model.get_mut(&id).unwrap();
                // A settlement that reached a stale engine (after a restart) is not applied, and
                // neither is one of a buffered pre-restart delivery once the engine has handed the
                // message out again (a later attempt): only the latest delivery's lease counts.
                if ok && !stale && entry.0 == M::InFlight && attempt == entry.1 {
                    entry.0 = match op {
                        Op::Ack(_) => M::Acked,
                        Op::Dead(_) => M::Dead,
                        _ => M::Pending,
                    };
                }
            }
            Op::Restart => {
                bus.restart().await.unwrap();
                restarted = true;
                held.clear();
                for (st, _) in model.values_mut() {
                    if *st == M::InFlight {
                        *st = M::Pending;
                    }
                }
            }
            _ => {}
        }
    }
    // Settle everything still held, then drain: every message ends acked or dead.
    for (d, stale) in held.drain(..) {
        let id = d.envelope.id;
        let attempt = d.attempt;
        if d.ack().await.is_ok() && !stale {
            let e = model.get_mut(&id).unwrap();
            if e.0 == M::InFlight && attempt == e.1 {
                e.0 = M::Acked;
            }
        }
    }
    while let Some(d) = sub.next_timeout(Duration::from_millis(500)).await {
        let id = d.envelope.id;
        let was = model[&id].0;
        match d.ack().await {
            Ok(()) => {
                prop_assert!(was != M::Dead, "dead-lettered message delivered again");
                prop_assert!(was != M::Acked, "acknowledged message delivered and acknowledged again");
                model.get_mut(&id).unwrap().0 = M::Acked;
            }
            Err(horizons_bus::BusError::LeaseExpired) if restarted => {}
            Err(e) => panic!("ack failed: {e}"),
        }
    }
    let dead = bus.dlq_list(&topic, "g", 10_000).await.unwrap();
    let mut dead_ids: Vec<MessageId> = dead.iter().map(|d| d.envelope.id).collect();
    dead_ids.sort();
    let mut model_dead: Vec<MessageId> = model.iter().filter(|(_, (s, _))| *s == M::Dead).map(|(id, _)| *id).collect();
    model_dead.sort();
    prop_assert_eq!(dead_ids, model_dead);
    for (id, (st, _)) in &model {
        prop_assert!(matches!(st, M::Acked | M::Dead), "{} ended {:?}", id, st);
    }
    drop(sub);
    bus_close(bus).await;
    Ok(())
}

async fn bus_close(bus: EmbeddedBus) {
    use horizons_bus::Backend;
    bus.close().await.unwrap();
}
