-- Pipelines stored by name: every PUT adds a version; executions and steps
-- (pipeline-executor) name one as `name` (the latest) or `name@version`.
CREATE TABLE pipelines (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    source      TEXT NOT NULL,
    format      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT,
    PRIMARY KEY (name, version)
);
