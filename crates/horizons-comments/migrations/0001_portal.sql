-- The comment pipeline's tables. Portable between SQLite and PostgreSQL: TEXT ids (UUIDv7,
-- which sort by time), BIGINT integers (milliseconds since the epoch, counters, 0/1 flags),
-- DOUBLE PRECISION scores. No autoincrement: every id is made by the application.

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    role          TEXT NOT NULL,
    banned        BIGINT NOT NULL DEFAULT 0,
    notify_in_app BIGINT NOT NULL DEFAULT 1,
    notify_email  BIGINT NOT NULL DEFAULT 1,
    created_at    BIGINT NOT NULL
);

CREATE TABLE posts (
    id         TEXT PRIMARY KEY,
    author     TEXT NOT NULL REFERENCES users(name),
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- status: visible | hidden (moderation) | deleted (soft delete by the author)
CREATE TABLE comments (
    id         TEXT PRIMARY KEY,
    post_id    TEXT NOT NULL REFERENCES posts(id),
    parent_id  TEXT REFERENCES comments(id),
    author     TEXT NOT NULL REFERENCES users(name),
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at  BIGINT,
    deleted_at BIGINT
);
CREATE INDEX comments_by_post ON comments (post_id, created_at);

CREATE TABLE reports (
    id         TEXT PRIMARY KEY,
    comment_id TEXT NOT NULL REFERENCES comments(id),
    reporter   TEXT NOT NULL REFERENCES users(name),
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- One open entry per comment; source: report | filter. Closed by a decision.
CREATE TABLE moderation_queue (
    comment_id  TEXT PRIMARY KEY REFERENCES comments(id),
    source      TEXT NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    reasons     TEXT NOT NULL,
    reports     BIGINT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    decided_at  BIGINT
);

-- action: approve | hide | ban
CREATE TABLE moderation_decisions (
    id         TEXT PRIMARY KEY,
    comment_id TEXT NOT NULL REFERENCES comments(id),
    moderator  TEXT NOT NULL,
    action     TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    post_id    TEXT,
    comment_id TEXT,
    message    TEXT NOT NULL,
    in_app     BIGINT NOT NULL,
    email      BIGINT NOT NULL,
    emailed_at BIGINT,
    created_at BIGINT NOT NULL,
    read_at    BIGINT
);
CREATE INDEX notifications_by_user ON notifications (user_name, id);
CREATE INDEX notifications_unsent ON notifications (email, emailed_at);

-- Events written in the same transaction as the change they describe; the relay publishes
-- them in id order and stamps sent_at.
CREATE TABLE outbox (
    id         TEXT PRIMARY KEY,
    topic      TEXT NOT NULL,
    event_type TEXT NOT NULL,
    msg_key    TEXT,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX outbox_unsent ON outbox (sent_at, id);

-- Message ids each consumer has processed, written in the transaction of its effect.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);

-- The hash-chained audit log: one row per record, the record as canonical JSON.
CREATE TABLE audit_log (
    seq    BIGINT PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    record TEXT NOT NULL
);
-- Where the chain starts after retention removed its head (at most one row, id 1).
CREATE TABLE audit_anchor (
    id     BIGINT PRIMARY KEY,
    anchor TEXT NOT NULL
);

-- What the search index holds: the comment version last indexed (or removed).
CREATE TABLE search_state (
    comment_id TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    indexed    BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL
);
