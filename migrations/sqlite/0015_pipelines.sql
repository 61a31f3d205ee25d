-- Pipelines stored by name: every PUT adds a version; executions and steps
-- (pipeline-executor) name one as `name` (the latest) or `name@version`.
CREATE TABLE pipelines (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT NOT NULL,
    format      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT,
    PRIMARY KEY (name, version)
);
