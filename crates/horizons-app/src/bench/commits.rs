//! Counts the embedded engine's group commits (fsyncs) during a bench run, so the raw baseline
//! can fsync at the same cadence.
//!
//! The engine emits `horizons_log_commits_total` once per group commit. The bench process
//! installs this minimal recorder, which keeps that one counter and drops everything else. A
//! process that already has a recorder (a test harness) gets `None` and the bench falls back to
//! one fsync per publish batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// The engine's commit counter.
const COMMITS: &str = "horizons_log_commits_total";

#[derive(Debug)]
struct CommitRecorder {
    commits: Arc<AtomicU64>,
}

impl Recorder for CommitRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == COMMITS {
            Counter::from_arc(self.commits.clone())
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Reads the number of group commits since installation.
#[derive(Clone, Debug)]
pub struct CommitCounter(Arc<AtomicU64>);

impl CommitCounter {
    /// Installs the recorder process-wide; `None` if a recorder is installed already.
    pub fn install() -> Option<CommitCounter> {
        let commits = Arc::new(AtomicU64::new(0));
        metrics::set_global_recorder(CommitRecorder { commits: commits.clone() }).ok()?;
        Some(CommitCounter(commits))
    }

    /// Commits so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
