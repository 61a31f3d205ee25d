-- The model registry and every model call (for selection, metrics and
-- per-execution cost). Times are Unix milliseconds.

CREATE TABLE models (
    id         TEXT PRIMARY KEY NOT NULL,
    spec       JSONB NOT NULL,
    source     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE model_calls (
    id            BIGSERIAL PRIMARY KEY,
    model_id      TEXT NOT NULL,
    execution_id  TEXT,
    step_id       TEXT,
    attempt       BIGINT NOT NULL DEFAULT 0,
    started_at    BIGINT NOT NULL,
    latency_ms    BIGINT NOT NULL,
    success       BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost          DOUBLE PRECISION NOT NULL,
    reward        DOUBLE PRECISION NOT NULL,
    error_type    TEXT
);
CREATE INDEX model_calls_by_model ON model_calls (model_id, id);
CREATE INDEX model_calls_by_execution ON model_calls (execution_id, step_id);
