//! `horizons jobs submit|list|status|cancel|retry|dlq|redrive|watch`: the job system from the shell.
//! Jobs run in `horizons up` or `horizons worker --role jobs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use horizons_jobs::{store, JobContext, JobError, JobKind, JobSpec, JobState, Registry};

use crate::config::Config;
use crate::error::AppError;
use crate::portal::Parts;

/// `horizons jobs …`
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Submits a job; prints it as JSON.
    Submit(SubmitArgs),
    /// Lists jobs, newest first (JSON lines).
    List {
        /// Only jobs in this state (queued, running, retrying, succeeded, dead, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One job with its attempts.
    Status {
        /// The job id.
        id: String,
    },
    /// Cancels a job that has not started.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Runs a dead or cancelled job again with a fresh set of attempts.
    Retry {
        /// The job id.
        id: String,
    },
    /// The dead set (JSON lines).
    Dlq {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Runs every dead job (of a kind) again.
    Redrive {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Follows jobs live. With an id: prints a JSON line at each change of state or attempt
    /// and ends when the job is final (exit status 0 only if it succeeded). Without: a progress
    /// bar of the jobs that were active (queued, running, retrying) when it started, with the
    /// counts by state, until none is active.
    Watch {
        /// One job.
        id: Option<String>,
        /// Only jobs of this kind.
        #[arg(long, conflicts_with = "id")]
        kind: Option<String>,
        /// How often to look, e.g. 250ms.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
    },
}

/// `horizons jobs submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The kind, e.g. audit.verify.
    #[arg(long)]
    pub kind: String,
    /// Arguments as JSON.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Priority 0 (lowest) – 9 (highest).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub priority: i64,
    /// Start no earlier than this many milliseconds from now.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub delay_ms: i64,
    /// Attempts in all.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: i64,
    /// A second submission with this key returns the first job.
    #[arg(long)]
    pub key: Option<String>,
}

fn err(e: horizons_jobs::JobsError) -> AppError {
    match e {
        horizons_jobs::JobsError::Invalid { .. } | horizons_jobs::JobsError::State { .. } => {
            AppError::Usage(e.to_string())
        }
        horizons_jobs::JobsError::NotFound(_) => AppError::Usage(e.to_string()),
        other => AppError::Check(other.to_string()),
    }
}

fn line<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).expect("jobs serialise"));
}

/// Runs a jobs command.
pub async fn run(cfg: Config, c: JobsCommand) -> Result<(), AppError> {
    let parts = Parts::open(&cfg).await?;
    let s = &parts.store;
    let result = async {
        match c {
            JobsCommand::Submit(a) => {
                let args = serde_json::from_str(&a.args).map_err(|e| AppError::Usage(format!("--args: {e}")))?;
                let spec = JobSpec {
                    priority: a.priority,
                    delay_ms: a.delay_ms,
                    max_attempts: a.max_attempts,
                    idempotency_key: a.key,
                    ..JobSpec::new(&a.kind, args)
                };
                let (job, _) = store::submit(s, &parts.jobs, &spec, "cli").await.map_err(err)?;
                line(&job);
            }
            JobsCommand::List { state, kind, limit } => {
                let state = state
                    .map(|st| {
                        JobState::parse(&st).ok_or_else(|| AppError::Usage(format!("--state: unknown state {st:?}")))
                    })
                    .transpose()?;
                for j in store::list(s, state, kind.as_deref(), limit).await.map_err(err)? {
                    line(&j);
                }
            }
            JobsCommand::Status { id } => {
                let job = store::get(s, &id).await.map_err(err)?;
                let attempts = store::attempts(s, &id).await.map_err(err)?;
                line(&serde_json::json!({ "job": job, "attempts": attempts }));
            }
            JobsCommand::Cancel { id } => line(&store::cancel(s, &id).await.map_err(err)?),
            JobsCommand::Retry { id } => line(&store::retry(s, &id).await.map_err(err)?),
            JobsCommand::Dlq { kind } => {
                for j in store::list(s, Some(JobState::Dead), kind.as_deref(), 10_000).await.map_err(err)? {
                    line(&j);
                }
            }
            JobsCommand::Redrive { kind } => {
                let n = store::redrive(s, kind.as_deref()).await.map_err(err)?;
                println!("redriven {n} job(s)");
            }
            JobsCommand::Watch { id: Some(id), every, .. } => watch_one(s, &id, every).await?,
            JobsCommand::Watch { id: None, kind, every } => watch_all(s, kind.as_deref(), every).await?,
        }
        Ok(())
    }
    .await;
    parts.store.close().await;
    result
}

