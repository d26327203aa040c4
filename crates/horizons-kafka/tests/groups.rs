//! A consumer group across processes: three member processes on a six-partition topic, one of
//! them SIGKILLed mid-stream. Its partitions move to the survivors (after the session
//! timeout), every message is processed, effects happen exactly once through the inbox, and
//! per-key order holds (`BlockKey`, four handlers per member).
//!
//! The member processes are this test binary run again with `HZ_GROUP_MEMBER` set, entering
//! through [`member_process`], which does nothing in a normal run.
//!
//! The inbox is a directory: a message's effect is the file named after its id, put in place
//! with one `link(2)` — atomic and exclusive — so the effect and its dedupe record are one
//! durable step, as the store's inbox table does it in one transaction.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use horizons_bus::conformance::{parse_seq, seq_msg, unique_topic};
use horizons_bus::{
    handler_fn, Admin, Backend, Context, Envelope, GroupSpec, HandlerError, OrderingMode, Publisher, RetryPolicy,
    Router, Topic, TopicSpec, Topology,
};
use tokio_util::sync::CancellationToken;

const N: u64 = 6000;
const KEYS: u64 = 30;
const GROUP: &str = "workers";

/// One effect as its inbox file records it.
#[derive(Debug)]
struct Effect {
    key: String,
    seq: u64,
    partition: u32,
    pid: u32,
    at_ns: u128,
}

fn read_inbox(dir: &Path) -> Vec<Effect> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("inbox dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("tmp-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let f: Vec<&str> = text.split_whitespace().collect();
        if let [key, seq, partition, pid, at] = f[..] {
            out.push(Effect {
                key: key.into(),
                seq: seq.parse().unwrap(),
                partition: partition.parse().unwrap(),
                pid: pid.parse().unwrap(),
                at_ns: at.parse().unwrap(),
            });
        }
    }
    out
}

