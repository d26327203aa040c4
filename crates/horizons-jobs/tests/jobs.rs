//! The job system on the embedded default: retries, dead jobs and redrive, priorities, delays,
//! idempotency, cancellation, panics and bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use horizons_bus::{Backend, Router, Topic, Topology};
use horizons_comments::relay::Relay;
use horizons_comments::Store;
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};
use horizons_jobs::worker::JobWorker;
use horizons_jobs::{store, JobContext, JobError, JobKind, JobSpec, JobState, Registry, GROUP, TOPIC};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    bus: Arc<dyn Backend>,
    registry: Registry,
    cancel: CancellationToken,
}

/// A kind that panics, to show the worker survives it.
struct Panics;

#[async_trait]
impl JobKind for Panics {
    fn name(&self) -> &'static str {
        "test.panics"
    }
    fn validate(&self, _args: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    async fn run(&self, _cx: &JobContext, _args: &serde_json::Value) -> Result<(), JobError> {
        panic!("boom");
    }
}

async fn rig() -> Rig {
    rig_with(EmbeddedConfig::default().max_priority_wait).await
}

/// A rig whose bus lets a ready message wait at most `max_priority_wait` behind higher
/// priorities (the embedded bus's starvation guard).
async fn rig_with(max_priority_wait: Duration) -> Rig {
    rig_full(max_priority_wait, Duration::from_secs(5)).await
}

async fn rig_full(max_priority_wait: Duration, lease: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
    let cfg = EmbeddedConfig { max_priority_wait, ..EmbeddedConfig::in_dir(dir.path().join("bus")) };
    let bus = EmbeddedBus::open(cfg).unwrap();
    let bus: Arc<dyn Backend> = Arc::new(bus);
    let topic = Topic::new(TOPIC).unwrap();
    bus.declare(&Topology::new().topic(JobWorker::topology(topic, lease))).await.unwrap();
    let mut registry = Registry::standard();
    registry.register(Arc::new(Panics));
    let cancel = CancellationToken::new();
    let relay = Relay::new(store.clone(), bus.clone(), Arc::new(tokio::sync::Notify::new()), "");
    let c = cancel.clone();
    tokio::spawn(async move { relay.run(c).await });
    Rig { _dir: dir, store, bus, registry, cancel }
}

impl Rig {
    fn start_workers(&self, concurrency: usize) {
        self.start(JobWorker::new(self.store.clone(), self.registry.clone(), "test-worker"), concurrency);
    }

    fn worker(&self, name: &str) -> JobWorker {
        JobWorker::new(self.store.clone(), self.registry.clone(), name)
    }

    /// Runs `w`; aborting the returned task is a crash (in-flight deliveries dropped unacked).
    fn start(&self, w: JobWorker, concurrency: usize) -> tokio::task::JoinHandle<()> {
        let router = Router::new(self.bus.clone()).route(
            Topic::new(TOPIC).unwrap(),
            GROUP,
            JobWorker::policy(),
            concurrency,
            Arc::new(w),
        );
        let c = self.cancel.clone();
        tokio::spawn(async move {
            let _ = router.run(c).await;
        })
    }

    async fn submit(&self, spec: JobSpec) -> String {
        store::submit(&self.store, &self.registry, &spec, "tester").await.unwrap().0.id
    }

    async fn until(&self, id: &str, state: JobState, secs: u64) -> horizons_jobs::Job {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = store::get(&self.store, id).await.unwrap();
            if j.state == state {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} is {:?}, waited for {state:?}: {j:?}", j.state);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn close(self) {
        self.cancel.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.bus.close().await.unwrap();
    }
}

