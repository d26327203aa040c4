//! `horizons bench bus`: publish and consume throughput, end-to-end latency, and a same-run
//! baseline with the ratio to it.
//!
//! The run uses a fresh data directory (under `--data-dir`, else the system temp dir) that is
//! removed afterwards. With `--baseline raw` on the embedded backend, [`raw`] measures the
//! disk's fdatasync'd ceiling in the same directory right after the run, at the engine's own
//! group-commit cadence (counted by [`commits`]). On kafka, [`raw_kafka`] runs the same load
//! through bare rdkafka right after, and the ratio is of end-to-end messages per second.
//!
//! Figures: `publish_msgs_per_sec` = N / (first publish → last publish acknowledged);
//! `consume_msgs_per_sec` = N / (first delivery → last delivery); `end_to_end_msgs_per_sec`
//! = N / (first publish → last delivery); `mb_per_sec` = payload bytes end to end, MB = 10^6;
//! latency = delivery time minus the payload's send stamp. `ratio` = our end-to-end payload
//! MB/s over the baseline's payload MB/s; both count the same payload bytes, so it equals the
//! ratio of messages per second at every size.
//!
//! The other benches have their own modules: [`api`], [`jobs`], and [`pipeline`] (the ngVLA
//! stages per core, with [`ducc0`]'s gridder and [`aoflagger`]'s flagger side by side).

pub mod aoflagger;
pub mod api;
pub mod commits;
pub mod ducc0;
pub mod jobs;
pub mod load;
pub mod pipeline;
pub mod raw;
pub mod raw_amqp;
pub mod raw_kafka;
pub mod reference;

use std::io::IsTerminal;
use std::time::Duration;

use horizons_bus::Topic;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::backend::{self, BackendKind};
use crate::config::Config;
use crate::error::AppError;

/// `horizons bench`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Message-bus throughput and latency on one backend.
    Bus(BenchBusArgs),
    /// The comment pipeline's API under a fixed request rate: POST latency and comment →
    /// searchable latency.
    Api(api::BenchApiArgs),
    /// The job system: no-op jobs per second and queue latency.
    Jobs(jobs::BenchJobsArgs),
    /// The ngVLA stages on one data set: MB/s per stage and per core, and our dirty-image
    /// gridder side by side with ducc0's.
    Pipeline(pipeline::BenchPipelineArgs),
}

/// Baselines a bench can compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    /// The bare minimum: for embedded, fdatasync'd appends of the same records to a plain file;
    /// for kafka, bare rdkafka with the adapter's settings ([`raw_kafka`]).
    Raw,
}

/// `horizons bench bus`.
#[derive(Debug, clap::Args)]
pub struct BenchBusArgs {
    /// Backend to measure; defaults to `bus.backend` from the configuration (embedded).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Messages to send.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Payload size in bytes (at least 16: sequence number and send stamp).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Also measure this baseline in the same run and print the ratio.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineKind>,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Messages per publish call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batches in flight per producer.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Members of the consumer group.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Deliveries each member holds unacknowledged.
    #[arg(long, default_value_t = 4096)]
    pub prefetch: usize,
    /// `--backend amqp --baseline raw`: bare lapin acks every Nth delivery of its channel with
    /// `multiple` (and the last one); 1, the default, acks each delivery on its own, as a lapin
    /// consumer and PerfTest do by default. The adapter batches its acks either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65_535))]
    pub raw_ack_every: u64,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Backend measured.
    pub backend: String,
    /// Messages sent.
    pub messages: u64,
    /// Payload size.
    pub size: usize,
    /// Publish throughput.
    pub publish_msgs_per_sec: f64,
    /// Consume throughput.
    pub consume_msgs_per_sec: f64,
    /// End-to-end throughput.
    pub end_to_end_msgs_per_sec: f64,
    /// End-to-end payload MB/s.
    pub mb_per_sec: f64,
    /// Latency percentiles in ms.
    pub latency_ms: Latency,
    /// The baseline, if asked for.
    pub baseline: Option<Baseline>,
    /// Ours over the baseline, if asked for.
    pub ratio: Option<f64>,
    /// Kafka only: bare rdkafka again, writing the records the adapter writes (payload and
    /// `hz` header), so the header's own cost shows apart from the adapter's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_same_records: Option<Baseline>,
    /// Ours over [`Report::baseline_same_records`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_same_records: Option<f64>,
}

