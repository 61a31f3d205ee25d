-- Executions whose <AUTO> tags are answered before their steps exist
-- (status 'resolving'). A process leases a row while it asks the models;
-- an expired lease (the process died) lets another one take it over.
CREATE TABLE resolve_queue (
    execution_id TEXT PRIMARY KEY NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    run_after    INTEGER NOT NULL,
    locked_by    TEXT,
    lease_token  TEXT,
    locked_until INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX resolve_queue_by_run_after ON resolve_queue (run_after);
