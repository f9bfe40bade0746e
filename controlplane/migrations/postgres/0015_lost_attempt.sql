-- The attempt the control plane ended itself because its node was lost
-- (unreachable for CODEB_SWITCH_LOST_AFTER, or restarted), and that node.
-- The node's own account of that attempt (its turns, usage and end),
-- read when it answers again, then corrects the record instead of being
-- skipped (store::switch_events). Keep in step with
-- ../sqlite/0015_lost_attempt.sql.

ALTER TABLE calls ADD COLUMN lost_attempt BIGINT;
ALTER TABLE calls ADD COLUMN lost_node TEXT;
-- An inbound call ended the same way (1): the node's end corrects it.
ALTER TABLE inbound_calls ADD COLUMN lost BIGINT NOT NULL DEFAULT 0;
