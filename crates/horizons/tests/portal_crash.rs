//! Crashes in the comment pipeline lose nothing and duplicate nothing.
//!
//! - A worker process killed with SIGKILL in the middle of a burst of 5 000 comments (RabbitMQ +
//!   PostgreSQL, API and relay in a `serve` process, every worker role in a `worker` process):
//!   after a restart, every comment is indexed, audited and notified exactly once.
//! - The process killed between the domain write and the publish (a failpoint aborts the relay
//!   just before it publishes): after a restart every event is on the bus exactly once, and a
//!   rejected write left no event behind.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Row;
use support::{eventually, Deployment};

const BURST: usize = 5_000;

async fn count(db: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(db).await.map(|r| r.get::<i64, _>(0)).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_burst_leaves_every_comment_indexed_audited_and_notified_once() {
    let d = Deployment::amqp_postgres().await;
    // The worker takes the search index's single writer lock first; `serve` then serves without it.
    let mut worker = d.worker("all");
    let lock = d.dir().join("search").join(".tantivy-writer.lock");
    eventually(60, "the worker to open the search index", || {
        let lock = lock.clone();
        async move { lock.exists().then_some(()) }
    })
    .await;
    let server = d.start(&["serve"], &[]);
    let http = reqwest::Client::new();
    let (alice, bob) = (d.token("alice", "user"), d.token("bob", "user"));
    let post: Value = http
        .post(server.url("/api/posts"))
        .bearer_auth(&alice)
        .json(&json!({"title": "burst", "body": "a post that gets many comments"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = server.url(&format!("/api/posts/{}/comments", post["id"].as_str().unwrap()));

    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, url, bob, done, next) = (http.clone(), url.clone(), bob.clone(), done.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= BURST {
                    return;
                }
                let body = json!({"body": format!("burstword comment number {i} about pulsar timing")});
                let r = http.post(&url).bearer_auth(&bob).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // SIGKILL the worker a third of the way in, and start a new one.
    eventually(300, "a third of the burst", || {
        let done = done.clone();
        async move { (done.load(Ordering::Relaxed) >= BURST / 3).then_some(()) }
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let mut worker = d.worker("all");
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }

    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&d.database_url()).await.unwrap();
    let n = BURST as i64;
    let audited = "SELECT COUNT(*) FROM audit_log WHERE record LIKE '%\"action\":\"CommentCreated\"%'";
    let notified = "SELECT COUNT(*) FROM notifications WHERE kind = 'comment_on_post'";
    let indexed = "SELECT COUNT(*) FROM search_state WHERE indexed = 1";
    let unsent = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL";
    eventually(300, "every comment to be audited, notified and indexed", || {
        let db = db.clone();
        async move {
            let got = (count(&db, audited).await, count(&db, notified).await, count(&db, indexed).await);
            (got.0 >= n && got.1 >= n && got.2 >= n).then_some(())
        }
    })
    .await;
    // Let any duplicate that is still on its way arrive before counting exactly.
    eventually(60, "the outbox to drain", || {
        let db = db.clone();
        async move { (count(&db, unsent).await == 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&db, audited).await, n, "audit records of CommentCreated");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM comments").await, n);
    assert_eq!(count(&db, notified).await, n, "notifications");
    assert_eq!(count(&db, indexed).await, n, "comments indexed");
    let ok = d.run(&["audit", "verify"]);
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));

    // The index itself holds each comment once, as `serve` (reading the worker's index
    // read-only) answers.
    let url = server.url("/api/search?q=burstword&per_page=1");
    let v = eventually(30, "serve's read-only index to catch up", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (v["total"].as_u64() == Some(BURST as u64)).then_some(v)
        }
    })
    .await;
    assert_eq!(v["total"].as_u64(), Some(BURST as u64), "{v}");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    assert!(worker.wait().unwrap().success());
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    db.close().await;
}

/// Message ids on `topic`, read from the beginning by a fresh group (embedded bus).
fn ids_on(d: &Deployment, topic: &str) -> HashMap<String, usize> {
    let out = d.run(&[
        "bus",
        "consume",
        "--topic",
        topic,
        "--group",
        "outbox-check",
        "--from-beginning",
        "--until-idle",
        "2s",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ids = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        *ids.entry(v["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_write_and_the_publish_publishes_every_event_once() {
    let d = Deployment::embedded();
    let http = reqwest::Client::new();
    let (alice, bob) = (d.token("alice", "user"), d.token("bob", "user"));
    let server = d.start(&["up"], &[]);
    let post: Value = http
        .post(server.url("/api/posts"))
        .bearer_auth(&alice)
        .json(&json!({"title": "outbox", "body": "crash test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post_id = post["id"].as_str().unwrap().to_string();
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");

    // The relay aborts the process just before its first publish.
    let mut crashing = d.start(&["up"], &[("HORIZONS_FAILPOINT", "relay-before-publish")]);
    let url = crashing.url(&format!("/api/posts/{post_id}/comments"));
    let _ = http.post(&url).bearer_auth(&bob).json(&json!({"body": "written, then the process dies"})).send().await;
    let status = tokio::task::spawn_blocking(move || crashing.child.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the failpoint should have crashed the process");

    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&d.database_url()).await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM comments").await, 1, "the write committed");
    let events: Vec<(String, String)> = sqlx::query("SELECT id, topic FROM outbox WHERE sent_at IS NULL")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(events.len(), 2, "CommentCreated and NotificationRequested, unsent: {events:?}");

    // Restart: the relay publishes them; a rejected write adds no event.
    let server = d.start(&["up"], &[]);
    let r = http
        .post(server.url("/api/posts/no-such-post/comments"))
        .bearer_auth(&bob)
        .json(&json!({"body": "to nowhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    eventually(30, "the outbox to drain", || {
        let db = db.clone();
        async move { (count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await == 0).then_some(()) }
    })
    .await;
    eventually(30, "the notification", || {
        let db = db.clone();
        async move { (count(&db, "SELECT COUNT(*) FROM notifications").await == 1).then_some(()) }
    })
    .await;
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 3, "the 404 wrote no event (2 + the audit's own)");
    db.close().await;

    let comments = ids_on(&d, "comments");
    let notifications = ids_on(&d, "notifications");
    for (id, topic) in &events {
        let seen = if topic == "comments" { &comments } else { &notifications };
        assert_eq!(seen.get(id), Some(&1), "event {id} on {topic}: {seen:?}");
    }
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(notifications.len(), 1, "{notifications:?}");
}
