-- Every state change of an execution and its steps, numbered per execution,
-- written in the same transaction as the change. An event is inserted with
-- the execution's next number; the trigger moves the execution's counter.
ALTER TABLE executions ADD COLUMN last_event_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    -- `execution.*` or `step.*`, for webhook subscriptions.
    family       TEXT NOT NULL,
    step_id      TEXT,
    data         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

CREATE TRIGGER events_number AFTER INSERT ON events BEGIN
    UPDATE executions SET last_event_seq = NEW.seq WHERE id = NEW.execution_id;
END;
