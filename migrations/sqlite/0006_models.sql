-- The model registry and every model call (for selection, metrics and
-- per-execution cost). Times are Unix milliseconds.

CREATE TABLE models (
    id         TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE model_calls (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id      TEXT NOT NULL,
    execution_id  TEXT,
    step_id       TEXT,
    attempt       INTEGER NOT NULL DEFAULT 0,
    started_at    INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    success       INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost          REAL NOT NULL,
    reward        REAL NOT NULL,
    error_type    TEXT
);
CREATE INDEX model_calls_by_model ON model_calls (model_id, id);
CREATE INDEX model_calls_by_execution ON model_calls (execution_id, step_id);
