-- Less database work per delivery; see ../postgres/0012_webhook_delivery_work.sql,
-- kept in step with this one.
--
-- The latest attempt of a delivery stays on its row (last_started_at,
-- last_latency_ms beside last_status and last_error, numbered `attempts`);
-- webhook_attempts holds the earlier ones, copied there when a retry's
-- result replaces them. A delivery that succeeds at once writes no log
-- row. Rows recorded before this migration have their latest attempt in
-- webhook_attempts and NULL here.
ALTER TABLE webhook_deliveries ADD COLUMN last_started_at BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN last_latency_ms BIGINT;

-- The per-call order check only ever looks up deliveries that have an
-- order key; deliveries without one (tests, shares, replays) no longer
-- enter that index. (PostgreSQL also turns its created_at and event_seq
-- B-trees into BRIN summaries; SQLite has no BRIN and keeps them.)
DROP INDEX webhook_deliveries_order;
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE state = 'pending' AND order_key IS NOT NULL;
