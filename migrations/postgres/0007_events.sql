-- Every state change of an execution and its steps, numbered per execution,
-- written in the same transaction as the change.
ALTER TABLE executions ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE events (
    execution_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    step_id      TEXT,
    data         JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
