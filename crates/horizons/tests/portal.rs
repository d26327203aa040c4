//! The comment pipeline end to end through the real HTTP server, on the embedded default and
//! on RabbitMQ + PostgreSQL: a comment becomes searchable, notifies the post's author in-app
//! (seen on the SSE stream) and by e-mail, lands in the audit log with its sensitive fields
//! encrypted, `horizons audit verify` passes, and fails naming the record once a byte of it
//! is changed in the database.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Row;
use support::{eventually, files, Deployment};

async fn scenario(d: Deployment) {
    let server = d.start(&["up"], &[]);
    let http = reqwest::Client::new();
    let (alice, bob, carol) = (d.token("alice", "user"), d.token("bob", "user"), d.token("carol", "moderator"));

    // Unauthenticated writes are 401, wrong roles 403, bad bodies 400 with a JSON error.
    let r = http.post(server.url("/api/posts")).json(&json!({"title": "t", "body": "b"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("bearer"));
    let r = http.get(server.url("/api/moderation/queue")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http.post(server.url("/api/posts")).bearer_auth(&alice).json(&json!({"title": ""})).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let post: Value = http
        .post(server.url("/api/posts"))
        .bearer_auth(&alice)
        .json(&json!({"title": "3C 286 at L band", "body": "Calibrated image from last night"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post_id = post["id"].as_str().unwrap().to_string();

    // Alice listens for notifications before Bob comments.
    let stream = http.get(server.url("/api/notifications/stream")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();

    let secret_text = "the quasar jet shows superluminal motion";
    let r = http
        .post(server.url(&format!("/api/posts/{post_id}/comments")))
        .bearer_auth(&bob)
        .json(&json!({"body": secret_text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let comment: Value = r.json().await.unwrap();
    let comment_id = comment["id"].as_str().unwrap().to_string();

    // Searchable.
    let url = server.url("/api/search?q=superluminal");
    let hit = eventually(30, "the comment to become searchable", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (v["total"].as_u64() == Some(1)).then_some(v)
        }
    })
    .await;
    assert_eq!(hit["hits"][0]["id"], comment_id.as_str());
    assert!(hit["hits"][0]["snippet"].as_str().unwrap().contains("<mark>superluminal</mark>"));

    // In-app notification pushed over SSE.
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("event: notification") && seen.contains(&comment_id) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "SSE stream so far: {seen}");
    assert!(seen.contains("bob commented on your post"), "{seen}");

    // A browser's EventSource sends no headers: the stream takes `?access_token=` (only it).
    let r = http.get(server.url(&format!("/api/notifications/stream?access_token={alice}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut by_query = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), by_query.next()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(&comment_id), "{}", String::from_utf8_lossy(&first));
    drop(by_query);
    let r = http.get(server.url("/api/notifications/stream?access_token=garbage")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(server.url(&format!("/api/notifications?access_token={alice}"))).send().await.unwrap();
    assert_eq!(r.status(), 401, "only the stream takes a token in the query string");

    // E-mail (file transport) to alice.
    let mail_dir = d.dir().join("mail");
    let mail = eventually(30, "the notification e-mail", || {
        let mail_dir = mail_dir.clone();
        async move {
            files(&mail_dir)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .map(|p| std::fs::read_to_string(p).unwrap())
                .find(|m| m.contains("alice@example.org"))
        }
    })
    .await;
    assert!(mail.contains("bob commented on your post"), "{mail}");

    // The audit log holds the comment with its sensitive fields sealed.
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&d.database_url()).await.unwrap();
    let record = eventually(30, "the audit record of the comment", || {
        let db = db.clone();
        async move {
            let rows = sqlx::query("SELECT seq, record FROM audit_log ORDER BY seq").fetch_all(&db).await.ok()?;
            rows.iter()
                .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
                .find(|(_, rec)| rec.contains("\"action\":\"CommentCreated\""))
        }
    })
    .await;
    let (seq, text) = record;
    assert!(!text.contains("superluminal"), "comment text in clear in the audit log: {text}");
    assert!(!text.contains("bob@example.org"), "e-mail in clear in the audit log: {text}");
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert!(parsed["sealed"]["ct"].as_str().is_some_and(|c| c.len() > 40), "{text}");
    assert_eq!(parsed["actor"], "bob");

    let ok = d.run(&["audit", "verify"]);
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("audit log ok"));

    // Reports reach the moderation queue; a moderator decision hides the comment from search.
    let r = http
        .post(server.url(&format!("/api/comments/{comment_id}/reports")))
        .bearer_auth(&alice)
        .json(&json!({"reason": "off topic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let q: Value =
        http.get(server.url("/api/moderation/queue")).bearer_auth(&carol).send().await.unwrap().json().await.unwrap();
    assert_eq!(q[0]["comment_id"], comment_id.as_str(), "{q}");
    let r = http
        .post(server.url("/api/moderation/decisions"))
        .bearer_auth(&carol)
        .json(&json!({"comment_id": comment_id, "action": "hide", "note": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually(30, "the hidden comment to leave the index", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (v["total"].as_u64() == Some(0)).then_some(())
        }
    })
    .await;

    let (status, stderr) = server.stop();
    assert!(status.success(), "horizons up did not stop cleanly: {stderr}");

    // One byte of the record changed in the database: verify fails naming it.
    let tampered = text.replacen("\"actor\":\"bob\"", "\"actor\":\"bop\"", 1);
    sqlx::query("UPDATE audit_log SET record = $1 WHERE seq = $2")
        .bind(&tampered)
        .bind(seq)
        .execute(&db)
        .await
        .unwrap();
    let bad = d.run(&["audit", "verify"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "verify passed a tampered log");
    assert!(err.contains(&format!("record {seq}")), "{err}");
    db.close().await;

    // Messages that are not events (the CLI's generated payloads) reach each group's DLQ with
    // the reason.
    let topic = format!("{}comments", d.env.iter().find(|(k, _)| k == "HORIZONS_NAMESPACE").map_or("", |(_, v)| v));
    let out = d.run(&["bus", "publish", "--topic", &topic, "--count", "3", "--size", "64"]);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    let server = d.start(&["up"], &[]);
    let metrics = server.url("/metrics");
    eventually(30, "three dead letters in the audit group", || {
        let (http, metrics) = (http.clone(), metrics.clone());
        async move {
            let text = http.get(&metrics).send().await.ok()?.text().await.ok()?;
            text.lines()
                .filter(|l| l.starts_with("horizons_bus_settled_total") && l.contains("dead_letter"))
                .filter(|l| l.contains("group=\"audit\""))
                .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 3.0))
                .then_some(())
        }
    })
    .await;
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let out = d.run(&["bus", "dlq", "list", "--topic", &topic, "--group", "audit", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dlq list: {}", String::from_utf8_lossy(&out.stderr));
    let dead: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(dead.len(), 3, "{text}");
    assert!(dead.iter().all(|e| e["reason"].as_str().unwrap().contains("malformed event")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn comment_pipeline_end_to_end_on_the_embedded_default() {
    scenario(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn comment_pipeline_end_to_end_on_rabbitmq_and_postgres() {
    scenario(Deployment::amqp_postgres().await).await;
}
