//! Measures comment → searchable latency: `upsert` + `commit` (commit + reader reload), until a
//! search finds the comment.
//!
//! ```text
//! cargo run --release -p horizons-search --example commit_latency -- [N] [DIR]
//! ```
//!
//! Three runs on fresh indexes in DIR (default: a temporary directory; pick one on the disk
//! the service will use, since commit time is mostly fsync):
//! 1. one comment at a time, a commit after each (the consumer's worst case);
//! 2. batches of 50, one commit per batch (the consumer under load);
//! 3. 4 threads each doing upsert + commit, so group commit can merge their commits.
//!
//! Prints numbers only; it asserts nothing about timing.
//!
//! Measured on the 2-core dev VM (ext4, release build, N=500), when a 4 KiB write+fsync took
//! 0.3 ms: single commit (commit + reload) p50 11-15 ms, p99 29-37 ms; a batch of 50 commits in
//! 26-41 ms (~0.5-0.8 ms per comment, ~1300-1800 docs/s); 4 threads of upsert + commit: ~3
//! writes per actual commit, p99 62-81 ms. While other builds loaded the disk (fsync 4-6 ms)
//! the single-commit p50 was 57-68 ms and p99 220-260 ms: commit time is mostly fsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_search::{CommentDoc, SearchIndex};

fn comment(i: usize) -> CommentDoc {
    CommentDoc {
        id: format!("c{i}"),
        post_id: format!("p{}", i % 97),
        author: format!("observer {}", i % 13),
        body: format!(
            "Comment {i}: the baseline calibration on antenna {} drifted during the \
             night; the flux of 3C {} looks low after flagging RFI near 1420 MHz.",
            i % 27,
            i % 400
        ),
        created_at_ms: 1_700_000_000_000 + i as i64,
    }
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<44} n={:<5} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(*samples.last().unwrap()),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let base = match args.next() {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir))?,
        None => tempfile::tempdir()?,
    };
    println!("index dirs under {}", base.path().display());

    // 1. One at a time: upsert, commit, search finds it.
    let index = SearchIndex::open(&base.path().join("single"))?;
    let mut visible = Vec::with_capacity(n);
    let mut commits = Vec::with_capacity(n);
    for i in 0..n {
        let doc = comment(i);
        let t0 = Instant::now();
        index.upsert(&doc)?;
        let t1 = Instant::now();
        index.commit()?;
        commits.push(t1.elapsed());
        let found = index.search(&format!("id:{}", doc.id), 1, 1)?;
        assert_eq!(found.total, 1, "{} not visible after commit", doc.id);
        visible.push(t0.elapsed());
    }
    summary("single: commit() (commit + reload)", commits);
    summary("single: upsert -> commit -> found by search", visible);
    let t = Instant::now();
    let page = index.search("calibration flux", 1, 20)?;
    println!(
        "search 'calibration flux' over {} docs: {} hits, {:.2} ms",
        index.count()?,
        page.total,
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(index);

    // 2. Batches of 50, one commit each.
    let index = SearchIndex::open(&base.path().join("batched"))?;
    let mut batch_commits = Vec::new();
    let mut per_doc = Vec::new();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let t0 = Instant::now();
        for &i in chunk {
            index.upsert(&comment(i))?;
        }
        let t1 = Instant::now();
        index.commit()?;
        batch_commits.push(t1.elapsed());
        per_doc.push(t0.elapsed() / chunk.len() as u32);
    }
    let total = started.elapsed();
    summary("batch of 50: commit() (commit + reload)", batch_commits);
    summary("batch of 50: whole batch / docs in it", per_doc);
    println!(
        "batch of 50: {n} docs in {:.1} ms = {:.0} docs/s",
        total.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64()
    );
    drop(index);

    // 3. Four writers, each upsert + commit: group commit shares commits between them.
    let index = Arc::new(SearchIndex::open(&base.path().join("concurrent"))?);
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut lat = Vec::new();
                for i in (t..n).step_by(4) {
                    let t0 = Instant::now();
                    index.upsert(&comment(i)).map_err(|e| e.to_string())?;
                    index.commit().map_err(|e| e.to_string())?;
                    lat.push(t0.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "writer thread panicked")??);
    }
    let total = started.elapsed();
    summary("4 threads: upsert + commit (visible)", lat);
    println!(
        "4 threads: {n} docs in {:.1} ms = {:.0} docs/s, {} commits for {n} commit() calls, count={}",
        total.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64(),
        index.commits(),
        index.count()?
    );
    Ok(())
}
