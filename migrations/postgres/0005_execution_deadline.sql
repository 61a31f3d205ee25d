-- Optional execution-wide timeout: past its deadline an unfinished execution
-- fails and its steps are stopped.
ALTER TABLE executions ADD COLUMN deadline BIGINT;
CREATE INDEX executions_by_deadline ON executions (deadline) WHERE deadline IS NOT NULL;