async fn watch_one(s: &horizons_comments::Store, id: &str, every: std::time::Duration) -> Result<(), AppError> {
    let mut seen = None;
    loop {
        let job = store::get(s, id).await.map_err(err)?;
        if seen != Some((job.state, job.attempts)) {
            seen = Some((job.state, job.attempts));
            line(&serde_json::json!({
                "id": job.id, "state": job.state, "attempts": job.attempts, "last_error": job.last_error,
            }));
        }
        match job.state {
            JobState::Succeeded => return Ok(()),
            JobState::Dead | JobState::Cancelled => {
                return Err(AppError::Check(format!("job {id} ended {}", job.state.as_str())))
            }
            _ => tokio::time::sleep(every).await,
        }
    }
}

async fn watch_all(
    s: &horizons_comments::Store,
    kind: Option<&str>,
    every: std::time::Duration,
) -> Result<(), AppError> {
    let active = |counts: &[(String, i64)]| -> u64 {
        counts
            .iter()
            .filter(|(st, _)| JobState::parse(st).is_some_and(|st| !st.is_final()))
            .map(|(_, n)| *n as u64)
            .sum()
    };
    let first = store::counts(s, kind).await.map_err(err)?;
    let at_start = active(&first);
    let bar = indicatif::ProgressBar::new(at_start);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} done ({per_sec}) {msg}")
            .expect("template"),
    );
    bar.set_prefix(format!("jobs{}", kind.map(|k| format!(" {k}")).unwrap_or_default()));
    loop {
        let counts = store::counts(s, kind).await.map_err(err)?;
        let now = active(&counts);
        // Jobs submitted meanwhile lengthen the bar.
        if now > bar.length().unwrap_or(0).saturating_sub(bar.position()) {
            bar.set_length(bar.position() + now);
        }
        bar.set_position(bar.length().unwrap_or(0).saturating_sub(now));
        bar.set_message(counts.iter().map(|(st, n)| format!("{st} {n}")).collect::<Vec<_>>().join(", "));
        if now == 0 {
            bar.finish();
            println!("{}", counts.iter().map(|(st, n)| format!("{st} {n}")).collect::<Vec<_>>().join(", "));
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// The job kinds of this build: [`Registry::standard`] with the real `pipeline.run`, whose
/// products go under `<data_dir>/products/jobs/<job id>` unless the job names `out`, and
/// `notify.digest`, which mails through the portal's mail settings.
pub fn registry(
    data_dir: &Path,
    portal: &crate::portal::config::PortalConfig,
    search_dir: PathBuf,
    search_writer: crate::portal::SearchSlot,
) -> Registry {
    let mut r = Registry::standard();
    r.register(Arc::new(SearchReindex { dir: search_dir, writer: search_writer }));
    r.register(Arc::new(PipelineRun { products: data_dir.join("products").join("jobs") }));
    r.register(Arc::new(Digest {
        smtp_url: portal.smtp_url.clone(),
        from: portal.mail_from.clone(),
        dir: data_dir.join("mail"),
    }));
    r
}

/// `search.reindex {}`: rebuilds the search index from the comments table, as `horizons search
/// reindex`. Tantivy allows one writer per index: a worker whose process holds it (the search
/// role, or `horizons up`) rebuilds through that writer; any other worker opens the index for the
/// job's duration, and if another process holds it the attempt is retried later (run the kind on
/// the search worker with `horizons worker --role search,jobs --kinds search.reindex`).
struct SearchReindex {
    dir: PathBuf,
    writer: crate::portal::SearchSlot,
}

/// How long a reindex waits before trying again for an index another process holds.
const INDEX_BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait]
impl JobKind for SearchReindex {
    fn name(&self) -> &'static str {
        "search.reindex"
    }

    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        horizons_jobs::kinds::parse::<horizons_jobs::kinds::Empty>(args).map(|_| ())
    }

    async fn run(&self, cx: &JobContext, _args: &serde_json::Value) -> Result<(), JobError> {
        let index = match self.writer.get() {
            Some(index) => index,
            None => {
                let dir = self.dir.clone();
                let opened = tokio::task::spawn_blocking(move || horizons_search::SearchIndex::open(&dir))
                    .await
                    .map_err(|e| JobError::Retryable(format!("opening the search index: {e}")))?;
                match opened {
                    Ok(index) => Arc::new(index),
                    Err(e @ horizons_search::SearchError::Locked { .. }) => {
                        return Err(JobError::RetryAfter(
                            INDEX_BUSY_RETRY,
                            format!("{e}; run search.reindex on the search worker"),
                        ))
                    }
                    Err(e) => return Err(JobError::Permanent(e.to_string())),
                }
            }
        };
        let n = horizons_comments::consumers::search::reindex(&cx.store, index, |_| {})
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        tracing::info!(job = %cx.job_id, comments = n, "search index rebuilt");
        Ok(())
    }
}

