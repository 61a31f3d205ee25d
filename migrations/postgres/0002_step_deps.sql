-- Finishing a step looks up only its dependents (not every step of the
-- execution), and a counter of open steps tells when an execution is done.

ALTER TABLE executions ADD COLUMN open_steps BIGINT NOT NULL DEFAULT 0;

CREATE TABLE step_deps (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    depends_on   TEXT NOT NULL,
    PRIMARY KEY (execution_id, step_id, depends_on)
);
CREATE INDEX step_deps_by_dependency ON step_deps (execution_id, depends_on);

INSERT INTO step_deps (execution_id, step_id, depends_on)
SELECT s.execution_id, s.step_id, d FROM steps s, jsonb_array_elements_text(s.depends_on) d;

UPDATE executions SET open_steps = (
    SELECT COUNT(*) FROM steps s
    WHERE s.execution_id = executions.id AND s.status IN ('pending', 'ready', 'running', 'retrying')
);
