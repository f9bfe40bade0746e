-- Held deliveries: a paused subscription's deliveries are in state 'held'
-- (besides pending, succeeded and failed) until it resumes, so the claim,
-- which reads the pending index in due order, never walks a paused
-- subscription's backlog. Resuming finds them through this index and makes
-- them pending again. state has no CHECK constraint; the partial indexes
-- of 0004 (state = 'pending') are the ones the claim needs and stay as
-- they are.
-- Keep in step with ../postgres/0006_webhook_held.sql.
CREATE INDEX webhook_deliveries_held ON webhook_deliveries (webhook_id, seq)
    WHERE state = 'held';

-- What a subscription paused before this migration had queued: held now
-- (rows under a lease are left to the claim, which holds them if their
-- subscription is still paused when they come due again).
UPDATE webhook_deliveries SET state = 'held'
    WHERE state = 'pending' AND lease_until IS NULL
    AND webhook_id IN (SELECT id FROM webhooks WHERE active = 0);
