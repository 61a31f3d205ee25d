-- Steps that wait for a person (status 'waiting'): what they ask, until
-- when, and the answer once given. A waiting step holds no lease and no
-- queue row; an answer (or its deadline passing) queues it again, and its
-- tool then reads the answer here.
CREATE TABLE step_waits (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request      JSONB NOT NULL,
    deadline     BIGINT,
    created_at   BIGINT NOT NULL,
    answer       JSONB,
    answered_by  TEXT,
    answered_at  BIGINT,
    expired      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (execution_id, step_id)
);
CREATE INDEX step_waits_open ON step_waits (created_at) WHERE answered_at IS NULL;
CREATE INDEX step_waits_by_deadline ON step_waits (deadline) WHERE answered_at IS NULL AND deadline IS NOT NULL;
