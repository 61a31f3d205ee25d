-- Webhook subscriptions and their outbox: a trigger writes a delivery row for
-- every subscriber of an event, in the transaction of the event; deliveries
-- are sent (and retried) from there.

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY NOT NULL,
    url        TEXT NOT NULL,
    events     JSONB NOT NULL,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- One row per event kind a webhook wants (`step.failed`, `execution.*`, `*`).
CREATE TABLE webhook_subscriptions (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    PRIMARY KEY (webhook_id, kind)
);
CREATE INDEX webhook_subscriptions_by_kind ON webhook_subscriptions (kind);

CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    execution_id     TEXT NOT NULL,
    event_seq        BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    log              JSONB NOT NULL,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

CREATE FUNCTION events_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, execution_id, event_seq, kind, status, attempts,
        next_attempt_at, log, created_at)
    SELECT w.id, NEW.execution_id, NEW.seq, NEW.kind, 'pending', 0, NEW.created_at, '[]'::jsonb, NEW.created_at
    FROM webhooks w WHERE EXISTS (
        SELECT 1 FROM webhook_subscriptions s
        WHERE s.webhook_id = w.id AND s.kind IN (NEW.kind, NEW.family, '*'));
    RETURN NULL;
END
$$;

CREATE TRIGGER events_outbox AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_outbox();
