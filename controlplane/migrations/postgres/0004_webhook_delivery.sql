-- Webhook delivery: a durable outbox. Recording an event writes the event
-- (with the exact body every subscriber will receive) and one delivery row
-- per matching subscription in the same transaction as the state change
-- that caused it, so a crash can neither lose an event nor deliver one that
-- was never committed. Delivery workers claim due rows with a lease; the
-- delivery id is fixed at insert time, so a retry after a restart goes out
-- under the same id.
-- Keep in step with ../sqlite/0004_webhook_delivery.sql.

-- Secret rotation: the previous secret keeps signing beside the new one
-- until prev_secret_until. paused_at is when auto-pause (or a 410) stopped
-- the subscription.
ALTER TABLE webhooks ADD COLUMN prev_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE webhooks ADD COLUMN prev_secret_until BIGINT;
ALTER TABLE webhooks ADD COLUMN paused_at BIGINT;

-- seq orders events (and deliveries) in the order they were recorded.
CREATE TABLE webhook_events (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    call_id    TEXT,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_events_id ON webhook_events (id);
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- state: pending (due at next_attempt_at, or leased to a worker until
-- lease_until), succeeded or failed. attempts counts attempts whose result
-- was recorded. order_key (the call id) makes deliveries of one call to one
-- subscription go out one at a time, in seq order.
CREATE TABLE webhook_deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL,
    event_seq       BIGINT NOT NULL REFERENCES webhook_events (seq),
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant          TEXT NOT NULL,
    order_key       TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    lease_token     BIGINT,
    last_status     BIGINT,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    replay_of       TEXT
);
CREATE UNIQUE INDEX webhook_deliveries_id ON webhook_deliveries (id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_seq);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

-- The delivery log: one row per attempt whose result is known.
CREATE TABLE webhook_attempts (
    delivery_seq BIGINT NOT NULL REFERENCES webhook_deliveries (seq) ON DELETE CASCADE,
    attempt      BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    status_code  BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT NOT NULL,
    PRIMARY KEY (delivery_seq, attempt)
);