fn spawn_member(topic: &Topic, inbox: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "member_process", "--nocapture", "--test-threads=1"])
        .env("HZ_GROUP_MEMBER", format!("{topic} {}", inbox.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a member process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_one_killed() {
    let bus = common::connect().await;
    let topic = unique_topic("groups");
    let group = GroupSpec::new(GROUP).ordering(OrderingMode::BlockKey).retry(RetryPolicy::fast(5));
    bus.declare(&Topology::new().topic(TopicSpec::new(topic.clone()).partitions(6).group(group)))
        .await
        .expect("declare");
    let inbox = std::env::temp_dir().join(format!("hz-inbox-{topic}"));
    std::fs::create_dir_all(&inbox).expect("inbox dir");
    let mut members: Vec<Child> = (0..3).map(|_| spawn_member(&topic, &inbox)).collect();
    // All three in the group before the first message: a member that joined after the first
    // half was processed would get partitions but nothing to process, and the test would wait
    // for the victim's first effect forever (seen once in CI, with the machine loaded).
    wait_for_members(&topic, 3).await;

    let publish = |range: std::ops::Range<u64>| {
        let (bus, topic) = (bus.clone(), topic.clone());
        async move {
            let all: Vec<u64> = range.collect();
            for chunk in all.chunks(200) {
                let msgs = chunk.iter().map(|&s| seq_msg(&topic, s).with_key(format!("k{}", s % KEYS))).collect();
                bus.publish_batch(msgs).await.expect("publish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    publish(0..N / 2).await;
    let victim = members[0].id();
    wait_for(&inbox, "the victim to process some messages", |e| e.iter().any(|x| x.pid == victim)).await;
    members[0].kill().expect("SIGKILL member 0");
    members[0].wait().expect("reap member 0");
    let killed_at = now_ns();
    publish(N / 2..N).await;
    let effects = wait_for(&inbox, "every message to be processed", |e| e.len() as u64 >= N).await;
    for m in &mut members[1..] {
        let _ = m.kill();
        let _ = m.wait();
    }
    let _ = std::fs::remove_dir_all(&inbox);

    let seqs: BTreeSet<u64> = effects.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len() as u64, N, "one effect per message, none missing");
    assert_eq!(effects.len() as u64, N, "no message has two effects");
    let mut per_key: BTreeMap<&str, Vec<&Effect>> = BTreeMap::new();
    for e in &effects {
        per_key.entry(&e.key).or_default().push(e);
    }
    for (key, list) in &mut per_key {
        list.sort_by_key(|e| e.at_ns);
        let order: Vec<u64> = list.iter().map(|e| e.seq).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key} processed out of order: {order:?}");
    }
    let victim_parts: BTreeSet<u32> = effects.iter().filter(|e| e.pid == victim).map(|e| e.partition).collect();
    let moved: BTreeSet<u32> = effects
        .iter()
        .filter(|e| e.pid != victim && e.at_ns > killed_at && victim_parts.contains(&e.partition))
        .map(|e| e.partition)
        .collect();
    assert!(!victim_parts.is_empty(), "the victim processed something before it was killed");
    assert_eq!(moved, victim_parts, "every partition of the killed member moved to a survivor");
    println!(
        "victim partitions {victim_parts:?} moved; {} effects by the victim",
        effects.iter().filter(|e| e.pid == victim).count()
    );
}

/// Waits until the Kafka consumer group behind the bus group has `n` members and is stable
/// (its partitions assigned).
async fn wait_for_members(topic: &Topic, n: usize) {
    let (client, group) = (common::group_client(), horizons_kafka::topology::names::group_id(topic, GROUP));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = common::describe_group(&client, &group).ok();
        if seen.as_ref().is_some_and(|(state, members)| state == "Stable" && *members == n) {
            return;
        }
        assert!(Instant::now() < deadline, "waited 120 s for {n} members in {group}; last seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for(inbox: &Path, what: &str, mut done: impl FnMut(&[Effect]) -> bool) -> Vec<Effect> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let effects = read_inbox(inbox);
        if done(&effects) {
            return effects;
        }
        assert!(Instant::now() < deadline, "waited 180 s for {what}; {} effects so far", effects.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos()
}

/// Applies the effect of `env` once: writes it aside, then links it into the inbox under the
/// message id; an existing link means a redelivery whose effect already happened.
fn apply_once(inbox: &Path, env: &Envelope, cx: &Context) -> Result<(), HandlerError> {
    let target = inbox.join(env.id.to_string());
    if target.exists() {
        return Ok(());
    }
    let tmp: PathBuf = inbox.join(format!("tmp-{}-{}", std::process::id(), env.id));
    let line = format!(
        "{} {} {} {} {}",
        env.key.as_deref().unwrap_or("-"),
        parse_seq(&env.payload),
        cx.position.partition.unwrap_or(0),
        std::process::id(),
        now_ns()
    );
    std::fs::write(&tmp, line).map_err(HandlerError::retryable)?;
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(HandlerError::retryable(e)),
    }
}

/// The member processes' entry point (see the module docs); returns at once in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_process() {
    let Ok(spec) = std::env::var("HZ_GROUP_MEMBER") else { return };
    let (topic, inbox) = spec.split_once(' ').expect("topic and inbox");
    let (topic, inbox) = (Topic::new(topic).expect("topic"), PathBuf::from(inbox));
    let bus: std::sync::Arc<dyn Backend> = std::sync::Arc::new(common::connect().await);
    let handler = handler_fn(move |env: Envelope, cx: Context| {
        let inbox = inbox.clone();
        async move {
            // Some work, so that handlers overlap and the kill lands mid-stream.
            tokio::time::sleep(Duration::from_millis(1)).await;
            apply_once(&inbox, &env, &cx)
        }
    });
    let router = Router::new(bus).route(topic, GROUP, RetryPolicy::fast(5), 4, handler);
    router.run(CancellationToken::new()).await.expect("member router");
}
