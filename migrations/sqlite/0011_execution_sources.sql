-- An execution's pipeline text and compiled plan move to their own table.
-- They are written once and can be large (hundreds of KiB for a pipeline of
-- thousands of steps); in the executions row, every update of its small,
-- hot columns (status, open_steps, last_event_seq) rewrote them too.
CREATE TABLE execution_sources (
    execution_id TEXT PRIMARY KEY NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    source       TEXT NOT NULL,
    plan         TEXT NOT NULL
);
INSERT INTO execution_sources (execution_id, source, plan) SELECT id, source, plan FROM executions;
ALTER TABLE executions DROP COLUMN source;
ALTER TABLE executions DROP COLUMN plan;
