-- Each subscription's due deliveries in due order. The claim takes the
-- oldest due rows from webhook_deliveries_due (one index for everyone);
-- when one subscription's backlog fills that window and its
-- per-subscription cap leaves room unused, the claim also takes the head
-- of every other active subscription's queue through this index, so a
-- subscription behind someone else's backlog is served on every claim
-- instead of after that backlog drains.
-- Keep in step with ../postgres/0012_webhook_due_per_subscription.sql.
CREATE INDEX webhook_deliveries_sub_due
    ON webhook_deliveries (webhook_id, next_attempt_at, seq)
    WHERE state = 'pending';
