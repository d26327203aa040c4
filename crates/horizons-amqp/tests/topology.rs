//! Conflicts between processes: a second bus (another process, as far as the broker can tell)
//! that redeclares a group with another ordering mode or retry limit gets a `TopologyConflict`
//! naming the queue and the argument, from the broker's `PRECONDITION_FAILED`.

use horizons_amqp::{AmqpBus, AmqpConfig};
use horizons_bus::{Admin, BusError, GroupSpec, OrderingMode, RetryPolicy, Topic, TopicSpec, Topology};

fn topology(topic: &Topic, group: GroupSpec) -> Topology {
    Topology::new().topic(TopicSpec::new(topic.clone()).group(group))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_with_other_arguments_conflicts() -> anyhow::Result<()> {
    let cfg = AmqpConfig::from_env();
    let first = AmqpBus::connect(cfg.clone()).await?;
    let topic = Topic::new(format!("topology-{}", &uuid::Uuid::now_v7().simple().to_string()[16..]))?;
    let group = GroupSpec::new("g").retry(RetryPolicy::fast(3));
    first.declare(&topology(&topic, group.clone())).await?;

    let second = AmqpBus::connect(cfg).await?;
    second.declare(&topology(&topic, group.clone())).await?;
    let cases = [
        (group.clone().ordering(OrderingMode::BlockKey), "ordering"),
        (group.clone().retry(RetryPolicy::fast(4)), "x-delivery-limit"),
    ];
    for (changed, field) in cases {
        let fresh = AmqpBus::connect(second.config().clone()).await?;
        match fresh.declare(&topology(&topic, changed)).await {
            Err(BusError::TopologyConflict { object, field: named, existing, declared }) => {
                assert!(object.contains(topic.as_str()) && named.contains(field), "{object} / {named}");
                println!("conflict on {object}: {named} is {existing}, declared {declared}");
            }
            other => panic!("redeclaring with another {field} must conflict, got {other:?}"),
        }
    }
    first.delete(&first.declared()).await?;
    Ok(())
}
