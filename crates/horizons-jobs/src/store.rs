//! Jobs in the database: submit (with the execution message in the same transaction),
//! read, list, cancel, retry and redrive.

use horizons_comments::service::{push_message, Outgoing};
use horizons_comments::sql::{Row as SqlRow, Stmt};
use horizons_comments::{new_id, now_ms, Store};
use sqlx::Row;

use crate::kinds::Registry;
use crate::model::{Attempt, Job, JobSpec, JobState};
use crate::{JobsError, TOPIC};

const COLUMNS: &str = "id, kind, args, priority, not_before, max_attempts, backoff_ms, timeout_ms, \
    idempotency_key, owner, state, attempts, last_error, cancel_requested, heartbeat_at, created_at, started_at, \
    finished_at";

fn job_from(r: &SqlRow<'_>) -> Job {
    Job {
        id: r.get("id"),
        kind: r.get("kind"),
        args: serde_json::from_str(&r.get::<String>("args")).unwrap_or(serde_json::Value::Null),
        priority: r.get("priority"),
        not_before: r.get("not_before"),
        max_attempts: r.get("max_attempts"),
        backoff_ms: r.get("backoff_ms"),
        timeout_ms: r.get("timeout_ms"),
        idempotency_key: r.get("idempotency_key"),
        owner: r.get("owner"),
        state: JobState::parse(&r.get::<String>("state")).unwrap_or(JobState::Dead),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
        cancel_requested: r.get::<i64>("cancel_requested") != 0,
        heartbeat_at: r.get("heartbeat_at"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
    }
}

/// The execution message of job `id`.
pub(crate) fn message(id: &str, priority: i64, not_before: Option<i64>) -> Outgoing<'static> {
    Outgoing {
        topic: TOPIC,
        event_type: "JobQueued",
        key: Some(id.to_string()),
        payload: serde_json::json!({ "job_id": id }).to_string(),
        priority: priority.clamp(0, 9) as u8,
        not_before,
    }
}

/// Submits `spec` for `owner`. Returns the job and whether it is new: with an idempotency key
/// already used, the first job comes back instead.
pub async fn submit(store: &Store, registry: &Registry, spec: &JobSpec, owner: &str) -> Result<(Job, bool), JobsError> {
    spec.validate()?;
    let kind = registry.get(&spec.kind).ok_or_else(|| {
        JobsError::invalid("kind", format!("unknown kind {:?} (known: {})", spec.kind, registry.names().join(", ")))
    })?;
    kind.validate(&spec.args).map_err(|m| JobsError::invalid("args", m))?;
    if let Some(key) = &spec.idempotency_key {
        if let Some(j) = by_key(store, key).await? {
            return Ok((j, false));
        }
    }
    let now = now_ms();
    let id = new_id();
    let not_before = (spec.delay_ms > 0).then(|| now + spec.delay_ms);
    let mut tx = store.begin().await.map_err(JobsError::db("starting a transaction"))?;
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, kind, args, priority, not_before, max_attempts, backoff_ms, timeout_ms, idempotency_key, \
         owner, state, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', 0, $11) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&id)
    .bind(&spec.kind)
    .bind(spec.args.to_string())
    .bind(spec.priority)
    .bind(not_before)
    .bind(spec.max_attempts)
    .bind(spec.backoff_ms)
    .bind(spec.timeout_ms)
    .bind(&spec.idempotency_key)
    .bind(owner)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(JobsError::db("writing the job"))?
    .rows_affected();
    if inserted == 0 {
        // Another submission with this key won the race.
        drop(tx);
        let key = spec.idempotency_key.as_deref().unwrap_or_default();
        return by_key(store, key).await?.map(|j| (j, false)).ok_or_else(|| JobsError::NotFound(key.into()));
    }
    push_message(&mut tx, &message(&id, spec.priority, not_before)).await?;
    tx.commit().await.map_err(JobsError::db("committing the job"))?;
    metrics::counter!("horizons_jobs_submitted_total", "kind" => spec.kind.clone(), "priority" => spec.priority.to_string())
        .increment(1);
    Ok((get(store, &id).await?, true))
}

