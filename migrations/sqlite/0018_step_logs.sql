-- Lines a step's command or tool wrote (stdout, stderr, the tool's own log),
-- numbered per step across its attempts. Bounded per attempt by
-- limits.step_log_bytes: the head and the tail are kept, and one marker
-- line says how many lines in between were dropped.
CREATE TABLE step_logs (
    execution_id TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    stream       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    line         TEXT NOT NULL,
    PRIMARY KEY (execution_id, step_id, seq)
);
