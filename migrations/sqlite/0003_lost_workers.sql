-- Expired leases are handed back by a reaper, which counts how often a step
-- lost its worker; claims then only look at unleased rows.

ALTER TABLE step_queue ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;

CREATE INDEX step_queue_unleased ON step_queue (run_after) WHERE locked_by IS NULL;
CREATE INDEX step_queue_leased ON step_queue (locked_until) WHERE locked_by IS NOT NULL;