fn flaky(fail_times: Option<i64>, max_attempts: i64) -> JobSpec {
    JobSpec { max_attempts, backoff_ms: 50, ..JobSpec::new("demo.flaky", json!({ "fail_times": fail_times })) }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_twice_then_succeeds_ends_succeeded_with_three_attempts() {
    let r = rig().await;
    r.start_workers(2);
    let id = r.submit(flaky(Some(2), 5)).await;
    let j = r.until(&id, JobState::Succeeded, 30).await;
    assert_eq!(j.attempts, 3);
    let a = store::attempts(&r.store, &id).await.unwrap();
    let outcomes: Vec<_> = a.iter().map(|a| a.outcome.clone().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    assert!(a[0].error.as_deref().unwrap().contains("attempt 1"), "{a:?}");
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_always_fails_ends_dead_with_every_error_and_redrive_reruns_it() {
    let r = rig().await;
    r.start_workers(2);
    let ids = [r.submit(flaky(None, 3)).await, r.submit(flaky(None, 3)).await];
    for id in &ids {
        let j = r.until(id, JobState::Dead, 30).await;
        assert_eq!(j.attempts, 3);
        let errors: Vec<_> =
            store::attempts(&r.store, id).await.unwrap().into_iter().map(|a| a.error.unwrap()).collect();
        assert_eq!(errors.len(), 3);
        assert!(errors[2].contains("attempt 3"), "{errors:?}");
    }
    assert_eq!(store::redrive(&r.store, Some("demo.flaky")).await.unwrap(), 2);
    for id in &ids {
        // A fresh set of three attempts, history kept.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = store::get(&r.store, id).await.unwrap();
            if j.state == JobState::Dead && j.attempts == 6 {
                break;
            }
            assert!(Instant::now() < deadline, "{j:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store::attempts(&r.store, id).await.unwrap().len(), 6);
    }
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priorities_start_first() {
    // The starvation guard off (a minute), so the order is the priorities' alone.
    let r = rig_with(Duration::from_secs(60)).await;
    let mut ids = Vec::new();
    for i in 0..1000i64 {
        let p = (i * 7) % 10;
        ids.push((p, r.submit(JobSpec { priority: p, ..JobSpec::new("demo.noop", json!({})) }).await));
    }
    // Everything on the bus before the one worker starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(r.store.pool())
            .await
            .unwrap();
        if unsent == 0 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.start_workers(1);
    for (_, id) in &ids {
        r.until(id, JobState::Succeeded, 120).await;
    }
    // Start order: attempt start times (ms), ties broken by the order the worker recorded them
    // (SQLite's rowid), not by priority, which would put the lower one first.
    let priority: std::collections::HashMap<&str, i64> = ids.iter().map(|(p, id)| (id.as_str(), *p)).collect();
    let started: Vec<String> =
        sqlx::query_scalar("SELECT job_id FROM job_attempts WHERE attempt = 1 ORDER BY started_at, rowid")
            .fetch_all(r.store.pool())
            .await
            .unwrap();
    let order: Vec<i64> = started.iter().map(|id| priority[id.as_str()]).collect();
    assert_eq!(order.len(), ids.len());
    let (mut ordered, mut pairs) = (0u64, 0u64);
    for i in 0..order.len() {
        for j in i + 1..order.len() {
            if order[i] != order[j] {
                pairs += 1;
                ordered += u64::from(order[i] > order[j]);
            }
        }
    }
    let share = ordered as f64 / pairs as f64;
    let mean_rank: Vec<f64> = (0..10)
        .map(|p| {
            let ranks: Vec<usize> = order.iter().enumerate().filter(|(_, q)| **q == p).map(|(i, _)| i).collect();
            ranks.iter().sum::<usize>() as f64 / ranks.len() as f64
        })
        .collect();
    println!("priority order: {share:.4} of differently-prioritised pairs started higher first");
    println!("mean start rank by priority 0..9: {mean_rank:.0?}");
    assert!(share > 0.99, "{share}: {order:?}");
    assert!(order[..100].iter().all(|p| *p == 9), "the first jobs started are priority 9: {:?}", &order[..100]);
    for p in 1..10 {
        assert!(mean_rank[p] < mean_rank[p - 1], "priority {p} started later on average: {mean_rank:?}");
    }
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn low_priorities_still_finish_under_a_steady_high_priority_load() {
    // The default starvation guard: a job waits at most ~2 s behind higher priorities.
    let r = rig().await;
    r.start_workers(1);
    let low: Vec<String> = submit_low(&r, 5).await;
    let started = Instant::now();
    let mut high = Vec::new();
    // A steady stream of priority-9 work for 8 s, more than one worker can keep up with.
    while started.elapsed() < Duration::from_secs(8) {
        for _ in 0..5 {
            let spec = JobSpec { priority: 9, ..JobSpec::new("demo.sleep", json!({"ms": 20})) };
            high.push(r.submit(spec).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut done_at = Vec::new();
    for id in &low {
        let j = store::get(&r.store, id).await.unwrap();
        assert_eq!(j.state, JobState::Succeeded, "a low-priority job starved: {j:?}");
        done_at.push(j.finished_at.unwrap() - j.created_at);
    }
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE priority = 9 AND state <> 'succeeded'")
        .fetch_one(r.store.pool())
        .await
        .unwrap();
    println!("low-priority jobs finished after {done_at:?} ms while {pending} high-priority jobs still waited");
    assert!(pending > 0, "the high-priority load was not steady enough to show anything");
    r.close().await;
}

/// Submits `n` priority-0 no-op jobs.
async fn submit_low(r: &Rig, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(r.submit(JobSpec { priority: 0, ..JobSpec::new("demo.noop", json!({})) }).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_job_does_not_start_before_its_time() {
    let r = rig().await;
    r.start_workers(2);
    let id = r.submit(JobSpec { delay_ms: 2000, ..JobSpec::new("demo.noop", json!({})) }).await;
    let j = r.until(&id, JobState::Succeeded, 30).await;
    let a = store::attempts(&r.store, &id).await.unwrap();
    let waited = a[0].started_at - j.created_at;
    println!("delayed 2000 ms, started after {waited} ms");
    assert!(waited >= 2000, "started after {waited} ms");
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_cancellation_panics_and_bad_input() {
    let r = rig().await;
    let key = JobSpec { idempotency_key: Some("weekly-digest-2026-48".into()), ..JobSpec::new("demo.noop", json!({})) };
    let (a, new_a) = store::submit(&r.store, &r.registry, &key, "t").await.unwrap();
    let (b, new_b) = store::submit(&r.store, &r.registry, &key, "t").await.unwrap();
    assert!(new_a && !new_b);
    assert_eq!(a.id, b.id);

    let later = r.submit(JobSpec { delay_ms: 1500, ..JobSpec::new("demo.noop", json!({})) }).await;
    assert_eq!(store::cancel(&r.store, &later).await.unwrap().state, JobState::Cancelled);

    r.start_workers(2);
    let boom = r.submit(JobSpec { max_attempts: 2, backoff_ms: 10, ..JobSpec::new("test.panics", json!({})) }).await;
    let j = r.until(&boom, JobState::Dead, 30).await;
    assert!(j.last_error.as_deref().unwrap().contains("panicked: boom"), "{j:?}");
    // The worker is still running jobs.
    let after = r.submit(JobSpec::new("demo.noop", json!({}))).await;
    r.until(&after, JobState::Succeeded, 30).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let c = store::get(&r.store, &later).await.unwrap();
    assert_eq!((c.state, c.attempts), (JobState::Cancelled, 0));

    let bad = |spec: JobSpec, field: &str| {
        let (store_, reg) = (r.store.clone(), r.registry.clone());
        let field = field.to_string();
        async move {
            let e = store::submit(&store_, &reg, &spec, "t").await.unwrap_err().to_string();
            assert!(e.starts_with(&field), "{e}");
        }
    };
    bad(JobSpec::new("no.such.kind", json!({})), "kind").await;
    bad(JobSpec::new("demo.sleep", json!({"ms": "long"})), "args").await;
    bad(JobSpec::new("demo.noop", json!({"extra": 1})), "args").await;
    bad(JobSpec { delay_ms: -1, ..JobSpec::new("demo.noop", json!({})) }, "delay_ms").await;
    bad(JobSpec { priority: 12, ..JobSpec::new("demo.noop", json!({})) }, "priority").await;
    let stub = r.submit(JobSpec::new("pipeline.run", json!({"input": "x.uvfits"}))).await;
    let j = r.until(&stub, JobState::Dead, 30).await;
    assert!(j.last_error.unwrap().contains("not in this registry"));
    r.close().await;
}

fn sleep_job(ms: u64) -> JobSpec {
    JobSpec::new("demo.sleep", json!({ "ms": ms }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_longer_than_the_lease_runs_once_and_a_crashed_workers_job_is_taken_over() {
    // Lease 1 s; jobs of 2.5 s; heartbeats every 100 ms, stale after 500 ms.
    let r = rig_full(EmbeddedConfig::default().max_priority_wait, Duration::from_secs(1)).await;
    let beat = |w: JobWorker| w.heartbeats(Duration::from_millis(100), Duration::from_millis(500));
    r.start(beat(r.worker("w1")), 2);
    r.start(beat(r.worker("w2")), 2);
    let long = r.submit(sleep_job(2500)).await;
    let j = r.until(&long, JobState::Succeeded, 30).await;
    assert_eq!(j.attempts, 1, "the bus redelivered after the lease, but the heartbeat kept the job on one worker");

    // A worker that crashes mid-job: its attempt is closed as abandoned, another one runs it.
    let crashing = r.start(beat(r.worker("doomed")), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the doomed worker is idle for sure; the others finished. Submit until it holds one.
    let mut victim = None;
    for _ in 0..20 {
        let id = r.submit(sleep_job(3000)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = store::attempts(&r.store, &id).await.unwrap();
        if a.iter().any(|a| a.worker == "doomed") {
            victim = Some(id);
            break;
        }
    }
    let victim = victim.expect("the doomed worker took a job");
    crashing.abort();
    let j = r.until(&victim, JobState::Succeeded, 30).await;
    let a = store::attempts(&r.store, &victim).await.unwrap();
    assert_eq!(j.attempts, 2, "{a:?}");
    assert_eq!((a[0].worker.as_str(), a[0].outcome.as_deref()), ("doomed", Some("abandoned")), "{a:?}");
    assert_eq!(a[1].outcome.as_deref(), Some("succeeded"), "{a:?}");
    assert_ne!(a[1].worker, "doomed");
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_is_cancelled_at_its_next_heartbeat() {
    let r = rig().await;
    r.start(r.worker("w").heartbeats(Duration::from_millis(100), Duration::from_millis(500)), 2);
    let id = r.submit(sleep_job(60_000)).await;
    r.until(&id, JobState::Running, 10).await;
    let asked = store::cancel(&r.store, &id).await.unwrap();
    assert!(asked.cancel_requested && asked.state == JobState::Running, "{asked:?}");
    let started = Instant::now();
    let j = r.until(&id, JobState::Cancelled, 10).await;
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled within a few heartbeats, not after the minute");
    let a = store::attempts(&r.store, &id).await.unwrap();
    assert_eq!(a[0].outcome.as_deref(), Some("cancelled"), "{a:?}");
    assert!(j.finished_at.is_some());
    // A finished job cannot be cancelled.
    let done = r.submit(JobSpec::new("demo.noop", json!({}))).await;
    r.until(&done, JobState::Succeeded, 10).await;
    assert!(matches!(store::cancel(&r.store, &done).await, Err(horizons_jobs::JobsError::State { .. })));
    r.close().await;
}

/// A job that ends before `claim_after` is recorded once, start and end together; one cancelled
/// while such an unclaimed attempt runs stays cancelled, and the attempt's result is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn an_unclaimed_attempt_is_recorded_whole_and_a_cancel_during_it_wins() {
    let r = rig().await;
    let mut w = r.worker("lazy");
    w.claim_after = Duration::from_secs(30);
    r.start(w, 2);
    let quick = r.submit(sleep_job(100)).await;
    let j = r.until(&quick, JobState::Succeeded, 10).await;
    let a = store::attempts(&r.store, &quick).await.unwrap();
    assert_eq!((j.attempts, a.len()), (1, 1), "{a:?}");
    assert_eq!((a[0].worker.as_str(), a[0].outcome.as_deref()), ("lazy", Some("succeeded")));
    let ran = a[0].finished_at.unwrap() - a[0].started_at;
    assert!((100..5000).contains(&ran), "the record spans the run: {ran} ms");

    let slow = r.submit(sleep_job(1500)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still `queued` in the database while it runs unclaimed: a cancel takes effect at once.
    assert_eq!(store::cancel(&r.store, &slow).await.unwrap().state, JobState::Cancelled);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let j = store::get(&r.store, &slow).await.unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Cancelled, 0), "{j:?}");
    assert!(store::attempts(&r.store, &slow).await.unwrap().is_empty());
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_run_only_their_kinds_and_per_kind_limits_hold() {
    let r = rig().await;
    r.start(r.worker("noop-only").only(["demo.noop".to_string()]).unwrap(), 4);
    r.start(r.worker("sleepy").only(["demo.sleep".to_string()]).unwrap().limit("demo.sleep", 1).unwrap(), 4);
    assert!(r.worker("x").only(["no.such".to_string()]).is_err());
    assert!(r.worker("x").limit("demo.sleep", 0).is_err());
    let mut noops = Vec::new();
    let mut sleeps = Vec::new();
    for _ in 0..4 {
        noops.push(r.submit(JobSpec::new("demo.noop", json!({}))).await);
        sleeps.push(r.submit(sleep_job(200)).await);
    }
    let mut windows = Vec::new();
    for id in &noops {
        r.until(id, JobState::Succeeded, 30).await;
        let a = store::attempts(&r.store, id).await.unwrap();
        assert!(a.iter().all(|a| a.worker == "noop-only"), "{a:?}");
    }
    for id in &sleeps {
        r.until(id, JobState::Succeeded, 30).await;
        let a = store::attempts(&r.store, id).await.unwrap();
        assert!(a.iter().all(|a| a.worker == "sleepy"), "{a:?}");
        let last = a.last().unwrap();
        windows.push((last.started_at, last.finished_at.unwrap()));
    }
    windows.sort();
    assert!(windows.windows(2).all(|w| w[0].1 <= w[1].0), "demo.sleep=1: no two sleeps overlap: {windows:?}");
    r.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_submit_each_tick_once() {
    use horizons_jobs::schedule::{Schedule, Scheduler};
    let r = rig().await;
    r.start_workers(4);
    let every_second = Schedule::new("tick", "* * * * * *", JobSpec::new("demo.noop", json!({})), &r.registry)
        .expect("a valid schedule");
    assert!(Schedule::new("bad", "* * *", JobSpec::new("demo.noop", json!({})), &r.registry).is_err());
    assert!(Schedule::new("bad", "* * * * *", JobSpec::new("no.kind", json!({})), &r.registry).is_err());
    let stop = CancellationToken::new();
    for _ in 0..2 {
        let s = Scheduler::new(r.store.clone(), r.registry.clone(), vec![every_second.clone()]);
        tokio::spawn(s.run(stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(3600)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let jobs = store::list(&r.store, None, Some("demo.noop"), 1000).await.unwrap();
    let mut ticks: Vec<i64> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j.owner, "schedule:tick");
            j.idempotency_key.as_deref().unwrap().strip_prefix("cron:tick:").unwrap().parse().unwrap()
        })
        .collect();
    ticks.sort();
    assert!(ticks.len() >= 3, "3.6 s of a per-second schedule: {ticks:?}");
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 1000), "one job per tick, none missing, none twice: {ticks:?}");
    for j in &jobs {
        r.until(&j.id, JobState::Succeeded, 30).await;
    }
    r.close().await;
}
