-- Executions started by a step of another (pipeline-executor): the parent
-- execution and step, the root of the tree, and how deep it is (0: a root).
ALTER TABLE executions ADD COLUMN parent_execution_id TEXT;
ALTER TABLE executions ADD COLUMN parent_step_id TEXT;
ALTER TABLE executions ADD COLUMN root_execution_id TEXT;
ALTER TABLE executions ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX executions_by_parent ON executions (parent_execution_id, parent_step_id, created_at) WHERE parent_execution_id IS NOT NULL;
CREATE INDEX executions_by_root ON executions (root_execution_id) WHERE root_execution_id IS NOT NULL;