async fn by_key(store: &Store, key: &str) -> Result<Option<Job>, JobsError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE idempotency_key = $1");
    let rows = store.read(Stmt::new(sql).bind(key)).await.map_err(JobsError::db("reading a job"))?;
    let job = rows.first().map(|r| job_from(&r));
    Ok(job)
}

/// The job `id`.
pub async fn get(store: &Store, id: &str) -> Result<Job, JobsError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    let rows = store.read(Stmt::new(sql).bind(id)).await.map_err(JobsError::db("reading a job"))?;
    let job = rows.first().map(|r| job_from(&r));
    job.ok_or_else(|| JobsError::NotFound(id.into()))
}

/// Jobs `ids` with their attempt bases (the attempts made before their last retry or redrive),
/// for a worker about to run them; ids not found are missing from the answer.
pub(crate) async fn get_for_run(store: &Store, ids: &[String]) -> Result<Vec<(Job, i64)>, JobsError> {
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT {COLUMNS}, attempt_base FROM jobs WHERE id IN ({})", marks.join(", "));
    let q = ids.iter().fold(Stmt::new(sql), |q, id| q.bind(id.as_str()));
    let rows = store.read(q).await.map_err(JobsError::db("reading jobs"))?;
    Ok(rows.iter().map(|r| (job_from(&r), r.get("attempt_base"))).collect())
}

/// The attempts of job `id`, in order.
pub async fn attempts(store: &Store, id: &str) -> Result<Vec<Attempt>, JobsError> {
    let rows = sqlx::query(
        "SELECT attempt, worker, started_at, finished_at, outcome, error FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await
    .map_err(JobsError::db("reading attempts"))?;
    Ok(rows
        .iter()
        .map(|r| Attempt {
            attempt: r.get(0),
            worker: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            outcome: r.get(4),
            error: r.get(5),
        })
        .collect())
}

/// Jobs, newest first, filtered by state and kind.
pub async fn list(
    store: &Store,
    state: Option<JobState>,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<Job>, JobsError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE ($1 = '' OR state = $1) AND ($2 = '' OR kind = $2) ORDER BY id DESC LIMIT $3"
    );
    let q =
        Stmt::new(sql).bind(state.map_or("", JobState::as_str)).bind(kind.unwrap_or("")).bind(limit.clamp(1, 10_000));
    let rows = store.read(q).await.map_err(JobsError::db("listing jobs"))?;
    Ok(rows.iter().map(|r| job_from(&r)).collect())
}

/// Cancels a job: one that has not started (queued, or retrying between attempts) is
/// cancelled at once; for a running one, cancellation is asked for, and its worker stops it at
/// its next heartbeat (the job ends `cancelled`, or `succeeded` if it finished first).
pub async fn cancel(store: &Store, id: &str) -> Result<Job, JobsError> {
    let changed = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = $1 WHERE id = $2 AND state IN ('queued', 'retrying')",
    )
    .bind(now_ms())
    .bind(id)
    .execute(store.pool())
    .await
    .map_err(JobsError::db("cancelling"))?
    .rows_affected();
    if changed == 0 {
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(store.pool())
            .await
            .map_err(JobsError::db("asking for cancellation"))?;
    }
    let job = get(store, id).await?;
    if changed == 0 && !(job.state == JobState::Running && job.cancel_requested) {
        return Err(JobsError::State { id: id.into(), state: job.state.as_str().into(), what: "cancel" });
    }
    Ok(job)
}

/// Runs a dead or cancelled job again, with a fresh set of attempts (its history stays).
pub async fn retry(store: &Store, id: &str) -> Result<Job, JobsError> {
    let job = get(store, id).await?;
    if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
        return Err(JobsError::State { id: id.into(), state: job.state.as_str().into(), what: "retry" });
    }
    let mut tx = store.begin().await.map_err(JobsError::db("starting a transaction"))?;
    sqlx::query(
        "UPDATE jobs SET state = 'queued', attempt_base = attempts, finished_at = NULL, not_before = NULL, \
         cancel_requested = 0 WHERE id = $1 AND state IN ('dead', 'cancelled')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(JobsError::db("requeueing"))?;
    push_message(&mut tx, &message(id, job.priority, None)).await?;
    tx.commit().await.map_err(JobsError::db("committing"))?;
    get(store, id).await
}

