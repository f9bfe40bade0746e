-- Less database work per delivery. Every delivery row is written three
-- times (queued, leased, its result recorded); state changes are never HOT
-- updates, so each write inserts into every index whose predicate the row
-- meets, and each result also wrote an attempt-log row.
--
-- The latest attempt of a delivery now stays on its row (last_started_at,
-- last_latency_ms beside last_status and last_error, numbered `attempts`);
-- webhook_attempts holds the earlier ones, copied there when a retry's
-- result replaces them. A delivery that succeeds at once writes no log
-- row. The delivery log reads both. Rows recorded before this migration
-- have their latest attempt in webhook_attempts and NULL here.
ALTER TABLE webhook_deliveries ADD COLUMN last_started_at BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN last_latency_ms BIGINT;

-- created_at and event_seq are read only by the hourly purge and by the
-- foreign-key check when an event is deleted, both in bulk and both
-- following insertion order: BRIN summaries (a few bytes per 128 pages,
-- nothing to insert for the newest pages) serve them instead of B-trees
-- that every write had to update.
DROP INDEX webhook_deliveries_created;
DROP INDEX webhook_deliveries_event;
CREATE INDEX webhook_deliveries_created ON webhook_deliveries USING brin (created_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries USING brin (event_seq);

-- The per-call order check only ever looks up deliveries that have an
-- order key; deliveries without one (tests, shares, replays) no longer
-- enter that index.
DROP INDEX webhook_deliveries_order;
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE state = 'pending' AND order_key IS NOT NULL;
-- Keep in step with ../sqlite/0012_webhook_delivery_work.sql (SQLite has no
-- BRIN and keeps those two B-trees).
