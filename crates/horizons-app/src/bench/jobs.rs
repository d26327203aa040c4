//! `horizons bench jobs`: no-op jobs through the whole job system.
//!
//! Submits `--jobs` `demo.noop` jobs (a thousand per transaction, with their outbox rows), then
//! starts the relay and `--workers` concurrent workers on a fresh data dir and times until every
//! job is `succeeded`. `jobs_per_sec` = jobs / (workers start → last job succeeded), so it
//! includes publishing from the outbox; queue latency = an attempt's start minus the job's
//! submission, which for a pre-filled queue mostly measures the backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_bus::{Router, Topology};
use horizons_comments::relay::Relay;
use horizons_jobs::worker::JobWorker;
use horizons_jobs::{store, JobSpec, Registry};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::AppError;
use crate::portal::Parts;

/// `horizons bench jobs`.
#[derive(Debug, clap::Args)]
pub struct BenchJobsArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Jobs run at a time.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Backend; defaults to `bus.backend` from the configuration (embedded).
    #[arg(long, value_enum)]
    pub backend: Option<crate::backend::BackendKind>,
    /// Jobs that end sooner are recorded once, start and end together; longer ones are claimed
    /// at this point (`0s`: claim every job before it runs, as a long job is).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub claim_after: Duration,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct JobsReport {
    /// Backend.
    pub backend: String,
    /// Jobs run.
    pub jobs: usize,
    /// Concurrency.
    pub workers: usize,
    /// Jobs per second, workers start → last success.
    pub jobs_per_sec: f64,
    /// Submission rate (jobs written per second).
    pub submit_per_sec: f64,
    /// Submission → attempt start, ms.
    pub latency_ms: super::Latency,
}

/// Runs the benchmark (in a fresh `cfg.data_dir`).
pub async fn run(cfg: Config, args: BenchJobsArgs) -> Result<(), AppError> {
    if args.jobs == 0 || args.workers == 0 {
        return Err(AppError::Usage("--jobs and --workers must be at least 1".into()));
    }
    let parts = Parts::open(&cfg).await?;
    let backend = crate::backend::open(&cfg)?;
    let topic = parts.topic(horizons_jobs::TOPIC);
    let topic_spec = JobWorker::topology(topic.clone(), cfg.portal.jobs_lease);
    backend
        .declare(&Topology::new().topic(topic_spec.clone()))
        .await
        .map_err(AppError::bus("declaring the jobs topic"))?;
    let registry = Registry::standard();
    let t = Instant::now();
    let spec = JobSpec::new("demo.noop", serde_json::json!({}));
    store::submit_many(&parts.store, &registry, &spec, "bench", args.jobs)
        .await
        .map_err(|e| AppError::Bench(format!("submitting: {e}")))?;
    let submit_per_sec = args.jobs as f64 / t.elapsed().as_secs_f64();

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let relay = Relay::new(parts.store.clone(), backend.clone(), parts.service.outbox_signal(), &parts.prefix);
    let c = cancel.clone();
    let relay = tokio::spawn(async move { relay.run(c).await });
    let mut worker = JobWorker::new(parts.store.clone(), registry, "bench");
    worker.claim_after = args.claim_after;
    let router = Router::new(backend.clone()).route(
        topic,
        horizons_jobs::GROUP,
        JobWorker::policy(),
        args.workers,
        Arc::new(worker),
    );
    let c = cancel.clone();
    let router = tokio::spawn(async move { router.run(c).await });
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(args.jobs as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs ({per_sec}, eta {eta})").expect("valid template"),
    );
    let elapsed = loop {
        let done: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
            .fetch_one(parts.store.pool())
            .await
            .map_err(|e| AppError::Bench(format!("counting: {e}")))?
            .get(0);
        bar.set_position(done as u64);
        if done as usize >= args.jobs {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    cancel.cancel();
    let _ = relay.await;
    let _ = router.await;
    let waits = sqlx::query("SELECT a.started_at - j.created_at FROM job_attempts a JOIN jobs j ON j.id = a.job_id")
        .fetch_all(parts.store.pool())
        .await
        .map_err(|e| AppError::Bench(format!("reading latencies: {e}")))?;
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    for r in &waits {
        let _ = h.record(r.get::<i64, _>(0).max(0) as u64);
    }
    backend.close().await.map_err(AppError::bus("closing the bus"))?;
    parts.store.close().await;
    if cfg.bus.backend == crate::backend::BackendKind::Amqp {
        super::raw_amqp::cleanup(&cfg.bus.amqp, topic_spec).await;
    }
    let report = JobsReport {
        backend: backend.name().to_string(),
        jobs: args.jobs,
        workers: args.workers,
        jobs_per_sec: args.jobs as f64 / elapsed.as_secs_f64(),
        submit_per_sec,
        latency_ms: super::Latency { p50: h.value_at_quantile(0.5) as f64, p99: h.value_at_quantile(0.99) as f64 },
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("report serialises"));
    } else {
        println!(
            "bench jobs ({} bus): {} no-op jobs, {} at a time: {:.0} jobs/s processed (submitted at {:.0}/s); \
             queue latency p50 {:.0} ms, p99 {:.0} ms",
            report.backend,
            report.jobs,
            report.workers,
            report.jobs_per_sec,
            report.submit_per_sec,
            report.latency_ms.p50,
            report.latency_ms.p99
        );
    }
    Ok(())
}