/// `notify.digest {"days": N}` (1–31, default 7): one e-mail per user who takes e-mail with
/// their unread notifications of the last N days (see `Mailer::digest`); schedule it weekly
/// with `[[portal.schedules]]`.
struct Digest {
    smtp_url: crate::portal::config::Secret,
    from: String,
    dir: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestArgs {
    #[serde(default = "seven")]
    days: i64,
}

fn seven() -> i64 {
    7
}

impl Digest {
    fn args(args: &serde_json::Value) -> Result<DigestArgs, String> {
        let a: DigestArgs = horizons_jobs::kinds::parse(args)?;
        if !(1..=31).contains(&a.days) {
            return Err(format!("args.days: {} is outside 1-31", a.days));
        }
        Ok(a)
    }
}

#[async_trait]
impl JobKind for Digest {
    fn name(&self) -> &'static str {
        "notify.digest"
    }

    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        Self::args(args).map(|_| ())
    }

    async fn run(&self, cx: &JobContext, args: &serde_json::Value) -> Result<(), JobError> {
        use horizons_comments::mail::{Mailer, Transport};
        let a = Self::args(args).map_err(JobError::Permanent)?;
        let transport = Transport::new(Some(self.smtp_url.expose()).filter(|s| !s.is_empty()), self.dir.clone())
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        let mailer = Mailer::new(cx.store.clone(), transport, &self.from, std::time::Duration::from_secs(1))
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        let since = horizons_comments::now_ms() - a.days * 24 * 3600 * 1000;
        let sent = mailer.digest(since, &cx.job_id).await.map_err(|e| JobError::Retryable(e.to_string()))?;
        tracing::info!(job = %cx.job_id, sent, days = a.days, "digest sent");
        Ok(())
    }
}

/// `pipeline.run {"input": FILE, "out": DIR?}`: the whole ngVLA chain on a uvfits file in
/// this worker (as `horizons pipeline run`), products written to `out`. A file that cannot be
/// read or has no usable data fails permanently. It runs on a blocking thread, so a
/// cancellation takes effect only when it returns.
struct PipelineRun {
    products: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineRunArgs {
    input: String,
    #[serde(default)]
    out: Option<String>,
}

impl PipelineRun {
    fn args(args: &serde_json::Value) -> Result<PipelineRunArgs, String> {
        let a: PipelineRunArgs = horizons_jobs::kinds::parse(args)?;
        if a.input.is_empty() {
            return Err("args.input: a uvfits file path is needed".into());
        }
        if a.out.as_deref() == Some("") {
            return Err("args.out: empty".into());
        }
        Ok(a)
    }
}

#[async_trait]
impl JobKind for PipelineRun {
    fn name(&self) -> &'static str {
        "pipeline.run"
    }

    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        Self::args(args).map(|_| ())
    }

    async fn run(&self, cx: &JobContext, args: &serde_json::Value) -> Result<(), JobError> {
        let a = Self::args(args).map_err(JobError::Permanent)?;
        let out = a.out.map(PathBuf::from).unwrap_or_else(|| self.products.join(&cx.job_id));
        let input = PathBuf::from(a.input);
        tokio::task::spawn_blocking(move || {
            let products = horizons_ngvla::pipeline::run_file(&input, &horizons_ngvla::pipeline::Options::default())
                .map_err(|e| JobError::Permanent(format!("{}: {e}", input.display())))?;
            horizons_ngvla::archive::write_delivered(&products, &out)
                .map(drop)
                .map_err(|e| JobError::Retryable(format!("writing products to {}: {e}", out.display())))
        })
        .await
        .map_err(|e| JobError::Retryable(format!("the pipeline thread failed: {e}")))?
    }
}
