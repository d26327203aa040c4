//! Long-running helpers for the cases that consume in the background: a lock-free tally of
//! sequence numbers, acking consumer members, and a router running in a task.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{join, parse_seq, WAIT};
use crate::backend::{Backend, Subscription};
use crate::error::BusError;
use crate::router::Router;

/// Counts deliveries of sequence numbers `0..n`, per number and per member.
#[derive(Debug)]
pub struct SeqTally {
    counts: Vec<AtomicU32>,
    distinct: AtomicUsize,
    per_member: Vec<AtomicUsize>,
    ack_errors: AtomicUsize,
    failure: Mutex<Option<String>>,
}

impl SeqTally {
    /// A tally for sequence numbers `0..n` consumed by `members` members.
    pub fn new(n: usize, members: usize) -> Self {
        Self {
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            per_member: (0..members).map(|_| AtomicUsize::new(0)).collect(),
            ack_errors: AtomicUsize::new(0),
            failure: Mutex::new(None),
        }
    }

    /// Records one delivery of `seq` to `member`; `false` if `seq` was never published.
    pub fn record(&self, seq: u64, member: usize) -> bool {
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.counts.get(i)) else {
            return false;
        };
        if slot.fetch_add(1, Ordering::Relaxed) == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = self.per_member.get(member) {
            m.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Sequence numbers delivered at least once.
    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Deliveries per member.
    pub fn member_counts(&self) -> Vec<usize> {
        self.per_member.iter().map(|m| m.load(Ordering::Relaxed)).collect()
    }

    /// Acks that failed (only counted where tolerated).
    pub fn ack_errors(&self) -> usize {
        self.ack_errors.load(Ordering::Relaxed)
    }

    /// Records why a consumer gave up; [`SeqTally::wait_all`] then fails with it at once.
    pub fn fail(&self, why: String) {
        self.failure.lock().get_or_insert(why);
    }

    /// Panics with the first recorded consumer failure, if any.
    pub fn check_failure(&self) {
        if let Some(why) = self.failure.lock().clone() {
            panic!("conformance: {why}");
        }
    }

    /// Panics if some sequence number was delivered twice, unless the backend declares
    /// `duplicates_without_failure`. Only for runs without restarts or lease expiries.
    pub fn check_no_duplicates(&self, backend: &Arc<dyn Backend>, what: &str) {
        let (n, first) = self.duplicates();
        assert!(
            n == 0 || backend.capabilities().duplicates_without_failure,
            "conformance: {what}: {n} message(s) delivered more than once without any failure, and the backend does \
             not declare duplicates_without_failure; first (seq, deliveries): {first:?}"
        );
    }

    /// How many were never delivered, and the first 20 of them.
    pub fn missing(&self) -> (usize, Vec<u64>) {
        let all: Vec<u64> =
            (0..self.counts.len()).filter(|&i| self.counts[i].load(Ordering::Relaxed) == 0).map(|i| i as u64).collect();
        let first = all.iter().take(20).copied().collect();
        (all.len(), first)
    }

    /// How many were delivered more than once, and the first 20 as (seq, deliveries).
    pub fn duplicates(&self) -> (usize, Vec<(u64, u32)>) {
        let all: Vec<(u64, u32)> = (0..self.counts.len())
            .map(|i| (i as u64, self.counts[i].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 1)
            .collect();
        let first = all.iter().take(20).copied().collect();
        (all.len(), first)
    }

    /// Waits until every sequence number was delivered; panics after `limit`, naming the missing.
    pub async fn wait_all(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.distinct() < self.counts.len() {
            self.check_failure();
            if Instant::now() >= deadline {
                let (n, first) = self.missing();
                panic!(
                    "conformance: {what}: {n} of {} messages not consumed within {limit:?}; first missing: {first:?}",
                    self.counts.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How a background member consumes.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Tasks pulling from the member's subscription concurrently.
    pub workers: usize,
    /// Simulated work per delivery before the ack.
    pub work: Duration,
    /// Count failed acks instead of panicking (restarts make acks fail; the message comes back).
    pub tolerate_ack_errors: bool,
}

/// One group member consuming in the background: it records each delivery in a [`SeqTally`]
/// and acks it, until stopped. A subscription closed by the backend fails the case.
#[derive(Debug)]
pub struct Member {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    tally: Arc<SeqTally>,
}

impl Member {
    /// Starts consuming `sub` as member number `member`.
    pub fn spawn(sub: Arc<Subscription>, member: usize, spec: MemberSpec, tally: Arc<SeqTally>) -> Self {
        let stop = CancellationToken::new();
        let workers = (0..spec.workers.max(1))
            .map(|_| {
                let (sub, spec, tally, stop) = (sub.clone(), spec.clone(), tally.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => break,
                            d = sub.next() => d,
                        };
                        let Some(d) = next else {
                            tally.fail(format!(
                                "the backend closed member {member}'s subscription; subscriptions must stay open \
                                 (and recover from outages by themselves) until dropped"
                            ));
                            break;
                        };
                        let seq = parse_seq(&d.envelope.payload);
                        if !tally.record(seq, member) {
                            tally.fail(format!("member {member} got seq {seq}, which was never published here"));
                            break;
                        }
                        if !spec.work.is_zero() {
                            tokio::time::sleep(spec.work).await;
                        }
                        let id = d.envelope.id;
                        let result = match tokio::time::timeout(WAIT, d.ack()).await {
                            Ok(r) => r,
                            Err(_) => Err(BusError::Timeout(WAIT)),
                        };
                        if let Err(e) = result {
                            tally.ack_errors.fetch_add(1, Ordering::Relaxed);
                            if !spec.tolerate_ack_errors {
                                tally.fail(format!("member {member}: acking {id} failed: {e}"));
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Self { stop, tasks: workers, tally }
    }

    /// Stops the member and waits for its tasks; panics if a worker failed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.tasks) {
            join("stopping a consumer member", WAIT, t).await;
        }
        self.tally.check_failure();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A [`Router`] running in a task until stopped.
#[derive(Debug)]
pub struct RunningRouter {
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), BusError>>>,
}

impl RunningRouter {
    /// Spawns `router.run`.
    pub fn start(router: Router) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(router.run(cancel.clone()));
        Self { cancel, task: Some(task) }
    }

    /// Polls `cond` every 20 ms until it holds; panics after `limit`, or at once with the
    /// router's error if the router stopped (e.g. subscribing failed).
    pub async fn wait_until(&mut self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                if let Some(t) = self.task.take() {
                    let r = join("the router", WAIT, t).await;
                    panic!("conformance: the router stopped while waiting for {what}: {r:?}");
                }
            }
            assert!(Instant::now() < deadline, "conformance: {what}: not reached within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels the router, lets in-flight handlers finish, and panics if it failed.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            join("stopping the router", WAIT, t)
                .await
                .unwrap_or_else(|e| panic!("conformance: the router failed (did subscribing fail?): {e}"));
        }
    }
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
