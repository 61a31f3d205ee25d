-- Executions, their steps, the queue of runnable steps and checkpoints.
-- Times are Unix milliseconds.

CREATE TABLE executions (
    id              TEXT PRIMARY KEY NOT NULL,
    pipeline_id     TEXT NOT NULL,
    pipeline_name   TEXT NOT NULL,
    status          TEXT NOT NULL,
    source          TEXT NOT NULL,
    plan            JSONB NOT NULL,
    inputs          JSONB NOT NULL,
    options         JSONB NOT NULL,
    outputs         JSONB,
    error           TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX executions_by_created ON executions (created_at DESC, id DESC);
CREATE INDEX executions_by_status ON executions (status, created_at DESC, id DESC);
CREATE INDEX executions_by_pipeline ON executions (pipeline_name, created_at DESC, id DESC);

CREATE TABLE steps (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    position     BIGINT NOT NULL,
    status       TEXT NOT NULL,
    attempt      BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    depends_on   JSONB NOT NULL,
    on_failure   JSONB NOT NULL,
    scope        TEXT NOT NULL,
    ord          BIGINT NOT NULL,
    definition   JSONB NOT NULL,
    parameters   JSONB,
    result       JSONB,
    error        TEXT,
    error_type   TEXT,
    reason       TEXT,
    timed_out    BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   BIGINT,
    finished_at  BIGINT,
    PRIMARY KEY (execution_id, step_id)
);

-- Only runnable and leased steps live here, so claims stay fast however
-- large the history grows. Rows come and go quickly: vacuum aggressively.
CREATE TABLE step_queue (
    execution_id TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    run_after    BIGINT NOT NULL,
    locked_by    TEXT,
    lease_token  TEXT,
    locked_until BIGINT,
    PRIMARY KEY (execution_id, step_id)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 100);
CREATE INDEX step_queue_by_run_after ON step_queue (run_after);

CREATE TABLE checkpoints (
    id           BIGSERIAL PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    status       TEXT NOT NULL,
    parameters   JSONB,
    result       JSONB,
    error        TEXT,
    error_type   TEXT,
    started_at   BIGINT,
    finished_at  BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX checkpoints_by_execution ON checkpoints (execution_id, id);
