//! The job system across processes on RabbitMQ + PostgreSQL: three worker processes, one killed
//! with SIGKILL in the middle of a job; its job runs again on another worker once the lease
//! expires, and every job succeeds exactly once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use support::{eventually, Deployment};

const JOBS: usize = 24;

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_has_its_job_rerun_elsewhere_and_every_job_succeeds_once() {
    let d = Deployment::amqp_postgres().await;
    d.append_config("[portal]\njobs_lease = \"3s\"\n");
    let mut workers = vec![
        d.command(&["worker", "--role", "jobs", "--concurrency", "2", "--relay"]).spawn().unwrap(),
        d.command(&["worker", "--role", "jobs", "--concurrency", "2"]).spawn().unwrap(),
        d.command(&["worker", "--role", "jobs", "--concurrency", "2"]).spawn().unwrap(),
    ];
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let out = d.run(&["jobs", "submit", "--kind", "demo.sleep", "--args", "{\"ms\": 700}", "--max-attempts", "3"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }

    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&d.database_url()).await.unwrap();
    // Kill the worker that is running a job right now.
    let victim = eventually(60, "a job to be running", || {
        let db = db.clone();
        async move {
            let r = sqlx::query("SELECT worker, job_id FROM job_attempts WHERE finished_at IS NULL LIMIT 1")
                .fetch_optional(&db)
                .await
                .ok()??;
            Some((r.get::<String, _>(0), r.get::<String, _>(1)))
        }
    })
    .await;
    let pid: u32 = victim.0.rsplit('-').next().unwrap().parse().unwrap();
    let i = workers.iter().position(|w| w.id() == pid).expect("the running worker is one of ours");
    let mut killed = workers.remove(i);
    killed.kill().unwrap();
    killed.wait().unwrap();
    if i == 0 {
        // The relay ran there; start another one.
        workers.push(d.command(&["worker", "--role", "jobs", "--concurrency", "2", "--relay"]).spawn().unwrap());
    }

    eventually(180, "every job to succeed", || {
        let db = db.clone();
        async move {
            let n: i64 =
                sqlx::query("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").fetch_one(&db).await.ok()?.get(0);
            (n == JOBS as i64).then_some(())
        }
    })
    .await;
    let rows = sqlx::query("SELECT job_id, worker, outcome FROM job_attempts").fetch_all(&db).await.unwrap();
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    let mut victim_attempts = Vec::new();
    for r in &rows {
        let (job, worker, outcome): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        if outcome.as_deref() == Some("succeeded") {
            *succeeded.entry(job.clone()).or_default() += 1;
        }
        if job == victim.1 {
            victim_attempts.push((worker, outcome));
        }
    }
    for id in &ids {
        assert_eq!(succeeded.get(id), Some(&1), "job {id} succeeded {:?} times", succeeded.get(id));
    }
    assert!(
        victim_attempts.iter().any(|(w, o)| *w == victim.0 && o.is_none()),
        "the killed attempt stays unfinished: {victim_attempts:?}"
    );
    assert!(
        victim_attempts.iter().any(|(w, o)| *w != victim.0 && o.as_deref() == Some("succeeded")),
        "the job ran again on another worker: {victim_attempts:?}"
    );
    for mut w in workers {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(w.id().to_string()).status();
        let status = w.wait().unwrap();
        assert!(status.success(), "a worker did not stop cleanly");
    }
    db.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
