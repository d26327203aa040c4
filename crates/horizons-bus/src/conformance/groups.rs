//! Consumer groups and concurrency: every group gets every message, the members of a group
//! share them, and concurrent producers lose nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    check_no_duplicates, consume_acked, declare, expect_quiet, join, publish_batch, seq_msg, subscribe, unique_topic,
    Harness, Member, MemberSpec, SeqTally, QUIET, WAIT,
};
use crate::topology::{GroupSpec, TopicSpec};

/// Two groups on one topic each receive all 50 messages, independently.
pub async fn two_groups_each_see_everything<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("two_groups");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g1")).group(GroupSpec::new("g2"))).await;
    let msgs = (0..50).map(|s| seq_msg(&topic, s).with_key(format!("k{}", s % 5))).collect();
    publish_batch(&backend, msgs).await;

    let expected: BTreeSet<u64> = (0..50).collect();
    for group in ["g1", "g2"] {
        let sub = subscribe(&backend, &topic, group, 64).await;
        let what = format!("group {group} must receive every message of the topic");
        let counts = consume_acked(&sub, &expected, WAIT, &what).await;
        check_no_duplicates(&backend, &counts, &what);
        expect_quiet(&[&sub], Duration::from_millis(300), &format!("group {group} got all 50 messages once")).await;
    }
}

/// Two members of one group (subscribed before publishing, 4 partitions where that matters)
/// together receive all 400 messages, each one once, and both get a share of the work.
pub async fn members_split_the_work<H: Harness>(h: &H) {
    const N: u64 = 400;
    let backend = h.backend().await;
    let topic = unique_topic("members_split");
    declare(&backend, TopicSpec::new(topic.clone()).partitions(4).group(GroupSpec::new("g"))).await;
    let tally = Arc::new(SeqTally::new(N as usize, 2));
    // Slow handlers and a small prefetch, so one member cannot take everything before the other
    // gets going.
    let spec = MemberSpec { workers: 1, work: Duration::from_millis(5), tolerate_ack_errors: false };
    let mut members = Vec::new();
    for m in 0..2 {
        let sub = Arc::new(subscribe(&backend, &topic, "g", 8).await);
        members.push(Member::spawn(sub, m, spec.clone(), tally.clone()));
    }
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let msgs = chunk.iter().map(|&s| seq_msg(&topic, s).with_key(format!("k{}", s % 16))).collect();
        publish_batch(&backend, msgs).await;
    }
    tally.wait_all("members of one group together must receive every message", WAIT).await;
    tokio::time::sleep(QUIET).await;
    for m in members {
        m.stop().await;
    }
    tally.check_no_duplicates(&backend, "members of one group");
    let per_member = tally.member_counts();
    assert!(
        per_member.iter().all(|&n| n > 0),
        "conformance: members of a group must share the work; deliveries per member: {per_member:?}"
    );
}

/// Eight producers publishing one message at a time (1000 each) while a member consumes:
/// every message arrives.
pub async fn concurrent_producers<H: Harness>(h: &H) {
    const PRODUCERS: u64 = 8;
    const EACH: u64 = 1000;
    let backend = h.backend().await;
    let topic = unique_topic("concurrent_producers");
    declare(&backend, TopicSpec::new(topic.clone()).partitions(4).group(GroupSpec::new("g"))).await;
    let tally = Arc::new(SeqTally::new((PRODUCERS * EACH) as usize, 1));
    let sub = Arc::new(subscribe(&backend, &topic, "g", 256).await);
    let spec = MemberSpec { workers: 4, work: Duration::ZERO, tolerate_ack_errors: false };
    let member = Member::spawn(sub, 0, spec, tally.clone());

    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (backend, topic) = (backend.clone(), topic.clone());
            tokio::spawn(async move {
                for i in 0..EACH {
                    let seq = p * EACH + i;
                    super::publish(&backend, seq_msg(&topic, seq).with_key(format!("producer-{p}"))).await;
                }
            })
        })
        .collect();
    for p in producers {
        join("a producer", Duration::from_secs(120), p).await;
    }
    let published = start.elapsed();
    tally.wait_all("every message of eight concurrent producers must arrive", Duration::from_secs(60)).await;
    println!(
        "conformance: concurrent_producers: {} single publishes in {published:?}, all consumed after {:?}",
        PRODUCERS * EACH,
        start.elapsed()
    );
    tokio::time::sleep(QUIET).await;
    member.stop().await;
    tally.check_no_duplicates(&backend, "concurrent producers");
}
