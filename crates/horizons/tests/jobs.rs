//! The job system across processes on RabbitMQ + PostgreSQL: three worker processes, one killed
//! with SIGKILL in the middle of a job; its job runs again on another worker once the lease
//! expires and its heartbeat is stale, and every job succeeds exactly once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use support::{eventually, get_json, post_json, Deployment};

const JOBS: usize = 24;

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_has_its_job_rerun_elsewhere_and_every_job_succeeds_once() {
    let d = Deployment::amqp_postgres().await;
    d.append_config("[portal]\njobs_lease = \"3s\"\njobs_heartbeat = \"500ms\"\n");
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
        victim_attempts.iter().any(|(w, o)| *w == victim.0 && o.as_deref() == Some("abandoned")),
        "the killed attempt is recorded as abandoned: {victim_attempts:?}"
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

/// `/api/jobs` through the real server on the embedded default: admin only; bad input is a 400
/// naming the field; a job runs to success; idempotent submission; a failing job ends dead with
/// its errors, shows in the dead set, and a bulk redrive queues it again; cancel and retry
/// answer 409 in the wrong state and 404 for an unknown job.
#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_http_api() {
    let d = Deployment::embedded();
    let server = d.start(&["up"], &[]);
    let http = reqwest::Client::new();
    let (admin, user) = (d.token("ops", "admin"), d.token("bob", "user"));
    let url = |p: &str| server.url(p);

    let r = http.get(url("/api/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(url("/api/jobs")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status(), 403);
    for (body, field) in [
        (serde_json::json!({"kind": "no.such.kind"}), "kind"),
        (serde_json::json!({"kind": "demo.sleep", "args": {"ms": "soon"}}), "args"),
        (serde_json::json!({"kind": "demo.noop", "args": {}, "priority": 12}), "priority"),
        (serde_json::json!({"kind": "demo.noop", "args": {}, "delay_ms": -1}), "delay_ms"),
    ] {
        let r = http.post(url("/api/jobs")).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(field), "{body}: {e}");
    }

    let submit = |body: Value| {
        let (http, admin, u) = (http.clone(), admin.clone(), url("/api/jobs"));
        async move {
            let r = http.post(u).bearer_auth(&admin).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, ok) =
        submit(serde_json::json!({"kind": "demo.noop", "args": {}, "idempotency_key": "nightly-1"})).await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["job"]["owner"], "ops");
    let ok_id = ok["job"]["id"].as_str().unwrap().to_string();
    let (status, again) =
        submit(serde_json::json!({"kind": "demo.noop", "args": {}, "idempotency_key": "nightly-1"})).await;
    assert_eq!(
        (status, again["created"].as_bool(), again["job"]["id"].as_str()),
        (200, Some(false), Some(ok_id.as_str()))
    );

    let (_, bad) = submit(
        serde_json::json!({"kind": "demo.flaky", "args": {"fail_times": 100}, "max_attempts": 2, "backoff_ms": 10}),
    )
    .await;
    let bad_id = bad["job"]["id"].as_str().unwrap().to_string();

    let get = |id: String| {
        let (http, admin, u) = (http.clone(), admin.clone(), url(&format!("/api/jobs/{id}")));
        async move { http.get(u).bearer_auth(&admin).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually(60, "the noop job to succeed", || {
        let g = get(ok_id.clone());
        async move { (g.await["job"]["state"] == "succeeded").then_some(()) }
    })
    .await;
    let detail = eventually(60, "the failing job to end dead", || {
        let g = get(bad_id.clone());
        async move {
            let d = g.await;
            (d["job"]["state"] == "dead").then_some(d)
        }
    })
    .await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert!(attempts.iter().all(|a| a["outcome"] == "failed" && a["error"].is_string()), "{detail}");

    let dead = get_json(&http, &url("/api/jobs/dlq?kind=demo.flaky"), &admin).await;
    assert!(dead.as_array().unwrap().iter().any(|j| j["id"] == bad_id.as_str()), "{dead}");
    let listed = get_json(&http, &url("/api/jobs?state=succeeded&limit=10"), &admin).await;
    assert!(listed.as_array().unwrap().iter().all(|j| j["state"] == "succeeded"), "{listed}");
    assert!(listed.as_array().unwrap().iter().any(|j| j["id"] == ok_id.as_str()), "{listed}");

    // Wrong state, unknown job, bad filter.
    let r = http.post(url(&format!("/api/jobs/{ok_id}/cancel"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = http.post(url(&format!("/api/jobs/{ok_id}/retry"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = http.get(url("/api/jobs/nope")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(url("/api/jobs?state=sleeping")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let r =
        post_json(&http, &url("/api/jobs/dlq/redrive"), &admin, Some(serde_json::json!({"kind": "demo.flaky"}))).await;
    assert_eq!(r["redriven"], 1, "{r}");
    let after = get(bad_id.clone()).await;
    assert_ne!(after["job"]["state"], "dead", "{after}");

    // `jobs watch`: one job followed to its end, then every active job of a kind.
    let (_, slow) = submit(serde_json::json!({"kind": "demo.sleep", "args": {"ms": 400}})).await;
    let slow_id = slow["job"]["id"].as_str().unwrap().to_string();
    let out = d.run(&["jobs", "watch", &slow_id, "--every", "50ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let states: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states.last().map(String::as_str), Some("succeeded"), "{text}");
    assert!(states.iter().any(|s| s == "running"), "watching a 400 ms job every 50 ms sees it running: {text}");
    for _ in 0..3 {
        submit(serde_json::json!({"kind": "demo.sleep", "args": {"ms": 200}})).await;
    }
    let out = d.run(&["jobs", "watch", "--kind", "demo.sleep", "--every", "50ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("succeeded 4"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let (_, doomed) = submit(serde_json::json!({"kind": "pipeline.run", "args": {"input": "x.uvfits"}})).await;
    let out = d.run(&["jobs", "watch", doomed["job"]["id"].as_str().unwrap(), "--every", "50ms"]);
    assert!(!out.status.success(), "watching a job that ends dead fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ended dead"), "{}", String::from_utf8_lossy(&out.stderr));

    // notify.digest: alice's unread notification (bob commented on her post) in one e-mail.
    let alice = d.token("alice", "user");
    let post = post_json(
        &http,
        &url("/api/posts"),
        &alice,
        Some(serde_json::json!({"title": "VLASS epoch 3", "body": "quick-look images"})),
    )
    .await;
    let r = http
        .post(url(&format!("/api/posts/{}/comments", post["id"].as_str().unwrap())))
        .bearer_auth(d.token("bob", "user"))
        .json(&serde_json::json!({"body": "lovely"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let unread = || {
        let (http, alice, u) = (http.clone(), alice.clone(), url("/api/notifications?unread=true"));
        async move { http.get(u).bearer_auth(&alice).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually(30, "alice's notification", || {
        let f = unread();
        async move { f.await.as_array().filter(|a| !a.is_empty()).map(|_| ()) }
    })
    .await;
    let bad = submit(serde_json::json!({"kind": "notify.digest", "args": {"days": 90}})).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    let (_, dg) = submit(serde_json::json!({"kind": "notify.digest", "args": {"days": 7}})).await;
    let dg_id = dg["job"]["id"].as_str().unwrap().to_string();
    eventually(30, "the digest job", || {
        let g = get(dg_id.clone());
        async move { (g.await["job"]["state"] == "succeeded").then_some(()) }
    })
    .await;
    let digest = std::fs::read_to_string(d.dir().join("mail").join(format!("digest-{dg_id}-alice.eml"))).unwrap();
    assert!(digest.contains("digest: 1 unread") && digest.contains("bob commented"), "{digest}");

    // pipeline.run: the real EVLA file through the whole chain in a worker.
    let out = d.dir().join("pipeline-job");
    let (status, pj) = submit(serde_json::json!({
        "kind": "pipeline.run", "args": {"input": support::vla_file(), "out": out}, "timeout_ms": 600000
    }))
    .await;
    assert_eq!(status, 201, "{pj}");
    let pj_id = pj["job"]["id"].as_str().unwrap().to_string();
    let done = eventually(300, "the pipeline job to end", || {
        let g = get(pj_id.clone());
        async move {
            let d = g.await;
            let finished = d["job"]["state"].as_str().is_some_and(|s| ["succeeded", "dead"].contains(&s));
            finished.then_some(d)
        }
    })
    .await;
    assert_eq!(done["job"]["state"], "succeeded", "{done}");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(report["peak"]["value"].as_f64().unwrap() > 0.0, "{report}");

    // Metrics: jobs by kind, priority and state; latency and run time per kind.
    let metrics = eventually(30, "the jobs gauge", || {
        let (http, u) = (http.clone(), url("/metrics"));
        async move {
            let m = http.get(u).send().await.ok()?.text().await.ok()?;
            m.contains("horizons_jobs{kind=\"demo.flaky\",priority=\"4\",state=").then_some(m)
        }
    })
    .await;
    assert!(metrics.contains("horizons_jobs_run_seconds"), "{metrics}");
    assert!(metrics.contains("horizons_jobs_queue_latency_seconds"), "{metrics}");

    // A delayed job can be cancelled before it starts.
    let (_, later) = submit(serde_json::json!({"kind": "demo.noop", "args": {}, "delay_ms": 60000})).await;
    let later_id = later["job"]["id"].as_str().unwrap();
    let r = post_json(&http, &url(&format!("/api/jobs/{later_id}/cancel")), &admin, None).await;
    assert_eq!(r["state"], "cancelled", "{r}");
    server.stop();
}

/// The `total` of a search page at `url` (public route), or `None` if it does not answer.
async fn search_total(http: &reqwest::Client, url: String) -> Option<u64> {
    let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    v["total"].as_u64()
}

/// Runs `horizons up` on `d`, posts three comments with `word` in them as alice, waits until
/// a search for `word` finds all three, and stops it cleanly.
async fn index_three_comments(d: &Deployment, http: &reqwest::Client, word: &str) {
    let alice = d.token("alice", "user");
    let server = d.start(&["up"], &[]);
    let post =
        post_json(http, &server.url("/api/posts"), &alice, Some(serde_json::json!({"title": "t", "body": "b"}))).await;
    let post_id = post["id"].as_str().unwrap_or_else(|| panic!("{post}")).to_string();
    for i in 0..3 {
        let body = serde_json::json!({"body": format!("{word} sighting number {i}")});
        post_json(http, &server.url(&format!("/api/posts/{post_id}/comments")), &alice, Some(body)).await;
    }
    let q = server.url(&format!("/api/search?q={word}"));
    eventually(30, "3 comments searchable", || {
        let s = search_total(http, q.clone());
        async move { (s.await == Some(3)).then_some(()) }
    })
    .await;
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// `search.reindex` rebuilds a lost index: comments indexed, the index directory deleted while
/// `horizons up` is stopped (the restarted indexer has nothing left to replay, so search finds
/// nothing), then the job, submitted over HTTP, makes every visible comment searchable again.
#[tokio::test(flavor = "multi_thread")]
async fn the_search_reindex_job_rebuilds_a_lost_index() {
    let d = Deployment::embedded();
    let http = reqwest::Client::new();
    let admin = d.token("ops", "admin");
    let search = |url: String| search_total(&http, url);
    index_three_comments(&d, &http, "blazar").await;

    std::fs::remove_dir_all(d.dir().join("search")).unwrap();
    let server = d.start(&["up"], &[]);
    let q = server.url("/api/search?q=blazar");
    assert_eq!(
        eventually(30, "search to answer", || search(q.clone())).await,
        0,
        "a deleted index holds nothing before the reindex"
    );

    let job =
        post_json(&http, &server.url("/api/jobs"), &admin, Some(serde_json::json!({"kind": "search.reindex"}))).await;
    let id = job["job"]["id"].as_str().unwrap_or_else(|| panic!("{job}")).to_string();
    let u = server.url(&format!("/api/jobs/{id}"));
    eventually(60, "the reindex job to succeed", || {
        let (http, admin, u) = (http.clone(), admin.clone(), u.clone());
        async move { (get_json(&http, &u, &admin).await["job"]["state"] == "succeeded").then_some(()) }
    })
    .await;
    assert_eq!(search(q.clone()).await, Some(3));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn a_search_index_torn_by_a_machine_restart_is_rebuilt_at_start_up() {
    let d = Deployment::embedded();
    let http = reqwest::Client::new();
    let search = |url: String| search_total(&http, url);
    index_three_comments(&d, &http, "quasar").await;
    let marker = d.dir().join("search").join(horizons_search::durability::MARKER);
    assert!(!marker.exists(), "a clean stop syncs the index and removes its marker");

    // Play a machine that went down while the index held unsynced commits: the marker of
    // another boot. The index files themselves are intact here, so a server that did not
    // check would serve them and this test could not tell; the log line says it did.
    std::fs::write(&marker, "a-boot-before-this-one").unwrap();
    let server = d.start(&["up"], &[]);
    let q = server.url("/api/search?q=quasar");
    assert_eq!(
        eventually(30, "search to answer", || search(q.clone())).await,
        3,
        "the first answer comes from the index rebuilt from the database"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("rebuilding the search index from the database"), "{log}");
}
