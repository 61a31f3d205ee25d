-- An execution's pipeline text and compiled plan move to their own table.
-- They are written once and can be large; the executions row keeps only the
-- small columns that change while it runs.
CREATE TABLE execution_sources (
    execution_id TEXT PRIMARY KEY NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    source       TEXT NOT NULL,
    plan         JSONB NOT NULL
);
INSERT INTO execution_sources (execution_id, source, plan) SELECT id, source, plan FROM executions;
ALTER TABLE executions DROP COLUMN source;
ALTER TABLE executions DROP COLUMN plan;