/// Runs every dead job (of `kind`, if given) again; returns how many.
pub async fn redrive(store: &Store, kind: Option<&str>) -> Result<usize, JobsError> {
    let dead = list(store, Some(JobState::Dead), kind, 10_000).await?;
    for j in &dead {
        retry(store, &j.id).await?;
    }
    Ok(dead.len())
}

/// Jobs by (kind, priority, state).
pub async fn census(store: &Store) -> Result<Vec<(String, i64, String, i64)>, JobsError> {
    let rows = sqlx::query("SELECT kind, priority, state, COUNT(*) FROM jobs GROUP BY kind, priority, state")
        .fetch_all(store.pool())
        .await
        .map_err(JobsError::db("counting jobs"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// Sets the gauge `horizons_jobs{kind, priority, state}` from the database every `every` until
/// `cancel` (one process per deployment is enough; every jobs worker runs it, which is harmless).
pub async fn export_gauges(store: Store, every: std::time::Duration, cancel: tokio_util::sync::CancellationToken) {
    let mut known: std::collections::BTreeSet<(String, i64, String)> = Default::default();
    loop {
        match census(&store).await {
            Ok(rows) => {
                let mut now = std::collections::BTreeSet::new();
                for (kind, priority, state, n) in rows {
                    metrics::gauge!("horizons_jobs", "kind" => kind.clone(), "priority" => priority.to_string(), "state" => state.clone())
                        .set(n as f64);
                    now.insert((kind, priority, state));
                }
                // Combinations that emptied read 0, not their last value.
                for (kind, priority, state) in known.difference(&now) {
                    metrics::gauge!("horizons_jobs", "kind" => kind.clone(), "priority" => priority.to_string(), "state" => state.clone())
                        .set(0.0);
                }
                known.extend(now);
            }
            Err(e) => tracing::warn!(error = %e, "counting jobs for metrics failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Counts by state, of one kind if given (`jobs watch`, metrics).
pub async fn counts(store: &Store, kind: Option<&str>) -> Result<Vec<(String, i64)>, JobsError> {
    let rows =
        sqlx::query("SELECT state, COUNT(*) FROM jobs WHERE ($1 = '' OR kind = $1) GROUP BY state ORDER BY state")
            .bind(kind.unwrap_or(""))
            .fetch_all(store.pool())
            .await
            .map_err(JobsError::db("counting jobs"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Submits many jobs of one spec for `owner`, a thousand per transaction (benchmarks and bulk
/// loads); returns how many. No idempotency keys.
pub async fn submit_many(
    store: &Store,
    registry: &Registry,
    spec: &JobSpec,
    owner: &str,
    count: usize,
) -> Result<usize, JobsError> {
    spec.validate()?;
    if spec.idempotency_key.is_some() {
        return Err(JobsError::invalid("idempotency_key", "not with bulk submission"));
    }
    let kind =
        registry.get(&spec.kind).ok_or_else(|| JobsError::invalid("kind", format!("unknown kind {:?}", spec.kind)))?;
    kind.validate(&spec.args).map_err(|m| JobsError::invalid("args", m))?;
    let args = spec.args.to_string();
    let mut done = 0;
    while done < count {
        let n = (count - done).min(1000);
        let mut tx = store.begin().await.map_err(JobsError::db("starting a transaction"))?;
        for _ in 0..n {
            let (id, now) = (new_id(), now_ms());
            let not_before = (spec.delay_ms > 0).then(|| now + spec.delay_ms);
            sqlx::query(
                "INSERT INTO jobs (id, kind, args, priority, not_before, max_attempts, backoff_ms, timeout_ms, owner, \
                 state, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 0, $10)",
            )
            .bind(&id)
            .bind(&spec.kind)
            .bind(&args)
            .bind(spec.priority)
            .bind(not_before)
            .bind(spec.max_attempts)
            .bind(spec.backoff_ms)
            .bind(spec.timeout_ms)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(JobsError::db("writing a job"))?;
            push_message(&mut tx, &message(&id, spec.priority, not_before)).await?;
        }
        tx.commit().await.map_err(JobsError::db("committing jobs"))?;
        done += n;
    }
    Ok(done)
}
