-- Indexes for the statements every step goes through, so that their cost
-- does not grow with what the database holds.
-- Finding a finished step's dependents reads the dependency index alone
-- (it now covers the dependent's id; SQLite otherwise scanned all of the
-- execution's dependency rows).
DROP INDEX step_deps_by_dependency;
CREATE INDEX step_deps_by_dependency ON step_deps (execution_id, depends_on, step_id);
-- Heartbeats, hand-backs and cancellation checks find leases by token.
CREATE INDEX step_queue_by_lease ON step_queue (lease_token) WHERE lease_token IS NOT NULL;
