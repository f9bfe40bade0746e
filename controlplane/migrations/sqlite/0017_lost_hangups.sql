-- A call ended as lost with its node (calls.lost_node, or an inbound
-- call's lost = 1) may still be up there if the node was only cut off or
-- frozen: once the node answers again, the call is hung up there. Until
-- the node has taken that hangup (or is known to have restarted, which
-- ended it), lost_hangup_at is NULL, so a control plane that restarts
-- meanwhile still knows what to hang up (switch_link::hang_up_lost).
-- Keep in step with ../postgres/0017_lost_hangups.sql.

ALTER TABLE calls ADD COLUMN lost_hangup_at BIGINT;
ALTER TABLE inbound_calls ADD COLUMN lost_hangup_at BIGINT;
CREATE INDEX calls_lost_hangup ON calls (lost_node, ended_at)
    WHERE lost_node IS NOT NULL AND lost_hangup_at IS NULL;
CREATE INDEX inbound_calls_lost_hangup ON inbound_calls (node_url, ended_at)
    WHERE lost = 1 AND lost_hangup_at IS NULL;
-- Calls lost before this migration were tracked in the memory of the
-- control plane that ended them, which is gone with this upgrade's
-- restart: those of the last day are hung up if their node still
-- carries them (a repeated hangup is answered NotFound); older ones are
-- not looked at again.
UPDATE calls SET lost_hangup_at = 0
    WHERE lost_node IS NOT NULL AND ended_at < CAST(strftime('%s', 'now') AS INTEGER) * 1000 - 86400000;
UPDATE inbound_calls SET lost_hangup_at = 0
    WHERE lost = 1 AND ended_at < CAST(strftime('%s', 'now') AS INTEGER) * 1000 - 86400000;
