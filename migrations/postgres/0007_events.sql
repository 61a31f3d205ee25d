-- Every state change of an execution and its steps, numbered per execution,
-- written in the same transaction as the change. An event is inserted with
-- the execution's next number (its row locked); the trigger moves the counter.
ALTER TABLE executions ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE events (
    execution_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    -- `execution.*` or `step.*`, for webhook subscriptions.
    family       TEXT NOT NULL,
    step_id      TEXT,
    data         JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

CREATE FUNCTION events_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE executions SET last_event_seq = NEW.seq WHERE id = NEW.execution_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_number AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_number();
