-- The API token that submitted an execution (when authentication is on), for
-- the per-token limit on executions in flight.
ALTER TABLE executions ADD COLUMN token_id TEXT;
CREATE INDEX executions_by_token ON executions (token_id, status) WHERE token_id IS NOT NULL;
