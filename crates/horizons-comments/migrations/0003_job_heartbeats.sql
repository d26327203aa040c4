-- Heartbeats of running jobs: a worker stamps its job every few seconds, so a job that runs
-- longer than the bus lease is not started twice, and one whose worker died is taken over once
-- the stamp is stale.

ALTER TABLE jobs ADD COLUMN heartbeat_at BIGINT;
