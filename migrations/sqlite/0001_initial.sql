-- Executions, their steps, the queue of runnable steps and checkpoints.
-- Times are Unix milliseconds. JSON is stored as text.

CREATE TABLE executions (
    id              TEXT PRIMARY KEY NOT NULL,
    pipeline_id     TEXT NOT NULL,
    pipeline_name   TEXT NOT NULL,
    status          TEXT NOT NULL,
    source          TEXT NOT NULL,
    plan            TEXT NOT NULL,
    inputs          TEXT NOT NULL,
    options         TEXT NOT NULL,
    outputs         TEXT,
    error           TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX executions_by_created ON executions (created_at DESC, id DESC);
CREATE INDEX executions_by_status ON executions (status, created_at DESC, id DESC);
CREATE INDEX executions_by_pipeline ON executions (pipeline_name, created_at DESC, id DESC);

CREATE TABLE steps (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    position     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    depends_on   TEXT NOT NULL,
    on_failure   TEXT NOT NULL,
    scope        TEXT NOT NULL,
    ord          INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    parameters   TEXT,
    result       TEXT,
    error        TEXT,
    error_type   TEXT,
    reason       TEXT,
    timed_out    BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   INTEGER,
    finished_at  INTEGER,
    PRIMARY KEY (execution_id, step_id)
);

-- Only runnable and leased steps live here, so claims stay fast however
-- large the history grows.
CREATE TABLE step_queue (
    execution_id TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    run_after    INTEGER NOT NULL,
    locked_by    TEXT,
    lease_token  TEXT,
    locked_until INTEGER,
    PRIMARY KEY (execution_id, step_id)
);
CREATE INDEX step_queue_by_run_after ON step_queue (run_after);

CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    parameters   TEXT,
    result       TEXT,
    error        TEXT,
    error_type   TEXT,
    started_at   INTEGER,
    finished_at  INTEGER,
    created_at   INTEGER NOT NULL
);
CREATE INDEX checkpoints_by_execution ON checkpoints (execution_id, id);
