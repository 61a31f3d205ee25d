-- Work one process at a time does (retention), held by a lease that its
-- holder renews and another process takes over once it has expired.
CREATE TABLE process_leases (
    name   TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
CREATE INDEX executions_by_finish ON executions (status, finished_at) WHERE parent_execution_id IS NULL;
