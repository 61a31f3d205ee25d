-- Durable state that steps keep between runs: recursion-control's contexts
-- now, mcp-memory's namespaces next. `scope` is the execution tree (its
-- root execution's id) or a named scope; values are JSON text.
CREATE TABLE memory_entries (
    scope       TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    PRIMARY KEY (scope, namespace, key)
);
CREATE INDEX memory_entries_expiry ON memory_entries (expires_at) WHERE expires_at IS NOT NULL;
