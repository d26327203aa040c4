//! `horizons bench api`: the comment pipeline under a fixed request rate.
//!
//! Starts the whole of `horizons up` in this process on a fresh data dir (embedded bus and
//! SQLite unless the configuration says otherwise), then drives `POST /api/posts/{id}/comments`
//! over real HTTP at `--rate` requests per second for `--seconds`, open loop (requests are sent
//! on schedule whether or not earlier ones finished, so a slow server shows as latency, not as
//! a lower rate). Reported:
//!
//! - POST latency p50/p99/max (send → response), and how many requests failed;
//! - comment → searchable p50/p99: for every `--sample`-th comment, from sending the POST to the
//!   first search-index commit after which the index finds the comment's unique word (the
//!   index the API's `/api/search` reads; checked after every commit, so the resolution is the
//!   commit cadence plus 1 ms).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use horizons_api::ApiState;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::AppError;
use crate::portal::{self, Parts, Roles};

/// `horizons bench api`.
#[derive(Debug, clap::Args)]
pub struct BenchApiArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// How long to send.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Measure comment → searchable for every n-th comment.
    #[arg(long, default_value_t = 10)]
    pub sample: u64,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
pub struct ApiReport {
    /// Target rate.
    pub rate: u32,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered 201.
    pub ok: u64,
    /// Requests that failed (any other answer or a transport error).
    pub failed: u64,
    /// Achieved request rate.
    pub achieved_rate: f64,
    /// POST latency, ms.
    pub post_ms: Percentiles,
    /// Comment → searchable, ms.
    pub searchable_ms: Percentiles,
    /// Sampled comments never seen in the index before the end.
    pub never_searchable: u64,
}

/// Percentiles in ms.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
        count: h.len(),
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs the benchmark in `cfg.data_dir` (a fresh temporary directory chosen by the caller).
pub async fn run(cfg: Config, args: BenchApiArgs) -> Result<(), AppError> {
    if args.rate == 0 || args.seconds == 0 || args.sample == 0 {
        return Err(AppError::Usage("--rate, --seconds and --sample must be at least 1".into()));
    }
    let cancel = CancellationToken::new();
    let parts = Parts::open(&cfg).await?;
    let backend = crate::backend::open(&cfg)?;
    backend.declare(&parts.topology()).await.map_err(AppError::bus("declaring the pipeline's topics"))?;
    let bg = crate::background::Background::start(cfg.portal.worker_nice)?;
    let index = bg.open_search(&parts)?;
    let (live, _) = broadcast::channel(1024);
    let mut state = ApiState::new(backend.clone(), None);
    state.portal = Some(parts.portal(Some(index.clone()), live.clone()));
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(AppError::io("binding a port for the bench"))?;
    let addr = listener.local_addr().map_err(AppError::io("reading the bench address"))?;
    let server =
        tokio::spawn(horizons_api::serve(listener, horizons_api::router(state), cancel.clone().cancelled_owned()));
    let mut workers = JoinSet::new();
    bg.enter(|| {
        portal::spawn(&parts, backend.clone(), &Roles::all(), Some(index.clone()), live, &mut workers, &cancel)
    })?;

    let tokens = horizons_api::portal::TokenKeys::new(&portal::secrets::jwt_secret(&cfg)?)
        .map_err(|e| AppError::ConfigInvalid(format!("portal.jwt_secret: {e}")))?;
    let issue = |u: &str| {
        tokens
            .issue(u, horizons_comments::Role::User, &format!("{u}@localhost"), Duration::from_secs(3600))
            .map_err(AppError::Bench)
    };
    let (alice, bob) = (issue("alice")?, issue("bob")?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| AppError::Bench(format!("HTTP client: {e}")))?;
    let post: serde_json::Value = http
        .post(format!("http://{addr}/api/posts"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"title": "bench", "body": "the post the bench comments on"}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| AppError::Bench(format!("creating the bench post: {e}")))?
        .json()
        .await
        .map_err(|e| AppError::Bench(format!("reading the bench post: {e}")))?;
    let url = format!("http://{addr}/api/posts/{}/comments", post["id"].as_str().unwrap_or_default());

    // Sampled comments waiting to become searchable: unique word → send time.
    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let searchable = Arc::new(Mutex::new(hist()));
    let watch_stop = CancellationToken::new();
    let watcher = {
        let (pending, searchable, index, stop) =
            (pending.clone(), searchable.clone(), index.clone(), watch_stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut seen_commits = index.commits();
            while !stop.is_cancelled() || !pending.lock().is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                let c = index.commits();
                if c == seen_commits {
                    continue;
                }
                seen_commits = c;
                let words: Vec<(String, Instant)> = pending.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
                for (word, sent) in words {
                    if index.search(&word, 1, 1).is_ok_and(|p| p.total > 0) {
                        pending.lock().remove(&word);
                        let _ = searchable.lock().record(sent.elapsed().as_micros().max(1) as u64);
                    }
                }
                if stop.is_cancelled() && pending.lock().is_empty() {
                    break;
                }
            }
        })
    };

    let total = u64::from(args.rate) * args.seconds;
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests ({per_sec}, eta {eta})").expect("valid template"),
    );
    let post_hist = Arc::new(Mutex::new(hist()));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut requests = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let word = format!("bm{i}x");
        let (http, url, bob, post_hist, failed, pending, bar) =
            (http.clone(), url.clone(), bob.clone(), post_hist.clone(), failed.clone(), pending.clone(), bar.clone());
        let sampled = i % args.sample == 0;
        requests.spawn(async move {
            let body = serde_json::json!({"body": format!("bench comment {word} on the calibration of antenna gains")});
            let t = Instant::now();
            if sampled {
                pending.lock().insert(word.clone(), t);
            }
            let r = http.post(&url).bearer_auth(&bob).json(&body).send().await;
            let us = t.elapsed().as_micros().max(1) as u64;
            match r {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    let _ = post_hist.lock().record(us);
                }
                _ => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    pending.lock().remove(&word);
                }
            }
            bar.inc(1);
        });
        while let Some(r) = requests.try_join_next() {
            r.map_err(|e| AppError::Task(e.to_string()))?;
        }
    }
    while let Some(r) = requests.join_next().await {
        r.map_err(|e| AppError::Task(e.to_string()))?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    // Give the last sampled comments up to 30 s to become searchable.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.lock().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let never = pending.lock().len() as u64;
    pending.lock().clear();
    watch_stop.cancel();
    let _ = watcher.await;
    cancel.cancel();
    let _ = server.await;
    let worked = portal::commands::supervise(&mut workers, &cancel).await;
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    parts.store.close().await;
    // After `close`: the backend's tasks started by the workers run on their runtime.
    drop(bg);
    closed?;
    worked?;

    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    let report = ApiReport {
        rate: args.rate,
        sent: total,
        ok: total - failed,
        failed,
        achieved_rate: total as f64 / elapsed.as_secs_f64(),
        post_ms: percentiles(&post_hist.lock()),
        searchable_ms: percentiles(&searchable.lock()),
        never_searchable: never,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("report serialises"));
    } else {
        let p = &report.post_ms;
        let s = &report.searchable_ms;
        println!(
            "bench api ({} bus): {} POST /api/posts/{{id}}/comments at {} req/s target, {:.0} req/s achieved, {} failed",
            backend.name(),
            report.sent,
            report.rate,
            report.achieved_rate,
            report.failed
        );
        println!("POST latency        p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms", p.p50, p.p99, p.max);
        println!(
            "comment→searchable  p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms  ({} sampled, {} never seen)",
            s.p50, s.p99, s.max, s.count, report.never_searchable
        );
    }
    Ok(())
}
