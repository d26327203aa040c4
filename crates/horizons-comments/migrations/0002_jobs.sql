-- The job system: jobs and their attempts; outbox rows gain a priority and a not-before time
-- so that job messages leave through the outbox with the job's priority and delay.

ALTER TABLE outbox ADD COLUMN priority BIGINT NOT NULL DEFAULT 4;
ALTER TABLE outbox ADD COLUMN not_before BIGINT;

-- state: queued | running | retrying | succeeded | dead | cancelled
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    args             TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    not_before       BIGINT,
    max_attempts     BIGINT NOT NULL,
    backoff_ms       BIGINT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    owner            TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    -- Attempts made before the last manual retry; max_attempts counts those after it.
    attempt_base     BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX jobs_by_state ON jobs (state, kind);

CREATE TABLE job_attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    attempt     BIGINT NOT NULL,
    worker      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);