/// Latency percentiles.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

/// A baseline's figures.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Which baseline.
    pub name: &'static str,
    /// Messages (records) per second.
    pub msgs_per_sec: f64,
    /// Payload MB/s.
    pub mb_per_sec: f64,
}

/// A fresh temporary directory for one run, under `--data-dir` when given, else the system
/// temp dir; removed when dropped.
fn fresh_dir(cfg: &Config, data_dir_given: bool, prefix: &str) -> Result<tempfile::TempDir, AppError> {
    let base = if data_dir_given { cfg.data_dir.clone() } else { std::env::temp_dir() };
    std::fs::create_dir_all(&base).map_err(AppError::io(format!("creating {}", base.display())))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(AppError::io(format!("creating a temporary directory in {}", base.display())))
}

/// Runs a bench command. `cfg.data_dir` is where the temporary directory goes when
/// `--data-dir` was given.
pub async fn run(mut cfg: Config, data_dir_given: bool, command: BenchCommand) -> Result<(), AppError> {
    let args = match command {
        BenchCommand::Bus(args) => args,
        BenchCommand::Api(args) => {
            let tmp = fresh_dir(&cfg, data_dir_given, "horizons-bench-api-")?;
            cfg.data_dir = tmp.path().to_path_buf();
            cfg.bus.embedded.data_dir = None;
            cfg.portal.database_url = Default::default();
            cfg.portal.search_dir = None;
            cfg.portal.mail_batch_window = Duration::from_secs(1);
            return api::run(cfg, args).await;
        }
        BenchCommand::Jobs(args) => {
            let tmp = fresh_dir(&cfg, data_dir_given, "horizons-bench-jobs-")?;
            cfg.data_dir = tmp.path().to_path_buf();
            cfg.bus.embedded.data_dir = None;
            cfg.portal.database_url = Default::default();
            if let Some(b) = args.backend {
                cfg.bus.backend = b;
            }
            // A fresh namespace per run on a broker, whose queues expire after an hour.
            cfg.portal.namespace = format!("bench{}.", &horizons_bus::MessageId::new().0.simple().to_string()[20..]);
            cfg.bus.amqp.queue_expires.get_or_insert(Duration::from_secs(3600));
            return jobs::run(cfg, args).await;
        }
        BenchCommand::Pipeline(args) => return pipeline::run(args).await,
    };
    if args.size < 16 {
        return Err(AppError::Usage("--size must be at least 16 (sequence number and send stamp)".into()));
    }
    if args.messages == 0 {
        return Err(AppError::Usage("--messages must be at least 1".into()));
    }
    if let Some(b) = args.backend {
        cfg.bus.backend = b;
    }
    let tmp = fresh_dir(&cfg, data_dir_given, "horizons-bench-")?;
    cfg.data_dir = tmp.path().to_path_buf();
    cfg.bus.embedded.data_dir = Some(tmp.path().join("bus"));
    let commits = commits::CommitCounter::install();
    // Bench queues on RabbitMQ are deleted at the end of the run, and by themselves an hour
    // after a run that did not get there.
    cfg.bus.amqp.queue_expires.get_or_insert(Duration::from_secs(3600));
    let backend = backend::open(&cfg)?;
    // A broker keeps topics between runs: each run gets a fresh one there.
    let topic = match cfg.bus.backend {
        BackendKind::Embedded => Topic::new("bench"),
        _ => Topic::new(format!("bench-{}", tmp.path().file_name().map_or("run".into(), |n| n.to_string_lossy()))),
    }
    .expect("valid name");
    let load = load::Load {
        messages: args.messages,
        size: args.size,
        producers: args.producers.max(1),
        batch: args.batch.max(1),
        in_flight: args.in_flight.max(1),
        consumers: args.consumers.max(1),
        prefetch: args.prefetch.max(1),
    };

    let bar = progress_bar(args.messages, args.json);
    let commits_before = commits.as_ref().map_or(0, |c| c.get());
    let measured = load::run(backend.clone(), &topic, &load, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let commits_made = commits.as_ref().map(|c| c.get() - commits_before);
    let closed = backend.close().await.map_err(AppError::bus("closing the bench bus"));
    let m = measured?;
    closed?;

    let n = args.messages as f64;
    let per_sec = |d: Duration| n / d.as_secs_f64().max(1e-9);
    let e2e = per_sec(m.end_to_end);
    let mut report = Report {
        backend: backend.name().to_string(),
        messages: args.messages,
        size: args.size,
        publish_msgs_per_sec: per_sec(m.publish),
        consume_msgs_per_sec: if m.consume.is_zero() { e2e } else { per_sec(m.consume) },
        end_to_end_msgs_per_sec: e2e,
        mb_per_sec: e2e * args.size as f64 / 1e6,
        latency_ms: Latency {
            p50: m.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
            p99: m.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        },
        baseline: None,
        ratio: None,
        baseline_same_records: None,
        ratio_same_records: None,
    };
    // The engine's commit size, for the baseline's cadence; one sync per batch if unknown.
    let per_sync = match commits_made {
        Some(c) if c > 0 => args.messages.div_ceil(c),
        _ => args.batch as u64,
    };
    let mut raw_detail = None;
    let mut kafka_detail = None;
    let mut amqp_detail = None;
    if args.baseline == Some(BaselineKind::Raw) && cfg.bus.backend == BackendKind::Amqp {
        let r = raw_amqp::run(&cfg.bus.amqp, &load, args.raw_ack_every).await?;
        report.ratio = Some(report.end_to_end_msgs_per_sec / r.end_to_end_msgs_per_sec.max(1e-12));
        report.baseline =
            Some(Baseline { name: "raw-lapin", msgs_per_sec: r.end_to_end_msgs_per_sec, mb_per_sec: r.mb_per_sec });
        amqp_detail = Some(r);
    } else if args.baseline == Some(BaselineKind::Raw) && cfg.bus.backend == BackendKind::Kafka {
        let r = raw_kafka::run(&cfg.bus.kafka, &load, raw_kafka::Records::PayloadOnly).await?;
        report.ratio = Some(report.end_to_end_msgs_per_sec / r.end_to_end_msgs_per_sec.max(1e-12));
        report.baseline =
            Some(Baseline { name: "raw-rdkafka", msgs_per_sec: r.end_to_end_msgs_per_sec, mb_per_sec: r.mb_per_sec });
        let h = raw_kafka::run(&cfg.bus.kafka, &load, raw_kafka::Records::WithHeader).await?;
        report.ratio_same_records = Some(report.end_to_end_msgs_per_sec / h.end_to_end_msgs_per_sec.max(1e-12));
        report.baseline_same_records = Some(Baseline {
            name: "raw-rdkafka-hz-header",
            msgs_per_sec: h.end_to_end_msgs_per_sec,
            mb_per_sec: h.mb_per_sec,
        });
        kafka_detail = Some((r, h));
    } else if args.baseline == Some(BaselineKind::Raw) {
        let (dir, topic, size, msgs) = (tmp.path().to_path_buf(), topic.clone(), args.size, args.messages);
        let r = tokio::task::spawn_blocking(move || raw::run(&dir, &topic, msgs, size, per_sync))
            .await
            .map_err(|e| AppError::Task(format!("raw baseline: {e}")))?
            .map_err(AppError::io("running the raw fdatasync baseline"))?;
        report.ratio = Some(report.mb_per_sec / r.mb_per_sec.max(1e-12));
        report.baseline = Some(Baseline { name: "raw", msgs_per_sec: r.msgs_per_sec, mb_per_sec: r.mb_per_sec });
        raw_detail = Some(r);
    }
    drop(tmp);
    match cfg.bus.backend {
        BackendKind::Kafka => raw_kafka::cleanup(&cfg.bus.kafka, &topic).await,
        BackendKind::Amqp => raw_amqp::cleanup(&cfg.bus.amqp, load::spec(&topic)).await,
        _ => {}
    }

    if args.json {
        let json = serde_json::to_string(&report).expect("report serialises");
        return crate::bus::println_flush(json);
    }
    let mut text = format!(
        "backend {}: {} messages of {} B; {} producers x batch {} x {} in flight; {} consumers x prefetch {}\n\
         publish      {:>12.0} msg/s\n\
         consume      {:>12.0} msg/s\n\
         end-to-end   {:>12.0} msg/s  {:.1} MB/s payload\n\
         latency      p50 {:.2} ms  p99 {:.2} ms\n",
        report.backend,
        args.messages,
        args.size,
        load.producers,
        load.batch,
        load.in_flight,
        load.consumers,
        load.prefetch,
        report.publish_msgs_per_sec,
        report.consume_msgs_per_sec,
        report.end_to_end_msgs_per_sec,
        report.mb_per_sec,
        report.latency_ms.p50,
        report.latency_ms.p99,
    );
    if let Some(c) = commits_made.filter(|_| cfg.bus.backend == BackendKind::Embedded) {
        text += &format!("commits      {c} fsyncs, {per_sync} records each on average\n");
    }
    if m.duplicates > 0 || m.corrupt > 0 {
        text += &format!("WARNING      {} duplicate and {} corrupt deliveries\n", m.duplicates, m.corrupt);
    }
    if let (Some(b), Some(r), Some(ratio)) = (&report.baseline, &raw_detail, report.ratio) {
        text += &format!(
            "baseline raw {:>12.0} records/s  {:.1} MB/s payload ({:.1} MB/s on disk, {} fdatasyncs of {} records)\n\
             ratio        {:.3} (end-to-end MB/s / raw MB/s)\n",
            b.msgs_per_sec, b.mb_per_sec, r.disk_mb_per_sec, r.syncs, per_sync, ratio
        );
    }
    if let (Some(r), Some(ratio)) = (&amqp_detail, report.ratio) {
        text += &format!(
            "baseline raw lapin (acks every {}): publish {:.0} msg/s, consume {:.0} msg/s, end-to-end {:.0} msg/s {:.1} MB/s payload\n\
             ratio        {:.3} (end-to-end msg/s / bare lapin end-to-end msg/s)\n",
            args.raw_ack_every, r.publish_msgs_per_sec, r.consume_msgs_per_sec, r.end_to_end_msgs_per_sec, r.mb_per_sec, ratio
        );
    }
    if let (Some((r, h)), Some(ratio), Some(ratio_h)) = (&kafka_detail, report.ratio, report.ratio_same_records) {
        text += &format!(
            "baseline raw rdkafka: publish {:.0} msg/s, consume {:.0} msg/s, end-to-end {:.0} msg/s {:.1} MB/s payload\n\
             ratio        {:.3} (end-to-end msg/s / bare rdkafka end-to-end msg/s)\n\
             baseline raw rdkafka, same records (payload + {}-byte hz header, read back): publish {:.0} msg/s, consume {:.0} msg/s, end-to-end {:.0} msg/s\n\
             ratio        {:.3} (end-to-end msg/s / bare rdkafka with the same records)\n",
            r.publish_msgs_per_sec,
            r.consume_msgs_per_sec,
            r.end_to_end_msgs_per_sec,
            r.mb_per_sec,
            ratio,
            horizons_kafka::codec::HZ_LEN,
            h.publish_msgs_per_sec,
            h.consume_msgs_per_sec,
            h.end_to_end_msgs_per_sec,
            ratio_h
        );
    }
    print!("{text}");
    if m.corrupt > 0 {
        return Err(AppError::Bench(format!("{} corrupt payloads", m.corrupt)));
    }
    Ok(())
}

/// A bar on stderr, hidden unless both stderr and stdout are terminals and text output is on.
fn progress_bar(len: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} consumed ({per_sec}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_baseline_writes_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = raw::run(dir.path(), &Topic::new("t").unwrap(), 1000, 100, 300).unwrap();
        assert_eq!(r.syncs, 4);
        assert!(r.msgs_per_sec > 0.0 && r.disk_mb_per_sec > r.mb_per_sec, "{r:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
